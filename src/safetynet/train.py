"""``safetynet train``: train a classifier on CPU with a one-cycle schedule, resumable per epoch.

Typical use (the shipped ResNet-20 was made this way; see ``src/safetynet/weights/README.md``)::

    safetynet train --dataset cifar10 --data-dir ../shared/data/cifar10-jpg --arch resnet20 \
        --epochs 30 --out runs/resnet20 --seed 0

Every epoch writes ``model.safetensors`` + ``config.json`` (the model) and ``train_state.pt``
(optimizer, schedule, RNG; tensors only, loaded with ``weights_only=True``) atomically, and
appends one JSON line to ``log.jsonl``. Re-running the same command resumes.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import update_bn

from ._io import atomic_path
from ._schedule import one_cycle
from .data import ImageSet, load_dataset
from .errors import CheckpointError, InputError
from .models import build_model, save_checkpoint
from .progress import progress
from .train_config import AccuracyConfig, TrainConfig

log = logging.getLogger(__name__)


def augment_batch(x: torch.Tensor, gen: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random crop after zero padding and random horizontal flip, for a whole batch at once."""
    b, c, h, w = x.shape
    xp = F.pad(x, (pad, pad, pad, pad))
    oy = torch.randint(0, 2 * pad + 1, (b,), generator=gen)
    ox = torch.randint(0, 2 * pad + 1, (b,), generator=gen)
    rows = (oy[:, None] + torch.arange(h))[:, None, :, None]  # (B, 1, H, 1)
    cols = (ox[:, None] + torch.arange(w))[:, None, None, :]  # (B, 1, 1, W)
    out = xp[torch.arange(b)[:, None, None, None], torch.arange(c)[None, :, None, None], rows, cols]
    flip = torch.rand(b, generator=gen) < 0.5
    return torch.where(flip[:, None, None, None], out.flip(3), out)


@torch.no_grad()
def evaluate_accuracy(model: nn.Module, data: ImageSet, batch_size: int = 500, limit: int | None = None,
                      desc: str = "evaluating") -> float:
    """Top-1 accuracy of ``model`` on the first ``limit`` images of ``data``."""
    was_training = model.training
    model.eval()
    n = len(data) if limit is None else min(limit, len(data))
    correct = 0
    for i in progress(range(0, n, batch_size), desc=desc):
        x = data.images_u8[i:i + batch_size][: n - i].float().div_(255)
        correct += int((model(x).argmax(1) == data.labels[i:i + len(x)]).sum())
    model.train(was_training)
    return correct / max(n, 1)


def evaluate_checkpoint(cfg: AccuracyConfig) -> dict:
    """``safetynet evaluate``: clean top-1 accuracy of ``cfg.model`` on the first ``cfg.n`` test images."""
    from .models import resolve_model

    cfg.validate()
    model, source = resolve_model(cfg.model)
    data = load_dataset(cfg.dataset, "test", cfg.data_dir)
    t0 = time.time()
    acc = evaluate_accuracy(model, data, limit=cfg.n)
    n = len(data) if cfg.n is None else min(cfg.n, len(data))
    return {"model": source, "dataset": cfg.dataset, "images": n, "accuracy": acc,
            "seconds": round(time.time() - t0, 2), "seed": cfg.seed}


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for p in model.parameters():
        (decay if p.ndim > 1 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _model_config(cfg: TrainConfig, data: ImageSet) -> dict:
    mc: dict = {"arch": cfg.arch, "num_classes": len(data.classes), "in_channels": int(data.images_u8.shape[1])}
    if cfg.dataset == "digits":
        mc.update(mean=[0.5], std=[0.5])
    return mc


def train(cfg: TrainConfig) -> dict:
    """Train per ``cfg``; returns the final metrics dict (also in ``out/log.jsonl`` and ``config.json``)."""
    cfg.validate()
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    train_set = load_dataset(cfg.dataset, "train", cfg.data_dir)
    test_set = load_dataset(cfg.dataset, "test", cfg.data_dir)
    model_cfg = _model_config(cfg, train_set)
    model = build_model(**model_cfg)
    if cfg.init_from:
        _warm_start(model, Path(cfg.init_from), model_cfg)
    memory_format = torch.channels_last if cfg.channels_last and train_set.images_u8.shape[-1] >= 16 else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    opt = torch.optim.SGD(_param_groups(model, cfg.weight_decay), lr=cfg.lr, momentum=cfg.momentum, nesterov=True)
    steps_per_epoch = math.ceil(len(train_set) / cfg.batch_size)
    swa_start = cfg.epochs - cfg.swa_epochs  # first epoch (0-based) at the constant SWA rate
    sched = one_cycle(
        opt, max_lr=cfg.lr, total_steps=max(swa_start, 1) * steps_per_epoch, pct_start=cfg.warmup_fraction,
        div_factor=10.0, final_div_factor=100.0, anneal_strategy="cos", cycle_momentum=False)
    swa = _WeightAverage(model) if cfg.swa_epochs else None
    # steps (0-based, within an epoch) after which an SWA epoch adds the weights to the average
    k = min(cfg.swa_per_epoch, steps_per_epoch)
    swa_steps = {round((j + 1) * steps_per_epoch / k) - 1 for j in range(k)}
    gen = torch.Generator().manual_seed(cfg.seed)
    # Test folders are sorted by class: monitor on a fixed random subset, not the first images.
    monitor_set = test_set.subset(torch.randperm(len(test_set), generator=torch.Generator().manual_seed(12345)))
    start_epoch = 0
    state_path = out / "train_state.pt"
    if state_path.exists():
        start_epoch, metrics = _resume(state_path, out, cfg, model, opt, sched, gen, swa)
        log.info("resuming %s after epoch %d", out, start_epoch)
    else:
        metrics = {}
    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.time()
        model.train()
        in_swa = epoch >= swa_start
        if in_swa:
            for group in opt.param_groups:
                group["lr"] = cfg.swa_lr
        loss_sum, correct, seen = 0.0, 0, 0
        bar = progress(training_batches(train_set, gen, cfg.batch_size, cfg.augment, memory_format),
                       total=steps_per_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch")
        for s, (x, y) in enumerate(bar):
            logits = model(x)
            loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if not in_swa:
                sched.step()
            elif s in swa_steps:
                swa.update(model)
            loss_sum += float(loss.detach()) * len(y)
            correct += int((logits.argmax(1) == y).sum())
            seen += len(y)
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}")
        last = epoch + 1 == cfg.epochs
        extra_metrics: dict = {}
        if in_swa:  # implies swa is not None
            extra_metrics["swa_snapshots"] = swa.count
        if in_swa and last:
            # The run's result is the average: the last iterate is scored on the monitor subset only.
            extra_metrics["last_iterate_test_acc"] = evaluate_accuracy(model, monitor_set, limit=cfg.eval_subset)
            swa.copy_to(model)
            recompute_batchnorm(model, train_set, gen, batch_size=cfg.batch_size, augment=cfg.augment,
                                memory_format=memory_format)
        limit = None if last else cfg.eval_subset
        test_acc = evaluate_accuracy(model, test_set if limit is None else monitor_set, limit=limit)
        metrics = {"epoch": epoch + 1, "train_loss": loss_sum / seen, "train_acc": correct / seen,
                   "test_acc": test_acc, "test_images": len(test_set) if limit is None else min(limit, len(test_set)),
                   "lr": opt.param_groups[0]["lr"], "seconds": round(time.time() - t0, 1),
                   "images_per_second": round(seen / (time.time() - t0), 1), **extra_metrics}
        save_checkpoint(model, out, model_cfg, extra={"train_config": dataclasses.asdict(cfg), "metrics": metrics})
        state = {"epoch": torch.tensor(epoch + 1), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                 "generator": gen.get_state(), "torch_rng": torch.get_rng_state()}
        if swa is not None:
            state["swa"] = swa.state_dict()
        with atomic_path(state_path, suffix=".pt") as tmp:
            torch.save(state, tmp)
        with open(out / "log.jsonl", "a") as f:
            f.write(json.dumps(metrics) + "\n")
        log.info("epoch %d/%d %s", epoch + 1, cfg.epochs, json.dumps(metrics))
    return metrics


def _warm_start(model: nn.Module, folder: Path, model_cfg: dict) -> None:
    from .models import load_checkpoint

    loaded, meta = load_checkpoint(folder)
    if meta.get("model") != model_cfg:
        raise InputError(f"--init-from {folder} holds {meta.get('model')}, but this run builds {model_cfg}; "
                         "use a checkpoint of the same architecture and dataset")
    model.load_state_dict(loaded.state_dict())
    log.info("initialised weights from %s", folder)


def _resume(state_path: Path, out: Path, cfg: TrainConfig, model: nn.Module, opt, sched, gen,
            swa: "_WeightAverage | None") -> tuple[int, dict]:
    from .models import load_checkpoint

    loaded, meta = load_checkpoint(out)
    old = meta.get("train_config", {})
    defaults = TrainConfig()
    for key in ("arch", "dataset", "epochs", "batch_size", "lr", "seed", "swa_epochs", "swa_lr", "swa_per_epoch"):
        # runs saved before a setting existed ran with its default
        if old.get(key, getattr(defaults, key)) != getattr(cfg, key):
            raise CheckpointError(f"{out} holds a run with {key}={old.get(key)!r}, not {getattr(cfg, key)!r}; "
                                  "use another --out or the same settings to resume")
    model.load_state_dict(loaded.state_dict())
    try:
        state = torch.load(state_path, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure means the state is unusable
        raise CheckpointError(f"corrupt training state {state_path}: {e}; delete it to restart") from None
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    gen.set_state(state["generator"])
    torch.set_rng_state(state["torch_rng"])
    if swa is not None and "swa" in state:
        swa.load_state_dict(state["swa"])
    return int(state["epoch"]), meta.get("metrics", {})


class _WeightAverage:
    """Running mean of a model's parameters (SWA); buffers are not averaged (BatchNorm statistics
    are recomputed for the averaged weights by :func:`recompute_batchnorm`)."""

    def __init__(self, model: nn.Module) -> None:
        self.mean = {name: torch.zeros_like(p, memory_format=torch.preserve_format).detach()
                     for name, p in model.named_parameters()}
        self.count = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.count += 1
        for name, p in model.named_parameters():
            self.mean[name] += (p.detach() - self.mean[name]) / self.count

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        for name, p in model.named_parameters():
            p.copy_(self.mean[name])

    def state_dict(self) -> dict:
        return {"count": torch.tensor(self.count), "mean": dict(self.mean)}

    def load_state_dict(self, state: dict) -> None:
        self.count = int(state["count"])
        for name, value in state["mean"].items():
            self.mean[name].copy_(value)


def training_batches(data: ImageSet, gen: torch.Generator, batch_size: int, augment: bool,
                     memory_format: torch.memory_format = torch.contiguous_format):
    """One pass over ``data`` in a random order drawn from ``gen``: ``(x, y)`` batches, ``x`` in
    [0, 1], augmented (:func:`augment_batch`) when asked, in ``memory_format``."""
    perm = torch.randperm(len(data), generator=gen)
    for s in range(0, len(data), batch_size):
        idx = perm[s:s + batch_size]
        x = data.images_u8[idx].float().div_(255)
        if augment:
            x = augment_batch(x, gen)
        yield x.contiguous(memory_format=memory_format), data.labels[idx]


@torch.no_grad()
def recompute_batchnorm(model: nn.Module, data: ImageSet, gen: torch.Generator, *, batch_size: int = 128,
                        augment: bool = True, memory_format: torch.memory_format = torch.contiguous_format) -> None:
    """Set every BatchNorm layer's running mean and variance to their average over one pass of
    ``data`` (augmented as in training), as SWA needs: the statistics collected for the individual
    iterates do not describe the averaged weights. ``torch.optim.swa_utils.update_bn`` over
    :func:`training_batches`."""
    batches = (x for x, _ in training_batches(data, gen, batch_size, augment, memory_format))
    n = math.ceil(len(data) / batch_size)
    update_bn(progress(batches, total=n, desc="batchnorm statistics", unit="batch"), model)
