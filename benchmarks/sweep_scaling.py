"""Scaling of the sweep engine: the same grid of CPU-bound jobs on 1 and 2 local workers and
on a Dask ``local:2`` cluster.

``python benchmarks/sweep_scaling.py [--jobs 12] [--seconds 0.75] [--out
benchmarks/results/sweep_scaling.json]``

Each job is a fixed amount of pure-Python arithmetic (single-threaded, no BLAS; the count is
calibrated once so that a job takes about ``--seconds`` on this machine) and fills 2 cells.
Every configuration writes a fresh store. Columns: wall time of :func:`hwbed.engine.run_jobs`
(pool or cluster start-up included), the summed compute time measured inside the workers, the
speed-up over 1 worker, and the engine's per-cell overhead, ``(workers * wall - compute) /
cells``: the worker-seconds a cell costs beyond its own computation (start-up, scheduling,
result transfer, the store write, idle workers at the end). The goal is a 1 -> 2 worker
speed-up of at least 1.7 on a quiet machine; a shared one gives less.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

from results import machine, write_results

from hwbed.engine import Job, Report, run_jobs
from hwbed.store import Store, cell_key

CONFIGS = (
    ("1 worker", {"workers": 1}, 1),
    ("2 workers", {"workers": 2}, 2),
    ("dask local:2", {"cluster": "local:2"}, 2),
)
"""Name, run_jobs options, worker count."""
CELLS_PER_JOB = 2


def spin(n: int, seed: int) -> int:
    """``n`` steps of a 32-bit linear congruential generator from ``seed``: its last state."""
    x = seed
    for _ in range(n):
        x = (1103515245 * x + 12345) & 0xFFFFFFFF
    return x


def work(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """A benchmark job: ``payload["steps"]`` LCG steps per cell; the states are the rows."""
    out = []
    for key, seed in zip(payload["cells"], payload["seeds"], strict=True):
        state = spin(payload["steps"], seed)
        out.append(
            {
                "key": key,
                "manifest": {"seed": seed, "steps": payload["steps"]},
                "examples": {"state": [state], "bit": [state & 1]},
            }
        )
    return out


def calibrate(seconds: float) -> int:
    """LCG steps per cell for a job of about ``seconds`` (best of 3 short timings)."""
    n = 200_000
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        spin(n, 1)
        best = min(best, time.perf_counter() - t0)
    return max(1, int(n * seconds / CELLS_PER_JOB / best))


def grid(jobs: int, steps: int) -> list[Job]:
    out = []
    for j in range(jobs):
        seeds = [1000 * j + c for c in range(CELLS_PER_JOB)]
        keys = [cell_key({"bench": "sweep_scaling", "seed": s, "steps": steps}) for s in seeds]
        out.append(
            Job(
                key=cell_key({"cells": keys}),
                cells=keys,
                func="sweep_scaling:work",
                payload={"cells": keys, "seeds": seeds, "steps": steps},
            )
        )
    return out


def row(name: str, workers: int, report: Report) -> dict[str, Any]:
    cells = report.ok + report.failed
    return {
        "config": name,
        "workers": workers,
        "cells": cells,
        "failed": report.failed,
        "wall_s": report.wall_s,
        "compute_s": report.compute_s,
        "overhead_ms_per_cell": 1e3 * (workers * report.wall_s - report.compute_s) / cells,
        "backend": report.backend,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="benchmarks/results/sweep_scaling.json")
    parser.add_argument("--jobs", type=int, default=12)
    parser.add_argument("--seconds", type=float, default=0.75, help="compute per job (about)")
    parser.add_argument(
        "--configs", nargs="+", default=[c[0] for c in CONFIGS], choices=[c[0] for c in CONFIGS]
    )
    args = parser.parse_args(argv)
    steps = calibrate(args.seconds)
    jobs = grid(args.jobs, steps)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, options, workers) in enumerate(CONFIGS):
            if name not in args.configs:
                continue
            report = run_jobs(jobs, Store(Path(tmp) / str(i)), progress=False, **options)
            rows.append(row(name, workers, report))
            print(
                json.dumps(
                    {k: round(v, 3) if isinstance(v, float) else v for k, v in rows[-1].items()}
                ),
                flush=True,
            )
    base = next((r["wall_s"] for r in rows if r["workers"] == 1), None)
    for r in rows:
        r["speedup"] = None if base is None else base / r["wall_s"]
    print(
        f"\n{'config':14s} {'wall s':>8s} {'compute s':>10s} {'speed-up':>9s} "
        f"{'overhead ms/cell':>17s}"
    )
    for r in rows:
        speedup = "" if r["speedup"] is None else f"{r['speedup']:.2f}"
        print(
            f"{r['config']:14s} {r['wall_s']:8.2f} {r['compute_s']:10.2f} {speedup:>9s} "
            f"{r['overhead_ms_per_cell']:17.1f}"
        )
    two = next((r for r in rows if r["config"] == "2 workers"), None)
    if base is not None and two is not None:
        print(
            f"\n1 -> 2 local workers: {two['speedup']:.2f}x (goal >= 1.7 on a quiet machine); "
            f"engine overhead {two['overhead_ms_per_cell']:.0f} ms per cell at 2 workers"
        )
    doc = {
        "machine": machine(
            "shared 2-core machine; one run per config, noisy",
            cores=os.cpu_count(),
            python=platform.python_version(),
        ),
        "jobs": args.jobs,
        "cells_per_job": CELLS_PER_JOB,
        "seconds_per_job": args.seconds,
        "steps_per_cell": steps,
        "rows": rows,
    }
    write_results(args.out, doc)


if __name__ == "__main__":
    main()
