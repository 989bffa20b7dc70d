"""Load on ``safetynet serve`` over loopback: throughput, latency percentiles, errors, server memory.

Starts a real server (``safetynet serve --workers W``) on 127.0.0.1 and a free port for each
worker count, then, with asyncio + httpx clients posting one real RGB-D pair:

1. warm-up (``--warmup`` requests), server RSS (all its processes, from /proc);
2. ``--memory-requests`` (1,000) requests at 8 clients, server RSS again (growth = leak);
3. for each client count (1, 8, 32): ``--requests`` requests, stopping early after
   ``--max-seconds``: requests/s, p50/p95/p99 latency, errors (non-200 or no answer).

Bounded: fixed request counts, every phase capped by ``--max-seconds``, servers stopped at the end
(also on Ctrl-C). Loopback only: nothing leaves the machine.

    OMP_NUM_THREADS=1 nice -n 19 python benchmarks/serve_load.py --out benchmarks/results/serve_load.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SAFETYNET_DATA", REPO.parent / "shared" / "data"))
PAIR = (DATA / "rgbd/7scenes-kitchen/frame-000950.color.jpg", DATA / "rgbd/7scenes-kitchen/frame-000950.depth.png")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tree_memory_mb(pid: int) -> dict[str, float]:
    """Memory of ``pid`` and all its descendants (uvicorn's worker processes), in MB: ``rss`` (resident;
    counts the pages of torch's shared libraries once per process) and ``pss`` (each shared page split
    between the processes that map it: what the server really costs the machine)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    total = {"rss": 0, "pss": 0}
    todo = [pid]
    while todo:
        p = todo.pop()
        todo += children.get(p, [])
        try:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                key = line.split(":")[0].lower()
                if key in total:
                    total[key] += int(line.split()[1])
        except OSError:
            pass
    return {k: round(v / 1024, 1) for k, v in total.items()}


def start(workers: int, tmp: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [sys.executable, "-m", "safetynet.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
           "--workers", str(workers), "--audit-db", str(tmp / f"audit-{workers}.sqlite3"), "--timeout", "120"]
    log = open(tmp / f"server-{workers}.log", "wb")  # noqa: SIM115 - lives as long as the server
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited:\n{(tmp / f'server-{workers}.log').read_text()}")
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    stop(proc)
    raise SystemExit("server did not start within 300 s")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


async def load(url: str, files: dict, clients: int, n: int, max_seconds: float) -> dict:
    """``n`` requests from ``clients`` concurrent clients (or fewer, if ``max_seconds`` runs out)."""
    latencies: list[float] = []
    errors = 0
    issued = 0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=180, limits=limits) as client:
        async def worker() -> None:
            nonlocal issued, errors
            while issued < n:
                issued += 1
                t = time.perf_counter()
                try:
                    r = await client.post("/v1/verify", files=files)
                    ok = r.status_code == 200
                except httpx.HTTPError:
                    ok = False
                if ok:
                    latencies.append(time.perf_counter() - t)
                else:
                    errors += 1

        start = time.perf_counter()
        tasks = [asyncio.create_task(worker()) for _ in range(clients)]
        done, pending = await asyncio.wait(tasks, timeout=max_seconds)
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        wall = time.perf_counter() - start
    return summary(clients, n, latencies, errors, bool(pending), wall)


def summary(clients: int, n: int, latencies: list[float], errors: int, stopped_early: bool, wall: float) -> dict:
    lat = np.asarray(latencies) * 1000
    pct = (lambda q: round(float(np.percentile(lat, q)), 1)) if lat.size else (lambda q: None)
    return {"clients": clients, "requested": n, "completed": len(latencies), "errors": errors,
            "stopped_early": stopped_early, "seconds": round(wall, 2),
            "requests_per_s": round(len(latencies) / wall, 2), "p50_ms": pct(50), "p95_ms": pct(95),
            "p99_ms": pct(99), "_latencies": latencies}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--image", type=Path, default=PAIR[0])
    ap.add_argument("--depth", type=Path, default=PAIR[1])
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--requests", type=int, default=200, help="requests per (workers, clients) cell")
    ap.add_argument("--memory-requests", type=int, default=1000, help="requests between the two RSS readings")
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--max-seconds", type=float, default=600, help="cap on every phase")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    files = {"image": (args.image.name, args.image.read_bytes(), "image/jpeg"),
             "depth": (args.depth.name, args.depth.read_bytes(), "image/png")}
    results = {"pair": [str(args.image), str(args.depth)], "cpus": os.cpu_count(), "python": platform.python_version(),
               "machine": platform.machine(), "loadavg_at_start": os.getloadavg(), "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        for workers in args.workers:
            proc, url = start(workers, Path(tmp))
            try:
                asyncio.run(load(url, files, min(workers, 2), args.warmup, args.max_seconds))
                # the memory run in 4 quarters: growth that stops is warm-up (allocator arenas,
                # buffers), growth that goes on is a leak
                trace = [{"after_requests": 0, **tree_memory_mb(proc.pid)}]
                lat, errors, wall, early = [], 0, 0.0, False
                quarter = args.memory_requests // 4
                for k in range(1, 5):
                    part = asyncio.run(load(url, files, 8, quarter, args.max_seconds))
                    lat += part.pop("_latencies")
                    errors, wall, early = errors + part["errors"], wall + part["seconds"], early or part["stopped_early"]
                    trace.append({"after_requests": k * quarter, **tree_memory_mb(proc.pid)})
                mem = summary(8, 4 * quarter, lat, errors, early, wall)
                mem.pop("_latencies")
                run = {"workers": workers, "memory_mb": trace, "memory_run": mem, "cells": []}
                print(json.dumps({k: v for k, v in run.items() if k != "cells"}), flush=True)
                for clients in args.clients:
                    cell = asyncio.run(load(url, files, clients, args.requests, args.max_seconds))
                    cell.pop("_latencies")
                    print(json.dumps({"workers": workers, **cell}), flush=True)
                    run["cells"].append(cell)
                results["runs"].append(run)
            finally:
                stop(proc)
    results["loadavg_at_end"] = os.getloadavg()
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp_out = args.out.with_suffix(".json.tmp")
        tmp_out.write_text(json.dumps(results, indent=1) + "\n")
        tmp_out.replace(args.out)  # atomic: a half-written result never replaces a whole one


if __name__ == "__main__":
    main()
