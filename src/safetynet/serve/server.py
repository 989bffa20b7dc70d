"""Running the service under uvicorn: ``safetynet serve`` calls :func:`serve`.

uvicorn starts ``--workers`` processes (or runs in this one for a single worker); each calls
:func:`app_from_environment`, which reads the settings the parent put in the environment and
loads the model once, for that process.
"""

from __future__ import annotations

import copy
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
    return app_from_settings_json(os.environ.get(SETTINGS_ENV) or "{}")


def _build_and_close(settings_json: str) -> str | None:
    """Build the app once (model, audit log) and close it; the one-line error if that fails."""
    from ..errors import SafetyNetError

    try:
        app_from_settings_json(settings_json).state.service.close()
    except SafetyNetError as e:
        return str(e)
    return None


def app_from_settings_json(settings_json: str):  # noqa: ANN201 - a FastAPI app
    """The app for settings given as the JSON of a :class:`ServeConfig` (``{}``: the defaults)."""
    from .app import create_app

    return create_app(ServeConfig(**json.loads(settings_json)))


def _check_settings(settings_json: str) -> None:
    """With several workers, a bad --model or --audit-db must fail once, now, with a one-line error, not
    in every worker inside uvicorn. Checked in a short-lived process: the model it loads must not stay in
    uvicorn's supervisor process for the server's lifetime (a third copy of torch and the model)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from ..errors import InputError

    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        error = pool.submit(_build_and_close, settings_json).result()
    if error is not None:
        raise InputError(error)


def serve(cfg: ServeConfig) -> dict[str, Any]:
    """Serve until interrupted (Ctrl-C / SIGTERM); returns a summary for the CLI."""
    import uvicorn

    import torch

    cfg.validate()
    os.environ[SETTINGS_ENV] = json.dumps(asdict(cfg))
    # Worker processes are fresh interpreters: torch takes its thread count from OMP_NUM_THREADS,
    # so they run with the --threads the CLI set in this one.
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(torch.get_num_threads())
    if cfg.workers > 1:
        _check_settings(os.environ[SETTINGS_ENV])
    # uvicorn logs requests to stdout; stdout belongs to the command's own output (--json)
    log_config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    log_config["handlers"]["access"]["stream"] = "ext://sys.stderr"
    log.warning("SceneProof service on http://%s:%d/ (%d worker%s); audit log %s", cfg.host, cfg.port, cfg.workers,
                "s" if cfg.workers > 1 else "", cfg.audit_db)
    if cfg.workers == 1:
        uvicorn.run(app_from_environment(), host=cfg.host, port=cfg.port, log_level="info", log_config=log_config,
                    timeout_graceful_shutdown=int(cfg.timeout) + 1)
    else:
        uvicorn.run("safetynet.serve.server:app_from_environment", factory=True, host=cfg.host, port=cfg.port,
                    workers=cfg.workers, log_level="info", log_config=log_config,
                    timeout_graceful_shutdown=int(cfg.timeout) + 1)
    return {"url": f"http://{cfg.host}:{cfg.port}/", "workers": cfg.workers, "audit_db": cfg.audit_db}


__all__ = ["SETTINGS_ENV", "app_from_environment", "app_from_settings_json", "serve"]
