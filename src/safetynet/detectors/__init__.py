"""Adversary detectors: the RBF-SVM on activation codes, its fast kernel, ensembles, persistence.

Every detector follows the scikit-learn classifier contract with label 1 = adversarial and
``decision_function`` higher = more adversarial. :class:`SafetyNet` (classifier + quantizers +
detectors) lives in :mod:`safetynet.safetynet` and is re-exported here, as are the baselines
:class:`MetzenDetector`, :class:`ConfidenceDetector`, :class:`MahalanobisDetector` (Lee et al. 2018),
:class:`LIDDetector` (Ma et al. 2018) and :class:`KDBUDetector` (Feinman et al. 2017).
"""

from __future__ import annotations

from typing import Any

from .ensemble import DetectorEnsemble, Rule
from .kernel import CodeRBFKernel, rbf_decision_function, squared_distances
from .svm import CodeSVMDetector, load_detector, save_detector

_LAZY = {"SafetyNet": "safetynet.safetynet", "REJECT": "safetynet.safetynet", "Classification": "safetynet.safetynet",
         # baselines (Metzen et al. 2017 subnetwork, softmax confidence) load their own deps on first use
         "MetzenDetector": "safetynet.detectors.metzen", "ConfidenceDetector": "safetynet.detectors.confidence",
         # Lee et al. 2018, Ma et al. 2018, Feinman et al. 2017 (the detector benchmark's baselines)
         "MahalanobisDetector": "safetynet.detectors.mahalanobis", "LIDDetector": "safetynet.detectors.lid",
         "KDBUDetector": "safetynet.detectors.kd_bu"}


def __getattr__(name: str) -> Any:
    # SafetyNet imports this package; importing it lazily keeps the import graph acyclic.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Classification", "CodeRBFKernel", "CodeSVMDetector", "ConfidenceDetector", "DetectorEnsemble",
           "KDBUDetector", "LIDDetector", "MahalanobisDetector", "MetzenDetector", "REJECT", "Rule", "SafetyNet",
           "load_detector", "rbf_decision_function", "save_detector", "squared_distances"]
