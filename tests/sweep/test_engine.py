"""The sweep engine: resume after SIGKILL, concurrent sweeps, Dask = local pool, worker deaths,
job errors and bad input.

Jobs come from ``sweep_jobs.py`` beside this file (deterministic rows from seeds, optional
sleep, die and fail switches). The SIGKILL and concurrency tests drive real processes through
its small runner (``python tests/sweep/sweep_jobs.py STORE ...``).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from sweep_jobs import grid

from hwbed.engine import EngineError, Job, run_jobs
from hwbed.store import Store, load, load_cells

HERE = Path(__file__).parent
RUNNER = HERE / "sweep_jobs.py"


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> pd.DataFrame:
    """The rows of an uninterrupted one-worker run of jobs 0..14 (2 cells of 4 examples)."""
    path = tmp_path_factory.mktemp("reference")
    report = run_jobs(grid(range(15)), Store(path), workers=1, progress=False)
    assert report.ok == 30
    return load(path)


@pytest.fixture(scope="module")
def dask_address():
    """A 2-worker LocalCluster (one thread each, nanny processes) for the module's tests."""
    distributed = pytest.importorskip("distributed", reason="the sweep extra (dask) is missing")
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
    ) as cluster:
        yield cluster.scheduler_address


def expected(reference: pd.DataFrame, jobs: list[Job]) -> pd.DataFrame:
    keys = {key for job in jobs for key in job.cells}
    return reference[reference["key"].isin(keys)].reset_index(drop=True)


def runner(store: Path, log: Path, *args: str) -> subprocess.Popen:
    """The CLI-like runner as a subprocess, in its own process group (to kill it whole)."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(HERE), *filter(None, [os.environ.get("PYTHONPATH")])]),
    }
    return subprocess.Popen(
        [sys.executable, str(RUNNER), str(store), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=log.open("w"),
        text=True,
        start_new_session=True,
    )


def cell_files(store: Path) -> list[Path]:
    return sorted((store / "cells").glob("*.json")) if (store / "cells").is_dir() else []


def test_sigkill_mid_sweep_then_rerun_gives_the_rows_of_an_uninterrupted_run(tmp_path, reference):
    store, jobs = tmp_path / "store", grid(range(12))
    proc = runner(store, tmp_path / "log", "--jobs", "0:12", "--workers", "2", "--sleep", "0.25")
    deadline = time.monotonic() + 60
    while len(cell_files(store)) < 4:
        assert proc.poll() is None, (tmp_path / "log").read_text()
        assert time.monotonic() < deadline, "the runner wrote no cells in 60 s"
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)  # the runner and its pool workers
    proc.wait()
    done = Store(store).keys()
    assert 4 <= len(done) < 24, "the sweep was not interrupted"
    report = run_jobs(jobs, Store(store), workers=2, progress=False)
    assert report.failed == 0 and report.ok + report.skipped == 24
    assert report.skipped >= len(done) - 1  # a kill between a job's two cell writes re-runs it
    pd.testing.assert_frame_equal(load(store), expected(reference, jobs))
    cells = load_cells(store)
    assert len(cells) == 24 and cells["key"].is_unique and set(cells["status"]) == {"ok"}
    again = run_jobs(jobs, Store(store), workers=2, progress=False)
    assert (again.ok, again.skipped, again.backend) == (0, 24, "nothing to run")


def test_two_sweeps_writing_one_store_at_once_corrupt_nothing(tmp_path, reference):
    store = tmp_path / "store"  # missing: both sweeps create it at the same moment too
    start = str(time.time() + 2.0)
    procs = [
        runner(store, tmp_path / "a.log", "--jobs", "0:10", "--sleep", "0.1", "--start-at", start),
        runner(
            store,
            tmp_path / "b.log",
            "--jobs",
            "5:15",
            "--reverse",
            "--sleep",
            "0.1",
            "--start-at",
            start,
        ),
    ]
    outs = [proc.communicate(timeout=120)[0] for proc in procs]
    for proc, log in zip(procs, ("a.log", "b.log"), strict=True):
        assert proc.returncode == 0, (tmp_path / log).read_text()
    written = sum(int(re.search(r"ok=(\d+)", out).group(1)) for out in outs)
    assert written > 30, "the sweeps did not overlap"  # shared cells were written twice
    names = sorted(p.name for p in (store / "cells").iterdir())
    assert len(names) == 30 and all(not n.startswith(".") for n in names)  # no temp file left
    for name in names:
        record = json.loads((store / "cells" / name).read_text())
        assert record["key"] + ".json" == name and record["status"] == "ok"
    pd.testing.assert_frame_equal(load(store), expected(reference, grid(range(15))))


def test_dask_cluster_gives_the_same_rows_as_the_local_pool(tmp_path, reference, dask_address):
    jobs = grid(range(6), sleep=0.05)
    local = run_jobs(jobs, Store(tmp_path / "local"), workers=2, progress=False)
    dask = run_jobs(jobs, Store(tmp_path / "dask"), cluster=dask_address, progress=False)
    assert local.ok == dask.ok == 12 and dask.backend.startswith(f"Dask {dask_address}")
    assert all(run.seconds >= 0.05 for run in dask.jobs)
    pd.testing.assert_frame_equal(load(tmp_path / "dask"), load(tmp_path / "local"))
    pd.testing.assert_frame_equal(load(tmp_path / "dask"), expected(reference, jobs))


@pytest.mark.parametrize("workers", [1, 2])
def test_a_worker_killed_mid_job_is_survived_on_the_local_pool(tmp_path, reference, workers):
    jobs = grid(range(4), sleep=0.1)
    jobs[1].payload["die_once"] = str(tmp_path / "died")
    report = run_jobs(jobs, Store(tmp_path / "s"), workers=workers, progress=False)
    assert (tmp_path / "died").exists()  # the worker really died once
    assert (report.ok, report.failed) == (8, 0)
    runs = {run.key: run for run in report.jobs}
    assert runs[jobs[1].key].attempts == 2
    # one worker: the job ran alone and is retried; two: the job beside it is re-run as well
    assert report.retries == (1 if workers == 1 else sum(r.attempts - 1 for r in report.jobs))
    assert report.retries >= 1 and re.search(r"; \d retr", str(report))
    pd.testing.assert_frame_equal(load(tmp_path / "s"), expected(reference, jobs))


def test_a_worker_killed_mid_job_is_survived_on_dask(tmp_path, reference, dask_address):
    jobs = grid(range(4), sleep=0.1)
    jobs[2].payload["die_once"] = str(tmp_path / "died")
    report = run_jobs(jobs, Store(tmp_path / "s"), cluster=dask_address, progress=False)
    assert (tmp_path / "died").exists()
    assert (report.ok, report.failed, report.retries) == (8, 0, 1)  # the nanny restarted it
    assert {run.key: run.attempts for run in report.jobs}[jobs[2].key] == 2
    pd.testing.assert_frame_equal(load(tmp_path / "s"), expected(reference, jobs))


def test_a_job_that_always_kills_its_worker_fails_and_spares_the_others(tmp_path):
    jobs = grid(range(4), sleep=0.1)
    jobs[2].payload["die"] = True
    report = run_jobs(jobs, Store(tmp_path / "s"), workers=2, retries=1, progress=False)
    assert (report.ok, report.failed) == (6, 2)
    failed = Store(tmp_path / "s").failed()
    assert set(failed) == set(jobs[2].cells)
    for error in failed.values():
        assert re.fullmatch(
            r"worker died \([23] times running this job\): BrokenProcessPool: "
            r"[^\n]+",
            error,
        )
    runs = {run.key: run for run in report.jobs}
    assert [runs[job.key].status for job in jobs] == ["ok", "ok", "failed", "ok"]


def test_killed_worker_on_a_local_dask_cluster(tmp_path):
    pytest.importorskip("distributed", reason="the sweep extra (dask) is missing")
    jobs = grid(range(4), sleep=0.1)
    jobs[1].payload["die"] = True
    report = run_jobs(jobs, Store(tmp_path / "s"), cluster="local:2", retries=1, progress=False)
    assert (report.ok, report.failed) == (6, 2) and report.backend.startswith("Dask local:2")
    errors = set(Store(tmp_path / "s").failed().values())
    assert errors == {"worker died (2 times running this job): KilledWorker"}
    assert {run.key: run.attempts for run in report.jobs}[jobs[1].key] == 2


def test_a_raising_job_is_recorded_failed_and_a_rerun_retries_it(tmp_path, capsys):
    jobs = grid(range(4), fail_unless=str(tmp_path / "fixed"))
    jobs[1].payload.pop("fail_unless")
    jobs[3].payload.pop("fail_unless")
    store = Store(tmp_path / "s")
    report = run_jobs(jobs, store, workers=1, progress=False)
    assert (report.ok, report.failed, report.retries) == (4, 4, 0)
    failed = store.failed()
    assert set(failed) == set(jobs[0].cells + jobs[2].cells)
    assert failed[jobs[0].cells[0]] == "RuntimeError: job 0 failed on purpose (second line)"
    record = store.read(jobs[0].cells[0])
    assert "Traceback" in record["traceback"] and record["manifest"]["job"] == jobs[0].key
    (tmp_path / "fixed").touch()
    seen = []
    again = run_jobs(jobs, store, workers=1, on_cell=seen.append)
    assert (again.ok, again.failed, again.skipped) == (4, 0, 4)
    assert sorted(r["key"] for r in seen) == sorted(failed) and seen[0]["status"] == "ok"
    assert "4 skipped" in capsys.readouterr().err  # the progress bar
    assert store.failed() == {} and len(store.keys("ok")) == 8


def test_a_job_returning_other_cells_than_declared_is_recorded_failed(tmp_path):
    jobs = grid(range(2), func="sweep_jobs:wrong_cells")
    report = run_jobs(jobs, Store(tmp_path / "s"), workers=1, progress=False)
    assert (report.ok, report.failed) == (0, 4)
    for error in Store(tmp_path / "s").failed().values():
        assert error.startswith("EngineError: sweep_jobs:wrong_cells did not return exactly")


def test_bad_jobs_and_settings_fail_before_any_work(tmp_path):
    store = Store(tmp_path / "s")
    job = grid([0])[0]
    other = Job("other", [grid([1])[0].cells[0]], {}, job.func)
    bad = [
        (grid(range(2)) + [other], {}, "declared by job .* and again by job other"),
        ([Job(job.key, job.cells * 2, job.payload, job.func)], {}, "declared by job"),
        ([job, Job(job.key, ["x1"], {}, job.func)], {}, "listed twice"),
        (
            [Job("j", ["k"], {}, "no_such_module:f")],
            {},
            "'no_such_module:f' does not import: ModuleNotFoundError",
        ),
        ([Job("j", ["k"], {}, "sweep_jobs:nope")], {}, "does not import: AttributeError"),
        ([Job("j", ["k"], {}, "sweep_jobs.cells")], {}, "give a 'module:function'"),
        ([Job("j", ["k"], {}, "sweep_jobs:FUNC")], {}, "not a function"),
        ([Job("j", [], {}, job.func)], {}, "declares no cells"),
        ([Job("j", ["a/b"], {}, job.func)], {}, "bad cell key"),
        ([job], {"workers": 0}, "workers must be"),
        ([job], {"retries": -1}, "retries must be"),
        ([job], {"cluster": "local:0"}, "give local:N"),
        ([job], {"cluster": "my-cluster"}, "give local:N"),
    ]
    for jobs, options, message in bad:
        with pytest.raises(EngineError, match=message) as err:
            run_jobs(jobs, store, progress=False, **options)
        assert "\n" not in str(err.value)
    assert store.keys() == []
