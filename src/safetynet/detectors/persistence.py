"""Save and load detectors without pickle: ``<stem>.safetensors`` (arrays) + ``<stem>.json`` (metadata).

The arrays file is written first and the JSON last, both atomically; the JSON records the
arrays file's sha256, so a crash between the two writes, a swapped or edited arrays file, or a
truncated download is caught at load time instead of silently giving other scores.

Support vectors are code levels packed into bit planes (``ceil(log2 levels)`` planes of
``np.packbits`` rows): a 1,024-unit binary code takes 128 bytes.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .._io import atomic_path, sha256_file, write_json_atomic
from ..errors import CheckpointError, InputError

DETECTOR_FORMAT = "safetynet-code-svm"
DETECTOR_VERSION = 1
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


# -- one detector <-> arrays + metadata ---------------------------------------------------------
def detector_state(detector: Any, prefix: str = "") -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Arrays and JSON metadata describing a fitted :class:`CodeSVMDetector`."""
    from sklearn.utils.validation import check_is_fitted

    check_is_fitted(detector, "support_vectors_")
    classes = np.asarray(detector.classes_)
    if not (np.issubdtype(classes.dtype, np.integer) or np.issubdtype(classes.dtype, np.floating)
            or classes.dtype == bool):
        raise InputError(f"only numeric class labels can be saved, got {classes.dtype}; "
                         "use 0 = natural, 1 = adversarial")
    arrays = {
        prefix + "support_vectors": pack_codes(detector.support_vectors_, detector.levels_),
        prefix + "dual_coef": np.ascontiguousarray(detector.dual_coef_, dtype=np.float64),
        prefix + "intercept": np.ascontiguousarray(detector.intercept_, dtype=np.float64),
        prefix + "classes": classes.astype(np.float64),
        prefix + "n_support": np.asarray(detector.n_support_, dtype=np.int32).reshape(2),
    }
    meta = {
        "kind": type(detector).__name__,
        "gamma": detector.gamma_, "C": detector.C_, "levels": int(detector.levels_),
        "n_features": int(detector.n_features_in_), "n_support": int(detector.support_vectors_.shape[0]),
        "encoding": ENCODING, "classes_dtype": str(classes.dtype),
        "params": _json_safe(detector.get_params()),
    }
    return arrays, meta


def _need(arrays: Mapping[str, np.ndarray], key: str, dtype: type, shape: tuple[int, ...], where: str) -> np.ndarray:
    if key not in arrays:
        raise CheckpointError(f"{where} lacks the array '{key}'; the file is incomplete or not a detector")
    a = arrays[key]
    if a.dtype != np.dtype(dtype) or a.shape != shape:
        raise CheckpointError(f"{where}: '{key}' is {a.dtype} {a.shape}, expected {np.dtype(dtype)} {shape}; "
                              "the arrays do not match the metadata")
    return a


def detector_from_state(arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any], prefix: str = "",
                        where: str = "detector") -> Any:
    """Rebuild a fitted :class:`CodeSVMDetector`, validating every shape, dtype and value."""
    from .svm import CodeSVMDetector

    try:
        kind, levels, d, n_sv = meta["kind"], int(meta["levels"]), int(meta["n_features"]), int(meta["n_support"])
        gamma, C, encoding = float(meta["gamma"]), float(meta["C"]), meta["encoding"]
        params = dict(meta.get("params") or {})
        classes_dtype = np.dtype(meta.get("classes_dtype", "float64"))
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{where}: metadata is missing or has a bad field ({e}); re-save the detector") from None
    if kind != "CodeSVMDetector":
        raise CheckpointError(f"{where} holds a {kind!r}, not a CodeSVMDetector")
    if encoding != ENCODING:
        raise CheckpointError(f"{where} uses code encoding {encoding!r}; this version reads {ENCODING!r}")
    if not (2 <= levels <= 256 and d > 0 and n_sv > 0 and gamma > 0 and math.isfinite(gamma) and C > 0):
        raise CheckpointError(f"{where}: invalid metadata values (levels={levels}, n_features={d}, "
                              f"n_support={n_sv}, gamma={gamma}, C={C})")
    planes = _need(arrays, prefix + "support_vectors", np.uint8, (bits_for(levels), n_sv, (d + 7) // 8), where)
    dual = _need(arrays, prefix + "dual_coef", np.float64, (1, n_sv), where)
    intercept = _need(arrays, prefix + "intercept", np.float64, (1,), where)
    classes = _need(arrays, prefix + "classes", np.float64, (2,), where)
    n_support = _need(arrays, prefix + "n_support", np.int32, (2,), where)
    if n_support.min() < 0 or int(n_support.sum()) != n_sv:
        raise CheckpointError(f"{where}: n_support {n_support.tolist()} does not add up to {n_sv} support vectors")
    if not (np.isfinite(dual).all() and np.isfinite(intercept).all() and np.isfinite(classes).all()):
        raise CheckpointError(f"{where}: dual coefficients, intercept or classes are not finite")
    sv = unpack_codes(planes, d)
    if sv.max() >= levels:
        raise CheckpointError(f"{where}: support vectors hold levels >= {levels}; the file is corrupt")
    valid = set(CodeSVMDetector().get_params())
    det = CodeSVMDetector(**{k: v for k, v in params.items() if k in valid})
    det.support_vectors_ = sv
    det.dual_coef_ = dual.copy()
    det.intercept_ = intercept.copy()
    det.classes_ = classes.astype(classes_dtype)
    det.gamma_, det.C_, det.levels_ = gamma, C, levels
    det.n_features_in_ = d
    det.n_support_ = n_support.copy()
    det.cv_results_ = None
    det._build_kernel()
    return det


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


def save_detector(detector: Any, directory: str | os.PathLike[str]) -> Path:
    arrays, meta = detector_state(detector)
    return write_state(directory, arrays, meta, DETECTOR_FORMAT, DETECTOR_VERSION)


def load_detector(directory: str | os.PathLike[str]) -> Any:
    arrays, meta = read_state(directory, DETECTOR_FORMAT, DETECTOR_VERSION)
    expected = {"support_vectors", "dual_coef", "intercept", "classes", "n_support"}
    if set(arrays) != expected:
        extra = sorted(set(arrays) ^ expected)
        raise CheckpointError(f"{directory}: unexpected arrays {extra} in detector.safetensors")
    return detector_from_state(arrays, meta, where=str(Path(directory) / "detector.safetensors"))


__all__ = ["DETECTOR_FORMAT", "DETECTOR_VERSION", "detector_from_state", "detector_state", "load_detector",
           "pack_codes", "read_state", "save_detector", "unpack_codes", "write_state"]
