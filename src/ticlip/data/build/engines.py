"""Where the stages of a reshard run: ``local`` (this process, or a pool of local processes) or
``dask`` (a ``dask.distributed`` cluster: a local one started here, or an existing one by address).

An engine only maps a picklable function over jobs and hands back the results in whatever order they
finish; every result is written to disk by the job itself and the merge orders by content, so the
output never depends on the engine, the worker count or the scheduling.

We chose Dask (``dask.distributed``) as the distributed engine: it is a pure-Python ``pip install``
(no JVM as for Spark, no separate runtime and object store as for Ray), ``LocalCluster`` runs the same
code in threads or processes for tests, and an existing cluster (``dask scheduler`` / ``dask worker`` on
each machine, or dask-jobqueue on SLURM) is reached with one address. See docs/DATA.md.
"""

from __future__ import annotations

import os
from typing import Callable, Iterable, Iterator

from ticlip.errors import TiclipError

ENGINES = ("local", "dask")


class LocalEngine:
    """``workers`` <= 1: in this process; more: a pool of local processes (fork where available)."""

    name = "local"

    def __init__(self, workers: int = 1):
        self.workers = max(1, int(workers or 1))
        self._pool = None

    def map(self, fn: Callable, jobs: Iterable) -> Iterator:
        jobs = list(jobs)
        if self.workers == 1 or len(jobs) <= 1:
            for job in jobs:
                yield fn(job)
            return
        if self._pool is None:
            import multiprocessing as mp

            method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
            self._pool = mp.get_context(method).Pool(self.workers)
        yield from self._pool.imap_unordered(fn, jobs)

    def close(self, ok: bool = True) -> None:
        if self._pool is not None:
            self._pool.close() if ok else self._pool.terminate()
            self._pool.join()
            self._pool = None


class DaskEngine:
    """A ``dask.distributed`` client: of the cluster at ``scheduler`` (an address such as
    ``tcp://10.0.0.1:8786``), else of a ``LocalCluster`` of ``workers`` single-threaded workers
    (``processes=False``: threads of this process, as the tests use)."""

    name = "dask"

    def __init__(self, workers: int | None = None, scheduler: str | None = None, processes: bool = True):
        try:
            from distributed import Client, LocalCluster
        except ImportError:
            raise TiclipError("--engine dask needs dask.distributed, which is not installed: "
                              "pip install 'ticlip[dask]'") from None
        self._cluster = None
        if scheduler:
            self.client = Client(scheduler)
        else:
            self._cluster = LocalCluster(n_workers=max(1, int(workers or os.cpu_count() or 1)), threads_per_worker=1,
                                         processes=processes, dashboard_address=None)
            self.client = Client(self._cluster)

    def map(self, fn: Callable, jobs: Iterable) -> Iterator:
        from distributed import as_completed

        jobs = list(jobs)
        if not jobs:
            return
        futures = self.client.map(fn, jobs, pure=False)
        try:
            for future in as_completed(futures):
                yield future.result()
        finally:
            for f in futures:
                f.release()

    def close(self, ok: bool = True) -> None:
        self.client.close()
        if self._cluster is not None:
            self._cluster.close()


def make_engine(engine: str = "local", workers: int | None = None, scheduler: str | None = None):
    """The engine called ``engine`` (``ENGINES``); one-line TiclipError for an unknown one or a missing back-end."""
    if engine not in ENGINES:
        raise TiclipError(f"--engine {engine!r}: unknown engine; choose one of {', '.join(ENGINES)}")
    if scheduler and engine != "dask":
        raise TiclipError(f"--scheduler {scheduler} is for --engine dask, not --engine {engine}")
    if workers is not None and int(workers) < 1:
        raise TiclipError(f"--workers must be at least 1, not {workers}")
    if engine == "dask":
        return DaskEngine(workers, scheduler)
    return LocalEngine(workers or 1)


__all__ = ["DaskEngine", "ENGINES", "LocalEngine", "make_engine"]
