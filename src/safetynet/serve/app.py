"""The SceneProof HTTP service: ``create_app(settings)`` builds the ASGI app (FastAPI).

Endpoints: ``POST /v1/verify`` (multipart ``image`` + ``depth`` [+ ``depth_scale``,
``depth_format``, ``calib``]), ``GET /v1/model``, ``GET /healthz``, ``GET /openapi.json`` and the
web page at ``/`` (its assets under ``/static``, all served from the package: it works offline).

The model is loaded once, when the app is built (once per worker process); every request is
independent of the others (the service keeps no session), so more workers or more instances
behind any load balancer scale it out. Inference runs on a one-thread executor per worker, off
the event loop: the loop keeps accepting, timing and refusing requests while a verdict is
computed, and one worker never runs two inferences that would fight over its core.

Errors: every refusal is a one-line JSON ``{"error": "..."}`` naming the problem and the fix:
400 malformed request, 413 too large (bytes or pixels), 415 wrong content type, 408 upload not
finished within ``--timeout``, 422 files that are not a usable RGB-D pair, 503 no verdict within
``--timeout`` (busy). A 500 never carries a traceback: it names the request id to look up in
the server log.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from .. import __version__
from .._io import write_bytes_atomic
from ..errors import LimitError, SafetyNetError
from ..sceneproof.bundle import SceneProof, bundle_sha256, default_model_dir
from ..sceneproof.feature_model import FeatureVerifier, default_feature_model_dir
from ..sceneproof.verify import load_verifier, verify_bytes
from .audit import AuditLog, AuditRecord
from .config import ServeConfig
from .upload import HTTPProblem, check_declared_length, float_field, parse_form, read_body, text_field

log = logging.getLogger("safetynet.serve")

REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
IMAGE_FORMATS = ("PNG", "JPEG")  # untrusted uploads: no other Pillow decoder is tried
CALIBRATION_KEYS = ("thresholds", "metzen_threshold", "target_fpr", "reject_fraction", "real_threshold",
                    "min_valid_fraction", "threshold", "min_valid")  # the CNN bundle's, then the feature model's

VERIFY_OPENAPI = {
    "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
        "type": "object", "required": ["image", "depth"],
        "properties": {
            "image": {"type": "string", "format": "binary", "description": "colour image, PNG or JPEG"},
            "depth": {"type": "string", "format": "binary",
                      "description": "depth map registered to the image, same size: 16-bit PNG/PGM (millimetres "
                                     "unless depth_scale says otherwise), .npy (metres) or PFM disparity (+ calib)"},
            "depth_scale": {"type": "number", "description": "stored depth units per metre (default 1000 for "
                                                             "PNG/PGM, 1 for .npy)"},
            "depth_format": {"type": "string", "enum": ["png", "pgm", "npy", "pfm", "dpt", "sun", "nyu-raw"],
                             "description": "override the format found from the file name or its first bytes"},
            "calib": {"type": "string", "format": "binary", "description": "Middlebury calib.txt for PFM disparity"},
        }}}}},
    "parameters": [{"name": "X-Request-ID", "in": "header", "required": False, "schema": {"type": "string"},
                    "description": "your id for this request (1-128 of A-Z a-z 0-9 . _ : -); logged and echoed"}],
    "responses": {"200": {"description": "the verdict: the JSON of `safetynet sceneproof verify --json` plus "
                                         "request_id, model_id, model_sha256, image_sha256, depth_sha256"},
                  **{str(c): {"description": d, "content": {"application/json": {"schema": {
                      "type": "object", "properties": {"error": {"type": "string"}}}}}}
                     for c, d in ((400, "malformed request"), (408, "upload not finished within --timeout"),
                                  (413, "upload or picture above the limits"), (415, "wrong content type"),
                                  (422, "the files are not a usable RGB-D pair"),
                                  (503, "no verdict within --timeout (server busy)"))}},
}


def static_dir() -> Path:
    """The page's assets, shipped inside the package."""
    return Path(str(resources.files("safetynet.serve") / "static"))


def error_response(status: int, message: str, *, close: bool = False, headers: dict[str, str] | None = None,
                   request_id: str | None = None) -> JSONResponse:
    h = dict(headers or {})
    if close:
        h["Connection"] = "close"  # the body was not read to its end: this connection cannot carry another request
    if request_id:
        h["X-Request-ID"] = request_id
    return JSONResponse({"error": " ".join(message.split())}, status_code=status, headers=h)


class Service:
    """What one worker holds: the settings, the loaded bundle, its sha256, the audit log, the executor."""

    def __init__(self, settings: ServeConfig, bundle: SceneProof | FeatureVerifier | None = None) -> None:
        self.settings = settings.validate()
        # The same model verify would use for --model (default: the shipped feature model).
        self.bundle = bundle if bundle is not None else load_verifier(settings.model)
        # A model built in memory has no folder: identify it by the shipped one of its kind.
        default = default_model_dir() if isinstance(self.bundle, SceneProof) else default_feature_model_dir()
        self.directory = Path(self.bundle.directory or default)
        self.model_sha256 = bundle_sha256(self.directory)
        self.model_id = str(self.bundle.settings.get("name") or self.directory.name)
        self.audit = AuditLog(settings.audit_db)
        self.keep = Path(settings.keep_uploads) if settings.keep_uploads else None
        if self.keep is not None:
            self.keep.mkdir(parents=True, exist_ok=True)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sceneproof")

    def model_info(self) -> dict[str, Any]:
        s = self.bundle.settings
        return {"id": self.model_id, "sha256": self.model_sha256, "format_version": 1,
                "safetynet_version": __version__, "working_size": list(self.bundle.size),
                # The feature model judges the whole frame: no patch grid (null).
                "patch": getattr(self.bundle, "patch", None), "stride": getattr(self.bundle, "stride", None), "calibration": {k: s[k] for k in CALIBRATION_KEYS if k in s},
                "limits": {"max_upload_mb": self.settings.max_upload_mb, "max_pixels": self.settings.max_pixels,
                           "timeout_s": self.settings.timeout}}

    def keep_upload(self, data: bytes, sha: str, filename: str | None) -> str:
        suffix = Path(filename or "").suffix.lower()
        suffix = suffix if re.fullmatch(r"\.[a-z0-9]{1,8}", suffix) else ".bin"  # never a client-chosen path
        path = self.keep / f"{sha}{suffix}"
        if not path.exists():
            write_bytes_atomic(path, data)
        return str(path)

    def judge(self, parts: dict, depth_scale: float | None, depth_format: str | None) -> dict[str, Any]:
        """Decode and verify in memory (runs on the executor thread); raises SafetyNetError on bad files."""
        image, depth = parts["image"], parts["depth"]
        calib = parts.get("calib")
        verdict = verify_bytes(bytes(image.data), bytes(depth.data), self.bundle, depth_scale,
                               image_name=f"'image' ({image.filename or 'no file name'})",
                               depth_name=depth.filename or "depth", depth_format=depth_format,
                               calib=bytes(calib.data).decode("utf-8", "replace") if calib is not None else None,
                               max_pixels=self.settings.max_pixels, image_formats=IMAGE_FORMATS,
                               missing_calib="was not sent; add the field 'calib' with its text")
        return verdict.to_dict()

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.audit.close()


def create_app(settings: ServeConfig | None = None, *, bundle: SceneProof | FeatureVerifier | None = None) -> FastAPI:
    """The ASGI app; loads the bundle (``settings.model``, or ``bundle`` when given) once, now."""
    service = Service(settings or ServeConfig(), bundle)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        service.close()

    app = FastAPI(title="SceneProof", version=__version__,
                  description="Is this RGB-D pair a real capture? The SafetyNet SceneProof model as a service.",
                  docs_url=None, redoc_url=None,  # the interactive docs load scripts from a CDN: not offline
                  lifespan=lifespan)
    app.state.service = service
    app.mount("/static", StaticFiles(directory=static_dir()), name="static")

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        hint = {404: f"no such page {request.url.path}; see /openapi.json for the endpoints",
                405: f"{request.method} is not allowed on {request.url.path}; see /openapi.json"}
        return error_response(exc.status_code, hint.get(exc.status_code, str(exc.detail)))

    @app.exception_handler(Exception)
    async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return error_response(500, "internal error; the server log has the details")

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(static_dir() / "index.html", media_type="text/html")

    @app.get("/healthz", summary="liveness: the model is loaded and the audit log is open")
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "model_id": service.model_id, "model_sha256": service.model_sha256}

    @app.get("/v1/model", summary="the loaded SceneProof bundle: id, sha256, calibration, limits")
    async def model() -> dict[str, Any]:
        return service.model_info()

    @app.post("/v1/verify", summary="judge one RGB-D pair: real, fake or rejected (adversarial)",
              openapi_extra=VERIFY_OPENAPI)
    async def verify_pair(request: Request) -> JSONResponse:
        return await _verify(service, request)

    return app


async def _verify(service: Service, request: Request) -> JSONResponse:
    loop = asyncio.get_running_loop()
    start = loop.time()
    deadline = start + service.settings.timeout
    given = request.headers.get("x-request-id")
    rid = given if given is not None and REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
    rec = AuditRecord(request_id=rid, status=200, model_sha256=service.model_sha256)
    try:
        if given is not None and rid != given:  # logged under an id of ours: a client's id is never trusted blindly
            raise HTTPProblem(400, "X-Request-ID must be 1-128 characters of A-Z a-z 0-9 . _ : -; send another id")
        check_declared_length(request.headers.get("content-length"), service.settings.max_upload_bytes)
        body = await read_body(request.stream(), service.settings.max_upload_bytes, deadline, service.settings.timeout)
        parts = parse_form(body, request.headers.get("content-type", ""))
        del body
        image, depth = parts["image"], parts["depth"]
        rec.image_sha256, rec.depth_sha256 = await run_in_threadpool(_sha256, image.data, depth.data)
        rec.image_bytes, rec.depth_bytes = len(image.data), len(depth.data)
        rec.depth_scale = float_field(parts, "depth_scale", "it is stored depth units per metre (1000 for millimetres)")
        depth_format = text_field(parts, "depth_format")
        if service.keep is not None:
            rec.image_path = await run_in_threadpool(service.keep_upload, bytes(image.data), rec.image_sha256,
                                                     image.filename)
            rec.depth_path = await run_in_threadpool(service.keep_upload, bytes(depth.data), rec.depth_sha256,
                                                     depth.filename)
        future = loop.run_in_executor(service.executor, service.judge, parts, rec.depth_scale, depth_format)
        try:
            payload = await asyncio.wait_for(future, max(0.0, deadline - loop.time()))
        except asyncio.TimeoutError:
            raise HTTPProblem(503, f"no verdict within --timeout {service.settings.timeout:g} s: the server is busy; "
                                   "retry later, or run more workers or instances",
                              headers={"Retry-After": "5"}) from None
    except ClientDisconnect:  # nobody to answer; the log still shows the attempt (nginx's 499)
        return await _refuse(service, rec, 499, "the client closed the connection during the upload", start)
    except HTTPProblem as e:
        return await _refuse(service, rec, e.status, e.message, start, close=e.close, headers=e.headers)
    except LimitError as e:
        return await _refuse(service, rec, 413, str(e), start)
    except SafetyNetError as e:
        return await _refuse(service, rec, 422, str(e), start)
    except Exception:  # noqa: BLE001 - a bug must not leak a traceback to the client, but is logged in full
        log.exception("request %s failed", rid)
        return await _refuse(service, rec, 500, f"internal error; the server log has the details of request {rid}",
                             start)
    rec.verdict = payload
    rec.seconds = loop.time() - start
    try:
        await run_in_threadpool(service.audit.record, rec)  # on disk before the client hears the verdict
    except Exception:  # noqa: BLE001 - no verdict leaves without its audit row
        log.exception("audit log write failed for request %s", rid)
        return error_response(500, "the audit log could not be written, so no verdict is given; retry later",
                              request_id=rid)
    payload = {**payload, "model": service.model_id, "request_id": rid, "model_id": service.model_id,
               "model_sha256": service.model_sha256, "image_sha256": rec.image_sha256,
               "depth_sha256": rec.depth_sha256}
    return JSONResponse(payload, headers={"X-Request-ID": rid})


def _sha256(*blobs: bytes | bytearray) -> tuple[str, ...]:
    return tuple(hashlib.sha256(b).hexdigest() for b in blobs)


async def _refuse(service: Service, rec: AuditRecord, status: int, message: str, start: float, *,
                  close: bool = False, headers: dict[str, str] | None = None) -> JSONResponse:
    """The one-line JSON error, logged in the audit log like a verdict."""
    rec.status, rec.error = status, " ".join(message.split())
    rec.seconds = asyncio.get_running_loop().time() - start
    try:
        await run_in_threadpool(service.audit.record, rec)
    except Exception:  # noqa: BLE001 - the refusal is still the right answer
        log.exception("audit log write failed for request %s", rec.request_id)
    log.info("request %s refused: %s %s", rec.request_id, status, rec.error)
    return error_response(status, message, close=close, headers=headers, request_id=rec.request_id)


__all__ = ["Service", "create_app", "static_dir"]
