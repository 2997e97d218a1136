"""The sweep engine: runs jobs on a local process pool or a Dask cluster, writes their cells.

A :class:`Job` is one call ``func(payload)`` that returns the cells it declares, each
``{"key", "manifest", "examples"}``. :func:`run_jobs` skips the jobs whose cells are all
finished in the store, runs the rest, and writes each cell to the :class:`~hwbed.store.Store`
as soon as its job completes, from this (the client) process: workers need no access to the
store, and a killed client loses only the jobs in flight. Resumability lives in the store
(content-derived keys, one atomic file per cell), so the executor is a thin layer.

Where jobs run (one code path: submit, wait for the first completed, write, submit more):

- ``workers=N``: a :class:`~concurrent.futures.ProcessPoolExecutor` with the ``spawn``
  context. Jobs import torch, and forking a process that has torch loaded (its thread pools,
  OpenMP state, locks held by other threads) can deadlock the child; ``forkserver`` would also
  be safe but is POSIX-only and inherits whatever the server process had imported, while
  ``spawn`` gives every worker a fresh interpreter on every OS (as Dask's nanny does). Its
  cost, one interpreter start per worker, is paid once: workers are reused across jobs.
  Workers exit on their own if the client dies (a SIGKILLed client's spawned workers would
  otherwise wait on their queue forever).
- ``cluster="local:N"``: a ``dask.distributed.LocalCluster`` of N one-thread worker processes,
  started and closed here; ``cluster="tcp://HOST:PORT"``: a running scheduler.

At most one job per worker thread is in flight (a new one is submitted as one completes), so
a dying worker takes only the job it was running with it, and Dask's per-worker accounting of
deaths names the right job. The cost is one round trip per job, negligible for jobs of a
second or more.

Failure rules:

- A job that raises: each of its cells is written ``failed`` with ``"Type: message"`` on one
  line (the traceback kept under ``traceback``), and the sweep goes on. So is a job that
  returns something other than exactly its declared cells, or a cell the store refuses.
  Failed cells are run again by the next sweep.
- A worker that dies (killed, segfault, out of memory) is retried up to ``retries`` times,
  then its cells are written ``failed`` with ``worker died ...``.

  *Local pool:* one dead worker breaks the whole pool: every unfinished future fails with
  ``BrokenProcessPool`` together, the culprit and the jobs that happened to run beside it
  alike, and nothing says which worker died running which job. The pool is rebuilt, and: a
  death while one job was running is charged to that job; when several were running, none is
  charged and each of them is re-run alone (no other job in flight) until it completes or dies
  alone, which then names it. Innocent jobs are re-run but never use up their retries; the
  parallel run resumes when no suspect is left.

  *Dask:* the scheduler itself re-runs a task whose worker died (the nanny restarts the worker)
  and gives up with ``KilledWorker`` once ``distributed.scheduler.allowed-failures`` workers
  have died running it. hwbed sets that to ``retries`` on the LocalCluster it starts; a running
  scheduler keeps its own setting (default 3). The re-runs are counted from the scheduler's
  record of the task (``suspicious``).

:class:`Report` counts cells (skipped, ok, failed), retries (executions beyond a job's first)
and times each job inside its worker, for the engine overhead benchmark.
"""

from __future__ import annotations

import concurrent.futures as cf
import importlib
import logging
import multiprocessing
import os
import re
import socket
import threading
import time
import traceback
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from tqdm import tqdm

from hwbed.store import Store, StoreError, check_key

logger = logging.getLogger(__name__)


class EngineError(ValueError):
    """Jobs or settings a sweep cannot run, or a lost cluster; the message names the culprit."""


@dataclass
class Job:
    """One call ``func(payload) -> [{"key", "manifest", "examples"}, ...]`` filling ``cells``.

    ``func`` is a ``"module:function"`` path importable in the workers; ``payload`` is a
    JSON-able dict (sent to a worker as is).
    """

    key: str
    cells: list[str]
    payload: dict[str, Any]
    func: str


@dataclass
class JobRun:
    """How one job went: ``seconds`` inside the worker (last execution; None if it died)."""

    key: str
    cells: int
    status: str
    attempts: int
    seconds: float | None
    worker: str | None
    finished_s: float
    """When it finished, seconds after the sweep started."""


@dataclass
class Report:
    """A sweep's outcome: cell counts, retries, wall time and per-job timing.

    ``skipped``: cells of jobs already finished in the store (not run); ``ok``/``failed``:
    cells written by this sweep; ``retries``: executions beyond each job's first, after worker
    deaths (a job re-run beside a dying one counts too); ``wall_s`` includes starting the pool
    or cluster.
    """

    backend: str
    skipped: int = 0
    ok: int = 0
    failed: int = 0
    retries: int = 0
    wall_s: float = 0.0
    jobs: list[JobRun] = field(default_factory=list)

    @property
    def compute_s(self) -> float:
        """Seconds spent inside job functions (summed over jobs, last executions)."""
        return sum(j.seconds or 0.0 for j in self.jobs)

    def __str__(self) -> str:
        retries = (
            f"; {self.retries} retr{'y' if self.retries == 1 else 'ies'} after worker deaths"
            if self.retries
            else ""
        )
        return (
            f"cells: {self.ok} ok, {self.failed} failed, {self.skipped} skipped (already "
            f"in the store){retries}; {self.wall_s:.1f} s on {self.backend}"
        )


def run_jobs(
    jobs: Iterable[Job],
    store: Store,
    *,
    workers: int = 1,
    cluster: str | None = None,
    retries: int = 2,
    progress: bool = True,
    on_cell: Callable[[dict[str, Any]], None] | None = None,
) -> Report:
    """Run the jobs whose cells are not all finished in ``store``, writing each cell at once.

    ``workers`` local processes, or ``cluster`` (``"local:N"`` or a scheduler address).
    ``retries``: re-runs of a job whose worker died. ``on_cell(record)`` is called with each
    cell's record as stored, once written. Bad jobs or settings raise :class:`EngineError`
    before anything runs.
    """
    jobs = list(jobs)
    validate(jobs, workers, cluster, retries)
    t0 = time.perf_counter()
    finished = set(store.keys("ok"))
    todo = [job for job in jobs if not finished.issuperset(job.cells)]
    skipped = sum(len(job.cells) for job in jobs) - sum(len(job.cells) for job in todo)
    if not todo:
        return Report(backend="nothing to run", skipped=skipped, wall_s=time.perf_counter() - t0)
    backend = _Dask(cluster, retries) if cluster else _Pool(workers)
    report = Report(backend=backend.name, skipped=skipped)
    store.clean()
    bar = tqdm(
        total=sum(len(job.cells) for job in todo),
        unit="cell",
        disable=not progress,
        desc=f"cells ({skipped} skipped)" if skipped else "cells",
    )
    sweep = _Sweep(store, report, bar, on_cell, t0)
    aborted = True
    try:
        _drive(backend, todo, retries, sweep)
        aborted = False
    finally:
        bar.close()
        backend.close(abort=aborted)
    report.wall_s = time.perf_counter() - t0
    return report


def validate(jobs: list[Job], workers: int, cluster: str | None, retries: int) -> None:
    """Every check :func:`run_jobs` makes before it starts (also for dry runs)."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise EngineError(f"workers must be an integer >= 1, got {workers!r}")
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise EngineError(f"retries must be an integer >= 0, got {retries!r}")
    if cluster is not None and not (
        isinstance(cluster, str) and (re.fullmatch(r"local:[1-9]\d*", cluster) or "://" in cluster)
    ):
        raise EngineError(
            f"cluster {cluster!r}: give local:N or a scheduler address tcp://HOST:PORT"
        )
    owner: dict[str, str] = {}
    seen: set[str] = set()
    for job in jobs:
        if not isinstance(job, Job):
            raise EngineError(f"not a Job: {job!r:.80}")
        if not isinstance(job.key, str) or not job.key:
            raise EngineError(f"job key {job.key!r}: give a non-empty string")
        if job.key in seen:
            raise EngineError(f"job {job.key} is listed twice")
        seen.add(job.key)
        if not isinstance(job.payload, dict):
            raise EngineError(
                f"job {job.key}: payload is a {type(job.payload).__name__}, not a dict"
            )
        if not job.cells:
            raise EngineError(f"job {job.key} declares no cells")
        for key in job.cells:
            try:
                check_key(key)
            except StoreError as err:
                raise EngineError(f"job {job.key}: {err}") from None
            if key in owner:
                raise EngineError(
                    f"cell {key} is declared by job {owner[key]} and again by job {job.key}"
                )
            owner[key] = job.key
    for func in {job.func for job in jobs}:
        _resolve(func)


def _resolve(func: str) -> Callable[[dict[str, Any]], Any]:
    """The function a ``"module:function"`` path names (EngineError if it does not import)."""
    module, sep, name = func.partition(":") if isinstance(func, str) else ("", "", "")
    if not (module and sep and name):
        raise EngineError(f"func {func!r}: give a 'module:function' path")
    try:
        obj: Any = importlib.import_module(module)
        for part in name.split("."):
            obj = getattr(obj, part)
    except Exception as err:  # an import runs arbitrary code: any error means "does not import"
        raise EngineError(f"func {func!r} does not import: {_one_line(err)}") from None
    if not callable(obj):
        raise EngineError(f"func {func!r} is a {type(obj).__name__}, not a function")
    return obj


def _one_line(err: BaseException) -> str:
    """``"Type: message"`` on one line (whitespace collapsed, at most 500 characters)."""
    message = " ".join(str(err).split())
    line = f"{type(err).__name__}: {message}" if message else type(err).__name__
    return line if len(line) <= 500 else line[:497] + "..."


def _execute(func: str, payload: dict[str, Any]) -> dict[str, Any]:
    """Run one job in a worker: its cells, or its error as data, with the time it took."""
    t0 = time.perf_counter()
    worker = f"{socket.gethostname()}:{os.getpid()}"
    try:
        cells = _resolve(func)(payload)
    except (Exception, SystemExit) as err:
        return {
            "error": _one_line(err),
            "traceback": traceback.format_exc(),
            "seconds": time.perf_counter() - t0,
            "worker": worker,
        }
    return {"cells": cells, "seconds": time.perf_counter() - t0, "worker": worker}


def _drive(backend: _Pool | _Dask, todo: list[Job], retries: int, sweep: _Sweep) -> None:
    """Keep every worker busy with one job; sort out worker deaths (module docstring)."""
    queue = deque(todo)
    alone: deque[Job] = deque()  # re-runs after a pool death: one at a time
    deaths: Counter[str] = Counter()
    attempts: Counter[str] = Counter()
    inflight: dict[Any, Job] = {}

    def submit(job: Job) -> None:
        attempts[job.key] += 1
        inflight[backend.submit(job)] = job

    def settle(futures) -> list[tuple[Job, str]]:
        lost = []
        for future in futures:
            job = inflight.pop(future)
            kind, value, rerun = backend.outcome(future)
            if kind == "died":
                lost.append((job, value))
            elif kind == "done":
                sweep.finish(job, attempts[job.key] + rerun, value=value)
            else:
                sweep.finish(job, attempts[job.key] + rerun, error=value)
        return lost

    while queue or alone or inflight:
        if alone:
            if not inflight:
                submit(alone.popleft())
        else:
            while queue and len(inflight) < backend.capacity():
                submit(queue.popleft())
        lost = settle(backend.wait(list(inflight)))
        if not lost:
            continue
        lost += settle(backend.wait(list(inflight), every=True))  # they fail together
        backend.reset()
        if len(lost) > 1:
            logger.warning(
                "a pool worker died with %d jobs running; re-running each alone", len(lost)
            )
            alone.extend(job for job, _ in lost)
            continue
        job, why = lost[0]
        deaths[job.key] += 1
        if deaths[job.key] > retries:
            sweep.finish(
                job,
                attempts[job.key],
                error=f"worker died ({attempts[job.key]} times running this job): {why}",
            )
        else:
            logger.warning(
                "the worker running job %s died (%d of %d retries); re-running it",
                job.key,
                deaths[job.key],
                retries,
            )
            alone.appendleft(job)


class _Sweep:
    """Where finished jobs go: the store, the report, the progress bar and the callback."""

    def __init__(
        self,
        store: Store,
        report: Report,
        bar: tqdm,
        on_cell: Callable[[dict[str, Any]], None] | None,
        t0: float,
    ) -> None:
        self.store, self.report, self.bar, self.on_cell, self.t0 = store, report, bar, on_cell, t0

    def finish(
        self, job: Job, attempts: int, value: dict[str, Any] | None = None, error: str | None = None
    ) -> None:
        """Write the job's cells: ``value`` from :func:`_execute`, or ``error`` (a line)."""
        value = value or {}
        error = value.get("error", error)
        trace = value.get("traceback")
        produced: dict[str, dict[str, Any]] = {}
        if error is None:
            produced, error = _produced(job, value["cells"])
        ok = 0
        for key in job.cells:
            cell, why = produced.get(key), error
            if cell is not None:
                try:
                    self.store.write(key, cell["manifest"], cell["examples"])
                    ok += 1
                except StoreError as err:
                    cell, why = None, f"StoreError: {err}"
            if cell is None:
                manifest = {
                    "job": job.key,
                    "func": job.func,
                    "attempts": attempts,
                    "worker": value.get("worker"),
                }
                if not self.store.write(
                    key, manifest, {}, status="failed", error=why, traceback=trace
                ):
                    ok += 1  # another sweep finished it meanwhile: the store keeps its result
            if self.on_cell is not None:
                self.on_cell(self.store.read(key))
        failed = len(job.cells) - ok
        if failed:
            logger.warning("job %s: %d cell(s) failed: %s", job.key, failed, error or why)
        self.report.ok += ok
        self.report.failed += failed
        self.report.retries += attempts - 1
        self.report.jobs.append(
            JobRun(
                job.key,
                len(job.cells),
                "failed" if failed else "ok",
                attempts,
                value.get("seconds"),
                value.get("worker"),
                time.perf_counter() - self.t0,
            )
        )
        if self.report.failed:
            self.bar.set_postfix_str(f"{self.report.failed} failed", refresh=False)
        self.bar.update(len(job.cells))


def _produced(job: Job, cells: Any) -> tuple[dict[str, dict[str, Any]], str | None]:
    """The job's returned cells by key, or an error line if they are not its declared cells."""
    if not isinstance(cells, list) or not all(
        isinstance(c, dict)
        and isinstance(c.get("key"), str)
        and {"manifest", "examples"} <= c.keys()
        for c in cells
    ):
        return {}, (
            f"EngineError: {job.func} returned a {type(cells).__name__}, not a list of "
            "{key, manifest, examples} dicts"
        )
    got = Counter(c["key"] for c in cells)
    if got != Counter(job.cells):
        missing = sorted(set(job.cells) - set(got))
        extra = sorted(k for k in got if k not in job.cells or got[k] > 1)
        return {}, (
            f"EngineError: {job.func} did not return exactly the job's cells "
            f"(missing {missing[:3]}, unexpected or repeated {extra[:3]})"
        )
    return {c["key"]: c for c in cells}, None


def _watch_parent(parent: int) -> None:
    """Pool worker initializer: exit as soon as the client process is gone."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="hwbed-watch-parent", daemon=True).start()


class _Pool:
    """The local process pool (spawn), rebuilt after a worker death."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.name = f"a local pool of {workers} worker{'s' if workers > 1 else ''}"
        self._pool: cf.ProcessPoolExecutor | None = None

    def capacity(self) -> int:
        return self.workers

    def submit(self, job: Job) -> cf.Future:
        if self._pool is None:
            self._pool = cf.ProcessPoolExecutor(
                self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_watch_parent,
                initargs=(os.getpid(),),
            )
        try:
            return self._pool.submit(_execute, job.func, job.payload)
        except cf.process.BrokenProcessPool as err:  # it broke since the last wait
            future: cf.Future = cf.Future()
            future.set_exception(err)
            return future

    @staticmethod
    def wait(futures: list[cf.Future], every: bool = False) -> set[cf.Future]:
        return cf.wait(futures, return_when=cf.ALL_COMPLETED if every else cf.FIRST_COMPLETED).done

    @staticmethod
    def outcome(future: cf.Future) -> tuple[str, Any, int]:
        """("done", value, 0), ("died", why, 0) or ("error", line, 0)."""
        try:
            return "done", future.result(), 0
        except cf.process.BrokenProcessPool as err:
            return "died", _one_line(err), 0
        except Exception as err:  # e.g. a result that does not pickle
            return "error", _one_line(err), 0

    def reset(self) -> None:
        """Drop a broken pool; the next submit starts a new one."""
        self.close()

    def close(self, abort: bool = False) -> None:
        if self._pool is None:
            return
        if abort:  # in-flight results cannot be written any more: stop their workers now
            for proc in list((getattr(self._pool, "_processes", None) or {}).values()):
                proc.terminate()
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._pool = None


class _Dask:
    """A Dask client: on a LocalCluster started here (``local:N``) or a running scheduler."""

    def __init__(self, cluster: str, retries: int) -> None:
        try:
            import dask
            from distributed import Client, LocalCluster
        except ImportError:
            raise EngineError(
                "--cluster needs dask.distributed: pip install 'hwbed[sweep]'"
            ) from None
        self._cluster = None
        self._token = uuid.uuid4().hex[:8]
        if cluster.startswith("local:"):
            # ":0": a free port; the scheduler serves HTTP (/health, /metrics) even with no
            # dashboard, on 8787 by default, which a second cluster on this host would clash on
            with dask.config.set({"distributed.scheduler.allowed-failures": retries}):
                self._cluster = LocalCluster(
                    n_workers=int(cluster[6:]),
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=":0",
                )
            self.client = Client(self._cluster, set_as_default=False)
        else:
            try:
                self.client = Client(cluster, set_as_default=False)
            except (OSError, TimeoutError) as err:
                raise EngineError(
                    f"cannot reach the Dask scheduler at {cluster}: {_one_line(err)}"
                ) from None
        self.name = f"Dask {cluster} ({self.client.scheduler.address})"

    def capacity(self) -> int:
        return max(1, sum(self.client.nthreads().values()))

    def submit(self, job: Job) -> Any:
        return self.client.submit(
            _execute, job.func, job.payload, pure=False, key=f"hwbed-{job.key}-{self._token}"
        )

    def wait(self, futures: list[Any], every: bool = False) -> set[Any]:
        from distributed import wait

        with self.client.as_current():
            return wait(futures, return_when="ALL_COMPLETED" if every else "FIRST_COMPLETED").done

    def outcome(self, future: Any) -> tuple[str, Any, int]:
        """("done", value, re-runs) or ("error", line, re-runs); a lost scheduler raises."""
        from distributed import KilledWorker

        try:
            value = future.result()
        except KilledWorker as err:
            return (
                "error",
                f"worker died ({err.allowed_failures + 1} times running this job): KilledWorker",
                err.allowed_failures,
            )
        except cf.CancelledError as err:
            raise EngineError(
                f"lost the Dask scheduler ({_one_line(err)}); finished cells "
                "are in the store: run again to resume"
            ) from None
        except Exception as err:  # e.g. a worker that cannot import hwbed
            return "error", _one_line(err), 0
        return "done", value, self._reruns(future.key)

    def _reruns(self, key: str) -> int:
        """How many times the scheduler re-ran task ``key`` after its worker died."""

        def suspicious(dask_scheduler, key=key):  # nested: pickled by value, no hwbed needed
            ts = dask_scheduler.tasks.get(key)
            return 0 if ts is None else ts.suspicious

        return self.client.run_on_scheduler(suspicious)

    def reset(self) -> None:
        """Nothing to rebuild: the nanny restarts a dead worker."""

    def close(self, abort: bool = False) -> None:
        self.client.close()
        if self._cluster is not None:
            self._cluster.close()
