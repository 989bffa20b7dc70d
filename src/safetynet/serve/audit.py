"""The audit log of the SceneProof service: one SQLite row per ``/v1/verify`` request.

SQLite in WAL mode with ``synchronous=FULL``: a row is committed (and fsynced) before the
client gets its answer, so a server killed at any moment has logged every request it answered,
and WAL lets several worker processes append to one file. Inputs are identified by their
sha256; the images themselves are stored only when ``--keep-uploads`` is given.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..errors import InputError

SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time TEXT NOT NULL,                -- UTC, ISO 8601, when the answer was ready
    request_id TEXT NOT NULL,          -- the client's X-Request-ID, or one the server made up
    status INTEGER NOT NULL,           -- the HTTP status the client got
    error TEXT,                        -- the one-line error of a 4xx/5xx
    image_sha256 TEXT,                 -- sha256 of the uploaded bytes (NULL: not received)
    depth_sha256 TEXT,
    image_bytes INTEGER,
    depth_bytes INTEGER,
    depth_scale REAL,
    verdict TEXT,                      -- real | fake | rejected (adversarial)
    real_score REAL,
    real_threshold REAL,
    rejected_fraction REAL,
    reject_fraction REAL,
    n_patches INTEGER,
    patch_scores TEXT,                 -- JSON [[p_real, rejected], ...] per patch, in grid order
    model_sha256 TEXT NOT NULL,
    image_path TEXT,                   -- under --keep-uploads only
    depth_path TEXT,
    seconds REAL                       -- time from the request to the answer
);
CREATE INDEX IF NOT EXISTS requests_request_id ON requests (request_id);
CREATE INDEX IF NOT EXISTS requests_image ON requests (image_sha256);
"""

COLUMNS = ("time", "request_id", "status", "error", "image_sha256", "depth_sha256", "image_bytes", "depth_bytes",
           "depth_scale", "verdict", "real_score", "real_threshold", "rejected_fraction", "reject_fraction",
           "n_patches", "patch_scores", "model_sha256", "image_path", "depth_path", "seconds")


@dataclass
class AuditRecord:
    """What one request leaves in the log (``None`` = not known, e.g. a body refused before it was read)."""

    request_id: str
    status: int
    model_sha256: str
    error: str | None = None
    image_sha256: str | None = None
    depth_sha256: str | None = None
    image_bytes: int | None = None
    depth_bytes: int | None = None
    depth_scale: float | None = None
    verdict: Mapping[str, Any] | None = None  # Verdict.to_dict()
    image_path: str | None = None
    depth_path: str | None = None
    seconds: float | None = None
    time: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="milliseconds"))

    def row(self) -> tuple:
        v = self.verdict or {}
        patches = json.dumps([[p["p_real"], p["rejected"]] for p in v.get("patches", [])]) if v else None
        values = {**{k: getattr(self, k) for k in COLUMNS if hasattr(self, k)},
                  "verdict": v.get("verdict"), "real_score": v.get("real_score"),
                  "real_threshold": v.get("real_threshold"), "rejected_fraction": v.get("rejected_fraction"),
                  "reject_fraction": v.get("reject_fraction"), "n_patches": v.get("n_patches"),
                  "patch_scores": patches}
        return tuple(values[k] for k in COLUMNS)


class AuditLog:
    """Append-only SQLite log; safe to share between threads (one connection behind a lock)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: we issue BEGIN/COMMIT ourselves, one transaction per row.
            self._db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA busy_timeout=30000")  # other workers write to the same file
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")  # each commit is on disk before the answer leaves
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                raise InputError(f"audit log {self.path} has schema version {version}; this safetynet writes "
                                 f"{SCHEMA_VERSION}: pass another --audit-db")
            # IMMEDIATE takes the write lock first: workers starting together wait for each other (busy
            # timeout) instead of deadlocking on a read-then-write upgrade.
            self._db.executescript(f"BEGIN IMMEDIATE; {SCHEMA} PRAGMA user_version={SCHEMA_VERSION}; COMMIT;")
        except sqlite3.DatabaseError as e:
            raise InputError(f"cannot open the audit log {self.path} ({e}); pass a writable SQLite file as "
                             "--audit-db") from None
        self._lock = threading.Lock()

    def record(self, rec: AuditRecord) -> int:
        """Append one row and commit it durably; returns its id."""
        sql = f"INSERT INTO requests ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
        with self._lock:
            cur = self._db.execute(sql, rec.row())  # autocommit: one durable transaction
            return int(cur.lastrowid)

    def close(self) -> None:
        with self._lock:
            self._db.close()


def read_log(path: str | Path) -> list[dict[str, Any]]:
    """Every row of an audit log as dicts (oldest first), read-only."""
    db = sqlite3.connect(f"file:{Path(path)}?mode=ro", uri=True)
    try:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute("SELECT * FROM requests ORDER BY id")]
    finally:
        db.close()


__all__ = ["COLUMNS", "SCHEMA_VERSION", "AuditLog", "AuditRecord", "read_log"]
