"""``safetynet robustness``: attack the detectors (type I, type II, adaptive, black box) and report Table 4.

One typed entry point, :func:`run_robustness`; the CLI only builds a :class:`RobustnessConfig`
(and, for ``--dataset sceneproof``, the SceneProof task). The job:

1. takes a :class:`~safetynet.evaluation.task.Task`: given (e.g. SceneProof's RGB-D patches with
   their depth-only mask and calibrated detectors) or built from an image data set
   (:func:`~safetynet.evaluation.task.image_task`: the first ``n`` test images attacked, ``n_fit``
   seeded training images to fit on); the classifier may be an ``nn.Module``, a shipped name or a
   checkpoint folder;
2. unless the task brings its defences, fits them on natural vs BIM-L∞ (type-I) adversarials of
   the fit images: **Subnet Det** (Metzen et al.), **Det A** (SafetyNet on one layer) and
   **Det ensemble** (several layers, any fires; the paper's Det ABC); **Ori** is the bare classifier;
3. runs the rows of :data:`~safetynet.evaluation.rows.ATTACK_ROWS` on the engine
   (:class:`~safetynet.evaluation.engine.AttackBench`), computes the reliability flags, and
   writes ``report.md`` (Table-4 layout), ``results.json`` and ``figures/``.

The run is deterministic for a given config and thread count (seeded attacks and fits).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._job import prepare_output
from .._io import folder_sha256
from ..chunk_store import ChunkStore
from ..errors import InputError
from ..evaluation.defence import Defence, calibration_split
from ..evaluation.engine import AttackBench, task_cache_key
from ..evaluation.rows import DEFENCE_TITLES, DEFENCES, expand_rows
from ..evaluation.surrogates import SurrogatePool, craft_adversarials
from ..evaluation.task import Task, image_task
from .config import RobustnessConfig

log = logging.getLogger(__name__)

__all__ = ["RobustnessConfig", "default_layers", "fit_defences", "run_robustness"]


def default_layers(model: nn.Module) -> tuple[list[str], list[str]]:
    """(Det A layers, Det ensemble layers) for a model.

    ResNets: the last stage output ``layer3.{n-1}.relu`` and all of stage 3 (the paper's Det A
    on fc7 and Det ABC on fc7/fc6/pool5 correspond to the last and the last three late layers);
    VGG: fc7 and pool5/fc6/fc7; SmallCNN: its conv ReLU (``relu2``; the 64-unit ``fc1`` alone
    separates poorly) and both late ReLUs. Other models: the last late ReLU and all of them.
    """
    from ..models.small import SmallCNN

    late = list(getattr(model, "late_relus", ()) or ())
    if not late:
        raise InputError("the model has no late_relus; give layers_a and layers_ensemble explicitly")
    if isinstance(model, SmallCNN):
        return ["relu2"], late
    return [late[-1]], late


def fit_defences(cfg: RobustnessConfig, model: nn.Module, x_nat: torch.Tensor, x_adv: torch.Tensor
                 ) -> tuple[dict[str, Defence], dict[str, Any]]:
    """The four Table-4 columns, fitted on natural vs adversarial fit images; and what was fitted."""
    from ..detectors.metzen import MetzenDetector
    from ..detectors.svm import narrow_sigma_params
    from ..safetynet import SafetyNet

    layers_a, layers_ens = default_layers(model)
    layers_a = cfg.layers_a or layers_a
    layers_ens = cfg.layers_ensemble or layers_ens
    params = {"random_state": cfg.seed, "gamma": cfg.gamma, "sigma": cfg.sigma, "C": cfg.C, "solver": cfg.solver}
    specs = [("det_a", layers_a, params), ("det_ens", layers_ens, params)]
    if cfg.narrow_gamma is not None:
        specs.insert(1, ("det_a_narrow", layers_a, narrow_sigma_params(cfg.narrow_gamma, cfg.seed, cfg.C)))
    nets = {key: SafetyNet(model, layers=layers, levels=cfg.levels, pool=cfg.pool, rule="any", detector_params=p,
                           batch_size=cfg.batch_size).fit(x_nat, x_adv)
            for key, layers, p in specs}
    metzen = MetzenDetector(model, layer=layers_a[-1], epochs=cfg.metzen_epochs, seed=cfg.seed,
                            extract_batch_size=cfg.batch_size).fit(x_nat, x_adv)
    detectors = {"ori": None, "subnet": metzen, **nets}
    defences = {k: Defence(k, model, detectors[k], title=DEFENCE_TITLES[k], batch_size=cfg.batch_size)
                for k in DEFENCES if k in detectors}
    fitted = {
        "det_a": {"layers": list(layers_a), **_svm_info(nets["det_a"])},
        "det_ens": {"layers": list(layers_ens), **_svm_info(nets["det_ens"])},
        "subnet": {"layer": layers_a[-1], "epochs": cfg.metzen_epochs, "final_loss": metzen.loss_history_[-1]},
    }
    if "det_a_narrow" in nets:
        fitted["det_a_narrow"] = {"layers": list(layers_a), "gamma_multiplier": cfg.narrow_gamma,
                                  **_svm_info(nets["det_a_narrow"])}
    return defences, fitted


def _svm_info(net: Any) -> dict[str, Any]:
    return {"detectors": {n: {"gamma": d.gamma_, "sigma": d.sigma_, "C": d.C_, "support_vectors": len(d.support_vectors_),
                              "units": int(d.n_features_in_)} for n, d in net.detectors_.items()}}


def _task(cfg: RobustnessConfig, out: Path) -> Task:
    if cfg.dataset == "sceneproof":
        raise InputError("the sceneproof task comes from its bundle: run `safetynet robustness --dataset sceneproof`, "
                         "or pass task=safetynet.sceneproof.task.sceneproof_task(...) to run_robustness")
    return image_task(cfg.dataset, cfg.model, n=cfg.n, n_fit=cfg.n_fit, seed=cfg.seed, data_dir=cfg.data_dir, out=out)


def _surrogate_specs(cfg: RobustnessConfig, task: Task) -> list[tuple[str, Any]]:
    if cfg.surrogate_models is not None:
        return [("model", m) for m in cfg.surrogate_models]
    if cfg.surrogate_archs is None and task.surrogates:
        return [("module", m) for m in task.surrogates.values()]
    return [("arch", a) for a in (cfg.surrogate_archs or [""])]


def run_robustness(cfg: RobustnessConfig, *, task: Task | None = None) -> dict[str, Any]:
    """Run the whole robustness evaluation; writes ``report.md``, ``results.json``, ``figures/`` to ``cfg.out``.

    ``task`` overrides the data set named in ``cfg`` (e.g. a SceneProof task, or your own
    :class:`~safetynet.evaluation.task.Task` around any ``nn.Module``). Returns the results dict
    (also in ``results.json``).
    """
    from ..evaluation.flags import compute_flags
    from .report import write_robustness_report

    cfg.validate()
    t_start = time.time()
    out = prepare_output(cfg.out)
    timings: dict[str, float] = {}
    t0 = time.time()
    task = task if task is not None else _task(cfg, out)
    if cfg.positive_class is not None:  # a copy: the caller's task stays as it was
        task = dataclasses.replace(task, positive_class=cfg.positive_class)
    model = task.model
    for p in model.parameters():
        p.requires_grad_(False)
    x_nat, y_nat, ok_fit = task.natural_fit(cfg.batch_size)
    eps = {norm: cfg.eps(norm, task.eps) for norm in cfg.norms}
    fit_eps = cfg.fit_budget(task.eps)
    timings["setup"] = round(time.time() - t0, 2)

    # -- defences: the task's own, or fitted on natural vs type-I (BIM-L∞) adversarials ----------
    t0 = time.time()
    if task.defences is not None:
        defences, fitted = task.defences, {"given": "the task's own defences (not refitted)"}
    else:
        # Natural fit images the detectors never see set their thresholds (Tramer et al. 2020's protocol).
        fit_part, cal_part = calibration_split(len(x_nat), cfg.calibration, cfg.seed) if cfg.calibrate else (torch.arange(len(x_nat)), None)
        x_fit_adv, fit_ok = craft_adversarials(model, x_nat[fit_part], y_nat[fit_part], fit_eps, batch_size=cfg.batch_size,
                                               mask=task.mask)
        if int(fit_ok.sum()) < 10:
            raise InputError(f"BIM at fit_eps={fit_eps:g} fooled only {int(fit_ok.sum())} fit images; raise fit_eps or n_fit")
        defences, fitted = fit_defences(cfg, model, x_nat[fit_part], x_fit_adv[fit_ok])
        fitted.update({"fit_eps_linf": fit_eps, "natural_fit": len(fit_part), "adversarial_fit": int(fit_ok.sum())})
        if cal_part is not None:
            for d in defences.values():
                if d.detector is not None:
                    d.calibrate(x_nat[cal_part], cfg.target_fpr)
            fitted["calibration"] = {"natural": len(cal_part), "fpr": cfg.target_fpr,
                                     "thresholds": {k: d.threshold for k, d in defences.items() if d.detector is not None}}
    timings["fit defences"] = round(time.time() - t0, 2)

    surrogates = SurrogatePool(_surrogate_specs(cfg, task), x_nat=x_nat, y_nat=y_nat, x_test=task.test_x,
                               y_test=task.test_y, fit_eps=fit_eps, seed=cfg.seed, out=out, task_name=task.name,
                               target_arch=task.arch, train_dataset=task.name if task.name in ("cifar10", "digits") else None,
                               data_dir=cfg.data_dir, epochs=cfg.surrogate_epochs, metzen_epochs=cfg.metzen_epochs,
                               batch_size=cfg.batch_size, mask=task.mask)
    # Finished cells are saved as they end, keyed by everything they depend on: an interrupted run resumes.
    # Surrogates given as checkpoint folders are keyed by their files' contents, not only their paths.
    cache_key = {**task_cache_key(task, x_nat, cfg),
                 "surrogate_files": {str(p): folder_sha256(p) for p in cfg.surrogate_models or () if isinstance(p, (str, Path))}}
    bench = AttackBench(task, defences, cfg.attack_settings(eps), surrogates, x_nat, y_nat,
                        store=ChunkStore(cfg.cache or out / "cache"), cache_key=cache_key)
    rows = expand_rows(cfg.attacks, surrogates.tags)
    res = bench.run(rows, cfg.norms)
    timings.update(res.timings)
    t0 = time.time()
    flags = compute_flags(bench, res.records)
    timings["flags"] = round(time.time() - t0, 2)

    clean_pred = res.clean_pred
    results: dict[str, Any] = {
        "model": task.model_source, "dataset": task.name, "provenance": task.provenance,
        "perturbed": task.perturbed, "positive_class": task.positive_class,
        "clean": {"n": len(task.test_y), "accuracy": float((clean_pred == task.test_y).float().mean()),
                  "fit_accuracy": float(ok_fit.float().mean())},
        "fitted": fitted, "records": res.records, "sweep": res.sweeps, "queries": res.queries,
        "flags": [f.as_dict() for f in flags], "timings": timings, "eps": eps, "surrogates": surrogates.info,
        "rows": {r.key: {"label": r.label, "kind": r.kind, "access": r.access, "per_defence": r.per_defence,
                         "surrogate": r.surrogate} for r in rows},
        "defences": {k: {"title": d.title, "detector": repr(d.detector), "threshold": d.threshold}
                     for k, d in defences.items()},
    }
    results["seconds"] = round(time.time() - t_start, 1)
    write_robustness_report(out, cfg, results)
    log.info("robustness report written to %s in %.0f s", out / "report.md", results["seconds"])
    return results

