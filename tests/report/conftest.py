"""A small real store for the report tests: every attack on a float and an XNOR resnet20.

The networks are the session's digits checkpoints (tests/conftest.py); the grid runs in
seconds through the sweep engine, exactly as ``python -m hwbed.attack`` would run it.
"""

from __future__ import annotations

import pytest

from hwbed.cells import ModelSource, plan
from hwbed.engine import run_jobs
from hwbed.grid import parse_grid
from hwbed.store import Store

GRID = {
    "name": "report-test",
    "images": 24,
    "seeds": [0],
    "attacks": [
        {"attack": "fgsm", "eps_unit": "px", "epsilons": [2, 8, 32]},
        {
            "attack": "pgd",
            "norm": "linf",
            "eps_unit": "px",
            "epsilons": [8, 32],
            "iterations": [1, 2, 4],
            "params": {"restarts": 2, "record_every": 1},
        },
        {"attack": "deepfool", "norm": "l2", "iterations": [1, 3]},
        {"attack": "localsearch", "eps_unit": "px", "epsilons": [32], "iterations": [5, 10]},
        {
            "attack": "genattack",
            "eps_unit": "px",
            "epsilons": [32],
            "iterations": [5, 10],
            "params": {"population": 6},
        },
    ],
}


@pytest.fixture(scope="session")
def report_store(tmp_path_factory, float_ckpt, xnor_ckpt):
    """The store folder: resnet20 on twin, resnet20-xnor on twin and sim."""
    grid = parse_grid(GRID)
    store = Store(tmp_path_factory.mktemp("report") / "store")
    jobs = plan(grid, [ModelSource.from_checkpoint(xnor_ckpt)], ["twin", "sim"], None)
    jobs += plan(grid, [ModelSource.from_checkpoint(float_ckpt)], ["twin"], None)
    report = run_jobs(jobs, store, workers=1, progress=False)
    assert not report.failed, store.failed()
    return store.path
