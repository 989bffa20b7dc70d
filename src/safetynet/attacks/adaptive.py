"""Attacks on the *detector* (type II, adaptive, black-box), in one import.

A type-II adversarial example (Lu et al., ICCV 2017) is misclassified *and* not rejected::

    from safetynet.attacks import Misclassification
    from safetynet.attacks.adaptive import BPDA, SmoothedTypeII, Undetected

    goal = Misclassification(y) & Undetected(net)     # judged by the real, hard detector
    raw, adv, success = BPDA(net, steps=100)(net.model, x, goal, eps=8 / 255)

=====================  ==========================================================  ============
attack                 idea                                                        access
=====================  ==========================================================  ============
``SmoothedTypeII``     the paper's: sigmoid quantizer (lambda), wider RBF (sigma)  white box
``BPDA``               hard forward, straight-through / sigmoid backward           white box
``OrthogonalPGD``      Bryniarski et al. 2022: orthogonal / selective steps        white box
``CodeMatching``       copy a natural code of the target class (feature adversary) white box
``HopSkipJump``        Chen et al. 2020: hard label (reject = extra label)         black box
``TransferAttack``     craft on a surrogate (+ its own detector), replay           black box
=====================  ==========================================================  ============
"""

from __future__ import annotations

from .bpda import BPDA, BPDAScore, quantize
from .code_matching import CodeMatching
from .detector_scores import (
                    DetectorScore,
                    ExtraClassScore,
                    MetzenScore,
                    SmoothScore,
                    as_detector_score,
                    rbf_score_torch,
)
from .hopskipjump import HopSkipJump
from .joint_pgd import JointPGD
from .opgd import OrthogonalPGD, orthogonalize
from .smoothed_type2 import SmoothedTypeII, SweepResult, sweep
from .transfer import DropExtraClass, TransferAttack
from .undetected import (
                    ExtraClassDetector,
                    MetzenAdapter,
                    Undetected,
                    as_detector,
                    combined_labels,
)

__all__ = ["BPDA", "BPDAScore", "CodeMatching", "DetectorScore", "DropExtraClass", "ExtraClassDetector",
           "ExtraClassScore", "HopSkipJump", "JointPGD", "MetzenAdapter", "MetzenScore", "OrthogonalPGD",
           "SmoothScore", "SmoothedTypeII", "SweepResult", "TransferAttack", "Undetected", "as_detector",
           "as_detector_score", "combined_labels", "orthogonalize", "quantize", "rbf_score_torch", "sweep"]
