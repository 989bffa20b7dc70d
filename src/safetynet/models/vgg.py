"""A VGG-style network for CIFAR-sized images (Simonyan & Zisserman, "Very Deep Convolutional
Networks for Large-Scale Image Recognition", ICLR 2015), with the layers SafetyNet taps named
as in the paper: ``pool5`` (after the last conv block), ``fc6`` and ``fc7`` (ReLU outputs).

Five conv blocks of 3x3 conv (+ BatchNorm) + ReLU, each ended by 2x2 max pooling; the fifth
pooling is adaptive (``pool5``), so any input of at least 32x32 gives a fixed-size ``pool5``.
Widths are ``width * (1, 2, 4, 8, 8)``; the default is VGG-11's layout (1, 1, 2, 2, 2 convs per
block) with 512-unit ``fc6``/``fc7``. Module names::

    normalize
    features.conv{b}_{i}, features.bn{b}_{i}, features.relu{b}_{i}, features.pool{b}  (b = 1..4)
    block5.conv5_{i}, block5.bn5_{i}, block5.relu5_{i}
    pool5                       # (B, 8*width, pool_size, pool_size), non-negative
    fc6_linear, fc6, drop6      # fc6 is the ReLU
    fc7_linear, fc7, drop7      # fc7 is the ReLU
    fc8                         # logits
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import torch
from torch import nn

from ..errors import InputError
from .layers import CIFAR10_MEAN, CIFAR10_STD, Normalize

VGG_BLOCKS = {11: (1, 1, 2, 2, 2), 13: (2, 2, 2, 2, 2), 16: (2, 2, 3, 3, 3), 19: (2, 2, 4, 4, 4)}


def _conv_block(b: int, n: int, c_in: int, c_out: int, batch_norm: bool) -> list[tuple[str, nn.Module]]:
    layers: list[tuple[str, nn.Module]] = []
    for i in range(1, n + 1):
        layers.append((f"conv{b}_{i}", nn.Conv2d(c_in, c_out, 3, padding=1, bias=not batch_norm)))
        if batch_norm:
            layers.append((f"bn{b}_{i}", nn.BatchNorm2d(c_out)))
        layers.append((f"relu{b}_{i}", nn.ReLU()))
        c_in = c_out
    return layers


class CifarVGG(nn.Module):
    """VGG-style classifier taking [0, 1] images (B, in_channels, H, W), H, W >= 32.

    Args:
        num_classes: number of outputs.
        in_channels: input channels (3 for RGB; SceneProof uses 4, RGB + depth).
        depth: 11, 13, 16 or 19 (convs per block as in VGG), ignored if ``blocks`` is given.
        blocks: convs per block, five numbers; overrides ``depth``.
        width: channels of the first block; later blocks use 2x, 4x, 8x, 8x.
        hidden: units of ``fc6`` and ``fc7``.
        dropout: dropout after ``fc6`` and ``fc7`` (0 disables).
        batch_norm: BatchNorm after every conv.
        pool_size: spatial size of ``pool5`` (adaptive max pooling).
        mean, std: per-channel normalisation applied inside the model; default CIFAR-10's for
            3 channels, required for other channel counts.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 3, depth: int = 11,
                 blocks: Sequence[int] | None = None, width: int = 64, hidden: int = 512, dropout: float = 0.0,
                 batch_norm: bool = True, pool_size: int = 1, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None) -> None:
        super().__init__()
        if blocks is None:
            if depth not in VGG_BLOCKS:
                raise InputError(f"VGG depth must be one of {sorted(VGG_BLOCKS)}, got {depth}; or pass blocks=(...)")
            blocks = VGG_BLOCKS[depth]
        blocks = tuple(int(b) for b in blocks)
        if len(blocks) != 5 or min(blocks) < 1:
            raise InputError(f"blocks must be five positive conv counts, got {blocks}")
        for name, v in (("num_classes", num_classes), ("in_channels", in_channels), ("width", width),
                        ("hidden", hidden), ("pool_size", pool_size)):
            if not isinstance(v, int) or v < 1:
                raise InputError(f"{name} must be a positive integer, got {v!r}")
        if not 0.0 <= dropout < 1.0:
            raise InputError(f"dropout must be in [0, 1), got {dropout}")
        if mean is None and std is None and in_channels == 3:
            mean, std = CIFAR10_MEAN, CIFAR10_STD
        if mean is None or std is None or len(mean) != in_channels or len(std) != in_channels:
            raise InputError(f"mean and std must each have in_channels={in_channels} values "
                             "(defaults exist only for 3-channel CIFAR-10 images)")
        self.num_classes, self.in_channels = num_classes, in_channels
        self.normalize = Normalize(mean, std)
        chans = [width * m for m in (1, 2, 4, 8, 8)]
        layers: list[tuple[str, nn.Module]] = []
        c_in = in_channels
        for b in range(1, 5):
            layers += _conv_block(b, blocks[b - 1], c_in, chans[b - 1], batch_norm)
            layers.append((f"pool{b}", nn.MaxPool2d(2)))
            c_in = chans[b - 1]
        self.features = nn.Sequential(OrderedDict(layers))
        self.block5 = nn.Sequential(OrderedDict(_conv_block(5, blocks[4], c_in, chans[4], batch_norm)))
        # Adaptive, so 32x32 inputs (2x2 here) and larger ones all give pool_size x pool_size.
        self.pool5 = nn.AdaptiveMaxPool2d(pool_size)
        self.fc6_linear = nn.Linear(chans[4] * pool_size * pool_size, hidden)
        self.fc6 = nn.ReLU()
        self.drop6 = nn.Dropout(dropout)
        self.fc7_linear = nn.Linear(hidden, hidden)
        self.fc7 = nn.ReLU()
        self.drop7 = nn.Dropout(dropout)
        self.fc8 = nn.Linear(hidden, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        self.late_relus: tuple[str, ...] = ("pool5", "fc6", "fc7")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block5(self.features(self.normalize(x)))  # (B, 8w, H/16, W/16)
        x = torch.flatten(self.pool5(x), 1)  # (B, 8w * p * p)
        x = self.drop6(self.fc6(self.fc6_linear(x)))
        x = self.drop7(self.fc7(self.fc7_linear(x)))
        return self.fc8(x)
