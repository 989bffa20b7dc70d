"""Checkpoints: ``model.safetensors`` (weights) + ``config.json`` (how to rebuild the model).

Nothing here unpickles: weights are safetensors, metadata is JSON. Both files are written
atomically, so an interrupted save never leaves a checkpoint that half-loads.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from .._io import atomic_path, write_json_atomic
from ..errors import CheckpointError

FORMAT = "safetynet-checkpoint"
FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
CONFIG = "config.json"


def save_checkpoint(model: nn.Module, directory: str | os.PathLike[str], model_config: dict[str, Any],
                    extra: dict[str, Any] | None = None) -> Path:
    """Write ``model``'s weights and the config that rebuilds it into ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_path(directory / WEIGHTS, suffix=".safetensors") as tmp:
        save_file(state, str(tmp))
    from .. import __version__

    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "safetynet_version": __version__,
            "model": model_config, **(extra or {})}
    write_json_atomic(directory / CONFIG, meta)
    return directory


def read_checkpoint_config(directory: str | os.PathLike[str]) -> dict[str, Any]:
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"checkpoint folder {directory} does not exist; pass a folder holding {WEIGHTS} and {CONFIG}")
    cfg_path = directory / CONFIG
    if not cfg_path.exists():
        raise CheckpointError(f"{cfg_path} is missing; a checkpoint folder needs {WEIGHTS} and {CONFIG}")
    try:
        meta = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"corrupt checkpoint config {cfg_path}: {e}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or "model" not in meta:
        raise CheckpointError(f"{cfg_path} is not a safetynet checkpoint config (missing format/model keys)")
    version = meta.get("format_version")
    if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
        raise CheckpointError(f"{cfg_path} has format version {version}; upgrade safetynet to read it")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise CheckpointError(f"{cfg_path} has unknown format version {version!r}; expected 1..{FORMAT_VERSION}")
    return meta


def load_checkpoint(directory: str | os.PathLike[str], map_location: str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model from ``config.json`` and load its weights; returns (model in eval mode, meta)."""
    from . import build_model

    directory = Path(directory)
    meta = read_checkpoint_config(directory)
    weights = directory / WEIGHTS
    if not weights.exists():
        raise CheckpointError(f"{weights} is missing; the checkpoint folder needs {WEIGHTS} next to {CONFIG}")
    try:
        state = load_file(str(weights), device=map_location)
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"corrupt weights file {weights}: {e}") from None
    spec = meta["model"]
    if not isinstance(spec, dict) or not isinstance(spec.get("arch"), str):
        raise CheckpointError(f"{directory / CONFIG} has no model architecture: 'model' must be an object with an 'arch' name")
    try:
        model = build_model(**spec)
    except (TypeError, ValueError) as e:  # unknown arch or constructor arguments (InputError is a ValueError)
        raise CheckpointError(f"{directory / CONFIG} describes a model this safetynet cannot build: {e}") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        # line 0 is "Error(s) in loading state_dict for X:"; the next lines name the keys/shapes
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        detail = "; ".join(ln[:300] for ln in lines[1:3]) or lines[0]
        raise CheckpointError(f"weights in {weights} do not match the model in {CONFIG}: {detail}") from None
    return model.eval(), meta
