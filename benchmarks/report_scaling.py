"""Time of ``python -m hwbed.report`` as the store grows to the study's size.

``python benchmarks/report_scaling.py [--sizes 200x100 1000x500 2400x1000] [--out
benchmarks/results/report_scaling.json]``

A size ``CxN`` is a synthetic store of C cells of N images each, made from the real cells of
the smoke store's schema: every attack of the study on 10 models (the study's variants) ×
executables (twin-float, twin and, for the binary ones, sim for white-box attacks; twin (and
sim) for black-box ones),
strengths and iteration counts cycling through the breakingbed-cifar grid, per-image outcomes
drawn at random (clean accuracy 0.9, attacked accuracy falling with strength). The full
BreakingBED CIFAR grid on 10 models and 3 executables is about 2,400 cells of 1,000 images.
Columns: seconds for ``hwbed.store.load`` (the per-image DataFrame, for users' own pandas
work), for ``report.frame.cells`` (one row per cell, read straight from the cell files: what
the report uses), for the on-device vs float table (``full_table`` + ``side_by_side``), and for
the whole report without CAM (no checkpoints in a synthetic store): every table, plot and the
page, its own read included; plus the page's size.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
from results import write_results

from hwbed.report.frame import cells
from hwbed.report.run import ReportConfig, write_report
from hwbed.report.tables import full_table, side_by_side
from hwbed.store import Store, cell_key, load

MODELS = [
    "resnet20",
    "resnet20-kd",
    "resnet20-prune-filter50",
    "resnet20-prune-channel50",
    "resnet20-xnor",
    "resnet20-abc1x1",
    "resnet20-abc3x3",
    "resnet56",
    "resnet56-xnor",
    "resnet56-abc3x3",
]
ATTACKS = [  # (attack, norm, eps unit, strengths, iterations, params, white-box)
    ("fgsm", "linf", "px", [2, 4, 8, 16], [None], {}, True),
    ("pgd", "l2", "abs", [0.1, 0.5, 1.0, 2.0], [2, 3, 4, 5], {}, True),
    ("cw", "l2", "abs", [None], [1, 10, 20, 50], {"initial_const": 1.0}, True),
    ("deepfool", "l2", "abs", [None], [1, 5, 10, 20], {}, True),
    ("localsearch", "linf", "px", [8, 16, 32], [50, 100, 150, 200], {}, False),
    ("genattack", "linf", "px", [8, 12], [50, 100, 150, 200], {"population": 6}, False),
]


def synthetic_store(folder: Path, n_cells: int, n_images: int, seed: int = 0) -> Store:
    """A store of ``n_cells`` cells of ``n_images`` random per-image outcomes."""
    rng = np.random.default_rng(seed)
    store = Store(folder)
    grid = [
        (model, a, s, i, side)
        for a in ATTACKS
        for s in a[3]
        for i in a[4]
        for model in MODELS
        for side in (("twin-float", "twin", "sim") if a[6] else ("twin", "sim"))
        if side != "sim" or "xnor" in model or "abc" in model  # float networks: twin only
    ]
    label = rng.integers(0, 10, n_images)
    clean = np.where(rng.random(n_images) < 0.9, label, (label + 1) % 10)
    for k in range(n_cells):
        model, (attack, norm, unit, _, _, params, _), eps, it, side = grid[k % len(grid)]
        seed_k = k // len(grid)
        strength = 0.5 if eps is None else min(1.0, float(eps) / (16 if unit == "px" else 2))
        pred = np.where(rng.random(n_images) < 0.9 - 0.7 * strength, clean, (clean + 3) % 10)
        content = {
            "model": model,
            "executable": side,
            "attack": attack,
            "norm": norm,
            "eps": eps,
            "eps_unit": unit,
            "params": params,
            "iterations": it,
            "seed": seed_k,
            "data": "cifar10",
            "images": n_images,
        }
        scale = 1 / 255 if unit == "px" else 1.0
        manifest = {
            **content,
            "model_card": {"spec": model, "classes": 10},
            "build": f"synthetic/{model}-pynq-z2",
            "eps_abs": None if eps is None else eps * scale,
            "targeted": False,
            "crafted_on": f"twin:{model}",
            "scored_on": f"{side}:{model}",
            "bit_exact": None if side == "twin-float" else True,
        }
        examples = {
            "image": list(range(n_images)),
            "label": label.tolist(),
            "clean_pred": clean.tolist(),
            "pred": pred.tolist(),
            "success": (pred != label).tolist(),
            "first_success": [-1] * n_images,
        }
        store.write(cell_key({**content, "k": k}), manifest, examples)
    return store


def measure(n_cells: int, n_images: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        store = synthetic_store(Path(tmp) / "store", n_cells, n_images)
        t = time.perf_counter()
        load(store.path)
        t0 = time.perf_counter()
        c = cells(store.path)
        t1 = time.perf_counter()
        side_by_side(full_table(c))
        t2 = time.perf_counter()
        out = Path(tmp) / "report"
        config = ReportConfig(store=store.path, out=out, cam_images=0, progress=False)
        write_report(config)
        t3 = time.perf_counter()
        return {
            "cells": n_cells,
            "images": n_images,
            "load_s": round(t0 - t, 2),
            "cells_s": round(t1 - t0, 2),
            "device_table_s": round(t2 - t1, 2),
            "report_s": round(t3 - t2, 2),
            "page_mb": round((out / "index.html").stat().st_size / 1e6, 2),
        }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", nargs="+", default=["200x100", "1000x500", "2400x1000"])
    p.add_argument("--out", default="benchmarks/results/report_scaling.json")
    args = p.parse_args()
    rows = []
    print(
        f"{'cells':>6} {'images':>6} {'load s':>7} {'cells s':>8} {'table s':>8} "
        f"{'report s':>9} {'page MB':>8}"
    )
    for size in args.sizes:
        c, n = (int(v) for v in size.split("x"))
        r = measure(c, n)
        rows.append(r)
        print(
            f"{r['cells']:>6} {r['images']:>6} {r['load_s']:>7} {r['cells_s']:>8} "
            f"{r['device_table_s']:>8} "
            f"{r['report_s']:>9} {r['page_mb']:>8}"
        )
    write_results(args.out, {"machine": platform.platform(), "rows": rows})


if __name__ == "__main__":
    main()
