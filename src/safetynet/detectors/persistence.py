"""Pickle-free detector files: ``<stem>.safetensors`` (arrays) + ``<stem>.json`` (metadata), and code bit planes.

The arrays file is written first and the JSON last, both atomically; the JSON records the
arrays file's sha256, so a crash between the two writes, a swapped or edited arrays file, or a
truncated download is caught at load time instead of silently giving other scores.

Support vectors are code levels packed into bit planes (``ceil(log2 levels)`` planes of
``np.packbits`` rows): a 1,024-unit binary code takes 128 bytes.

What a :class:`~safetynet.detectors.svm.CodeSVMDetector` stores in these files, and its
``save_detector``/``load_detector``, live in :mod:`safetynet.detectors.svm`; this module knows
no detector class, so the imports point one way (svm -> persistence).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .._io import atomic_path, sha256_file, write_json_atomic
from ..errors import CheckpointError

ENCODING = "levels-bitplanes"


def bits_for(levels: int) -> int:
    return max(1, math.ceil(math.log2(levels)))


def pack_codes(codes: np.ndarray, levels: int) -> np.ndarray:
    """uint8 codes (n, d) -> bit planes (bits, n, ceil(d / 8)) uint8, least significant plane first."""
    codes = np.asarray(codes, dtype=np.uint8)
    return np.stack([np.packbits((codes >> b) & 1, axis=1) for b in range(bits_for(levels))])


def unpack_codes(planes: np.ndarray, n_features: int) -> np.ndarray:
    out = np.zeros((planes.shape[1], n_features), dtype=np.uint8)
    for b, plane in enumerate(planes):
        out |= np.unpackbits(plane, axis=1, count=n_features).astype(np.uint8) << b
    return out


def _json_safe(params: Mapping[str, Any]) -> dict[str, Any]:
    """Constructor arguments that survive JSON; others (e.g. a RandomState) are stored as null."""
    out: dict[str, Any] = {}
    for k, v in params.items():
        try:
            json.dumps(v)
            out[k] = v
        except TypeError:
            out[k] = None
    return out


def _need(arrays: Mapping[str, np.ndarray], key: str, dtype: type, shape: tuple[int, ...], where: str) -> np.ndarray:
    if key not in arrays:
        raise CheckpointError(f"{where} lacks the array '{key}'; the file is incomplete or not a detector")
    a = arrays[key]
    if a.dtype != np.dtype(dtype) or a.shape != shape:
        raise CheckpointError(f"{where}: '{key}' is {a.dtype} {a.shape}, expected {np.dtype(dtype)} {shape}; "
                              "the arrays do not match the metadata")
    return a


# -- files ----------------------------------------------------------------------------------------
def write_state(directory: str | os.PathLike[str], arrays: Mapping[str, np.ndarray], meta: dict[str, Any],
                fmt: str, version: int, stem: str = "detector") -> Path:
    """Write ``stem.safetensors`` then ``stem.json`` (with format, version and sha256) atomically."""
    from safetensors.numpy import save_file

    from .. import __version__

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights = directory / f"{stem}.safetensors"
    with atomic_path(weights, suffix=".safetensors") as tmp:
        save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(tmp))
    head = {"format": fmt, "format_version": version, "safetynet_version": __version__,
            "arrays": weights.name, "sha256": sha256_file(weights)}
    write_json_atomic(directory / f"{stem}.json", {**head, **meta})
    return directory


def read_state(directory: str | os.PathLike[str], fmt: str, version: int,
               stem: str = "detector") -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read and verify what :func:`write_state` wrote; every problem is a :class:`CheckpointError`."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    directory = Path(directory)
    meta_path, weights = directory / f"{stem}.json", directory / f"{stem}.safetensors"
    if not directory.is_dir():
        raise CheckpointError(f"detector folder {directory} does not exist; pass the folder given to save()")
    for p in (meta_path, weights):
        if not p.is_file():
            raise CheckpointError(f"{p} is missing; a saved detector folder holds {stem}.json and {stem}.safetensors")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"corrupt detector metadata {meta_path}: {e}") from None
    if not isinstance(meta, dict) or "format" not in meta:
        raise CheckpointError(f"{meta_path} is not a safetynet detector file (no 'format' field)")
    if meta["format"] != fmt:
        raise CheckpointError(f"{meta_path} has format {meta['format']!r}, expected {fmt!r}; "
                              "load it with the matching class")
    v = meta.get("format_version")
    if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= version:
        raise CheckpointError(f"{meta_path} has format version {v!r}; this safetynet reads versions 1..{version} "
                              "(upgrade safetynet for newer files)")
    if meta.get("sha256") != sha256_file(weights):
        raise CheckpointError(f"{weights} does not match the sha256 in {meta_path.name}: the file was modified, "
                              "truncated or comes from another save; save the detector again")
    try:
        arrays = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"corrupt detector arrays {weights}: {e}") from None
    return arrays, meta


__all__ = ["ENCODING", "bits_for", "pack_codes", "read_state", "unpack_codes", "write_state"]
