"""Helpers for the service tests: pairs from the shared data, a real ``safetynet serve`` subprocess.

A real server is the installed command (``safetynet serve``) in its own process group on
127.0.0.1 and a free port, so a test can SIGKILL it (and its worker processes) like a crash.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from conftest import REPO, require_data

# Real captures from SAFETYNET_DATA/rgbd (colour, 16-bit millimetre depth): three cameras and formats.
PAIRS = {
    "7scenes-jpg": ("7scenes-kitchen", "frame-000950.color.jpg", "frame-000950.depth.png"),
    "box-png": ("box-scene", "frame-000015.color.png", "frame-000015.depth.png"),
    "realsense-png": ("felixchenfy-realsense-rooms", "frame-000003.color.png", "frame-000003.depth.png"),
    "kinect2-png": ("gqcnn-kinect2", "frame-000000.color.png", "frame-000000.depth.png"),
}


def pair(name: str) -> tuple[Path, Path]:
    folder, image, depth = PAIRS[name]
    return require_data("rgbd", folder, image), require_data("rgbd", folder, depth)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def entry_point() -> list[str]:
    exe = Path(sys.executable).with_name("safetynet")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "safetynet.cli"]


@dataclass
class Server:
    proc: subprocess.Popen
    url: str
    port: int
    log: Path

    def get(self, path: str, timeout: float = 10) -> tuple[int, dict]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=timeout) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def kill(self) -> None:
        """SIGKILL the server and its workers (its own process group): a crash, nothing cleaned up."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


def start_server(tmp: Path, *args: str, ready_timeout: float = 180) -> Server:
    """``safetynet serve`` on 127.0.0.1 and a free port; returns once /healthz answers."""
    port = free_port()
    log = tmp / f"server-{port}.log"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    cmd = [*entry_point(), "serve", "--host", "127.0.0.1", "--port", str(port), "--audit-db",
           str(tmp / "audit.sqlite3"), *args]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp, start_new_session=True)
    server = Server(proc, f"http://127.0.0.1:{port}", port, log)
    deadline = time.monotonic() + ready_timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"safetynet serve exited with {proc.returncode}:\n{log.read_text()}")
        try:
            if server.get("/healthz", timeout=2)[0] == 200:
                return server
        except (OSError, ValueError):
            pass
        time.sleep(0.3)
    server.kill()
    raise RuntimeError(f"safetynet serve did not answer /healthz within {ready_timeout} s:\n{log.read_text()}")


def multipart(fields: dict[str, tuple[str, bytes, str]],
              boundary: str = "sceneproof-test-boundary") -> tuple[bytes, str]:
    """A multipart/form-data body from {name: (filename, bytes, content type)}, and its Content-Type."""
    out = b""
    for name, (filename, data, ctype) in fields.items():
        out += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{filename}\"\r\n"
                f"Content-Type: {ctype}\r\n\r\n").encode() + data + b"\r\n"
    return out + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"
