"""Checkpoints shipped inside the package, listed in ``safetynet/weights/registry.json``.

The registry maps a name to ``{"path": folder under weights/, "sha256": of model.safetensors,
"test_accuracy": ..., "command": how it was trained}``. :func:`load_pretrained` checks the
sha256 of the weights before reading them, so a corrupted or swapped file is refused.
"""

from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path
from typing import Any

from torch import nn

from .._io import sha256_file
from ..errors import CheckpointError
from .checkpoint import WEIGHTS, load_checkpoint

REGISTRY = "registry.json"


def default_registry() -> Path:
    """``safetynet/weights/registry.json`` inside the installed package."""
    return Path(str(resources.files("safetynet").joinpath("weights", REGISTRY)))


def read_registry(registry: str | os.PathLike[str] | None = None) -> dict[str, dict[str, Any]]:
    """The registry as a dict ``{name: entry}``; ``registry`` overrides the packaged file."""
    path = Path(registry) if registry is not None else default_registry()
    if not path.is_file():
        raise CheckpointError(f"pretrained registry {path} is missing; reinstall safetynet")
    try:
        reg = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"corrupt pretrained registry {path}: {e}; reinstall safetynet") from None
    if not isinstance(reg, dict) or not all(isinstance(v, dict) for v in reg.values()):
        raise CheckpointError(f"pretrained registry {path} must map names to entries (JSON objects)")
    return reg


def available_pretrained(registry: str | os.PathLike[str] | None = None) -> tuple[str, ...]:
    """Names of the registered pretrained models, sorted."""
    return tuple(sorted(read_registry(registry)))


def pretrained_info(name: str, registry: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The registry entry of ``name`` plus ``directory``, the absolute checkpoint folder."""
    path = Path(registry) if registry is not None else default_registry()
    reg = read_registry(path)
    if name not in reg:
        known = ", ".join(sorted(reg)) or "none registered"
        raise CheckpointError(f"no pretrained model named {name!r}; available: {known}")
    entry = dict(reg[name])
    for key in ("path", "sha256"):
        if not isinstance(entry.get(key), str) or not entry[key]:
            raise CheckpointError(f"registry entry {name!r} in {path} lacks {key!r}")
    rel = Path(entry["path"])
    if rel.is_absolute() or ".." in rel.parts:
        raise CheckpointError(f"registry entry {name!r} in {path} must give a folder inside {path.parent}")
    entry["directory"] = str(path.parent / rel)
    return entry


def load_pretrained(name: str = "cifar10-resnet20", registry: str | os.PathLike[str] | None = None) -> nn.Module:
    """Verify the sha256 of the shipped weights, then load them; returns the model in eval mode."""
    entry = pretrained_info(name, registry)
    directory = Path(entry["directory"])
    weights = directory / WEIGHTS
    if not weights.is_file():
        raise CheckpointError(f"pretrained model {name!r} is registered but {weights} is missing; reinstall safetynet")
    digest = sha256_file(weights)
    if digest != entry["sha256"].lower():
        raise CheckpointError(f"sha256 of {weights} is {digest}, the registry expects {entry['sha256']}; "
                              "the file is corrupt or was replaced: reinstall safetynet")
    model, _meta = load_checkpoint(directory)
    return model.eval()
