"""VGG19 (Simonyan & Zisserman, "Very Deep Convolutional Networks for Large-Scale Image
Recognition", ICLR 2015, configuration E), the ImageNet classifier of the SafetyNet paper.

The module layout is exactly torchvision's ``vgg19`` (``features.N``, ``avgpool``,
``classifier.N``), so a torchvision state dict loads with ``strict=True``; we never import
torchvision. ImageNet normalisation is inside (non-persistent buffers, so the state-dict keys
stay torchvision's) and inputs are [0, 1] images. The ReLUs are not in-place, so a forward
hook on a conv sees the conv output and not its rectified copy.

Tappable late layers (the paper's detectors read pool5, fc6 and fc7)::

    pool5 = "features.36"   # last max pooling, (B, 512, 7, 7) on 224x224 inputs
    fc6   = "classifier.1"  # ReLU after the first fully connected layer, (B, 4096)
    fc7   = "classifier.4"  # ReLU after the second, (B, 4096)

``model.late_relus`` lists these module names; ``model.layer_aliases`` maps the short names.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from ..errors import CheckpointError, InputError
from .layers import IMAGENET_MEAN, IMAGENET_STD

# torchvision's configuration "E": channels of each 3x3 conv, "M" = 2x2 max pooling.
CFG_E: tuple[int | str, ...] = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
                                512, 512, 512, 512, "M", 512, 512, 512, 512, "M")
LAYER_ALIASES = {"pool5": "features.36", "fc6": "classifier.1", "fc7": "classifier.4"}


class _ImageNetNormalize(nn.Module):
    """``(x - mean) / std`` with non-persistent buffers: not part of torchvision's state dict."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def _features() -> nn.Sequential:
    layers: list[nn.Module] = []
    c_in = 3
    for v in CFG_E:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(c_in, int(v), kernel_size=3, padding=1), nn.ReLU()]
            c_in = int(v)
    return nn.Sequential(*layers)


class VGG19(nn.Module):
    """VGG19 without BatchNorm, torchvision's layout, for [0, 1] images (B, 3, H, W), H, W >= 32."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.5) -> None:
        super().__init__()
        if not isinstance(num_classes, int) or num_classes < 1:
            raise InputError(f"num_classes must be a positive integer, got {num_classes!r}")
        if not 0.0 <= dropout < 1.0:
            raise InputError(f"dropout must be in [0, 1), got {dropout}")
        self.num_classes = num_classes
        self.normalize = _ImageNetNormalize()
        self.features = _features()
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(4096, 4096), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(4096, num_classes),
        )
        # torchvision's initialisation
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)
        self.late_relus: tuple[str, ...] = tuple(LAYER_ALIASES.values())
        self.layer_aliases: dict[str, str] = dict(LAYER_ALIASES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(self.normalize(x))  # (B, 512, H/32, W/32)
        x = torch.flatten(self.avgpool(x), 1)  # (B, 25088)
        return self.classifier(x)

    @classmethod
    def from_torchvision_file(cls, path: str | os.PathLike[str]) -> "VGG19":
        """Load a torchvision ``vgg19`` state dict saved with ``torch.save(model.state_dict(), path)``.

        Read with ``torch.load(weights_only=True)`` (no arbitrary unpickling). The number of
        classes is taken from ``classifier.6.weight``. Returns the model in eval mode.
        """
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"VGG19 weights file {path} does not exist; pass a torchvision vgg19 state dict (.pth)")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - torch's restricted unpickler raises anything (IndexError, KeyError, ...) on a corrupt file
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise CheckpointError(f"cannot read {path} as a torch state dict ({first}); "
                                  "save it with torch.save(model.state_dict(), path)") from None
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise CheckpointError(f"{path} does not hold a state dict (a dict of tensors); "
                                  "save it with torch.save(model.state_dict(), path)")
        head = state.get("classifier.6.weight")
        if head is None or head.ndim != 2:
            raise CheckpointError(f"{path} is not a torchvision vgg19 state dict: no 2-D classifier.6.weight")
        # Built on the meta device and filled by assignment: no 548 MB random init to throw away.
        with torch.device("meta"):
            model = cls(num_classes=int(head.shape[0]))
        try:
            model.load_state_dict(state, strict=True, assign=True)
        except RuntimeError as e:
            lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
            detail = "; ".join(ln[:300] for ln in lines[1:3]) or lines[0]
            raise CheckpointError(f"{path} does not match torchvision's vgg19 layout: {detail}") from None
        model.normalize = _ImageNetNormalize()  # its buffers are not in the file, so rebuild them off meta
        return model.eval()
