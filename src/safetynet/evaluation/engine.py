"""The attack engine: every Table-4 row, at every budget, against every defence, scored one way.

:class:`AttackBench` holds a :class:`~safetynet.evaluation.task.Task`, its
:class:`~safetynet.evaluation.defence.Defence` columns and the transfer surrogates, and runs the
rows of :data:`~safetynet.evaluation.rows.ATTACK_ROWS`:

* adaptive rows (type II: the paper's smoothed attack with its lambda/sigma sweep, BPDA,
  orthogonal PGD, code matching, HopSkipJump) are crafted against each defence separately;
* type-I and transfer rows are crafted once and replayed on every defence;
* type-II budgets are doubled (up to ``extend_eps`` times) until the adaptive attacks reach
  100 % or the budget cap, so each curve shows where the defence finally breaks.

With a :class:`~safetynet.chunk_store.ChunkStore`, each (row, norm, eps) cell's adversarials are
saved as they are crafted, keyed by the caller's description of the task plus the row, budget,
settings and every defence's key and threshold: an interrupted job resumes at the first cell not
on disk, and a changed detector or setting never reads a stale cell.

Every result is judged by the *real* defence (:meth:`Defence.evaluate`), and one record per
(row, norm, eps, defence) holds the rates of :func:`~safetynet.metrics.safetynet_rates`
plus the adversary's success over the images the classifier got right before the attack.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import torch

from ..chunk_store import ChunkStore, fingerprint, model_fingerprint
from ..errors import InputError
from ..attacks.batched import attack_in_batches
from .defence import Defence, Verdicts, smoothable
from ..metrics import safetynet_rates, tpr_at_fpr
from .rows import AttackRow, base_row
from .surrogates import SurrogatePool
from .task import Task

log = logging.getLogger(__name__)

__all__ = ["AttackBench", "AttackSettings", "BenchResults", "cell_record", "task_cache_key"]


def task_cache_key(task: Task, x_nat: torch.Tensor, config: Any, *, exclude: tuple[str, ...] = ("out", "cache")
                   ) -> dict[str, Any]:
    """The ``cache_key`` of an :class:`AttackBench` for a job: what its cells depend on beyond the bench
    itself, i.e. the classifier's weights, the attacked and natural fit images, the threat mask, the
    task's own surrogates and every field of the job's ``config`` dataclass but ``exclude`` (models
    given as objects by their weights). A new config field is part of the key by default, so a
    changed setting can only miss the cache, never read a stale cell."""
    def plain(v: Any) -> Any:
        if isinstance(v, torch.nn.Module):
            return model_fingerprint(v)
        return [plain(u) for u in v] if isinstance(v, (list, tuple)) else v

    return {"model": model_fingerprint(task.model), "task": task.name, "images": fingerprint(task.test_x.numpy()),
            "natural_fit": fingerprint(x_nat.numpy()), "mask": None if task.mask is None else fingerprint(task.mask.numpy()),
            "surrogates": {k: model_fingerprint(m) for k, m in task.surrogates.items()},
            "config": {f.name: plain(getattr(config, f.name)) for f in fields(config) if f.name not in exclude}}


@dataclass
class AttackSettings:
    """How hard the rows attack: iterations, the sweep, budgets and their extension."""

    eps: dict[str, list[float]]  # budgets per norm ("linf", "l2")
    steps: int = 30  # iterations of the white-box attacks
    sharpness: list[float] = field(default_factory=lambda: [1.0, 10.0, 100.0])  # lambda sweep of the smoothed attack
    gamma_scale: list[float] = field(default_factory=lambda: [1.0, 0.1])  # RBF gamma multipliers (sigma sweep)
    hsja_queries: int = 1000
    hsja_steps: int = 40
    extend_eps: int = 2  # doublings of type-II budgets until success = 100 %
    target_fpr: float = 0.05  # operating point of the TPR column
    batch_size: int = 250
    seed: int = 0


@dataclass
class BenchResults:
    """Records (one per row, norm, eps, defence), the sweep's per-setting success, HopSkipJump's query counts."""

    records: list[dict[str, Any]]
    sweeps: list[dict[str, Any]]
    queries: list[dict[str, Any]]
    timings: dict[str, float]
    images: dict[tuple[str, str, float, str], torch.Tensor]  # (row, norm, eps, defence) -> adversarials, if kept
    clean_pred: torch.Tensor  # (N,) the classifier's labels on the clean test images


def cell_record(row: AttackRow | None, norm: str | None, eps: float | None, defence: str, y: torch.Tensor,
                clean_pred: torch.Tensor, verdicts: Verdicts, natural_score: np.ndarray | None, *,
                positive_class: int | None, target_fpr: float, extended: bool = False,
                extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """One (attack, norm, eps, defence) cell: the paper's rates and the adversary's success.

    ``success`` is the share of images the classifier got right *before* the attack that end up
    misclassified and accepted; ``tpr_at_fpr`` is the detector's TPR on the fooled images at
    ``target_fpr`` against the natural test scores.
    """
    yt = y.numpy()
    rates = safetynet_rates(yt, verdicts.pred, verdicts.rejected, positive_class=positive_class)
    correct = (clean_pred == y).numpy()
    win = (verdicts.pred != yt) & ~verdicts.rejected
    key = "none" if row is None else row.key
    rec: dict[str, Any] = {
        "attack": key, "label": "Non-attack data" if row is None else row.label,
        "kind": "-" if row is None else row.kind, "access": "-" if row is None else row.access,
        "norm": norm, "eps": eps, "defence": defence, "extended": extended,
        "success": float(win[correct].mean()) if correct.any() else None,
        **rates,
    }
    if row is not None and verdicts.score is not None and natural_score is not None and len(natural_score):
        fooled = verdicts.pred != yt
        rec["tpr_at_fpr"] = tpr_at_fpr(natural_score, verdicts.score[fooled], target_fpr) if fooled.any() else None
    if extra:
        rec.update(extra)
    return rec


class AttackBench:
    """Runs attack rows against the defences of one task (see the module docstring).

    Args:
        task: the classifier, its natural fit/test images and the threat model (mask).
        defences: the Table-4 columns, keyed (``"ori"`` must be the bare classifier).
        settings: attack strength and budgets.
        surrogates: the transfer surrogates (None: transfer rows cannot run).
        x_nat, y_nat: natural fit images the classifier gets right (code matching's anchors).
        store: where finished cells are saved and read back (None: nothing is cached).
        cache_key: JSON-able description of everything the cells depend on that the bench cannot
            see itself (the classifier's fingerprint, the images, how the detectors were fitted);
            required with ``store``.
    """

    def __init__(self, task: Task, defences: dict[str, Defence], settings: AttackSettings,
                 surrogates: SurrogatePool | None, x_nat: torch.Tensor, y_nat: torch.Tensor, *,
                 store: ChunkStore | None = None, cache_key: dict[str, Any] | None = None) -> None:
        if store is not None and cache_key is None:
            raise InputError("AttackBench(store=...) needs a cache_key describing the task and the detectors' fits")
        self.task, self.defences, self.settings, self.surrogates = task, defences, settings, surrogates
        self.model = task.model
        self.x_nat, self.y_nat = x_nat, y_nat
        self.store, self.cache_key = store, cache_key
        self._ori_cache: dict[tuple[str, float], torch.Tensor] = {}  # CW-PGD on the bare classifier, by (norm, eps)

    # -- attacks -------------------------------------------------------------------------------
    def _kw(self, norm: str) -> dict[str, Any]:
        s = self.settings
        return {"distance": norm, "steps": s.steps, "seed": s.seed, "mask": self.task.mask}

    def _white(self, row: AttackRow, d: Defence, norm: str) -> Any:
        """The white-box attack of ``row`` against defence ``d`` (None: not applicable)."""
        from ..attacks.adaptive import BPDA, CodeMatching, JointPGD, OrthogonalPGD, SmoothedTypeII
        from ..attacks.bpda import safetynet_of

        s, kw, target = self.settings, self._kw(norm), d.target
        if d.detector is None:
            # Against the bare classifier every adaptive attack is the same CW-PGD.
            return None if row.key == "code-matching" else JointPGD(None, **kw)
        if row.key == "type2":
            return SmoothedTypeII(target, sharpness=s.sharpness[0], gamma_scale=s.gamma_scale[0], **kw)
        # BPDA and orthogonal PGD straight-through the quantizer of a SafetyNet (bare, or at a calibrated
        # threshold through its safetynet_view); on any other detector they use its differentiable surrogate.
        if row.key == "bpda":
            return BPDA(target, **kw)
        if row.key == "opgd":
            return OrthogonalPGD(target, **kw)
        if row.key == "code-matching":  # matches the codes of a SafetyNet (a calibrated one: its view)
            net = safetynet_of(target)
            return None if net is None else CodeMatching(net, self.x_nat, self.y_nat, **kw)
        raise InputError(f"no white-box builder for {row.key}")

    def _shared(self, row: AttackRow, norm: str, eps: float) -> Any:
        """Attacks crafted once and replayed on every defence."""
        from ..attacks import BIM, BIML2, FGSM
        from ..attacks.adaptive import DropExtraClass, ExtraClassDetector, SmoothedTypeII, TransferAttack

        s, mask = self.settings, self.task.mask
        base = (BIM(steps=s.steps, step_size=2.5 * eps / s.steps, mask=mask) if norm == "linf"
                else BIML2(steps=s.steps, step_size=2.5 * eps / s.steps, mask=mask))
        family = base_row(row.key).key
        if family == "bim":
            return base
        if row.surrogate is None or self.surrogates is None:
            raise InputError(f"row {row.key} needs a surrogate")
        sur = self.surrogates[row.surrogate]
        if family == "transfer-fgsm":
            return TransferAttack(sur.model(), FGSM(mask=mask))
        if family == "transfer-bim":
            return TransferAttack(sur.model(), base)
        kw = self._kw(norm)
        if family == "finetune-tf":
            ft = sur.finetuned()
            det = ExtraClassDetector(ft)
            return TransferAttack(DropExtraClass(ft), SmoothedTypeII(det, **kw), surrogate_detector=det)
        if family == "subnet-tf":
            det = sur.subnet()
            return TransferAttack(sur.model(), SmoothedTypeII(det, **kw), surrogate_detector=det)
        raise InputError(f"no shared builder for {row.key}")

    def _run(self, attack: Any, d: Defence, eps: float | None, **kw: Any) -> Any:
        x, y = self.task.test_x, self.task.test_y
        return attack_in_batches(attack, self.model, x, y, d.criterion, eps=eps, batch_size=self.settings.batch_size, **kw)

    def run_row(self, row: AttackRow, norm: str, eps: float, sweeps: list, hsja_cache: dict
                ) -> dict[str, tuple[torch.Tensor, dict] | None]:
        """Adversarials of ``row`` at ``eps`` per defence: ``{defence: (images, extra fields) or None}``."""
        from ..attacks import clip_to_ball
        from ..attacks.adaptive import HopSkipJump, sweep

        s, x, out = self.settings, self.task.test_x, {}
        if not row.per_defence:
            adv = self._run(self._shared(row, norm, eps), self.defences["ori"], eps).clipped
            return {k: (adv, {}) for k in self.defences}
        for dkey, d in self.defences.items():
            if row.minimisation:  # HopSkipJump: one unbounded run per defence, clipped to each eps
                if dkey not in hsja_cache["raw"]:
                    attack = HopSkipJump(distance=norm, max_queries=s.hsja_queries, steps=s.hsja_steps, seed=s.seed,
                                         batch_size=max(s.batch_size, 1024), mask=self.task.mask)
                    res = self._run(attack, d, None, extras=("queries_",))
                    hsja_cache["raw"][dkey], hsja_cache["queries"][dkey] = res.raw, res.extras["queries"]
                adv = clip_to_ball(x, hsja_cache["raw"][dkey], eps, norm)
                out[dkey] = (adv, {"queries_mean": float(hsja_cache["queries"][dkey].float().mean())})
                continue
            if row.key == "type2" and d.detector is not None and smoothable(d.target):
                advs, per_setting, settings = [], [], []
                bs = s.batch_size
                for i in range(0, len(x), bs):  # the sweep keeps per-setting success per batch
                    xb, yb = x[i:i + bs], self.task.test_y[i:i + bs]
                    res = sweep(d.target, self.model, xb, d.criterion(yb), eps=eps, sharpness=s.sharpness,
                                gamma_scale=s.gamma_scale, **self._kw(norm))
                    advs.append(res.best.clipped)
                    per_setting.append(res.per_setting_success)
                    settings = res.settings
                for j, st in enumerate(settings):
                    ok = torch.cat([ps[j] for ps in per_setting])
                    sweeps.append({"defence": dkey, "norm": norm, "eps": eps, "sharpness": st["sharpness"],
                                   "gamma_scale": st["gamma_scale"], "success_all": float(ok.float().mean())})
                out[dkey] = (torch.cat(advs), {"sweep_settings": len(settings)})
                continue
            if d.detector is None and row.key != "code-matching":
                # Against the bare classifier every adaptive row is the same CW-PGD: run it once.
                if (norm, eps) not in self._ori_cache:
                    self._ori_cache[norm, eps] = self._run(self._white(row, d, norm), d, eps).clipped
                out[dkey] = (self._ori_cache[norm, eps], {})
                continue
            attack = self._white(row, d, norm)
            out[dkey] = None if attack is None else (self._run(attack, d, eps).clipped, {})
        return out

    def _cell_key(self, row: AttackRow, norm: str, eps: float) -> dict[str, Any]:
        from dataclasses import asdict

        return {"cache_key": self.cache_key, "row": row.key, "surrogate": row.surrogate, "norm": norm, "eps": eps,
                "settings": asdict(self.settings),
                "defences": {k: [d.title, type(d.detector).__name__, d.threshold] for k, d in self.defences.items()}}

    def cached_row(self, row: AttackRow, norm: str, eps: float, sweeps: list, hsja_cache: dict
                   ) -> dict[str, tuple[torch.Tensor, dict] | None]:
        """:meth:`run_row`, read from / written to the store when there is one."""
        if self.store is None:
            return self.run_row(row, norm, eps, sweeps, hsja_cache)
        key = self._cell_key(row, norm, eps)
        hit = self.store.get("cell", key)
        if hit is not None:
            meta = json.loads(str(hit["meta"]))
            sweeps.extend(meta["sweeps"])
            for dkey in meta["queries"]:  # HopSkipJump's query counts, for the summary after the row
                hsja_cache["queries"][dkey] = torch.from_numpy(hit[f"queries::{dkey}"])
            log.info("%s %s eps=%g: read from the cache", row.key, norm, eps)
            return {dkey: None if extra is None else (torch.from_numpy(hit[f"adv::{dkey}"]), extra)
                    for dkey, extra in meta["extra"].items()}
        n_sweeps = len(sweeps)
        out = self.run_row(row, norm, eps, sweeps, hsja_cache)
        arrays: dict[str, np.ndarray] = {f"adv::{k}": v[0].numpy() for k, v in out.items() if v is not None}
        arrays.update({f"queries::{k}": q.numpy() for k, q in hsja_cache["queries"].items()})
        meta = {"extra": {k: None if v is None else v[1] for k, v in out.items()}, "sweeps": sweeps[n_sweeps:],
                "queries": list(hsja_cache["queries"])}
        self.store.put("cell", key, {**arrays, "meta": np.array(json.dumps(meta))})
        return out

    # -- the grid ----------------------------------------------------------------------------------
    def run(self, rows: list[AttackRow], norms: list[str], *, keep_images: bool = False) -> BenchResults:
        """Every row at every budget of each of its norms; the non-attack row first."""
        task, s = self.task, self.settings
        x, y = task.test_x, task.test_y
        timings: dict[str, float] = {}
        t0 = time.time()
        clean = {k: d.evaluate(x) for k, d in self.defences.items()}
        clean_pred = torch.as_tensor(clean["ori"].pred)
        correct = (clean_pred == y).numpy()
        natural_scores = {k: v.score[correct] for k, v in clean.items() if v.score is not None}
        records = [cell_record(None, None, None, k, y, clean_pred, v, natural_scores.get(k),
                               positive_class=task.positive_class, target_fpr=s.target_fpr) for k, v in clean.items()]
        timings["clean"] = round(time.time() - t0, 2)
        sweeps: list[dict[str, Any]] = []
        queries: list[dict[str, Any]] = []
        images: dict[tuple[str, str, float, str], torch.Tensor] = {}
        for row in rows:
            for norm in (m for m in norms if m in row.norms):
                t0 = time.time()
                eps_queue, extensions = list(s.eps[norm]), 0
                hsja_cache: dict[str, dict[str, torch.Tensor]] = {"raw": {}, "queries": {}}
                while eps_queue:
                    eps = eps_queue.pop(0)
                    for dkey, res in self.cached_row(row, norm, eps, sweeps, hsja_cache).items():
                        if res is None:
                            continue
                        adv, extra = res
                        if task.mask is not None:
                            # The threat model, checked on every result: nothing outside the mask moved.
                            same = bool(torch.equal(torch.where(task.mask.bool(), x, adv), x))
                            extra = {**extra, "outside_mask_unchanged": same}
                            if not same:
                                log.warning("%s (%s, eps=%g, %s) changed pixels outside the attack mask",
                                            row.key, norm, eps, dkey)
                        if keep_images:
                            images[row.key, norm, eps, dkey] = adv
                        records.append(cell_record(row, norm, eps, dkey, y, clean_pred, self.defences[dkey].evaluate(adv),
                                                   natural_scores.get(dkey), positive_class=task.positive_class,
                                                   target_fpr=s.target_fpr, extended=extensions > 0, extra=extra))
                    # Only adaptive type-II rows are extended: a type-I or transfer attack is not trying to
                    # reach the detector's blind spots, so its curve need not reach 100 %.
                    if not eps_queue and row.kind == "II" and row.per_defence and extensions < s.extend_eps:
                        worst = min((r["success"] for r in records if r["attack"] == row.key and r["norm"] == norm
                                     and r["eps"] == eps and r["defence"] != "ori" and r["success"] is not None),
                                    default=1.0)
                        cap = 1.0 if norm == "linf" else task.l2_cap()
                        if worst < 1.0 and eps < cap:
                            eps_queue.append(min(2 * eps, cap))
                            extensions += 1
                for dkey, h in hsja_cache["queries"].items():
                    queries.append({"defence": dkey, "norm": norm, "max_queries": s.hsja_queries,
                                    "mean": float(h.float().mean()), "median": float(h.float().median()),
                                    "max": int(h.max())})
                timings[f"{row.key} ({norm})"] = round(time.time() - t0, 2)
                log.info("%s %s done in %.1f s", row.label, norm, timings[f"{row.key} ({norm})"])
        return BenchResults(records, sweeps, queries, timings, images, clean_pred)

