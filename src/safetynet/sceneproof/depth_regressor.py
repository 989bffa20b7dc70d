"""A tiny monocular depth regressor, trained here on real pairs, that feeds the ``predicted_depth`` fake.

It is deliberately small (a three-level conv encoder-decoder with skip connections, 122k
parameters at the default ``width=8``, 487k at ``width=16``) so it trains in minutes on one CPU
core: about 17 s per epoch over 550 frames at 96x128 (width 8, one thread). It does not need
to be a good depth estimator: its predictions only have to look plausible enough that the
real-vs-fake classifier must check image/depth consistency rather than spot garbage.
For stronger fakes plug in any external model through ``predicted_depth(..., predictor=fn)``.

Weights are saved as one safetensors file whose metadata holds the config (no pickle).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from .._io import atomic_path
from .._schedule import one_cycle, optimizer_step
from .._validation import check_images
from ..data.rgbd.frame import RGBDFrame, resize_rgbd, stack_frames
from ..errors import CheckpointError, InputError
from .patches import random_hflip

logger = logging.getLogger(__name__)
FORMAT = "safetynet-depth-regressor"


@dataclass(frozen=True)
class DepthRegressorConfig:
    width: int = 8  # channels of the first level; doubles per level
    levels: int = 3  # stride-2 downsamplings
    min_depth: float = 0.1  # m, the output range (the head interpolates inverse depth)
    max_depth: float = 10.0  # m


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True),
                         nn.Conv2d(cout, cout, 3, padding=1), nn.ReLU(inplace=True))


class DepthRegressor(nn.Module):
    """Images (B,3,H,W) in [0,1] -> depth (B,1,H,W) in metres within [min_depth, max_depth]."""

    def __init__(self, width: int = 8, levels: int = 3, min_depth: float = 0.1, max_depth: float = 10.0) -> None:
        super().__init__()
        if not (isinstance(width, int) and width >= 1 and isinstance(levels, int) and 1 <= levels <= 6):
            raise InputError(f"width must be >= 1 and levels in [1, 6], got {width}, {levels}")
        if not 0 < min_depth < max_depth:
            raise InputError(f"need 0 < min_depth < max_depth, got {min_depth}, {max_depth}")
        self.config = DepthRegressorConfig(width, levels, float(min_depth), float(max_depth))
        chans = [width * 2 ** i for i in range(levels + 1)]
        self.stem = _block(3, chans[0])
        self.down = nn.ModuleList(_block(chans[i], chans[i + 1]) for i in range(levels))
        self.up = nn.ModuleList(_block(chans[i + 1] + chans[i], chans[i]) for i in reversed(range(levels)))
        self.head = nn.Conv2d(chans[0], 1, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        H, W = images.shape[-2:]
        m = 2 ** self.config.levels
        ph, pw = (-H) % m, (-W) % m
        x = F.pad(images, (0, pw, 0, ph), mode="replicate") if ph or pw else images
        x = self.stem(x - 0.5)
        skips = [x]
        for blk in self.down:
            x = blk(F.max_pool2d(x, 2))
            skips.append(x)
        skips.pop()
        for blk in self.up:
            s = skips.pop()
            x = blk(torch.cat([F.interpolate(x, size=s.shape[-2:], mode="bilinear", align_corners=False), s], 1))
        # Inverse depth interpolated between 1/max and 1/min: near objects get resolution.
        lo, hi = 1.0 / self.config.max_depth, 1.0 / self.config.min_depth
        inv = lo + (hi - lo) * torch.sigmoid(self.head(x))
        return (1.0 / inv)[..., :H, :W]

    @torch.no_grad()
    def predict(self, images: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
        """Depth for a batch of images, in eval mode and without gradients (restores the mode)."""
        check_images(images, "images", channels=3)
        was = self.training
        self.eval()
        try:
            return torch.cat([self(images[i:i + batch_size]) for i in range(0, images.shape[0], batch_size)])
        finally:
            self.train(was)


def _si_log_loss(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, lam: float = 0.85) -> torch.Tensor:
    """Scale-invariant log loss (Eigen et al. 2014), as sqrt(mean g^2 - lam * (mean g)^2) per image."""
    g = torch.where(valid, torch.log(pred.clamp_min(1e-3)) - torch.log(target.clamp_min(1e-3)), torch.zeros_like(pred))
    n = valid.flatten(1).sum(1).clamp_min(1)
    m1 = g.flatten(1).sum(1) / n
    m2 = (g * g).flatten(1).sum(1) / n
    return torch.sqrt((m2 - lam * m1 * m1).clamp_min(1e-8)).mean()


def train_depth_regressor(frames: Sequence[RGBDFrame] | tuple[torch.Tensor, torch.Tensor, torch.Tensor], *,
                          epochs: int = 10, seed: int = 0, size: tuple[int, int] = (96, 128),
                          batch_size: int = 16, lr: float = 2e-3, width: int = 8, levels: int = 3,
                          max_depth: float = 10.0) -> DepthRegressor:
    """Train a :class:`DepthRegressor` on real pairs (frames, or an (image, depth, valid) batch).

    Frames are resized to ``size``; augmentation is horizontal flips. The loss is the
    scale-invariant log loss on valid pixels. Deterministic for a seed at one thread.
    The model is returned in eval mode; ``model.history`` holds the mean loss per epoch.
    """
    if not isinstance(epochs, int) or epochs < 1:
        raise InputError(f"epochs must be a positive integer, got {epochs!r}")
    if isinstance(frames, tuple):
        image, depth, valid = frames
    else:
        if len(frames) == 0:
            raise InputError("no frames to train the depth regressor on")
        frames = [f if (f.height, f.width) == tuple(size) else f.resized(size) for f in frames]
        image, depth, valid = stack_frames(frames)
    image, depth, valid = resize_rgbd(image, depth, valid, size)
    valid = valid & (depth > 0) & (depth <= max_depth)
    gen = torch.Generator().manual_seed(int(seed))
    torch.manual_seed(int(seed))  # weight initialisation
    model = DepthRegressor(width=width, levels=levels, max_depth=max_depth)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    steps = epochs * -(-image.shape[0] // batch_size)
    sched = one_cycle(opt, max_lr=lr, total_steps=steps, pct_start=0.2)
    history: list[float] = []
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(image.shape[0], generator=gen)
        total, count = 0.0, 0
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            x, d, v = random_hflip(gen, image[idx], depth[idx], valid[idx])
            total += optimizer_step(opt, sched, _si_log_loss(model(x), d, v)) * len(idx)
            count += len(idx)
        history.append(total / count)
        logger.info("depth regressor epoch %d/%d: si-log loss %.4f", epoch + 1, epochs, history[-1])
    model.eval()
    model.history = history  # type: ignore[attr-defined]
    return model


def save_depth_regressor(model: DepthRegressor, path: str | os.PathLike[str]) -> Path:
    """Write weights + config to one ``.safetensors`` file (atomically)."""
    path = Path(path)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    meta = {"format": FORMAT, "config": json.dumps(asdict(model.config))}
    with atomic_path(path, suffix=".safetensors") as tmp:
        save_file(state, str(tmp), metadata=meta)
    return path


def load_depth_regressor(path: str | os.PathLike[str]) -> DepthRegressor:
    """Rebuild a :class:`DepthRegressor` saved by :func:`save_depth_regressor` (eval mode)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"depth regressor file {path} does not exist; train one with train_depth_regressor")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"corrupt depth regressor file {path}: {e}") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a safetynet depth regressor (metadata format {meta.get('format')!r})")
    try:
        cfg = DepthRegressorConfig(**json.loads(meta["config"]))
    except (KeyError, TypeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path} has an unreadable config ({e})") from None
    model = DepthRegressor(cfg.width, cfg.levels, cfg.min_depth, cfg.max_depth)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"weights in {path} do not match their config: {str(e).splitlines()[0]}") from None
    return model.eval()
