"""The experiment's on-disk cache: one ``.npz`` per unit of work, written atomically, keyed by content.

At the paper's scale (the whole CIFAR-10 training split, ~50k images, times every attack
setting) the attacked images' codes do not fit in memory as activations, and computing them
takes hours: each unit (a chunk of images through one attack) is saved as it finishes, so an
interrupted run resumes where it stopped and a second run with other detector settings reuses
every attack. A unit's file name is a hash of everything its result depends on (the model's
weights, the images' indices, the attack and its parameters, the tapped layer, the quantizer
thresholds); change any of them and the unit is computed anew instead of read stale.

Files are plain numpy archives read with ``allow_pickle=False``: a cache folder from elsewhere
can be loaded without executing anything.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from ._io import save_npz_atomic, write_json_atomic
from .errors import InputError

__all__ = ["ChunkStore", "fingerprint", "model_fingerprint"]


def fingerprint(obj: Any) -> str:
    """A short stable hash of a JSON-able description (arrays hashed by their bytes)."""
    h = hashlib.sha256()

    def feed(o: Any) -> None:
        if isinstance(o, np.ndarray):
            h.update(f"ndarray{o.dtype}{o.shape}".encode())
            h.update(np.ascontiguousarray(o).tobytes())
        elif isinstance(o, Mapping):
            h.update(b"{")
            for k in sorted(o):
                h.update(json.dumps(str(k)).encode())
                feed(o[k])
            h.update(b"}")
        elif isinstance(o, (list, tuple)):
            h.update(b"[")
            for v in o:
                feed(v)
            h.update(b"]")
        else:
            h.update(json.dumps(o, sort_keys=True, default=str).encode())

    feed(obj)
    return h.hexdigest()[:20]


def model_fingerprint(model: nn.Module) -> str:
    """Hash of a model's class and every parameter and buffer (two copies of the same weights agree)."""
    h = hashlib.sha256(type(model).__qualname__.encode())
    for name, t in model.state_dict().items():
        h.update(name.encode())
        t = t.detach().cpu().contiguous()
        h.update(str(t.dtype).encode() + str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:20]


class ChunkStore:
    """A folder of unit results: ``store.get(key)`` is None until ``store.put(key, arrays)``.

    ``key`` is any JSON-able description of the unit; the file is ``<kind>-<hash>.npz`` under
    ``root``. A unit is either fully written or absent (temp file + rename).
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:  # a file in the way, no permission, read-only disk: say which folder, not a traceback
            raise InputError(f"cannot use {self.root} as the cache folder ({e.strerror}); pass --cache a writable "
                             "folder") from None

    def path(self, kind: str, key: Any) -> Path:
        return self.root / f"{kind}-{fingerprint(key)}.npz"

    def has(self, kind: str, key: Any) -> bool:
        return self.path(kind, key).exists()

    def get(self, kind: str, key: Any) -> dict[str, np.ndarray] | None:
        p = self.path(kind, key)
        if not p.exists():
            return None
        try:
            with np.load(p, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except (OSError, ValueError) as e:  # a foreign or damaged file: say which, do not guess
            raise InputError(f"cache file {p} is unreadable ({e}); delete it (or the cache folder) and rerun") from e

    def put(self, kind: str, key: Any, arrays: Mapping[str, np.ndarray]) -> Path:
        p = self.path(kind, key)
        # Uncompressed: codes are bit-packed already and float maps barely compress; loading stays fast.
        save_npz_atomic(p, compressed=False, **{k: np.asarray(v) for k, v in arrays.items()})
        return p

    def put_json(self, name: str, obj: Any) -> None:
        write_json_atomic(self.root / name, obj)

    def __len__(self) -> int:
        return sum(1 for _ in self.root.glob("*.npz"))

    def __repr__(self) -> str:
        return f"ChunkStore({str(self.root)!r}, {len(self)} units)"
