"""``safetynet robustness``: attack the detectors (type I, type II, adaptive, black box) and report Table 4.

One typed entry point, :func:`run_robustness`, does the whole evaluation (the CLI only builds a
:class:`RobustnessConfig`):

1. load the classifier (or, for ``dataset="digits"`` without a model, train a tiny one);
   natural *fit* images = a seeded subset of the training split the classifier gets right;
   *test* images = the first ``n`` images of the test split, unshuffled (RobustBench's rule).
   ``dataset="sceneproof"`` attacks a SceneProof bundle's RGB-D classifier instead: its
   validation patches (real and the four training fake kinds), a stratified ``n`` attacked and
   ``n_fit`` others to fit on; every attack then changes **only the depth channel** (the
   paper's threat model) and the tables add the paper's F→T / T→F ("true" = real);
2. fit the defences on natural vs BIM-L∞ (type-I) adversarials of the fit images:
   **Subnet Det** (Metzen et al.'s subnetwork), **Det A** (SafetyNet on one layer) and
   **Det ensemble** (SafetyNet on several layers, rejecting when any fires; the paper's Det ABC);
   **Ori** is the bare classifier;
3. run every attack family at every budget of each norm against every defence: type-I BIM;
   the paper's smoothed type-II attack (a lambda / sigma sweep, best per image); BPDA;
   orthogonal PGD; code matching; HopSkipJump on the hard-label output (query-counted);
   transfer attacks from one or more surrogates (FGSM, BIM, "Finetune TF", "Subnet Det TF"; one
   row per surrogate, keyed ``transfer-bim@<tag>`` when there are several). Type-II
   budgets are extended (doubled) until success reaches 100 % or ``extend_eps`` doublings;
4. evaluate each result with the *real* defence, run the reliability flags, and write
   ``report.md`` (Table-4 layout), ``results.json`` and ``figures/``.

The run is deterministic for a given config (seeded attacks and fits, one thread by default).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .._job import prepare_output
from ..errors import InputError
from ..evaluation.rows import ATTACK_ROWS, DEFENCES, TRANSFER_ROWS, AttackRow, base_row, expand_rows  # noqa: F401
from .config import RobustnessConfig

log = logging.getLogger(__name__)

__all__ = ["ATTACK_ROWS", "DEFENCES", "AttackRow", "RobustnessConfig", "base_row", "default_layers", "run_robustness"]


# ------------------------------------------------------------------------------------ set-up
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


def _load_data(cfg: RobustnessConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict]:
    """Fit images/labels (seeded subset of train), test images/labels (first n of test), provenance."""
    from ..data import load_dataset

    g = torch.Generator().manual_seed(cfg.seed)
    if cfg.dataset == "cifar10-sample":
        data = load_dataset("cifar10-sample", "test")
        if cfg.n + cfg.n_fit > len(data):
            raise InputError(f"n + n_fit = {cfg.n + cfg.n_fit} exceeds the {len(data)} images of the sample")
        rest = torch.arange(cfg.n, len(data))
        fit = rest[torch.randperm(len(rest), generator=g)[:cfg.n_fit]]
        xf, yf = data.images_u8[fit].float() / 255, data.labels[fit]
        xt, yt = data.images_u8[:cfg.n].float() / 255, data.labels[:cfg.n]
        return xf, yf, xt, yt, {"fit": "sample images after the first n (seeded subset)", "test": f"first {cfg.n} sample images"}
    train = load_dataset(cfg.dataset, "train", cfg.data_dir)
    test = load_dataset(cfg.dataset, "test", cfg.data_dir)
    if cfg.n > len(test) or cfg.n_fit > len(train):
        raise InputError(f"n={cfg.n} / n_fit={cfg.n_fit} exceed the data ({len(test)} test / {len(train)} train images)")
    fit = torch.randperm(len(train), generator=g)[:cfg.n_fit]
    return (train.images_u8[fit].float() / 255, train.labels[fit], test.images_u8[:cfg.n].float() / 255,
            test.labels[:cfg.n], {"fit": f"{cfg.n_fit} seeded train images", "test": f"first {cfg.n} test images"})


def _load_sceneproof(cfg: RobustnessConfig) -> tuple[nn.Module, str, nn.Module | None, tuple]:
    """(classifier, description, the bundle's transfer surrogate or None, (fit x/y, test x/y, provenance)).

    Patches of the bundle's *validation* frames (never its training frames, never held-out
    captures): real and the four training fake kinds, cut on the bundle's grid. ``n`` attacked
    patches are drawn stratified (half real, the rest spread over the fake kinds), ``n_fit``
    others fit the defences.
    """
    from ..sceneproof.evaluate import _stratified, validation_patches
    from ..sceneproof.model import SceneProof, default_model_dir

    bundle = SceneProof.load(cfg.model)
    val_fs, _, sets, nat = validation_patches(bundle, cfg.data_dir)  # the patches `sceneproof evaluate` reads
    rng = np.random.default_rng(cfg.seed)
    test = _stratified(nat, cfg.n, rng)
    rest = np.setdiff1d(np.arange(len(nat)), test)
    if cfg.n_fit > len(rest):
        raise InputError(f"n_fit={cfg.n_fit} exceeds the {len(rest)} validation patches left after the n attacked ones")
    fit = np.sort(rng.choice(rest, size=cfg.n_fit, replace=False))
    ti, fi = torch.as_tensor(test), torch.as_tensor(fit)
    source = str(bundle.directory or cfg.model or default_model_dir())
    counts = {k: int((nat.kind[test] == k).sum()) for k in sets}
    prov = {"fit": f"{cfg.n_fit} validation patches ({len(val_fs)} validation frames)",
            "test": f"{len(test)} validation patches, stratified: " + ", ".join(f"{k} {v}" for k, v in counts.items())}
    return (bundle.model.eval(), f"SceneProof bundle {source}", bundle.surrogate,
            (nat.images(fi), nat.y[fi], nat.images(ti), nat.y[ti], prov))


def _classifier(cfg: RobustnessConfig, out: Path) -> tuple[nn.Module, str, str | None]:
    """(model in eval mode, description, architecture name if known)."""
    from ..models import load_checkpoint, resolve_model

    if cfg.model is None:
        from .surrogates import train_surrogate

        model, metrics = train_surrogate("smallcnn", cfg.seed, dataset="digits", out=out / "classifier", epochs=4)
        return model, f"SmallCNN trained for this run ({out / 'classifier'}, test acc {metrics.get('test_acc', float('nan')):.3f})", "smallcnn"
    if Path(cfg.model).is_dir():
        model, meta = load_checkpoint(cfg.model)
        return model.eval(), str(cfg.model), meta.get("model", {}).get("arch")
    model, source = resolve_model(cfg.model)
    return model.eval(), source, None


@torch.no_grad()
def _predict(model: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    return torch.cat([model(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]).argmax(1)


# ------------------------------------------------------------------------------------ defences
class _Defence:
    """A Table-4 column: the classifier plus (maybe) a detector, evaluated on its real path."""

    def __init__(self, key: str, model: nn.Module, detector: Any) -> None:
        self.key, self.model, self.detector = key, model, detector

    def evaluate(self, x: torch.Tensor, batch_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(predicted labels, rejected, detector scores or None) for images ``x``."""
        from ..safetynet import SafetyNet

        if isinstance(self.detector, SafetyNet):
            out = self.detector.classify(x)
            return out.logits.argmax(1).numpy(), out.detected, out.score
        pred = _predict(self.model, x, batch_size).numpy()
        if self.detector is None:
            return pred, np.zeros(len(x), dtype=bool), None
        score = self.detector.decision_function(x)
        return pred, score > 0, score

    def criterion(self, y: torch.Tensor):
        from ..attacks import Misclassification
        from ..attacks.undetected import Undetected

        return Misclassification(y) if self.detector is None else Misclassification(y) & Undetected(self.detector)


# ------------------------------------------------------------------------------------ main job
def run_robustness(cfg: RobustnessConfig) -> dict[str, Any]:
    """Run the whole robustness evaluation; writes ``report.md``, ``results.json``, ``figures/`` to ``cfg.out``.

    Returns the results dict (also in ``results.json``).
    """
    from ..detectors.metzen import MetzenDetector
    from ..safetynet import SafetyNet
    from .report import write_robustness_report
    from .surrogates import craft_adversarials

    cfg.validate()
    t_start = time.time()
    out = prepare_output(cfg.out)
    timings: dict[str, float] = {}

    def tick(name: str, t0: float) -> None:
        timings[name] = round(timings.get(name, 0.0) + time.time() - t0, 2)

    t0 = time.time()
    mask: torch.Tensor | None = None
    bundle_surrogate: nn.Module | None = None
    if cfg.dataset == "sceneproof":
        from ..sceneproof.attacks import depth_mask
        from ..sceneproof.model import REAL

        if cfg.positive_class is None:
            cfg = dataclasses.replace(cfg, positive_class=REAL)  # the paper's "true" is a real capture
        model, model_source, bundle_surrogate, (xf, yf, xt, yt, provenance) = _load_sceneproof(cfg)
        arch, mask = "sceneproof", depth_mask(xt.shape[1])
    else:
        model, model_source, arch = _classifier(cfg, out)
        xf, yf, xt, yt, provenance = _load_data(cfg)
    for p in model.parameters():
        p.requires_grad_(False)
    ok_fit = _predict(model, xf, cfg.batch_size) == yf
    clean_pred = _predict(model, xt, cfg.batch_size)
    x_nat, y_nat = xf[ok_fit], yf[ok_fit]
    layers_a, layers_ens = default_layers(model)
    layers_a = cfg.layers_a or layers_a
    layers_ens = cfg.layers_ensemble or layers_ens
    fit_eps = cfg.fit_budget()
    # Largest useful L2 budget: the norm of an all-ones change of every element the attacks may touch.
    l2_cap = math.sqrt(xt[0].numel() if mask is None else int(torch.broadcast_to(mask, (1, *xt.shape[1:])).sum()))
    tick("setup", t0)

    # -- defences: fit on natural vs type-I (BIM-L∞) adversarials of the fit images ------------
    t0 = time.time()
    x_fit_adv, fit_ok = craft_adversarials(model, x_nat, y_nat, fit_eps, batch_size=cfg.batch_size, mask=mask)
    x_adv_fit = x_fit_adv[fit_ok]
    if len(x_adv_fit) < 10:
        raise InputError(f"BIM at fit_eps={fit_eps:g} fooled only {len(x_adv_fit)} fit images; raise fit_eps or n_fit")
    params = {"random_state": cfg.seed}
    net_a = SafetyNet(model, layers=layers_a, levels=cfg.levels, pool=cfg.pool, rule="any",
                      detector_params=params, batch_size=cfg.batch_size).fit(x_nat, x_adv_fit)
    net_ens = SafetyNet(model, layers=layers_ens, levels=cfg.levels, pool=cfg.pool, rule="any",
                        detector_params=params, batch_size=cfg.batch_size).fit(x_nat, x_adv_fit)
    metzen = MetzenDetector(model, layer=layers_a[-1], epochs=cfg.metzen_epochs, seed=cfg.seed,
                            extract_batch_size=cfg.batch_size).fit(x_nat, x_adv_fit)
    defences = {"ori": _Defence("ori", model, None), "subnet": _Defence("subnet", model, metzen),
                "det_a": _Defence("det_a", model, net_a), "det_ens": _Defence("det_ens", model, net_ens)}
    tick("fit defences", t0)
    fitted = {
        "fit_eps_linf": fit_eps, "natural_fit": len(x_nat), "adversarial_fit": len(x_adv_fit),
        "det_a": {"layers": list(layers_a), **_svm_info(net_a)}, "det_ens": {"layers": list(layers_ens), **_svm_info(net_ens)},
        "subnet": {"layer": layers_a[-1], "epochs": cfg.metzen_epochs, "final_loss": metzen.loss_history_[-1]},
    }

    ctx = _Context(cfg, model, defences, x_nat, y_nat, out, arch, xt, yt, mask=mask, bundle_surrogate=bundle_surrogate)
    rows_wanted = expand_rows(cfg.attacks, ctx.surrogate_tags)

    # -- the non-attack row ------------------------------------------------------------------------
    t0 = time.time()
    clean_eval = {k: d.evaluate(xt, cfg.batch_size) for k, d in defences.items()}
    natural_scores = {k: ev[2][(clean_pred == yt).numpy()] for k, ev in clean_eval.items() if ev[2] is not None}
    records: list[dict[str, Any]] = []
    for k, (pred, rej, _) in clean_eval.items():
        records.append(_record(cfg, "none", "Non-attack data", "-", "-", None, None, k, yt, clean_pred, pred, rej, None,
                               natural_scores.get(k)))
    tick("clean", t0)

    # -- the attacks --------------------------------------------------------------------------------
    sweeps: list[dict[str, Any]] = []
    queries: list[dict[str, Any]] = []
    for row in rows_wanted:
        for norm in (m for m in cfg.norms if m in row.norms):
            t0 = time.time()
            eps_done: list[float] = []
            eps_queue = list(cfg.eps(norm))
            extensions = 0
            hsja_cache: dict[str, dict[str, torch.Tensor]] = {"raw": {}, "queries": {}}
            while eps_queue:
                eps = eps_queue.pop(0)
                eps_done.append(eps)
                results = ctx.run_row(row, norm, eps, xt, yt, sweeps, hsja_cache)
                for dkey, res in results.items():
                    if res is None:
                        continue
                    adv, extra = res
                    if mask is not None:
                        # The threat model, checked on every result: nothing outside the mask moved.
                        extra = {**extra, "outside_mask_unchanged": bool(torch.equal(torch.where(mask.bool(), xt, adv), xt))}
                        if not extra["outside_mask_unchanged"]:
                            log.warning("%s (%s, eps=%g, %s) changed pixels outside the attack mask", row.key, norm, eps, dkey)
                    pred, rej, score = defences[dkey].evaluate(adv, cfg.batch_size)
                    records.append(_record(cfg, row.key, row.label, row.kind, row.access, norm, eps, dkey, yt, clean_pred,
                                           pred, rej, score, natural_scores.get(dkey), extensions > 0, extra))
                # Only adaptive type-II rows are extended: a type-I or transfer attack is not trying to
                # reach the detector's blind spots, so its curve need not reach 100 %.
                if not eps_queue and row.kind == "II" and row.per_defence and extensions < cfg.extend_eps:
                    worst = min((r["success"] for r in records if r["attack"] == row.key and r["norm"] == norm
                                 and r["eps"] == eps and r["defence"] != "ori" and r["success"] is not None), default=1.0)
                    cap = 1.0 if norm == "linf" else l2_cap
                    if worst < 1.0 and eps < cap:
                        eps_queue.append(min(2 * eps, cap))
                        extensions += 1
            for dkey, h in hsja_cache["queries"].items():
                queries.append({"defence": dkey, "norm": norm, "max_queries": cfg.hsja_queries,
                                "mean": float(h.float().mean()), "median": float(h.float().median()), "max": int(h.max())})
            tick(f"{row.key} ({norm})", t0)
            log.info("%s %s done in %.1f s", row.label, norm, timings[f"{row.key} ({norm})"])

    # -- reliability flags -----------------------------------------------------------------------------
    t0 = time.time()
    from .report import compute_flags

    flags = compute_flags(cfg, ctx, records, xt, yt)
    tick("flags", t0)

    results: dict[str, Any] = {
        "model": model_source, "dataset": cfg.dataset, "provenance": provenance,
        "perturbed": "depth channel only" if mask is not None else "all pixels",
        "clean": {"n": len(yt), "accuracy": float((clean_pred == yt).float().mean()),
                  "fit_accuracy": float(ok_fit.float().mean())},
        "fitted": fitted, "records": records, "sweep": sweeps, "queries": queries,
        "flags": [f.as_dict() for f in flags], "timings": timings, "eps": {m: cfg.eps(m) for m in cfg.norms},
        "surrogates": ctx.surrogate_info,
        "rows": {r.key: {"label": r.label, "kind": r.kind, "access": r.access, "per_defence": r.per_defence,
                         "surrogate": r.surrogate} for r in rows_wanted},
    }
    results["seconds"] = round(time.time() - t_start, 1)
    write_robustness_report(out, cfg, results)
    log.info("robustness report written to %s in %.0f s", out / "report.md", results["seconds"])
    return results


def _svm_info(net: Any) -> dict[str, Any]:
    return {"detectors": {n: {"gamma": d.gamma_, "sigma": d.sigma_, "C": d.C_, "support_vectors": len(d.support_vectors_),
                              "units": int(d.n_features_in_)} for n, d in net.detectors_.items()}}


def _record(cfg: RobustnessConfig, key: str, label: str, kind: str, access: str, norm: str | None, eps: float | None,
            defence: str, y: torch.Tensor, clean_pred: torch.Tensor, pred: np.ndarray, rejected: np.ndarray,
            score: np.ndarray | None, natural_score: np.ndarray | None, extended: bool = False,
            extra: dict | None = None) -> dict[str, Any]:
    """One (attack, norm, eps, defence) cell: the paper's rates and the adversary's success."""
    from ..evaluation.metrics import safetynet_rates, tpr_at_fpr

    yt = y.numpy()
    rates = safetynet_rates(yt, pred, rejected, positive_class=cfg.positive_class)
    correct = (clean_pred == y).numpy()
    win = (pred != yt) & ~rejected
    rec: dict[str, Any] = {
        "attack": key, "label": label, "kind": kind, "access": access, "norm": norm, "eps": eps, "defence": defence,
        "extended": extended,
        # type-II success over the images the classifier got right before the attack
        "success": float(win[correct].mean()) if correct.any() else None,
        **{k: v for k, v in rates.items()},
    }
    if score is not None and natural_score is not None and len(natural_score) and key != "none":
        fooled = pred != yt
        rec["tpr_at_fpr"] = tpr_at_fpr(natural_score, score[fooled], cfg.target_fpr) if fooled.any() else None
    if extra:
        rec.update(extra)
    return rec


class _Surrogate:
    """One transfer surrogate and what is derived from it (built on first use)."""

    def __init__(self, ctx: _Context, tag: str, kind: str, value: str, index: int) -> None:
        self.ctx, self.tag, self.kind, self.value, self.index = ctx, tag, kind, value, index
        self._model: nn.Module | None = None
        self._adv: torch.Tensor | None = None
        self._finetuned: nn.Module | None = None
        self._subnet: Any = None

    def model(self) -> nn.Module:
        if self._model is None:
            from ..models import load_checkpoint
            from .surrogates import train_surrogate

            ctx, cfg = self.ctx, self.ctx.cfg
            if self.kind == "bundle":
                model = ctx.bundle_surrogate
                info = {"source": "the SceneProof bundle's surrogate", "arch": type(model).__name__}
            elif self.kind == "model":
                model, meta = load_checkpoint(self.value)
                tc = meta.get("train_config") or {}
                info = {"source": self.value, "arch": meta.get("model", {}).get("arch"), "seed": tc.get("seed"),
                        "epochs": tc.get("epochs"), "test_acc": (meta.get("metrics") or {}).get("test_acc")}
            else:
                if cfg.dataset == "cifar10-sample":
                    raise InputError("the embedded CIFAR-10 sample has no training split for a surrogate; "
                                     "give --surrogate-model or drop the transfer attacks")
                arch = self.value or ctx.arch or "smallcnn"
                seed = _trained_surrogate_seed(cfg, self.index)
                sub = "surrogate" if len(ctx.surrogates) == 1 else f"surrogate-{self.tag}"
                model, metrics = train_surrogate(arch, seed, dataset=cfg.dataset, out=ctx.out / sub,
                                                 epochs=cfg.surrogate_epochs, data_dir=cfg.data_dir)
                info = {"source": "trained for this run", "arch": arch, "seed": seed, "epochs": cfg.surrogate_epochs,
                        "test_acc": metrics.get("test_acc")}
            model.eval()
            for p in model.parameters():
                p.requires_grad_(False)
            # Transfer rates mean little without the surrogate's own accuracy on the attacked images.
            info["attacked_images_accuracy"] = float((_predict(model, ctx.x_test, cfg.batch_size) == ctx.y_test)
                                                     .float().mean())
            ctx.surrogate_info[self.tag] = info
            self._model = model
        return self._model

    def adversarials(self) -> torch.Tensor:
        if self._adv is None:
            from .surrogates import craft_adversarials

            cfg = self.ctx.cfg
            adv, ok = craft_adversarials(self.model(), self.ctx.x_nat, self.ctx.y_nat, cfg.fit_budget(),
                                         batch_size=cfg.batch_size, mask=self.ctx.mask)
            if ok.sum() < 10:
                raise InputError(f"BIM fooled surrogate {self.tag} on only {int(ok.sum())} fit images; raise fit_eps")
            self._adv = adv[ok]
        return self._adv

    def finetuned(self) -> nn.Module:
        if self._finetuned is None:
            from .surrogates import finetune_with_adversarial_class

            self._finetuned = finetune_with_adversarial_class(self.model(), self.ctx.x_nat, self.ctx.y_nat,
                                                              self.adversarials(), seed=self.ctx.cfg.seed)
        return self._finetuned

    def subnet(self) -> Any:
        if self._subnet is None:
            from .surrogates import fit_subnet_detector

            layer = default_layers(self.model())[0][-1]
            self._subnet = fit_subnet_detector(self.model(), self.ctx.x_nat, self.adversarials(), layer=layer,
                                               epochs=self.ctx.cfg.metzen_epochs, seed=self.ctx.cfg.seed)
        return self._subnet


def _trained_surrogate_seed(cfg: RobustnessConfig, index: int) -> int:
    """Seed of the ``index``-th surrogate trained for the run (never the target's own seed)."""
    return cfg.seed + 1 + index


def _surrogate_tags(cfg: RobustnessConfig, target_arch: str | None, specs: list[tuple[str, str]]) -> list[str]:
    """Short, unique names for the surrogates: ``<arch>-seed<seed>`` where known, else the folder name."""
    from ..models.checkpoint import read_checkpoint_config

    tags = []
    for i, (kind, value) in enumerate(specs):
        if kind == "bundle":
            tag = "bundle-surrogate"
        elif kind == "model":
            meta = read_checkpoint_config(value)
            arch = (meta.get("model") or {}).get("arch")
            seed = (meta.get("train_config") or {}).get("seed")
            tag = f"{arch}-seed{seed}" if arch and seed is not None else Path(value).name
        else:
            tag = f"{value or target_arch or 'smallcnn'}-seed{_trained_surrogate_seed(cfg, i)}"
        while tag in tags:
            tag += "'"
        tags.append(tag)
    return tags


class _Context:
    """What the attack rows share: the defences, the fit data and the (lazily built) surrogates."""

    def __init__(self, cfg: RobustnessConfig, model: nn.Module, defences: dict[str, _Defence], x_nat: torch.Tensor,
                 y_nat: torch.Tensor, out: Path, arch: str | None, x_test: torch.Tensor, y_test: torch.Tensor, *,
                 mask: torch.Tensor | None = None, bundle_surrogate: nn.Module | None = None) -> None:
        self.cfg, self.model, self.defences = cfg, model, defences
        self.x_nat, self.y_nat = x_nat, y_nat
        self.x_test, self.y_test = x_test, y_test
        self.out, self.arch = out, arch
        self._ori_cache: dict[tuple[str, float], torch.Tensor] = {}  # CW-PGD on the bare classifier, by (norm, eps)
        self.surrogate_info: dict[str, dict[str, Any]] = {}  # tag -> provenance, filled when a surrogate is built
        self.mask = mask  # 0/1, where the attacks may change the input (SceneProof: the depth channel); None: everywhere
        self.bundle_surrogate = bundle_surrogate
        specs = cfg.surrogate_specs()
        if bundle_surrogate is not None and cfg.surrogate_models is None and cfg.surrogate_archs is None:
            specs = [("bundle", "")]  # the surrogate shipped with the SceneProof bundle
        self.surrogate_tags = _surrogate_tags(cfg, arch, specs)
        self.surrogates: dict[str, _Surrogate] = {}
        for i, (tag, (kind, value)) in enumerate(zip(self.surrogate_tags, specs)):
            self.surrogates[tag] = _Surrogate(self, tag, kind, value, i)

    # -- attacks ------------------------------------------------------------------------------
    def _white(self, row: AttackRow, dkey: str, norm: str) -> Any:
        """The white-box attack of ``row`` against defence ``dkey`` (None: not applicable)."""
        from ..attacks.adaptive import (
            BPDA,
            CodeMatching,
            JointPGD,
            OrthogonalPGD,
            SmoothedTypeII,
        )

        cfg = self.cfg
        det = self.defences[dkey].detector
        kw = {"distance": norm, "steps": cfg.steps, "seed": cfg.seed, "mask": self.mask}
        if det is None:
            # Against the bare classifier every adaptive attack is the same CW-PGD.
            return None if row.key == "code-matching" else JointPGD(None, **kw)
        if row.key == "type2":
            return SmoothedTypeII(det, sharpness=cfg.sharpness[0], gamma_scale=cfg.gamma_scale[0], **kw)
        if row.key == "bpda":
            return BPDA(det, **kw)
        if row.key == "opgd":
            return OrthogonalPGD(det, **kw)
        if row.key == "code-matching":
            return None if dkey == "subnet" else CodeMatching(det, self.x_nat, self.y_nat, **kw)
        raise InputError(f"no white-box builder for {row.key}")

    def _shared(self, row: AttackRow, norm: str, eps: float) -> Any:
        """Attacks crafted once and replayed on every defence."""
        from ..attacks import BIM, BIML2, FGSM
        from ..attacks.adaptive import (
            DropExtraClass,
            ExtraClassDetector,
            SmoothedTypeII,
            TransferAttack,
        )

        cfg = self.cfg
        steps = cfg.steps
        sur = self.surrogates[row.surrogate] if row.surrogate is not None else None
        mask = self.mask
        base = (BIM(steps=steps, step_size=2.5 * eps / steps, mask=mask) if norm == "linf"
                else BIML2(steps=steps, step_size=2.5 * eps / steps, mask=mask))
        family = base_row(row.key).key
        if family == "bim":
            return base
        if sur is None:
            raise InputError(f"row {row.key} needs a surrogate")
        if family == "transfer-fgsm":
            return TransferAttack(sur.model(), FGSM(mask=mask))
        if family == "transfer-bim":
            return TransferAttack(sur.model(), base)
        if family == "finetune-tf":
            ft = sur.finetuned()
            det = ExtraClassDetector(ft)
            return TransferAttack(DropExtraClass(ft), SmoothedTypeII(det, distance=norm, steps=steps, seed=cfg.seed, mask=mask),
                                  surrogate_detector=det)
        if family == "subnet-tf":
            det = sur.subnet()
            return TransferAttack(sur.model(), SmoothedTypeII(det, distance=norm, steps=steps, seed=cfg.seed, mask=mask),
                                  surrogate_detector=det)
        raise InputError(f"no shared builder for {row.key}")

    def _batched(self, attack: Any, crit: Callable[[torch.Tensor], Any], x: torch.Tensor, y: torch.Tensor,
                 eps: float | None) -> torch.Tensor:
        bs = self.cfg.batch_size
        return torch.cat([attack(self.model, x[i:i + bs], crit(y[i:i + bs]), eps=eps).clipped for i in range(0, len(x), bs)])

    def run_row(self, row: AttackRow, norm: str, eps: float, x: torch.Tensor, y: torch.Tensor,
                sweeps: list, hsja_cache: dict) -> dict[str, tuple[torch.Tensor, dict] | None]:
        """Adversarials of ``row`` at ``eps`` per defence: ``{defence: (images, extra fields) or None}``."""
        from ..attacks import clip_to_ball
        from ..attacks.adaptive import HopSkipJump, sweep

        cfg, out = self.cfg, {}
        if not row.per_defence:
            attack = self._shared(row, norm, eps)
            adv = self._batched(attack, lambda yb: self.defences["ori"].criterion(yb), x, y, eps)
            return {k: (adv, {}) for k in self.defences}
        for dkey, d in self.defences.items():
            if row.minimisation:  # HopSkipJump: one unbounded run per defence, clipped to each eps
                if dkey not in hsja_cache["raw"]:
                    attack = HopSkipJump(distance=norm, max_queries=cfg.hsja_queries, steps=cfg.hsja_steps, seed=cfg.seed,
                                         batch_size=max(cfg.batch_size, 1024), mask=self.mask)
                    raws, qs = [], []
                    for i in range(0, len(x), cfg.batch_size):
                        raws.append(attack(self.model, x[i:i + cfg.batch_size], d.criterion(y[i:i + cfg.batch_size])).raw)
                        qs.append(attack.queries_)
                    hsja_cache["queries"][dkey] = torch.cat(qs)
                    hsja_cache["raw"][dkey] = torch.cat(raws)
                adv = clip_to_ball(x, hsja_cache["raw"][dkey], eps, norm)
                out[dkey] = (adv, {"queries_mean": float(hsja_cache["queries"][dkey].float().mean())})
                continue
            if row.key == "type2" and isinstance(d.detector, _safetynet_type()):
                advs = []
                per_setting: list[list[torch.Tensor]] = []
                for i in range(0, len(x), cfg.batch_size):
                    xb, yb = x[i:i + cfg.batch_size], y[i:i + cfg.batch_size]
                    res = sweep(d.detector, self.model, xb, d.criterion(yb), eps=eps, sharpness=cfg.sharpness,
                                gamma_scale=cfg.gamma_scale, distance=norm, steps=cfg.steps, seed=cfg.seed,
                                mask=self.mask)
                    advs.append(res.best.clipped)
                    per_setting.append(res.per_setting_success)
                    settings = res.settings
                ok_all = [torch.cat([ps[j] for ps in per_setting]) for j in range(len(settings))]
                for j, s in enumerate(settings):
                    sweeps.append({"defence": dkey, "norm": norm, "eps": eps, "sharpness": s["sharpness"],
                                   "gamma_scale": s["gamma_scale"], "success_all": float(ok_all[j].float().mean())})
                out[dkey] = (torch.cat(advs), {"sweep_settings": len(settings)})
                continue
            if d.detector is None and row.key != "code-matching":
                # Against the bare classifier every adaptive row is the same CW-PGD: run it once.
                if (norm, eps) not in self._ori_cache:
                    self._ori_cache[norm, eps] = self._batched(self._white(row, dkey, norm), d.criterion, x, y, eps)
                out[dkey] = (self._ori_cache[norm, eps], {})
                continue
            attack = self._white(row, dkey, norm)
            out[dkey] = None if attack is None else (self._batched(attack, d.criterion, x, y, eps), {})
        return out


def _safetynet_type() -> type:
    from ..safetynet import SafetyNet

    return SafetyNet


def config_from_dict(values: dict[str, Any]) -> RobustnessConfig:
    """A config from plain values (e.g. parsed CLI arguments); unknown keys are ignored."""
    names = {f.name for f in dataclasses.fields(RobustnessConfig)}
    return RobustnessConfig(**{k: v for k, v in values.items() if k in names and v is not None})
