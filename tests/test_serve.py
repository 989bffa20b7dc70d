"""The SceneProof service in-process (httpx over ASGI, no network): verdicts, bad input, limits, audit log.

Every good answer is compared with ``verify()`` on the same files; every bad input must come
back as the documented 4xx with a one-line ``{"error": ...}`` naming the problem, leave no file
in the temp folder, and leave the service answering. httpx's ASGI transport streams a request
body chunk by chunk as the app asks for it, so the tests can count how much of a huge upload the
service read before refusing it. fastapi/httpx missing: skip, or fail under CI=true.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import sqlite3
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from conftest import require_module
from serve_support import PAIRS, pair

httpx = require_module("httpx")
require_module("fastapi")
require_module("python_multipart")

from PIL import Image  # noqa: E402

from safetynet.sceneproof.bundle import SceneProof, bundle_sha256, default_model_dir  # noqa: E402
from safetynet.sceneproof.verify import verify  # noqa: E402
from safetynet.serve import ServeConfig, create_app  # noqa: E402
from safetynet.serve.audit import COLUMNS, read_log  # noqa: E402

EXTRA_KEYS = {"request_id", "model_id", "model_sha256", "image_sha256", "depth_sha256"}
LIMIT_MB = 20


@pytest.fixture(scope="module")
def bundle() -> SceneProof:
    return SceneProof.load(default_model_dir())


@pytest.fixture
def service(tmp_path, bundle, monkeypatch):
    """A fresh app with its own audit log, and an empty temp folder that must stay empty."""
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmpdir))  # anything using tempfile lands here
    app = create_app(ServeConfig(audit_db=str(tmp_path / "audit.sqlite3"), max_upload_mb=LIMIT_MB), bundle=bundle)
    yield app
    app.state.service.close()
    assert list(tmpdir.iterdir()) == [], "the service left temporary files behind"


def request(app, method: str, url: str, **kw) -> httpx.Response:
    async def go():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sceneproof") as c:
            return await c.request(method, url, **kw)
    return asyncio.run(go())


def files_of(image: Path, depth: Path, itype: str | None = None, dtype: str = "application/octet-stream") -> dict:
    itype = itype or ("image/jpeg" if image.suffix == ".jpg" else "image/png")
    return {"image": (image.name, image.read_bytes(), itype), "depth": (depth.name, depth.read_bytes(), dtype)}


def post(app, files=None, **kw) -> httpx.Response:
    return request(app, "POST", "/v1/verify", files=files, **kw)


def strip(doc: dict) -> dict:
    return {k: v for k, v in doc.items() if k not in EXTRA_KEYS and k != "model"}


def expected(image: Path, depth: Path, bundle, **kw) -> dict:
    """What the CLI's code path says about the same files, as JSON (floats survive the round trip)."""
    return json.loads(json.dumps(strip(verify(image, depth, bundle=bundle, **kw).to_dict())))


# ------------------------------------------------------------------------------------ good pairs
@pytest.mark.parametrize("name", sorted(PAIRS))
def test_verdict_equals_verify_on_the_same_files(service, bundle, name):
    image, depth = pair(name)
    r = post(service, files_of(image, depth), headers={"X-Request-ID": f"test-{name}"})
    assert r.status_code == 200, r.text
    doc = r.json()
    assert strip(doc) == expected(image, depth, bundle)
    assert doc["verdict"] in ("real", "fake", "rejected (adversarial)") and doc["n_patches"] == len(doc["patches"]) > 0
    assert doc["request_id"] == r.headers["x-request-id"] == f"test-{name}"
    assert doc["model_sha256"] == bundle_sha256(default_model_dir()) and doc["model_id"] == doc["model"] == "sceneproof"
    assert doc["image_sha256"] == hashlib.sha256(image.read_bytes()).hexdigest()
    assert doc["depth_sha256"] == hashlib.sha256(depth.read_bytes()).hexdigest()


def test_any_bundle_can_be_served(tmp_path):
    """--model: a copy of the shipped bundle whose real threshold is 1 makes every accepted pair fake; the
    service reports that bundle's own sha256 and id."""
    import shutil

    model = tmp_path / "strict-bundle"
    shutil.copytree(default_model_dir(), model)
    doc = json.loads((model / "sceneproof.json").read_text())
    (model / "sceneproof.json").write_text(json.dumps({**doc, "real_threshold": 1.0}))
    app = create_app(ServeConfig(audit_db=str(tmp_path / "a.sqlite3"), model=str(model)))
    try:
        r = post(app, files_of(*pair("7scenes-jpg"))).json()
        assert r["verdict"] == "fake" and r["real_threshold"] == 1.0 and r["model_id"] == "strict-bundle"
        assert r["model_sha256"] == bundle_sha256(model) != bundle_sha256(default_model_dir())
    finally:
        app.state.service.close()


def test_default_service_answers_what_verify_answers_with_the_feature_model(tmp_path):
    """Without --model the service loads verify's default, the whole-frame feature model: no patches,
    its own sha256 and id, and the same JSON as verify on the same files."""
    from safetynet.sceneproof.feature_model import FeatureVerifier, default_feature_model_dir

    app = create_app(ServeConfig(audit_db=str(tmp_path / "a.sqlite3")))
    try:
        image, depth = pair("7scenes-jpg")
        r = post(app, files_of(image, depth))
        assert r.status_code == 200, r.text
        doc = r.json()
        assert strip(doc) == json.loads(json.dumps(strip(verify(image, depth).to_dict())))
        assert doc["model_kind"] == "features" and doc["patches"] == [] and doc["verdict"] in ("real", "fake")
        assert doc["model_sha256"] == bundle_sha256(default_feature_model_dir()) != bundle_sha256(default_model_dir())
        assert doc["model_id"] == "sceneproof-features"
        info = request(app, "GET", "/v1/model").json()
        assert info["patch"] is None and info["calibration"]["threshold"] == FeatureVerifier.load().threshold
    finally:
        app.state.service.close()


def test_pinned_real_capture_is_real(service):
    """The capture tests/test_verify_cli.py pins as real stays real through the service."""
    r = post(service, files_of(*pair("7scenes-jpg")))
    assert r.status_code == 200 and r.json()["verdict"] == "real" and r.json()["exit_code"] == 0


def test_other_depth_formats_and_scale(service, bundle, tmp_path):
    """.npy in metres, 16-bit PGM and an explicit depth_scale: each equals verify() on the same file."""
    image, depth = pair("box-png")
    mm = np.asarray(Image.open(depth), dtype=np.uint16)
    npy, pgm, tum = tmp_path / "d.npy", tmp_path / "d.pgm", tmp_path / "tum.png"
    np.save(npy, mm.astype(np.float32) / 1000.0)
    pgm.write_bytes(f"P5\n{mm.shape[1]} {mm.shape[0]}\n65535\n".encode() + mm.astype(">u2").tobytes())
    Image.fromarray((mm.astype(np.uint32) * 5).clip(0, 65534).astype(np.uint16)).save(tum)  # TUM: 5000 per metre
    for d, scale in ((npy, None), (pgm, None), (tum, 5000.0)):
        data = {} if scale is None else {"depth_scale": str(scale)}
        r = post(service, files_of(image, d), data=data)
        assert r.status_code == 200, r.text
        assert strip(r.json()) == expected(image, d, bundle, depth_scale=scale), d.name
    # the depth format is sniffed from the bytes when the file name says nothing
    r = post(service, {"image": (image.name, image.read_bytes(), "image/png"),
                       "depth": ("blob", npy.read_bytes(), "application/octet-stream")})
    assert r.status_code == 200 and strip(r.json()) == expected(image, npy, bundle)


def test_concurrent_requests_answer_like_sequential_ones(service):
    """16 requests at once over 4 pairs: every answer equals the same pair's sequential answer."""
    names = sorted(PAIRS)
    sequential = {n: strip(post(service, files_of(*pair(n))).json()) for n in names}

    async def all_at_once():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=service), base_url="http://sceneproof",
                                     timeout=120) as c:
            return await asyncio.gather(*(c.post("/v1/verify", files=files_of(*pair(n)),
                                                 headers={"X-Request-ID": f"{n}-{k}"})
                                          for k in range(4) for n in names))
    responses = asyncio.run(all_at_once())
    assert [r.status_code for r in responses] == [200] * 16
    for r in responses:
        name = r.json()["request_id"].rsplit("-", 1)[0]
        assert strip(r.json()) == sequential[name], name


# ------------------------------------------------------------------------------------ bad input
def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def huge_png(width: int, height: int, bit_depth: int = 8) -> bytes:
    """A valid grey PNG of width x height zeros, compressed row by row: ~100 kB for 100 megapixels,
    never more than one row in memory (a decompression bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")
    z, row = zlib.compressobj(9), bytes(1 + width * bit_depth // 8)  # filter byte + pixels
    idat = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([bit_depth, 0, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def _npy_header(shape: tuple[int, ...]) -> bytes:
    """Only the header of a float32 .npy of ``shape``: what a file claiming that size starts with."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False, "shape": shape})
    return buf.getvalue()  # magic, version and header; no array data follows


def bad_inputs() -> list:
    """(id, status, needle in the error, how to build the request from (image bytes, 16-bit depth bytes))."""
    h, w = 480, 640
    metres = np.full((h, w), 1.5, np.float32)
    nan, neg_inf, all_inf = metres.copy(), metres.copy(), np.full((h, w), np.inf, np.float32)
    nan[10, 10], neg_inf[5, 5] = np.nan, -np.inf
    j = "image/jpeg"
    return [
        ("empty-body", 400, "no body", lambda im, d: {"content": b"",
                                                      "headers": {"Content-Type": "multipart/form-data; boundary=x"}}),
        ("no-body-no-type", 400, "no body", lambda im, d: {"content": b""}),
        ("json-body", 415, "multipart/form-data", lambda im, d: {"json": {"image": "a"}}),
        ("missing-depth", 400, "missing field 'depth'", lambda im, d: {"files": {"image": ("a.jpg", im, j)}}),
        ("wrong-field-names", 400, "unknown field 'photo'",
         lambda im, d: {"files": {"photo": ("a.jpg", im, j), "depthmap": ("d.png", d, "image/png")}}),
        ("empty-image-file", 400, "'image' is empty",
         lambda im, d: {"files": {"image": ("a.jpg", b"", j), "depth": ("d.png", d, "image/png")}}),
        ("text-as-image", 422, "not png or jpeg",
         lambda im, d: {"files": {"image": ("a.png", b"just some text\n" * 20, "image/png"),
                                  "depth": ("d.png", d, "image/png")}}),
        ("text-as-depth", 422, "not a png",
         lambda im, d: {"files": {"image": ("a.jpg", im, j),
                                  "depth": ("d.png", b"just some text\n" * 20, "image/png")}}),
        ("text-content-type", 415, "text/plain",
         lambda im, d: {"files": {"image": ("a.txt", im, "text/plain"), "depth": ("d.png", d, "image/png")}}),
        ("gif-image", 415, "image/gif",
         lambda im, d: {"files": {"image": ("a.gif", im, "image/gif"), "depth": ("d.png", d, "image/png")}}),
        ("truncated-image", 422, "corrupt",
         lambda im, d: {"files": {"image": ("a.png", _png(np.zeros((h, w, 3), np.uint8) + 7)[:300], "image/png"),
                                  "depth": ("d.png", d, "image/png")}}),
        ("truncated-depth", 422, "corrupt",
         lambda im, d: {"files": {"image": ("a.jpg", im, j), "depth": ("d.png", d[: len(d) // 2], "image/png")}}),
        ("8-bit-depth", 422, "16-bit",
         lambda im, d: {"files": {"image": ("a.jpg", im, j),
                                  "depth": ("d.png", _png(np.full((h, w), 90, np.uint8)), "image/png")}}),
        ("rgb-depth", 422, "rgb",
         lambda im, d: {"files": {"image": ("a.jpg", im, j),
                                  "depth": ("d.png", _png(np.full((h, w, 3), 90, np.uint8)), "image/png")}}),
        ("size-mismatch", 422, "320x240",
         lambda im, d: {"files": {"image": ("a.jpg", im, j),
                                  "depth": ("d.png", _png(np.full((240, 320), 1500, np.uint16)), "image/png")}}),
        ("nan-npy", 422, "nan",
         lambda im, d: {"files": {"image": ("a.jpg", im, j), "depth": ("d.npy", _npy(nan), "")}}),
        ("minus-inf-npy", 422, "negative",
         lambda im, d: {"files": {"image": ("a.jpg", im, j), "depth": ("d.npy", _npy(neg_inf), "")}}),
        ("all-inf-npy", 422, "no valid pixel",
         lambda im, d: {"files": {"image": ("a.jpg", im, j), "depth": ("d.npy", _npy(all_inf), "")}}),
        ("object-npy", 422, "2-d numeric",
         lambda im, d: {"files": {"image": ("a.jpg", im, j), "depth": ("d.npy", _npy(np.array([None, 1])), "")}}),
        ("100-megapixel-image", 413, "megapixels",
         lambda im, d: {"files": {"image": ("big.png", huge_png(10_000, 10_000), "image/png"),
                                  "depth": ("d.png", d, "image/png")}}),
        ("100-megapixel-depth", 413, "megapixels",
         lambda im, d: {"files": {"image": ("a.jpg", im, j),
                                  "depth": ("big.png", huge_png(10_000, 10_000, 16), "image/png")}}),
        ("100-megapixel-npy-header", 413, "megapixels",  # the header alone claims 400 MB of float32
         lambda im, d: {"files": {"image": ("a.jpg", im, j), "depth": ("d.npy", _npy_header((10_000, 10_000)), "")}}),
        ("100-megapixel-pgm-header", 413, "megapixels",
         lambda im, d: {"files": {"image": ("a.jpg", im, j), "depth": ("d.pgm", b"P5\n10000 10000\n65535\n", "")}}),
        ("bad-depth-scale", 400, "depth_scale",
         lambda im, d: {"files": {"image": ("a.jpg", im, j), "depth": ("d.png", d, "image/png")},
                        "data": {"depth_scale": "-3"}}),
        ("bad-request-id", 400, "x-request-id",
         lambda im, d: {"files": {"image": ("a.jpg", im, j), "depth": ("d.png", d, "image/png")},
                        "headers": {"X-Request-ID": "a b;c"}}),
        ("pfm-without-calib", 422, "calib",
         lambda im, d: {"files": {"image": ("a.jpg", im, j),
                                  "depth": ("d.pfm", b"Pf\n640 480\n-1.0\n" + metres.astype("<f4").tobytes(), "")}}),
    ]


BAD = bad_inputs()


@pytest.mark.parametrize("case", BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_a_clear_4xx(service, tmp_path, case):
    name, status, needle, build = case
    image, depth = pair("7scenes-jpg")
    r = post(service, **build(image.read_bytes(), depth.read_bytes()))
    assert r.status_code == status, (r.status_code, r.text)
    doc = r.json()
    assert set(doc) == {"error"} and "\n" not in doc["error"] and "Traceback" not in doc["error"], doc
    assert needle in doc["error"].lower(), doc["error"]
    # the service still answers, and answers right
    assert request(service, "GET", "/healthz").json()["status"] == "ok"
    assert post(service, files_of(image, depth)).json()["verdict"] == "real"
    # the refusal is in the audit log, with its status and message, under the request id the client got
    rows = read_log(tmp_path / "audit.sqlite3")
    assert (rows[-2]["status"], rows[-2]["error"]) == (status, doc["error"]) and rows[-1]["status"] == 200
    assert rows[-2]["request_id"] == r.headers["x-request-id"]


class CountingBody:
    """An upload of ``total`` bytes in 1 MB chunks, counting what the server pulled (never allocated at once)."""

    def __init__(self, total: int = 2 ** 30, chunk: int = 2 ** 20) -> None:
        self.total, self.chunk, self.sent = total, chunk, 0

    async def __aiter__(self):
        block = bytes(self.chunk)
        while self.sent < self.total:
            self.sent += self.chunk
            yield block


def test_declared_gigabyte_is_refused_before_the_body_is_read(service):
    body = CountingBody()
    r = post(service, content=body, headers={"Content-Length": str(body.total),
                                             "Content-Type": "multipart/form-data; boundary=x"})
    assert r.status_code == 413 and "above the limit of 20 MB" in r.json()["error"], r.text
    assert body.sent == 0, f"the service read {body.sent} bytes of a body it refused by its Content-Length"
    assert r.headers["connection"] == "close"


def test_streamed_gigabyte_is_cut_off_at_the_limit(service):
    body = CountingBody()  # no Content-Length: chunked transfer
    r = post(service, content=body, headers={"Content-Type": "multipart/form-data; boundary=x"})
    assert r.status_code == 413 and "passed 20 MB" in r.json()["error"], r.text
    assert LIMIT_MB * 10 ** 6 < body.sent <= LIMIT_MB * 10 ** 6 + 2 * body.chunk, body.sent
    assert request(service, "GET", "/healthz").status_code == 200


def test_client_that_disconnects_mid_upload_is_logged_not_crashed(service, tmp_path, caplog):
    """Raw ASGI: the body's first chunk, then the client is gone (uvicorn's http.disconnect)."""
    messages = iter([{"type": "http.request", "body": b"--x\r\n", "more_body": True}, {"type": "http.disconnect"}])
    sent = []

    async def receive():
        return next(messages)

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/v1/verify", "raw_path": b"/v1/verify", "query_string": b"", "root_path": "",
             "headers": [(b"content-type", b"multipart/form-data; boundary=x"), (b"x-request-id", b"gone-1")],
             "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 80)}
    asyncio.run(service(scope, receive, send))
    row = read_log(tmp_path / "audit.sqlite3")[-1]
    assert (row["request_id"], row["status"]) == ("gone-1", 499) and "Traceback" not in caplog.text


def test_unknown_routes_and_methods_are_json(service):
    r = request(service, "GET", "/v1/nothing")
    assert r.status_code == 404 and "openapi.json" in r.json()["error"]
    r = request(service, "GET", "/v1/verify")
    assert r.status_code == 405 and set(r.json()) == {"error"}


# ------------------------------------------------------------------------------------ the other endpoints
def test_model_health_and_openapi(service, bundle):
    health = request(service, "GET", "/healthz").json()
    model = request(service, "GET", "/v1/model").json()
    assert health == {"status": "ok", "model_id": "sceneproof", "model_sha256": bundle_sha256(default_model_dir())}
    assert model["sha256"] == health["model_sha256"] and model["working_size"] == list(bundle.size)
    cal = model["calibration"]
    assert cal["real_threshold"] == bundle.settings["real_threshold"] and cal["thresholds"] == bundle.thresholds
    assert model["limits"] == {"max_upload_mb": LIMIT_MB, "max_pixels": 4096 * 4096, "timeout_s": 30.0}
    schema = request(service, "GET", "/openapi.json").json()
    body = schema["paths"]["/v1/verify"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert body["required"] == ["image", "depth"] and {"depth_scale", "calib"} <= set(body["properties"])
    assert request(service, "GET", "/docs").status_code == 404  # the CDN-based docs page is off: offline


def test_page_and_its_assets_are_served_locally(service):
    import re

    page = request(service, "GET", "/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    refs = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert refs and all(ref.startswith("/static/") for ref in refs), refs  # nothing from another host
    for ref in refs:
        assert request(service, "GET", ref).status_code == 200, ref
    for control in ("image", "depth", "depth_scale"):  # every input has its label
        assert f'<label for="{control}"' in page.text and f'id="{control}"' in page.text


# ------------------------------------------------------------------------------------ audit log
def test_audit_log_holds_every_request(service, tmp_path, bundle):
    image, depth = pair("box-png")
    ok = post(service, files_of(image, depth), headers={"X-Request-ID": "claim-0042"}).json()
    bad = post(service, {"image": (image.name, image.read_bytes(), "image/png")})
    rows = read_log(tmp_path / "audit.sqlite3")
    assert len(rows) == 2 and set(rows[0]) == {"id", *COLUMNS}
    good = rows[0]
    assert (good["request_id"], good["status"], good["verdict"]) == ("claim-0042", 200, ok["verdict"])
    assert good["image_sha256"] == hashlib.sha256(image.read_bytes()).hexdigest() == ok["image_sha256"]
    assert good["depth_sha256"] == hashlib.sha256(depth.read_bytes()).hexdigest()
    assert good["real_score"] == ok["real_score"] and good["real_threshold"] == ok["real_threshold"]
    assert good["model_sha256"] == bundle_sha256(default_model_dir()) and good["image_path"] is None
    assert json.loads(good["patch_scores"]) == [[p["p_real"], p["rejected"]] for p in ok["patches"]]
    assert rows[1]["status"] == 400 and rows[1]["verdict"] is None
    assert rows[1]["request_id"] == bad.headers["x-request-id"]
    db = sqlite3.connect(tmp_path / "audit.sqlite3")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()
    assert not list(tmp_path.glob("*.png")) and not list(tmp_path.glob("*.jpg"))  # no image kept by default


def test_keep_uploads_stores_files_by_sha256(tmp_path, bundle):
    keep = tmp_path / "uploads"
    app = create_app(ServeConfig(audit_db=str(tmp_path / "a.sqlite3"), keep_uploads=str(keep)), bundle=bundle)
    try:
        image, depth = pair("box-png")
        doc = post(app, files_of(image, depth)).json()
        row = read_log(tmp_path / "a.sqlite3")[0]
        assert Path(row["image_path"]) == keep / f"{doc['image_sha256']}.png"
        assert Path(row["image_path"]).read_bytes() == image.read_bytes()
        assert Path(row["depth_path"]).read_bytes() == depth.read_bytes()
        assert sorted(p.name for p in keep.iterdir()) == sorted([Path(row["image_path"]).name,
                                                                 Path(row["depth_path"]).name])
    finally:
        app.state.service.close()


def test_busy_server_answers_503_not_a_hang(tmp_path, bundle, monkeypatch):
    """A verdict that cannot come within --timeout is a 503 with Retry-After (and is logged)."""
    import threading

    from safetynet.serve.app import Service

    release = threading.Event()
    original = Service.judge

    def stuck(self, *a, **kw):  # the inference thread is held until the test lets it go
        release.wait(30)
        return original(self, *a, **kw)

    monkeypatch.setattr(Service, "judge", stuck)
    app = create_app(ServeConfig(audit_db=str(tmp_path / "a.sqlite3"), timeout=0.5), bundle=bundle)
    try:
        r = post(app, files_of(*pair("box-png")))
        assert r.status_code == 503 and "--timeout 0.5 s" in r.json()["error"] and r.headers["retry-after"] == "5"
        assert read_log(tmp_path / "a.sqlite3")[-1]["status"] == 503
    finally:
        release.set()
        app.state.service.close()


def test_a_bug_is_a_500_without_traceback(service, tmp_path, monkeypatch, caplog):
    from safetynet.serve.app import Service

    def broken(self, *a, **kw):
        raise RuntimeError("secret detail at /srv/internal/path")

    monkeypatch.setattr(Service, "judge", broken)
    r = post(service, files_of(*pair("box-png")), headers={"X-Request-ID": "bug-1"})
    assert r.status_code == 500 and set(r.json()) == {"error"}
    assert "secret" not in r.text and "Traceback" not in r.text and "bug-1" in r.json()["error"]
    assert "secret detail" in caplog.text  # ... but the server log has it
    assert read_log(tmp_path / "audit.sqlite3")[-1]["status"] == 500


def test_no_verdict_leaves_without_its_audit_row(service):
    service.state.service.audit.close()  # the log cannot be written any more (a full disk, a lost file)
    r = post(service, files_of(*pair("box-png")))
    assert r.status_code == 500 and "audit log" in r.json()["error"] and "verdict" not in r.json()


# ------------------------------------------------------------------------------------ the command
def test_serve_command_flags_and_bad_settings(tmp_path, capsys):
    from safetynet.cli import command_parser, main
    from safetynet.exit_codes import EXIT_BAD_INPUT

    flags = {s for a in command_parser("serve")._actions for s in a.option_strings}
    assert {"--host", "--port", "--workers", "--model", "--audit-db", "--keep-uploads", "--max-upload-mb",
            "--max-pixels", "--timeout", "--threads", "--seed", "--json"} <= flags
    for argv, needle in ((["--workers", "0"], "--workers"), (["--timeout", "-1"], "--timeout"),
                         (["--model", str(tmp_path / "none"), "--port", "0"], "sceneproof.json"),
                         (["--model", str(tmp_path / "none"), "--workers", "2"], "sceneproof.json")):
        assert main(["serve", *argv]) == EXIT_BAD_INPUT
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and needle in err[0], err


def test_audit_logs_opened_together_share_one_file(tmp_path):
    """Workers open the log at the same moment and append to it concurrently: no lock error, no lost row."""
    import threading

    from safetynet.serve.audit import AuditLog, AuditRecord

    path, errors = tmp_path / "shared.sqlite3", []
    start = threading.Barrier(6)

    def worker(k: int) -> None:
        try:
            start.wait()
            log = AuditLog(path)
            for i in range(20):
                log.record(AuditRecord(request_id=f"{k}-{i}", status=200, model_sha256="m"))
            log.close()
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(r["request_id"] for r in read_log(path)) == sorted(f"{k}-{i}" for k in range(6) for i in range(20))


def test_audit_log_of_another_schema_is_refused(tmp_path):
    from safetynet.errors import InputError
    from safetynet.serve.audit import AuditLog

    db = sqlite3.connect(tmp_path / "old.sqlite3")
    db.execute("PRAGMA user_version=7")
    db.close()
    with pytest.raises(InputError, match="schema version 7"):
        AuditLog(tmp_path / "old.sqlite3")
    (tmp_path / "junk.sqlite3").write_bytes(b"not a database" * 100)
    with pytest.raises(InputError, match="--audit-db"):
        AuditLog(tmp_path / "junk.sqlite3")
