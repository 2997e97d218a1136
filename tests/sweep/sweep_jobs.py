"""Deterministic jobs for the sweep tests, and a tiny CLI-like runner of them.

``python tests/sweep/sweep_jobs.py STORE --jobs 0:12 [--workers 2] [--sleep 0.2]`` runs the
:func:`grid` jobs ``0..11`` into STORE, as ``python -m hwbed.attack`` would run attacks, and
prints the report. Workers import this module by name (``sweep_jobs``): spawned pool workers
and Dask's nanny-spawned workers inherit the parent's ``sys.path``, where pytest (or running
the file as a script) has put this folder.
"""

from __future__ import annotations

import argparse
import os
import random
import time
from pathlib import Path
from typing import Any

from hwbed.engine import Job, run_jobs
from hwbed.store import Store, cell_key

FUNC = "sweep_jobs:cells"


def cells(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """The job's cells, each with per-example rows drawn from its seed.

    Payload options: ``sleep`` (s, at the start), then ``die_once`` (a marker path: when it
    is missing, create it and kill this worker mid-job), ``die`` (always kill the worker),
    ``fail_unless`` (a path: raise RuntimeError while it does not exist).
    """
    time.sleep(payload.get("sleep", 0.0))
    if payload.get("die") or payload.get("die_once") and not Path(payload["die_once"]).exists():
        if payload.get("die_once"):
            Path(payload["die_once"]).touch()
        os._exit(1)
    if payload.get("fail_unless") and not Path(payload["fail_unless"]).exists():
        raise RuntimeError(f"job {payload['job']} failed on purpose\n(second line)")
    n = payload.get("examples", 4)
    out = []
    for cell in payload["cells"]:
        rng = random.Random(cell["seed"])
        manifest = {
            "job": payload["job"],
            "seed": cell["seed"],
            "images": list(range(n)),
            "params": {"eps": cell["eps"], "steps": 10},
        }
        examples = {
            "success": [rng.random() < 0.5 for _ in range(n)],
            "queries": [rng.randrange(100) for _ in range(n)],
            "distortion": [rng.random() for _ in range(n)],
        }
        out.append({"key": cell["key"], "manifest": manifest, "examples": examples})
    return out


def wrong_cells(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """A buggy job: returns one cell fewer than it declares."""
    return cells(payload)[1:]


def grid(jobs: range | list[int], per_job: int = 2, func: str = FUNC, **options: Any) -> list[Job]:
    """Jobs ``jobs`` of ``per_job`` cells each; ``options`` go to the payload (not the keys)."""
    out = []
    for j in jobs:
        specs = [{"seed": 1000 * j + c, "eps": 0.5 * c} for c in range(per_job)]
        for spec in specs:
            spec["key"] = cell_key({"job": j, "seed": spec["seed"], "eps": spec["eps"]})
        keys = [spec["key"] for spec in specs]
        out.append(
            Job(
                key=cell_key({"cells": keys}),
                cells=keys,
                func=func,
                payload={"job": j, "cells": specs, **options},
            )
        )
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("store")
    parser.add_argument("--jobs", default="0:12", help="first:last+1")
    parser.add_argument("--reverse", action="store_true", help="run the jobs last first")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--cluster")
    parser.add_argument("--sleep", type=float, default=0.0)
    parser.add_argument("--start-at", type=float, default=0.0, help="wait until this epoch time")
    args = parser.parse_args(argv)
    first, last = map(int, args.jobs.split(":"))
    jobs = grid(range(first, last)[::-1] if args.reverse else range(first, last), sleep=args.sleep)
    time.sleep(max(0.0, args.start_at - time.time()))
    report = run_jobs(
        jobs, Store(args.store), workers=args.workers, cluster=args.cluster, progress=False
    )
    print(f"ok={report.ok} skipped={report.skipped} failed={report.failed}", flush=True)


if __name__ == "__main__":
    main()
