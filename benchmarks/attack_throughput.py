"""Attack throughput: queries/s and the attack's own overhead; PGD against torchattacks.

``python benchmarks/attack_throughput.py [--build build/resnet20-xnor-pynq-z2]``

Black-box: GenAttack and LocalSearch against the DSP48 simulator (fast path) and against the
twin (TorchTwin at its uint8 boundary) on the same images in the same run: queries per
second, and the share of wall time spent inside the executable (the oracle times every call;
goal: attack overhead ``1 - inside/wall`` ≤ 20 %). White-box: hwbed's PGD against
torchattacks' PGD at equal settings (L∞ 8/255, α 2/255, no random start, same steps) on the
same twin and images, best of ``--repeat`` (goal: ≤ 1.1× torchattacks' time). Timings on a
shared machine are noisy; ratios within one run are what to compare. Writes JSON, prints a
table.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from results import machine, write_results

from hwbed.attacks import PGD, Twin, px
from hwbed.attacks.backends import make_executable
from hwbed.attacks.genattack import GenAttack
from hwbed.attacks.local_search import LocalSearch
from hwbed.models.data.registry import load_dataset


def black_box(args, x, y) -> list[dict]:
    rows = []
    build = Path(args.build)
    for kind in ("sim", "twin"):
        exe = make_executable(kind, build)
        for name, attack, eps in (
            (
                "genattack",
                GenAttack(population=args.population, generations=args.generations),
                px(8),
            ),
            ("localsearch", LocalSearch(rounds=args.rounds), px(16)),
        ):
            t0 = time.perf_counter()
            r = attack(exe, x, y, [eps])
            wall = time.perf_counter() - t0
            q = int(r.queries.sum())
            rows.append(
                {
                    "attack": name,
                    "executable": kind,
                    "images": len(y),
                    "eps_px": eps * 255,
                    "queries": q,
                    "wall_s": round(wall, 3),
                    "inside_s": round(r.executable_time, 3),
                    "queries_per_s": round(q / wall, 1),
                    "executable_queries_per_s": round(q / max(r.executable_time, 1e-9), 1),
                    "overhead": round(1 - r.executable_time / wall, 3),
                    "success_rate": float(r.success_rate[0]),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    return rows


def pgd_vs_torchattacks(args, x, y) -> dict:
    import torchattacks

    twin = Twin.from_checkpoint(args.build)
    xf, yt = torch.from_numpy(x).float() / 255, torch.from_numpy(y)
    ours = PGD("linf", steps=args.pgd_steps, abs_stepsize=px(2), random_start=False, keep="last")
    ref = torchattacks.PGD(
        twin.model, eps=px(8), alpha=px(2), steps=args.pgd_steps, random_start=False
    )
    timings = {"hwbed": float("inf"), "torchattacks": float("inf")}
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        a = ours(twin, x, y, [px(8)]).adversarial[0]
        timings["hwbed"] = min(timings["hwbed"], time.perf_counter() - t0)
        t0 = time.perf_counter()
        b = ref(xf, yt).numpy()
        timings["torchattacks"] = min(timings["torchattacks"], time.perf_counter() - t0)
    row = {
        "images": len(y),
        "steps": args.pgd_steps,
        "hwbed_s": round(timings["hwbed"], 3),
        "torchattacks_s": round(timings["torchattacks"], 3),
        "ratio": round(timings["hwbed"] / timings["torchattacks"], 3),
        "max_abs_diff": float(np.abs(a - b).max()),
    }
    print(json.dumps(row), flush=True)
    return row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--build", default="build/resnet20-xnor-pynq-z2")
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--population", type=int, default=6)
    parser.add_argument("--generations", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--pgd-steps", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="benchmarks/results/attack_throughput.json")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    x, y, _ = load_dataset("digits", "test")
    x, y = x[: args.images], y[: args.images]
    rows = black_box(args, x, y)
    pgd = pgd_vs_torchattacks(args, x, y)
    print(
        f"\n{'attack':12s} {'executable':10s} {'queries':>9s} {'wall s':>8s} {'q/s':>9s} "
        f"{'overhead':>9s} {'success':>8s}"
    )
    for r in rows:
        print(
            f"{r['attack']:12s} {r['executable']:10s} {r['queries']:>9d} {r['wall_s']:>8.2f} "
            f"{r['queries_per_s']:>9.0f} {r['overhead']:>9.1%} {r['success_rate']:>8.1%}"
        )
    print(
        f"\nPGD {pgd['steps']} steps on {pgd['images']} images: hwbed {pgd['hwbed_s']:.3f} s, "
        f"torchattacks {pgd['torchattacks_s']:.3f} s, ratio {pgd['ratio']:.3f} "
        f"(max |Δ| {pgd['max_abs_diff']:.2e})"
    )
    doc = {
        "machine": machine(
            "shared 2-core machine; compare ratios within one run",
            torch_threads=args.threads,
            torch=torch.__version__,
        ),
        "build": args.build,
        "black_box": rows,
        "pgd_vs_torchattacks": pgd,
    }
    write_results(args.out, doc)


if __name__ == "__main__":
    main()
