"""SceneProof as a service: an HTTP API (FastAPI, served by uvicorn), an audit log and a web page.

``create_app(ServeConfig(...))`` builds the app in-process (tests, your own ASGI server);
``safetynet serve`` runs it. Needs the ``serve`` extra: ``pip install "safetynet[serve]"``.
Layering: this package sits above the jobs (it serves :mod:`safetynet.sceneproof`); only the CLI
imports it, lazily.
"""

from .config import ServeConfig

__all__ = ["ServeConfig", "create_app"]


def __getattr__(name: str):  # noqa: ANN202 - lazy: ServeConfig (the CLI's flags) must not import fastapi
    if name == "create_app":
        from .app import create_app

        return create_app
    raise AttributeError(name)
