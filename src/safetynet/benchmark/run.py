"""``safetynet benchmark``: every detector under one protocol (Tramèr et al. 2020 / Bryniarski et al. 2022).

One typed entry point, :func:`run_benchmark`; the CLI only builds a :class:`BenchmarkConfig`.

1. **Task.** The first ``n`` test images (unshuffled) are attacked; ``n_fit`` seeded training
   images that the classifier gets right are the natural fit images, of which a share
   ``calibration`` is held out and never seen by any detector.
2. **Detectors.** Each detector column (SafetyNet, the Metzen subnetwork, the confidence
   baseline, Mahalanobis, LID, KD+BU, and any fitted :class:`Defence` the caller passes) is fitted
   once per training attack on natural vs adversarial fit images, then its threshold is set on the
   held-out clean images at ``target_fpr`` (:meth:`Defence.calibrate`).
3. **(a) Type-I detection.** Every test attack (including CW-L2 and Square, which no detector is
   trained on) is run once against the bare classifier; per detector and training attack: ROC AUC
   on clean vs successful adversarial test images, and the TPR at the calibrated threshold (with
   the FPR it gives on the clean test images). The trained-on-one / tested-on-others matrix.
4. **(b) Adaptive attacks.** The detectors trained on ``adaptive_train_attack`` face the engine's
   white-box rows (:class:`~safetynet.evaluation.engine.AttackBench`): the paper's smoothed attack
   (with its lambda/sigma sweep on SafetyNet; joint PGD through the exact score on differentiable
   detectors), BPDA (straight-through SafetyNet's quantizer; joint PGD with a hinge elsewhere) and
   orthogonal PGD, at every L∞ and L2 budget. Success = misclassified *and* accepted at the
   calibrated threshold; each detector's curve is its strongest row per budget.
5. **(c)** The engine's reliability flags (:func:`~safetynet.evaluation.flags.compute_flags`).
6. **(d)** Tramèr's consistency check (:mod:`safetynet.benchmark.consistency`).

Writes ``report.md``, ``results.json`` (with argv, command and git commit) and ``figures/``.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

import numpy as np
import torch
from torch import nn

from .._job import prepare_output
from ..chunk_store import ChunkStore, fingerprint, model_fingerprint
from ..errors import InputError
from ..evaluation.defence import Defence, calibration_split
from ..metrics import roc_auc
from .config import BenchmarkConfig

log = logging.getLogger(__name__)

__all__ = ["BenchmarkConfig", "fit_detector", "run_benchmark", "type1_attack"]

TITLES = {"safetynet": "SafetyNet", "safetynet-narrow": "SafetyNet (narrow σ)", "metzen": "Metzen subnet", "confidence": "Confidence", "mahalanobis": "Mahalanobis",
          "lid": "LID", "kdbu": "KD+BU"}


def type1_attack(name: str, cfg: BenchmarkConfig) -> tuple[Any, float | None]:
    """(attack, eps) of a type-I attack as the benchmark runs it (eps None: an unbounded minimisation attack)."""
    from ..attacks import BIM, CWL2, FGSM, PGD, DeepFool, Square

    eps, steps = cfg.type1_eps, cfg.steps
    if name == "fgsm":
        return FGSM(), eps
    if name == "bim":
        return BIM(steps=steps, step_size=2.5 * eps / steps), eps
    if name == "pgd":
        return PGD(steps=steps, step_size=2.5 * eps / steps, seed=cfg.seed), eps
    if name == "deepfool":
        return DeepFool(steps=cfg.deepfool_steps), None
    if name == "cw-l2":
        # initial_c 0.1 instead of the reference's 1e-3: with a handful of search rounds the first
        # rounds at c = 1e-3 and 1e-2 rarely succeed on a CIFAR classifier and would be wasted.
        return CWL2(steps=cfg.cw_steps, binary_search_steps=cfg.cw_search, initial_c=0.1), None
    if name == "square":
        return Square(n_queries=cfg.square_queries, seed=cfg.seed), eps
    raise InputError(f"unknown type-I attack {name!r}")


def _craft(name: str, cfg: BenchmarkConfig, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
           store: ChunkStore, model_fp: str) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """(adversarials, success mask, extras) of type-I attack ``name`` on ``x`` against the bare classifier.

    Read from ``store`` when this attack (same parameters) already ran on the same images and model.
    """
    from ..attacks import distances
    from ..attacks.batched import attack_in_batches

    attack, eps = type1_attack(name, cfg)
    key = {"model": model_fp, "images": fingerprint(x.numpy()), "labels": fingerprint(y.numpy()),
           "attack": repr(attack), "eps": eps, "batch_size": cfg.batch_size}
    hit = store.get("type1", key)
    if hit is not None:
        log.info("type-I %s on %d images: read from the cache", name, len(x))
        clipped, ok = torch.from_numpy(hit["clipped"]), torch.from_numpy(hit["success"])
        queries = torch.from_numpy(hit["queries"]) if "queries" in hit else None
    else:
        extras = ("queries_",) if name == "square" else ()
        res = attack_in_batches(attack, model, x, y, eps=eps, batch_size=cfg.batch_size, extras=extras)
        clipped, ok, queries = res.clipped, res.success, res.extras.get("queries")
        store.put("type1", key, {"clipped": clipped.numpy(), "success": ok.numpy()}
                  | ({} if queries is None else {"queries": queries.numpy()}))
    info: dict[str, Any] = {"eps": eps, "success": float(ok.float().mean()) if len(ok) else None, "attack": repr(attack)}
    if ok.any():
        d = distances(x[ok], clipped[ok])
        info.update({"median_l2": float(d["l2"].median()), "median_linf": float(d["linf"].median())})
    if queries is not None:
        info["median_queries"] = float(queries[ok].float().median()) if ok.any() else None
    return clipped, ok, info


def fit_detector(name: str, cfg: BenchmarkConfig, model: nn.Module, x_nat: torch.Tensor, y_nat: torch.Tensor,
                 x_adv: torch.Tensor) -> Any:
    """A fitted detector ``name`` (see :data:`~safetynet.benchmark.config.DETECTORS`) on natural vs adversarial images."""
    from ..detectors import KDBUDetector, LIDDetector, MahalanobisDetector, MetzenDetector
    from ..detectors.confidence import ConfidenceDetector
    from ..evaluation.defence import ConfidenceOnImages
    from ..detectors.svm import narrow_sigma_params
    from ..models.small import SmallCNN
    from ..safetynet import SafetyNet

    late = list(getattr(model, "late_relus", ()) or ())
    if name in ("safetynet", "safetynet-narrow", "metzen") and not late:
        raise InputError(f"the {name} detector taps the model's late_relus; this model has none")
    # SmallCNN's 64-unit fc1 alone separates poorly (the robustness job's default_layers): its conv ReLU.
    layer = "relu2" if isinstance(model, SmallCNN) else (late[-1] if late else None)
    bs = cfg.batch_size
    if name == "safetynet":
        return SafetyNet(model, layers=[layer], pool=4, detector_params={"random_state": cfg.seed},
                         batch_size=bs).fit(x_nat, x_adv)
    if name == "safetynet-narrow":
        # The same detector as the robustness job's "Det A (narrow σ)".
        return SafetyNet(model, layers=[layer], pool=4, detector_params=narrow_sigma_params(cfg.narrow_gamma, cfg.seed),
                         batch_size=bs).fit(x_nat, x_adv)
    if name == "metzen":
        return MetzenDetector(model, layer=layer, epochs=cfg.metzen_epochs, seed=cfg.seed,
                              extract_batch_size=bs).fit(x_nat, x_adv)
    if name == "confidence":  # fitted on natural logits only; its own threshold is replaced by calibration
        from ..attacks.batched import predict

        det = ConfidenceDetector(target_fpr=cfg.target_fpr).fit(predict(model, x_nat, bs)[1])
        return ConfidenceOnImages(model, det, batch_size=bs)
    if name == "mahalanobis":
        return MahalanobisDetector(model, seed=cfg.seed, batch_size=bs).fit(x_nat, x_adv, natural_labels=y_nat)
    if name == "lid":
        ref = min(100, max(3, len(x_nat) // 3))
        return LIDDetector(model, k=min(20, ref - 1), reference_size=ref, seed=cfg.seed, batch_size=bs).fit(x_nat, x_adv)
    if name == "kdbu":
        return KDBUDetector(model, mc_samples=cfg.mc_samples, seed=cfg.seed, batch_size=bs).fit(x_nat, x_adv,
                                                                                                natural_labels=y_nat)
    raise InputError(f"unknown detector {name!r}")


def run_benchmark(cfg: BenchmarkConfig, defences: dict[str, Defence] | None = None) -> dict[str, Any]:
    """Run the whole benchmark; writes ``report.md``, ``results.json``, ``figures/`` to ``cfg.out``.

    ``cfg.model`` may be any ``nn.Module`` taking [0, 1] images. ``defences`` adds your own
    columns: fitted :class:`Defence` objects around the same classifier (their detector needs
    ``decision_function(images)``, higher = adversarial, and for the adaptive attacks a
    differentiable ``logits_and_score_torch(x)``); the job calibrates their thresholds on the
    same held-out clean images and runs every attack on them (as "trained on: given").
    Returns the results dict (also in ``results.json``).
    """
    from ..evaluation.engine import AttackBench, AttackSettings, task_cache_key
    from ..evaluation.flags import compute_flags
    from ..evaluation.rows import expand_rows
    from ..evaluation.task import image_task
    from .consistency import consistency_checks
    from .report import write_benchmark_report

    cfg.validate()
    defences = dict(defences or {})
    for key, d in defences.items():
        if not isinstance(d, Defence) or d.detector is None:
            raise InputError(f"defences[{key!r}] must be a Defence with a detector, got {d!r}")
        if key in cfg.detectors or key == "ori":
            raise InputError(f"defence key {key!r} clashes with a built-in column; rename it")
    t_start = time.time()
    out = prepare_output(cfg.out)
    timings: dict[str, float] = {}
    t0 = time.time()
    task = image_task(cfg.dataset, cfg.model, n=cfg.n, n_fit=cfg.n_fit, seed=cfg.seed, data_dir=cfg.data_dir, out=out)
    model = task.model
    for p in model.parameters():
        p.requires_grad_(False)
    # Finished attacks are saved as they end: an interrupted run resumes (type-I crafts, adaptive cells).
    store, model_fp = ChunkStore(cfg.cache or out / "cache"), model_fingerprint(model)
    x_nat, y_nat, _ = task.natural_fit(cfg.batch_size)
    fit_idx, cal_idx = calibration_split(len(x_nat), cfg.calibration, cfg.seed)
    xf, yf, x_cal = x_nat[fit_idx], y_nat[fit_idx], x_nat[cal_idx]
    clean_pred = Defence("ori", model).predict(task.test_x)
    correct = torch.as_tensor(clean_pred) == task.test_y
    timings["setup"] = round(time.time() - t0, 2)

    # -- detectors: one fit per (detector, training attack), thresholds at target_fpr on held-out clean images
    t0 = time.time()
    train_adv: dict[str, dict[str, Any]] = {}
    fitted: dict[tuple[str, str], Defence] = {}
    for a in cfg.train_attacks:
        adv, ok, info = _craft(a, cfg, model, xf, yf, store, model_fp)
        if int(ok.sum()) < 10:
            raise InputError(f"training attack {a} fooled only {int(ok.sum())} fit images; raise --n-fit or --type1-eps")
        train_adv[a] = info | {"n_adversarial": int(ok.sum())}
        for det in cfg.detectors:
            if det == "confidence" and ("confidence", cfg.train_attacks[0]) in fitted:
                # Natural images only: the same detector for every training attack.
                fitted["confidence", a] = fitted["confidence", cfg.train_attacks[0]]
                continue
            log.info("fitting %s on %s", det, a)
            detector = fit_detector(det, cfg, model, xf, yf, adv[ok])
            fitted[det, a] = Defence(f"{det}@{a}", model, detector, title=TITLES[det],
                                     batch_size=cfg.batch_size).calibrate(x_cal, cfg.target_fpr)
    for key, d in defences.items():
        fitted[key, "given"] = d.calibrate(x_cal, cfg.target_fpr)
    timings["fit detectors"] = round(time.time() - t0, 2)

    # -- (a) type-I detection, trained on one, tested on all
    t0 = time.time()
    xt, yt = task.test_x, task.test_y
    natural_scores = {k: d.score(xt[correct]) for k, d in fitted.items()}
    detection, roc, test_adv = [], {}, {}
    for a in cfg.test_attacks:
        adv, ok, info = _craft(a, cfg, model, xt, yt, store, model_fp)
        ok = ok & correct
        test_adv[a] = info | {"n_adversarial": int(ok.sum())}
        if not ok.any():
            log.warning("test attack %s fooled no correctly classified test image; no detection numbers", a)
            continue
        for (det, train), d in fitted.items():
            s_nat, s_adv = natural_scores[det, train], d.score(adv[ok])
            detection.append({"detector": det, "trained_on": train, "tested_on": a, "auc": roc_auc(s_nat, s_adv),
                              "tpr": float(np.mean(s_adv > d.threshold)), "fpr": float(np.mean(s_nat > d.threshold)),
                              "n_natural": len(s_nat), "n_adversarial": len(s_adv), "threshold": d.threshold})
            if train in (cfg.adaptive_train_attack, "given"):
                roc.setdefault(a, {})[det] = (s_nat, s_adv)
    timings["type-I detection"] = round(time.time() - t0, 2)

    # -- (b) adaptive attacks on the detectors trained on adaptive_train_attack (+ the caller's)
    t0 = time.time()
    adaptive_defences = {"ori": Defence("ori", model, title="Ori", batch_size=cfg.batch_size)}
    for (det, train), d in fitted.items():
        if train in (cfg.adaptive_train_attack, "given"):
            d.key = det
            adaptive_defences[det] = d
    eps = {"linf": sorted(cfg.eps_linf), "l2": sorted(cfg.eps_l2)}
    settings = AttackSettings(eps={k: v for k, v in eps.items() if k in cfg.norms}, steps=cfg.steps,
                              sharpness=list(cfg.sharpness), gamma_scale=list(cfg.gamma_scale), extend_eps=0,
                              target_fpr=cfg.target_fpr, batch_size=cfg.batch_size, seed=cfg.seed)
    # The first n_adaptive test images (all of them when n <= n_adaptive) face the adaptive rows.
    n_adaptive = min(cfg.n_adaptive, len(task.test_y))
    adaptive_task = dataclasses.replace(task, test_x=task.test_x[:n_adaptive], test_y=task.test_y[:n_adaptive])
    bench = AttackBench(adaptive_task, adaptive_defences, settings, None, x_nat, y_nat, store=store,
                        cache_key=task_cache_key(adaptive_task, x_nat, cfg))
    res = bench.run(expand_rows(list(cfg.adaptive), []), list(cfg.norms))
    timings.update({f"adaptive {k}": v for k, v in res.timings.items()})
    flags = compute_flags(bench, res.records)
    timings["adaptive"] = round(time.time() - t0, 2)

    curves = strongest_curves(res.records)
    clean_acc = float(correct.float().mean())
    clean_acc_adaptive = float(correct[:n_adaptive].float().mean())  # what the consistency check implies from
    results: dict[str, Any] = {
        "model": task.model_source, "dataset": task.name, "provenance": task.provenance,
        "clean": {"n": len(yt), "accuracy": clean_acc, "n_adaptive": n_adaptive,
                  "accuracy_adaptive": clean_acc_adaptive},
        "split": {"natural_fit": len(fit_idx), "calibration": len(cal_idx), "target_fpr": cfg.target_fpr},
        "train_adversarials": train_adv, "test_adversarials": test_adv,
        "thresholds": {f"{det}@{train}": d.threshold for (det, train), d in fitted.items()},
        "detection": detection, "adaptive_records": res.records, "sweep": res.sweeps, "strongest": curves,
        "flags": [f.as_dict() for f in flags],
        "consistency": consistency_checks(curves, clean_acc_adaptive),
        "timings": timings,
    }
    results["seconds"] = round(time.time() - t_start, 1)
    write_benchmark_report(out, cfg, results, roc)
    log.info("benchmark report written to %s in %.0f s", out / "report.md", results["seconds"])
    return results


def strongest_curves(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (defence, norm, eps): the success of the strongest adaptive row, and which row it was."""
    best: dict[tuple[str, str, float], dict[str, Any]] = {}
    for r in records:
        if r["attack"] == "none" or r["success"] is None:
            continue
        key = (r["defence"], r["norm"], r["eps"])
        if key not in best or r["success"] > best[key]["success"]:
            best[key] = {"defence": r["defence"], "norm": r["norm"], "eps": r["eps"], "success": r["success"],
                         "attack": r["attack"]}
    return [best[k] for k in sorted(best)]
