"""Where independent units of work run: this process, local worker processes, or a Ray cluster.

A job hands an executor a top-level function and a list of argument tuples; the executor yields
``(index, result)`` pairs as units finish, in any order. The job, not the workers, writes
results to disk, so a Ray cluster needs no shared file system and an interrupted run loses at
most the units that were in flight.

* :class:`SerialExecutor` — in this process, in order (the default; what tests and CI use).
* :class:`ProcessExecutor` — ``workers`` local processes (spawned, one torch thread each unless
  told otherwise): scale-out on one machine without extra dependencies.
* :class:`RayExecutor` — tasks on Ray (an optional extra: ``pip install "safetynet[ray]"``): a
  local Ray instance, or an existing cluster by address (``ray.init(address=...)``). Large
  shared arguments (a model) are put in Ray's object store once.

Results must not depend on where a unit ran: units are pure functions of their arguments
(seeded where they draw random numbers), and ``tests/test_executors.py`` checks that serial,
process and Ray (a 2-node test cluster) runs agree exactly.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from .errors import InputError

log = logging.getLogger(__name__)

__all__ = ["Executor", "ProcessExecutor", "RayExecutor", "SerialExecutor", "make_executor"]


class Executor:
    """Runs ``fn(*shared, *args)`` for each ``args`` of a list; yields ``(index, result)`` as units finish."""

    #: A short name for reports and logs.
    name = "executor"

    def map(self, fn: Callable[..., Any], units: Sequence[tuple], shared: tuple = ()) -> Iterator[tuple[int, Any]]:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {"executor": self.name}

    def close(self) -> None:
        """Release workers (a no-op for executors without any)."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class SerialExecutor(Executor):
    """Every unit in this process, in order."""

    name = "serial"

    def map(self, fn: Callable[..., Any], units: Sequence[tuple], shared: tuple = ()) -> Iterator[tuple[int, Any]]:
        for i, args in enumerate(units):
            yield i, fn(*shared, *args)


def _init_worker(threads: int) -> None:
    # A worker process is ours alone: pinning its torch threads is what keeps k workers on k
    # cores from oversubscribing the machine (torch slows 4-18x when threads contend).
    import torch

    torch.set_num_threads(threads)


def _call(fn: Callable[..., Any], shared: tuple, args: tuple) -> Any:
    return fn(*shared, *args)


class ProcessExecutor(Executor):
    """``workers`` spawned local processes with ``threads`` torch threads each."""

    name = "processes"

    def __init__(self, workers: int, threads: int = 1) -> None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise InputError(f"workers must be a positive integer, got {workers!r}")
        self.workers, self.threads = workers, threads
        self._pool: Any = None

    def _get_pool(self) -> Any:
        if self._pool is None:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            # spawn, not fork: forking a process whose torch thread pool is running can deadlock.
            self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_init_worker, initargs=(self.threads,))
        return self._pool

    def map(self, fn: Callable[..., Any], units: Sequence[tuple], shared: tuple = ()) -> Iterator[tuple[int, Any]]:
        from concurrent.futures import as_completed

        pool = self._get_pool()
        futures = {pool.submit(_call, fn, shared, args): i for i, args in enumerate(units)}
        try:
            for fut in as_completed(futures):
                yield futures[fut], fut.result()
        finally:
            for fut in futures:
                fut.cancel()

    def describe(self) -> dict[str, Any]:
        return {"executor": self.name, "workers": self.workers, "threads_per_worker": self.threads}

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None


def _require_ray() -> Any:
    try:
        import ray
    except ImportError as e:  # an optional extra
        raise InputError('Ray is not installed; pip install "safetynet[ray]" (or ray) to use --ray') from e
    return ray


class RayExecutor(Executor):
    """Tasks on Ray: ``address=None`` starts a local instance, else connects (``"auto"`` or ``"ray://host:port"``).

    Each task asks for ``num_cpus`` CPUs (and ``num_gpus`` GPUs when given); Ray sets the task's
    thread count to its CPUs. The executor shuts down a Ray instance it started itself and leaves
    a cluster it only connected to running.
    """

    name = "ray"

    def __init__(self, address: str | None = None, num_cpus: float = 1, num_gpus: float = 0,
                 workers: int | None = None) -> None:
        self.ray = _require_ray()
        self.address, self.num_cpus, self.num_gpus, self.workers = address, num_cpus, num_gpus, workers
        self._started = False
        if not self.ray.is_initialized():
            # address None = our own local instance: Ray's own default would connect to whatever
            # cluster RAY_ADDRESS or /tmp/ray/ray_current_cluster names (a stale one after a crash,
            # or someone else's), and then refuse num_cpus; "local" always starts a new instance.
            kwargs: dict[str, Any] = {"address": address or "local", "include_dashboard": False,
                                      "log_to_driver": False, "configure_logging": False}
            if address is None and workers is not None:
                kwargs["num_cpus"] = workers * num_cpus
            self.ray.init(**kwargs)
            self._started = True

    def map(self, fn: Callable[..., Any], units: Sequence[tuple], shared: tuple = ()) -> Iterator[tuple[int, Any]]:
        ray = self.ray
        remote = ray.remote(num_cpus=self.num_cpus, num_gpus=self.num_gpus, max_retries=2)(_call)
        fn_ref = ray.put(fn)
        shared_ref = ray.put(shared)  # one copy of a model in the object store, not one per task
        refs = {remote.remote(fn_ref, shared_ref, args): i for i, args in enumerate(units)}
        pending = list(refs)
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                for ref in done:
                    yield refs[ref], ray.get(ref)
        finally:
            for ref in pending:
                ray.cancel(ref)

    def describe(self) -> dict[str, Any]:
        nodes = [n for n in self.ray.nodes() if n.get("Alive")]
        return {"executor": self.name, "address": self.address, "nodes": len(nodes),
                "cluster_cpus": self.ray.cluster_resources().get("CPU"), "cpus_per_task": self.num_cpus}

    def close(self) -> None:
        if self._started and self.ray.is_initialized():
            self.ray.shutdown()
            self._started = False


def make_executor(workers: int = 1, ray: bool = False, ray_address: str | None = None, threads: int = 1,
                  gpus_per_task: float = 0) -> Executor:
    """The executor a job's settings ask for: Ray when ``ray`` or ``ray_address``, else processes when ``workers > 1``."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise InputError(f"workers must be a positive integer, got {workers!r}")
    if ray or ray_address:
        return RayExecutor(ray_address, num_cpus=threads, num_gpus=gpus_per_task,
                           workers=None if ray_address else workers)
    if workers > 1:
        return ProcessExecutor(workers, threads)
    return SerialExecutor()
