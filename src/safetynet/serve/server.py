"""Running the service under uvicorn: ``safetynet serve`` calls :func:`serve`.

uvicorn starts ``--workers`` processes (or runs in this one for a single worker); each calls
:func:`app_from_environment`, which reads the settings the parent put in the environment and
loads the model once, for that process.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict
from typing import Any

from .config import ServeConfig

SETTINGS_ENV = "SAFETYNET_SERVE_SETTINGS"
log = logging.getLogger("safetynet.serve")


def app_from_environment():  # noqa: ANN201 - returns a FastAPI app; fastapi is imported lazily
    """uvicorn's app factory in every worker: settings from ``$SAFETYNET_SERVE_SETTINGS`` (JSON)."""
    from .app import create_app

    raw = os.environ.get(SETTINGS_ENV)
    return create_app(ServeConfig(**json.loads(raw)) if raw else ServeConfig())


def serve(cfg: ServeConfig) -> dict[str, Any]:
    """Serve until interrupted (Ctrl-C / SIGTERM); returns a summary for the CLI."""
    import uvicorn

    import torch

    cfg.validate()
    os.environ[SETTINGS_ENV] = json.dumps(asdict(cfg))
    # Worker processes are fresh interpreters: torch takes its thread count from OMP_NUM_THREADS,
    # so they run with the --threads the CLI set in this one.
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(torch.get_num_threads())
    # Build one app here first: a bad --model or --audit-db fails now, with a one-line error,
    # not once per worker inside uvicorn.
    if cfg.workers > 1:
        app_from_environment().state.service.close()
    log.warning("SceneProof service on http://%s:%d/ (%d worker%s); audit log %s", cfg.host, cfg.port, cfg.workers,
                "s" if cfg.workers > 1 else "", cfg.audit_db)
    if cfg.workers == 1:
        uvicorn.run(app_from_environment(), host=cfg.host, port=cfg.port, log_level="info",
                    timeout_graceful_shutdown=int(cfg.timeout) + 1)
    else:
        uvicorn.run("safetynet.serve.server:app_from_environment", factory=True, host=cfg.host, port=cfg.port,
                    workers=cfg.workers, log_level="info", timeout_graceful_shutdown=int(cfg.timeout) + 1)
    return {"url": f"http://{cfg.host}:{cfg.port}/", "workers": cfg.workers, "audit_db": cfg.audit_db}


__all__ = ["SETTINGS_ENV", "app_from_environment", "serve"]
