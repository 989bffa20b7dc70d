"""Checkpoints: ``model.safetensors`` (weights) + ``config.json`` (how to rebuild the model).

Nothing here unpickles: weights are safetensors, metadata is JSON. Both files are written
atomically, so an interrupted save never leaves a checkpoint that half-loads.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
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
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(f"{cfg_path} has format version {meta['format_version']}; upgrade safetynet to read it")
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
    model = build_model(**meta["model"])
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[0]
        raise CheckpointError(f"weights in {weights} do not match the model in {CONFIG}: {first}") from None
    return model.eval(), meta
