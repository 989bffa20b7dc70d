"""``safetynet serve``: the settings of the SceneProof HTTP service (one flag per field)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..cli_config import setting
from ..errors import InputError

#: 4096 x 4096: a 12-megapixel phone photo fits; SceneProof itself works at 160 x 120.
DEFAULT_MAX_PIXELS = 4096 * 4096


@dataclass
class ServeConfig:
    """``safetynet serve``: the SceneProof HTTP API and web page.

    The common flags apply too: ``--threads`` is the torch threads of each worker (the CLI sets
    them; :func:`~safetynet.serve.server.serve` hands them on to worker processes), ``--seed`` has
    nothing to seed (a verdict draws no random numbers), ``--json`` prints the summary as JSON.
    """

    host: str = setting("127.0.0.1", "address to listen on (0.0.0.0 for every interface: put a TLS proxy in front)")
    port: int = setting(8000, "TCP port (0 = any free port)")
    workers: int = setting(1, "worker processes, each with its own copy of the model (about one per CPU core)")
    model: str | None = setting(None, "model folder: a feature model or a CNN bundle; 'cnn' = the shipped CNN bundle; "
                                      "default: the shipped feature model (as verify)")
    audit_db: str = setting("sceneproof-audit.sqlite3", "SQLite audit log (WAL): one row per /v1/verify request")
    keep_uploads: str | None = setting(None, "also keep every uploaded file in this folder, named by its sha256 "
                                             "(default: no image is stored)")
    max_upload_mb: float = setting(20.0, "largest request body in MB (image + depth + fields); larger: 413")
    max_pixels: int = setting(DEFAULT_MAX_PIXELS, "largest image or depth map in pixels, read from the file header "
                                                  "before decoding; larger: 413")
    timeout: float = setting(30.0, "seconds for a whole /v1/verify request: upload (else 408), queue and "
                                   "inference (else 503)")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1_000_000)

    def validate(self) -> ServeConfig:
        """Raise :class:`InputError` naming the first bad setting; returns ``self``."""
        if not (isinstance(self.port, int) and 0 <= self.port <= 65535):
            raise InputError(f"--port must be 0..65535, got {self.port!r}")
        if not (isinstance(self.workers, int) and self.workers >= 1):
            raise InputError(f"--workers must be >= 1, got {self.workers!r}")
        for name in ("max_upload_mb", "timeout"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise InputError(f"--{name.replace('_', '-')} must be a positive number, got {v!r}")
        if isinstance(self.max_pixels, bool) or not isinstance(self.max_pixels, int) or self.max_pixels < 1:
            raise InputError(f"--max-pixels must be a positive integer, got {self.max_pixels!r}")
        if not self.audit_db:
            raise InputError("--audit-db must name a file: every verdict is logged")
        return self


__all__ = ["DEFAULT_MAX_PIXELS", "ServeConfig"]
