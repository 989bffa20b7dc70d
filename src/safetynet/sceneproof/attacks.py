"""Depth-only attacks on SceneProof (SafetyNet paper, Lu et al., ICCV 2017, sec. 3 and Figure 4).

"Attackers are only allowed to manipulate the depth": every attack here changes only channel 3
(the encoded depth) of the (N, 4, H, W) patches; the RGB channels stay bit-identical (the attacks
library re-applies the mask to its final output, see :class:`~safetynet.attacks.base.Attack`).

* type I, white-box: :func:`depth_bim` (BIM-L∞, the detectors' training adversary) and
  :func:`depth_fgsm`;
* type II, white-box: :func:`depth_type2`, the paper's smoothed attack (the surrogate
  :class:`~safetynet.attacks.type2.SmoothScore`: sigmoid quantizer of sharpness lambda, widened
  RBF) with the calibrated thresholds of the SceneProof detectors, run by
  :class:`DepthOnlyTypeII`, a PGD engine whose steps touch only the depth channel; success is judged by the real detectors
  (:class:`~safetynet.attacks.undetected.Undetected`). ``letters="M"`` attacks the Metzen
  subnetwork instead (differentiable as is);
* transfer (black box): :func:`transfer_attack` crafts on a surrogate classifier (optionally
  with a Metzen subnetwork fitted on the surrogate, "Subnet Det TF") and returns the images,
  which are then judged on the target.

With two classes an untargeted attack on a fake patch pushes it to "real" and on a real patch to
"fake", as the paper does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ..attacks import BIM, FGSM, Misclassification
from ..attacks._gradient import loss_classes
from ..attacks.base import Attack, check_mask_values
from ..attacks.criteria import Criterion
from ..attacks.detector_scores import DetectorScore, MetzenScore, SmoothScore
from ..attacks.undetected import Undetected
from ..errors import InputError

DEPTH_CHANNEL = 3


def depth_mask(channels: int = 4) -> torch.Tensor:
    """(1, C, 1, 1) float mask: 1 on the depth channel (the last one), 0 on RGB."""
    if channels < 1:
        raise InputError(f"channels must be positive, got {channels}")
    m = torch.zeros(1, channels, 1, 1)
    m[:, channels - 1] = 1.0
    return m


def _batched(fn, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    advs, oks = [], []
    for i in range(0, len(x), batch_size):
        adv, ok = fn(x[i:i + batch_size], y[i:i + batch_size])
        advs.append(adv)
        oks.append(ok)
    if not advs:
        return x.clone(), torch.zeros(0, dtype=torch.bool)
    return torch.cat(advs), torch.cat(oks)


def depth_bim(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *, steps: int = 10,
              step_size: float | None = None, batch_size: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """Type I, white-box: BIM-L∞ on the depth channel only. Returns (adversarial patches, success)."""
    attack = BIM(steps=steps, step_size=step_size if step_size is not None else 2.5 * eps / steps, mask=depth_mask())

    def run(xb: torch.Tensor, yb: torch.Tensor):
        _, adv, ok = attack(model, xb, yb, eps=eps)
        return adv, ok

    return _batched(run, x.float(), y, batch_size)


def depth_fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *,
               batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Type I: one fast-gradient-sign step on the depth channel only."""
    attack = FGSM(mask=depth_mask())

    def run(xb: torch.Tensor, yb: torch.Tensor):
        _, adv, ok = attack(model, xb, yb, eps=eps)
        return adv, ok

    return _batched(run, x.float(), y, batch_size)


def sub_safetynet(net: Any, layers: Sequence[str]) -> Any:
    """A view of a fitted SafetyNet restricted to ``layers`` (shares its quantizers and detectors)."""
    from ..detectors.ensemble import DetectorEnsemble
    from ..safetynet import SafetyNet

    missing = [n for n in layers if n not in net.layers]
    if missing:
        raise InputError(f"layers {missing} are not detected by this SafetyNet ({list(net.layers)})")
    sub = SafetyNet(net.model, layers=list(layers), levels=net.levels, thresholds=net.thresholds,
                    quantiles=net.quantiles, pool=net.pool, rule="any", detector_params=net.detector_params,
                    batch_size=net.batch_size)
    sub.quantizers_ = {n: net.quantizers_[n] for n in layers}
    sub.ensemble_ = DetectorEnsemble({n: net.ensemble_.detectors[n] for n in layers}, "any")
    return sub


class ShiftedScore(DetectorScore):
    """A surrogate whose per-layer scores are shifted by the calibrated thresholds (fires where > 0)."""

    def __init__(self, inner: DetectorScore, thresholds: Sequence[float]) -> None:
        self.inner = inner
        self.model = inner.model
        self.rule = "any"
        self.shift = torch.tensor([float(t) for t in thresholds], dtype=torch.float64)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, scores = self.inner(x)
        if scores.ndim == 1:
            scores = scores[:, None]
        return logits, scores - self.shift.to(scores)

    def __repr__(self) -> str:
        return f"ShiftedScore({self.inner!r})"


class DepthOnlyTypeII(Attack):
    r"""Type-II PGD restricted to masked elements (here: the depth channel) through a differentiable surrogate.

    Lu, Issaranon, Forsyth, "SafetyNet: Detecting and Rejecting Adversarial Examples Robustly",
    ICCV 2017, sec. 3: minimise a classifier loss plus ``c`` times a smoothed detector score.

    Distance Measure : L∞

    Per step: ``x <- Proj(x - step_size * sign(mask * grad))`` of ``CW-margin(logits, y) + c *
    max_l score_l`` (scores from ``score(x) -> (logits, (N, L) scores)``, > 0 = would reject),
    starting at the clean image (a random start would move the RGB channels). Each image keeps
    its first iterate on which the criterion holds (judged by the real detectors, via
    :class:`~safetynet.attacks.undetected.Undetected` in the criterion). Self-contained on purpose:
    it relies only on the public :class:`~safetynet.attacks.type2.DetectorScore` call.

    Arguments:
        score: a DetectorScore (e.g. :func:`type2_score`), or None for the classifier alone.
        mask (Tensor): 0/1, broadcastable to the images; 1 where the attack may change them.
        steps (int): iterations. (Default: 20)
        step_size (float or None): None: ``2.5 * eps / steps``. (Default: None)
        c (float): weight of the detector term. (Default: 1.0)
        kappa (float): confidence margin of the CW loss. (Default: 0.0)
    """

    distance = "linf"

    def __init__(self, score: DetectorScore | None, *, mask: torch.Tensor, steps: int = 20,
                 step_size: float | None = None, c: float = 1.0, kappa: float = 0.0,
                 random_start: bool = False) -> None:
        if random_start:
            raise InputError("random_start would move the RGB channels; depth-only attacks start at the clean image")
        if score is not None and not isinstance(score, DetectorScore):
            raise InputError(f"score must be a DetectorScore or None, got {type(score).__name__}")
        self.score = score
        self.mask = check_mask_values(mask)
        if self.mask is None:
            raise InputError("DepthOnlyTypeII needs mask= (e.g. depth_mask())")
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise InputError(f"steps must be a positive integer, got {steps!r}")
        self.steps = steps
        self.step_size = step_size
        self.c = float(c)
        self.kappa = float(kappa)

    def _loss(self, model: nn.Module, xa: torch.Tensor, classes: torch.Tensor, targeted: bool) -> torch.Tensor:
        if self.score is None:
            logits, scores = model(xa), None
        else:
            logits, scores = self.score(xa)
        own = logits.gather(1, classes[:, None]).squeeze(1)
        others = logits.masked_fill(torch.nn.functional.one_hot(classes, logits.shape[1]).bool(), -math.inf).amax(1)
        margin = (others - own) if targeted else (own - others)
        loss = margin.clamp_min(-self.kappa)
        if scores is not None and self.c > 0:
            loss = loss + self.c * scores.amax(1).to(loss.dtype)
        return loss.sum()

    def run(self, model: nn.Module, x: torch.Tensor, criterion: Criterion, *, eps: float | None) -> torch.Tensor:
        if eps is None:
            raise InputError("DepthOnlyTypeII needs eps=")
        classes, targeted = loss_classes(criterion, type(self).__name__)
        alpha = self.step_size if self.step_size is not None else 2.5 * eps / self.steps
        mask = self.mask.to(device=x.device, dtype=x.dtype)
        x_adv = x.clone()
        with torch.no_grad():
            done = criterion(x_adv, model(x_adv))
        for _ in range(self.steps):
            idx = (~done).nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            xa = x_adv[idx].detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(self._loss(model, xa, classes[idx], targeted), xa)
            step = torch.nan_to_num(grad).sign() * mask
            new = (x[idx] + (xa.detach() - alpha * step - x[idx]).clamp(-eps, eps)).clamp(0.0, 1.0)
            x_adv[idx] = new
            with torch.no_grad():
                ok = criterion.subset(idx)(new, model(new))
            done[idx[ok]] = True
        return x_adv


def type2_score(bundle: Any, letters: str, sharpness: float = 10.0, gamma_scale: float = 0.1) -> DetectorScore:
    """The differentiable surrogate of SceneProof detectors ``letters`` ("A", "ABC", or "M" for Metzen)."""
    from .labels import DETECTOR_LAYERS

    if letters == "M":
        if bundle.metzen is None:
            raise InputError("this SceneProof bundle has no Metzen detector")
        return ShiftedScore(MetzenScore(bundle.metzen), [bundle.settings["metzen_threshold"]])
    bad = set(letters) - set(DETECTOR_LAYERS)
    if not letters or bad:
        raise InputError(f"letters must be from A, B, C (or exactly 'M'), got {letters!r}")
    layers = [DETECTOR_LAYERS[ch] for ch in letters]
    inner = SmoothScore(sub_safetynet(bundle.net, layers), sharpness=sharpness, gamma_scale=gamma_scale)
    return ShiftedScore(inner, [bundle.thresholds[ch] for ch in letters])


def depth_type2(bundle: Any, x: torch.Tensor, y: torch.Tensor, eps: float, *, letters: str = "ABC",
                steps: int = 20, sharpness: float = 10.0, gamma_scale: float = 0.1, c: float = 1.0,
                batch_size: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """Type II, white-box, depth only: fool the classifier *and* evade detectors ``letters``.

    Minimises the CW margin plus ``c`` times the smoothed detector score (thresholds applied);
    ``success`` is judged by the real detectors with their calibrated thresholds.
    """
    score = type2_score(bundle, letters, sharpness, gamma_scale)
    attack = DepthOnlyTypeII(score, mask=depth_mask(), steps=steps, c=c)
    detector = bundle.detector(letters)

    def run(xb: torch.Tensor, yb: torch.Tensor):
        _, adv, ok = attack(bundle.model, xb, Misclassification(yb) & Undetected(detector), eps=eps)
        return adv, ok

    return _batched(run, x.float(), y, batch_size)


def transfer_attack(surrogate: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *, method: str = "bim",
                    surrogate_detector: Any = None, steps: int = 10, batch_size: int = 128) -> torch.Tensor:
    """Black box: depth-only adversarials crafted on ``surrogate`` (to be judged on the target).

    ``method``: "fgsm" (FastSign TF), "bim" (GradDesc TF) or "subnet" (type II against
    ``surrogate_detector``, a MetzenDetector fitted on the surrogate: Subnet Det TF).
    """
    if method == "fgsm":
        return depth_fgsm(surrogate, x, y, eps, batch_size=batch_size)[0]
    if method == "bim":
        return depth_bim(surrogate, x, y, eps, steps=steps, batch_size=batch_size)[0]
    if method == "subnet":
        if surrogate_detector is None:
            raise InputError("method 'subnet' needs surrogate_detector= (a MetzenDetector on the surrogate)")
        attack = DepthOnlyTypeII(MetzenScore(surrogate_detector), mask=depth_mask(), steps=steps)

        def run(xb: torch.Tensor, yb: torch.Tensor):
            _, adv, ok = attack(surrogate, xb, Misclassification(yb) & Undetected(surrogate_detector), eps=eps)
            return adv, ok

        return _batched(run, x.float(), y, batch_size)[0]
    raise InputError(f"method must be 'fgsm', 'bim' or 'subnet', got {method!r}")


def image_channels_unchanged(x: torch.Tensor, adv: torch.Tensor) -> bool:
    """True when RGB (channels 0-2) of ``adv`` equals ``x`` bit for bit."""
    a = x[:, :DEPTH_CHANNEL].float().numpy().view(np.uint32)
    b = adv[:, :DEPTH_CHANNEL].float().numpy().view(np.uint32)
    return bool(np.array_equal(a, b))


__all__ = ["DEPTH_CHANNEL", "DepthOnlyTypeII", "ShiftedScore", "depth_bim", "depth_fgsm", "depth_mask",
           "depth_type2", "image_channels_unchanged", "sub_safetynet", "transfer_attack", "type2_score"]
