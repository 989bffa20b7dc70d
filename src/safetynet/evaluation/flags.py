"""Evaluation-reliability flags: signs that a robustness number may be a false sense of security.

After AutoAttack's ``checks.py`` (Croce & Hein, "Reliable evaluation of adversarial robustness
with an ensemble of diverse parameter-free attacks", ICML 2020) and the advice of Carlini et al.,
"On Evaluating Adversarial Robustness" (2019). SafetyNet's detector quantizes activations, so its
gradient is zero almost everywhere: a gradient attack that "fails" against it proves nothing.
Each check returns a :class:`Flag`; triggered flags are logged as warnings and recorded in the
robustness report.

* :func:`check_zero_gradients` -- the fraction of inputs whose gradient (of a detector score or
  a loss) w.r.t. the input is below ``1e-12`` in norm;
* :func:`check_blackbox_beats_whitebox` -- a black-box attack succeeds more often than every
  white-box one at the same budget (the white-box gradients are then useless);
* :func:`check_monotone_in_eps` -- success that drops as the budget grows (an attack that
  does not find what a smaller budget found is not converging);
* :func:`check_unbounded_success` -- success below 100 % at the largest budget, where any
  image could be replaced by a natural image of another class;
* :func:`check_randomness` -- two evaluations of the defence on the same input differ;
* :func:`check_softmax_output` -- the model returns probabilities, not logits (saturated
  softmax hides the gradient).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import InputError

log = logging.getLogger(__name__)

__all__ = ["Flag", "check_blackbox_beats_whitebox", "check_monotone_in_eps", "check_randomness",
           "check_softmax_output", "check_unbounded_success", "check_zero_gradients", "log_flags",
           "safetynet_real_score", "compute_flags"]


@dataclass
class Flag:
    """One reliability check: ``triggered`` means the evaluation may be unreliable, ``detail`` says why."""

    name: str
    triggered: bool
    detail: str
    value: float | None = None  # the measured quantity (a fraction, a rate gap, ...)
    context: dict[str, Any] = field(default_factory=dict)  # what was checked (detector, attack, ...)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def log_flags(flags: Sequence[Flag]) -> None:
    """Log every triggered flag as a warning and the others at debug level."""
    for f in flags:
        if f.triggered:
            log.warning("reliability flag %s: %s", f.name, f.detail)
        else:
            log.debug("check %s passed: %s", f.name, f.detail)


def safetynet_real_score(net: Any) -> Callable[[torch.Tensor], torch.Tensor]:
    """The deployed SafetyNet score as a torch function of the images, with its true gradient.

    Hard quantizer (derivative zero a.e.), exact RBF kernel, layers combined by the rule: what
    ``torch.autograd`` sees when an attacker backpropagates through the real detector.
    """
    from ..attacks.bpda import BPDAScore

    score = BPDAScore(net, backward="zero")

    def fn(x: torch.Tensor) -> torch.Tensor:
        _, s = score(x)
        return s.amax(1) if net.rule == "any" else s.amin(1)

    return fn


def check_zero_gradients(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, *, tol: float = 1e-12,
                         max_fraction: float = 0.0, name: str = "zero_gradients", batch_size: int = 256) -> Flag:
    """Flag when more than ``max_fraction`` of the inputs have ``||d fn(x)_i / d x_i|| < tol``.

    ``fn`` maps images (N, C, H, W) to one differentiable value per image (N,), e.g.
    :func:`safetynet_real_score` or a smoothed surrogate. An output that does not depend on
    ``x`` in the graph counts as a zero gradient. Gradients are taken with
    ``torch.autograd.grad`` w.r.t. ``x`` only (no parameter ``.grad`` is touched).
    """
    if not isinstance(x, torch.Tensor) or x.ndim < 2 or len(x) == 0:
        raise InputError("x must be a non-empty batch of images (N, C, H, W)")
    norms = []
    for i in range(0, len(x), batch_size):
        xb = x[i:i + batch_size].detach().clone().requires_grad_(True)
        out = fn(xb)
        if out.shape != (len(xb),):
            raise InputError(f"fn must return one value per image, shape ({len(xb)},), got {tuple(out.shape)}")
        if not out.requires_grad:
            norms.append(torch.zeros(len(xb), dtype=torch.float64))
            continue
        (g,) = torch.autograd.grad(out.sum(), xb, allow_unused=True)
        norms.append(torch.zeros(len(xb), dtype=torch.float64) if g is None else g.flatten(1).double().norm(dim=1))
    norm = torch.cat(norms)
    frac = float((~torch.isfinite(norm) | (norm < tol)).double().mean())
    triggered = frac > max_fraction
    detail = (f"{frac:.1%} of {len(norm)} inputs have a gradient norm below {tol:g} (median {float(norm.median()):.3g})"
              + ("; gradient attacks through this path see nothing: use BPDA, smoothing or black-box attacks"
                 if triggered else ""))
    return Flag(name, triggered, detail, frac, {"tol": tol, "n": len(norm)})


def check_blackbox_beats_whitebox(success: Mapping[str, float], kinds: Mapping[str, str], *, margin: float = 0.0,
                                  name: str = "blackbox_beats_whitebox", context: dict | None = None) -> Flag:
    """Flag when the best black-box success exceeds the best white-box success by more than ``margin``.

    ``success[attack]`` is a rate at one budget; ``kinds[attack]`` is ``"white"`` or ``"black"``.
    """
    white = {a: float(s) for a, s in success.items() if kinds.get(a) == "white" and s is not None and np.isfinite(s)}
    black = {a: float(s) for a, s in success.items() if kinds.get(a) == "black" and s is not None and np.isfinite(s)}
    if not white or not black:
        return Flag(name, False, "needs at least one white-box and one black-box result", None, dict(context or {}))
    bw, bb = max(white, key=white.get), max(black, key=black.get)
    gap = black[bb] - white[bw]
    triggered = gap > margin
    detail = (f"best black-box {bb} {black[bb]:.1%} vs best white-box {bw} {white[bw]:.1%}"
              + ("; the white-box attacks are not using the model's gradients effectively" if triggered else ""))
    return Flag(name, triggered, detail, gap, dict(context or {}))


def check_monotone_in_eps(eps: Sequence[float], success: Sequence[float], *, tol: float = 0.0,
                          name: str = "success_not_monotone", context: dict | None = None) -> Flag:
    """Flag when success at a larger budget is lower (by more than ``tol``) than at a smaller one."""
    e = np.asarray(eps, dtype=float)
    s = np.asarray(success, dtype=float)
    if e.shape != s.shape or e.ndim != 1:
        raise InputError(f"eps and success must be equally long 1-D sequences, got {e.shape} and {s.shape}")
    order = np.argsort(e, kind="stable")
    s = s[order]
    best_so_far = np.maximum.accumulate(s)
    drop = float((best_so_far - s).max()) if s.size else 0.0
    triggered = drop > tol
    where = int(np.argmax(best_so_far - s)) if s.size else 0
    detail = (f"success drops by {drop:.1%} at eps={e[order][where]:g}; a larger budget should never do worse"
              if triggered else "success is non-decreasing in eps")
    return Flag(name, triggered, detail, drop, dict(context or {}))


def check_unbounded_success(eps: Sequence[float], success: Sequence[float], *, target: float = 1.0,
                            name: str = "no_full_success_at_large_eps", context: dict | None = None) -> Flag:
    """Flag when success at the largest budget stays below ``target``.

    With an unlimited budget a type-II attacker can always win (replace the image by an
    accepted natural image of another class), so a curve that never reaches 100 % means the
    attack, not the defence, is the bottleneck: the numbers are a lower bound only.
    """
    e = np.asarray(eps, dtype=float)
    s = np.asarray(success, dtype=float)
    if e.size == 0 or e.shape != s.shape:
        raise InputError("eps and success must be equally long, non-empty sequences")
    top = float(s[np.argmax(e)])
    triggered = top < target
    detail = (f"success at the largest eps={e.max():g} is {top:.1%} < {target:.0%}"
              + ("; the attack did not converge, treat its success rates as lower bounds" if triggered else ""))
    return Flag(name, triggered, detail, top, dict(context or {}))


def check_randomness(predict: Callable[[torch.Tensor], Any], x: torch.Tensor, *, name: str = "randomized_defence",
                     context: dict | None = None) -> Flag:
    """Flag when two evaluations of ``predict`` on the same inputs differ (a randomised defence needs EOT)."""
    a = predict(x)
    b = predict(x)
    same = _equal(a, b)
    detail = ("two evaluations on the same inputs differ: average gradients over the randomness (EOT) and "
              "report the worst case over repeated evaluations" if not same else "two evaluations agree exactly")
    return Flag(name, not same, detail, None, dict(context or {}))


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return torch.equal(torch.as_tensor(a), torch.as_tensor(b))
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return bool(np.array_equal(np.asarray(a), np.asarray(b), equal_nan=True))
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if hasattr(a, "__dataclass_fields__") and type(a) is type(b):
        return all(_equal(getattr(a, k), getattr(b, k)) for k in a.__dataclass_fields__)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_equal(u, v) for u, v in zip(a, b))
    return a == b


def check_softmax_output(model: nn.Module, x: torch.Tensor, *, name: str = "softmax_output") -> Flag:
    """Flag when the model's outputs are non-negative and sum to 1 (probabilities instead of logits)."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(x)
    finally:
        model.train(was_training)
    probs = bool((out >= 0).all() and torch.allclose(out.sum(1), torch.ones(len(out), dtype=out.dtype), atol=1e-5))
    detail = ("the model outputs probabilities: attack losses on saturated softmax lose their gradient; "
              "attack the logits" if probs else "the model outputs logits")
    return Flag(name, probs, detail)


def compute_flags(bench: Any, records: Sequence[dict[str, Any]]) -> list[Flag]:
    """Every reliability check of this module on one run of an :class:`~safetynet.evaluation.engine.AttackBench`."""
    from ..attacks.adaptive import BPDAScore
    from ..attacks.bpda import safetynet_of
    from ..attacks.detector_scores import as_detector_score
    from ..attacks.joint_pgd import classifier_loss
    from .defence import smoothable
    from .rows import base_row

    flags: list[Flag] = []
    x, y, s = bench.task.test_x, bench.task.test_y, bench.settings
    xs = x[: min(len(x), 64)]
    ys = y[: len(xs)]
    lam = s.sharpness[len(s.sharpness) // 2]
    gs = s.gamma_scale[-1]
    model = bench.model

    def combined(score):
        def fn(xb):
            _, s = score(xb)
            return s.amax(1)
        return fn

    # kappa=inf: the raw CW margin, never clamped (a clamped margin is flat on images already misclassified)
    flags.append(check_zero_gradients(lambda xb: classifier_loss(model(xb), ys[: len(xb)], False, "cw", math.inf), xs,
                                      name="zero_gradients_classifier"))
    flags[-1].context["defence"] = "ori"
    for dkey, d in bench.defences.items():
        target = d.target
        if target is None:
            continue
        checks = []
        # The hard path and BPDA's surrogate exist for SafetyNet codes (a calibrated one: its view) only.
        view = safetynet_of(target)
        if view is not None:
            checks += [("zero_gradients_real_path", safetynet_real_score(view)),
                       ("zero_gradients_bpda_surrogate", combined(BPDAScore(view, "identity")))]
        # The surrogate the paper's attack differentiates (for a Metzen subnetwork: the network itself).
        checks.append(("zero_gradients_smooth_surrogate" if smoothable(target) else f"zero_gradients_{dkey}",
                       combined(as_detector_score(target, lam, gs))))
        for name, fn in checks:
            f = check_zero_gradients(fn, xs, name=name)
            f.context.update({"defence": dkey})
            if name == "zero_gradients_smooth_surrogate":
                f.context.update({"sharpness": lam, "gamma_scale": gs})
            flags.append(f)
    for dkey, d in bench.defences.items():
        flags.append(check_randomness(lambda xb, d=d: d.evaluate(xb), xs, context={"defence": dkey}))
    flags.append(check_softmax_output(model, xs))

    attacked = [r for r in records if r["attack"] != "none" and r["success"] is not None]
    # Black box beating white box, per defence, norm and eps. Each row counts with its best success
    # at any budget up to eps (an adversarial found with a smaller budget is inside the larger ball),
    # so rows that stopped early (100 % before an extended eps) still take part.
    by_row: dict[tuple, list[tuple[float, float]]] = {}
    meta: dict[str, dict] = {}
    for r in attacked:
        by_row.setdefault((r["defence"], r["norm"], r["attack"]), []).append((r["eps"], r["success"]))
        meta[r["attack"]] = r
    grid: dict[tuple, set] = {}
    for (dkey, norm, _), pts in by_row.items():
        grid.setdefault((dkey, norm), set()).update(e for e, _ in pts)
    for (dkey, norm), eps_set in sorted(grid.items()):
        for eps in sorted(eps_set):
            succ, kinds = {}, {}
            for (d2, n2, attack), pts in by_row.items():
                if d2 != dkey or n2 != norm or not (meta[attack]["kind"] == "II" or dkey == "ori"):
                    continue  # type-I rows only try to fool the classifier, not this detector
                upto = [s_ for e, s_ in pts if e <= eps + 1e-12]
                if upto:
                    succ[attack], kinds[attack] = max(upto), meta[attack]["access"]
            if any(k == "white" for k in kinds.values()) and any(k == "black" for k in kinds.values()):
                flags.append(check_blackbox_beats_whitebox(succ, kinds, margin=0.02,
                                                           context={"defence": dkey, "norm": norm, "eps": eps}))
    # monotone in eps, and full success at the largest eps (type-II attacks on detectors)
    series: dict[tuple, list[tuple[float, float]]] = {}
    for r in attacked:
        series.setdefault((r["attack"], r["defence"], r["norm"], r["kind"], r["access"]), []).append((r["eps"], r["success"]))
    for (attack, dkey, norm, kind, access), pts in sorted(series.items()):
        eps = [p[0] for p in pts]
        succ = [p[1] for p in pts]
        ctxd = {"attack": attack, "defence": dkey, "norm": norm}
        # Monotonicity is owed only where the attack pursues the very goal being scored: an adaptive
        # row against its own defence, or a white-box attack against the bare classifier. A type-I
        # or transfer attack is legitimately caught more often by a detector at larger budgets.
        if len(pts) > 1 and (base_row(attack).per_defence or (dkey == "ori" and access == "white")):
            flags.append(check_monotone_in_eps(eps, succ, tol=0.02, context=ctxd))
        if kind == "II" and dkey != "ori" and access == "white":
            flags.append(check_unbounded_success(eps, succ, context=ctxd))
    log_flags(flags)
    return flags
