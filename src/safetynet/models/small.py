"""A small CNN for scikit-learn's 8x8 digits (or any small single-channel images), for fast tests.

Two 3x3 conv + ReLU layers, adaptive max pooling to 4x4, then ``fc1`` (ReLU) and ``fc2`` (logits)::

    normalize, conv1, relu1, conv2, relu2, pool2, fc1_linear, fc1, drop1, fc2

``late_relus = ("relu2", "fc1")``: the last conv ReLU and the hidden fully connected ReLU.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..errors import InputError
from .layers import Normalize

# sklearn digits scaled to [0, 1]: mean and std of all pixels of the 1,797 images
DIGITS_MEAN = (0.3053,)
DIGITS_STD = (0.3759,)


class SmallCNN(nn.Module):
    """Tiny classifier for [0, 1] images (B, in_channels, H, W), H, W >= 4 (8x8 digits by default).

    Args:
        num_classes: number of outputs.
        in_channels: input channels.
        width: channels of the first conv (the second has twice as many).
        hidden: units of ``fc1``.
        dropout: dropout after ``fc1`` (0 disables).
        mean, std: per-channel normalisation inside the model; default the digits' statistics
            for one channel, required for other channel counts.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: int = 16, hidden: int = 64,
                 dropout: float = 0.0, mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> None:
        super().__init__()
        for name, v in (("num_classes", num_classes), ("in_channels", in_channels), ("width", width), ("hidden", hidden)):
            if not isinstance(v, int) or v < 1:
                raise InputError(f"{name} must be a positive integer, got {v!r}")
        if not 0.0 <= dropout < 1.0:
            raise InputError(f"dropout must be in [0, 1), got {dropout}")
        if mean is None and std is None and in_channels == 1:
            mean, std = DIGITS_MEAN, DIGITS_STD
        if mean is None or std is None or len(mean) != in_channels or len(std) != in_channels:
            raise InputError(f"mean and std must each have in_channels={in_channels} values")
        self.num_classes, self.in_channels = num_classes, in_channels
        self.normalize = Normalize(mean, std)
        self.conv1 = nn.Conv2d(in_channels, width, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.AdaptiveMaxPool2d(4)
        self.fc1_linear = nn.Linear(2 * width * 16, hidden)
        self.fc1 = nn.ReLU()
        self.drop1 = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)
        self.late_relus: tuple[str, ...] = ("relu2", "fc1")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu2(self.conv2(self.relu1(self.conv1(self.normalize(x)))))  # (B, 2w, H, W)
        x = torch.flatten(self.pool2(x), 1)  # (B, 2w * 16)
        return self.fc2(self.drop1(self.fc1(self.fc1_linear(x))))
