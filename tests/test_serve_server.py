"""A real ``safetynet serve`` (uvicorn, 127.0.0.1, a free port) in a subprocess: what needs sockets.

- a client that never finishes its upload gets 408 within --timeout, and the server answers others;
- a body declared as 1 GB is refused (413) from its headers alone, before any byte of it is sent;
- the audit log survives SIGKILL in the middle of requests (two workers writing to one file):
  every request a client got an answer for is logged, and the database passes integrity_check.

No wall-clock assertion: waits are bounded by socket timeouts far above the expected times.
"""

from __future__ import annotations

import socket
import sqlite3
import threading
import time
import urllib.request
import uuid

import pytest

from conftest import require_module
from serve_support import multipart, pair, start_server

require_module("fastapi")
require_module("uvicorn")
require_module("python_multipart")

TIMEOUT = 3  # --timeout of the server under test (seconds)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = start_server(tmp_path_factory.mktemp("serve"), "--timeout", str(TIMEOUT))
    yield s
    s.stop()


def raw_request(port: int, head: str, body: bytes = b"", wait: float = 30) -> bytes:
    """Send ``head`` (+ ``body``) on a raw socket and return what the server answers before it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as sock:
        sock.sendall(head.encode() + body)
        out = b""
        while True:
            try:
                data = sock.recv(65536)
            except (ConnectionResetError, socket.timeout):
                break
            if not data:
                break
            out += data
        return out


def test_slow_client_that_never_finishes_gets_408(server):
    image, depth = pair("box-png")
    body, ctype = multipart({"image": (image.name, image.read_bytes(), "image/png"),
                             "depth": (depth.name, depth.read_bytes(), "image/png")})
    head = (f"POST /v1/verify HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    # a tenth of the body, then silence: the socket timeout (10x --timeout) only guards the test itself
    answer = raw_request(server.port, head, body[: len(body) // 10], wait=10 * TIMEOUT)
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 408"), answer[:300]
    assert b'"error":"the upload did not finish within 3 s' in rest and b"connection: close" in rest.lower()
    assert server.get("/healthz")[0] == 200


def test_declared_gigabyte_is_refused_from_the_headers(server):
    head = ("POST /v1/verify HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=x\r\n"
            f"Content-Length: {2 ** 30}\r\n\r\n")
    answer = raw_request(server.port, head, b"", wait=10 * TIMEOUT)  # not one byte of the body is sent
    assert answer.startswith(b"HTTP/1.1 413"), answer[:300]
    assert b"above the limit of 20 MB" in answer
    assert server.get("/healthz")[0] == 200


def _post(url: str, body: bytes, ctype: str, rid: str) -> int:
    req = urllib.request.Request(url + "/v1/verify", data=body, method="POST",
                                 headers={"Content-Type": ctype, "X-Request-ID": rid})
    with urllib.request.urlopen(req, timeout=120) as r:
        r.read()
        return r.status


def test_audit_log_survives_sigkill_mid_request(tmp_path):
    """Two workers, four clients posting in a loop; SIGKILL once 12 answers are in, with requests in flight."""
    server = start_server(tmp_path, "--workers", "2", "--timeout", "60")
    image, depth = pair("box-png")
    body, ctype = multipart({"image": (image.name, image.read_bytes(), "image/png"),
                             "depth": (depth.name, depth.read_bytes(), "image/png")})
    answered: list[str] = []
    lock, stop = threading.Lock(), threading.Event()

    def client() -> None:
        while not stop.is_set():
            rid = uuid.uuid4().hex
            try:
                if _post(server.url, body, ctype, rid) == 200:
                    with lock:
                        answered.append(rid)
            except OSError:  # the server died under us: this request was never answered
                return

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + 300
        while len(answered) < 12 and time.monotonic() < deadline and server.proc.poll() is None:
            time.sleep(0.05)
        # a half-sent upload is in flight too when the server dies
        half = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        half.sendall((f"POST /v1/verify HTTP/1.1\r\nHost: x\r\nContent-Type: {ctype}\r\n"
                      f"Content-Length: {len(body)}\r\n\r\n").encode() + body[:1000])
        server.kill()
        half.close()
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=150)
        server.kill()
    with lock:
        done = list(answered)
    assert len(done) >= 12, f"only {len(done)} answers before the deadline:\n{server.log.read_text()[-2000:]}"

    db = sqlite3.connect(tmp_path / "audit.sqlite3")  # reopening replays the WAL, as after any crash
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows, scores = {}, {}
        for rid, status, verdict, score in db.execute("SELECT request_id, status, verdict, real_score FROM requests"):
            rows[rid], scores[rid] = (status, verdict), score
    finally:
        db.close()
    lost = [rid for rid in done if rid not in rows]
    assert not lost, f"{len(lost)} of {len(done)} answered requests are missing from the audit log"
    assert all(rows[rid][0] == 200 for rid in done)  # logged as answered, with the verdict the client got
    assert {rows[rid][1] for rid in done} <= {"real", "fake", "rejected (adversarial)"}
    # one pair, two workers, four clients at once: one answer
    assert len({(rows[rid][1], scores[rid]) for rid in done}) == 1


def _readme_line(prefix: str) -> str:
    from conftest import REPO

    text = (REPO / "README.md").read_text().split("## Service", 1)[1]
    return next(line for line in text.splitlines() if line.startswith(prefix))


def test_readme_curl_and_audit_query_work_as_written(server, tmp_path):
    """The README's curl example against the real server (its files and port substituted), then its
    audit-log query on the same server's log."""
    import json
    import shlex
    import shutil
    import subprocess

    from conftest import missing

    if shutil.which("curl") is None:
        missing("curl not found; install the Debian package curl (.ci/run does)")
    image, depth = pair("7scenes-jpg")
    argv = [a.replace("photo.jpg", str(image)).replace("depth.png", str(depth))
             .replace("http://127.0.0.1:8000", server.url) for a in shlex.split(_readme_line("curl "))]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    doc = json.loads(r.stdout)
    assert doc["verdict"] == "real" and doc["request_id"] == "claim-0042", r.stdout[:300]
    query = shlex.split(_readme_line("sqlite3 "))[2]
    db = sqlite3.connect(f"file:{server.log.parent / 'audit.sqlite3'}?mode=ro", uri=True)
    try:
        rows = db.execute(query).fetchall()
    finally:
        db.close()
    assert rows[0][1:4] == ("claim-0042", 200, "real") and rows[0][5] == doc["image_sha256"]
