"""Lowering and simulating ImageNet ResNets at 224x224: time, graph size, fast-path memory.

``python benchmarks/lowering_imagenet.py [--out benchmarks/results/lowering_imagenet.json]``

For resnet18-xnor and resnet50-w8a8 (random-init, calibrated: only cost matters here) on
3x224x224 inputs: the lowering's wall time (front-end, passes and checks), the saved graph
(``graph.npz`` compressed parameters and ``graph.json``, MB), the fast path's plan
compilation, its time per image at batch 1 and 8 (best of ``--repeat``) and its peak memory
(in a fresh process that loads the saved graph and compiles the plan: the process's peak
resident set, the peak while it runs one batch, and that less the resident set before it),
and whether its logits equal the twin's on a few images. Timings on a shared machine are
noisy.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from results import machine, write_results

SPECS = ("resnet18-xnor", "resnet50-w8a8")
BATCHES = (1, 8)


def _status_mb(key: str) -> float:
    """A memory field of /proc/self/status (VmRSS: now, VmHWM: peak) in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak() -> None:
    """Start VmHWM afresh from the current resident set (Linux clear_refs 5)."""
    Path("/proc/self/clear_refs").write_text("5")


def child(graph_path: str, batch: int, repeat: int, threads: int) -> None:
    """In a fresh process: load, compile, run ``batch`` images; print timings and memory."""
    torch.set_num_threads(threads)
    from hwbed.ir.graph import Graph
    from hwbed.sim.fast import Plan

    graph = Graph.load(graph_path)
    t0 = time.perf_counter()
    plan = Plan(graph)
    compile_s = time.perf_counter() - t0
    h, w, c = graph.tensors[graph.input].shape
    x = np.random.default_rng(0).integers(0, 256, (batch, h, w, c), dtype=np.uint8)
    process_peak = _status_mb("VmHWM")  # torch, the graph, the plan's compilation
    before = _status_mb("VmRSS")
    _reset_peak()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        plan.run(x)
        best = min(best, time.perf_counter() - t0)
    run_peak = _status_mb("VmHWM")
    print(
        json.dumps(
            {
                "compile_s": compile_s,
                "s_per_image": best / batch,
                "process_peak_mb": max(process_peak, run_peak),
                "run_peak_mb": run_peak,
                "run_extra_mb": run_peak - before,
            }
        )
    )


def twin(spec: str, shape: tuple[int, int, int]) -> torch.nn.Module:
    """Random init, then tests/conftest.py's calibration: statistics, then learned scales."""
    from hwbed.models.quantize import end_stats_phase
    from hwbed.models.zoo import build_model

    torch.manual_seed(0)
    model = build_model(spec, *shape, 1000)
    for _ in range(2):
        x = torch.rand(4, *shape)
        end_stats_phase(model, x)
    return model.eval()


def bench(spec: str, shape: tuple[int, int, int], args, tmp: Path) -> dict:
    from hwbed.fpga.lowering.lower import lower
    from hwbed.ir.executable import TorchTwin
    from hwbed.sim.executable import SimExecutable

    model = twin(spec, shape)
    t0 = time.perf_counter()
    graph = lower(model, spec, shape)
    row: dict = {"model": spec, "lower_s": time.perf_counter() - t0, "nodes": len(graph.nodes)}
    path = graph.save(tmp / spec / "graph")
    row["npz_mb"] = path.with_suffix(".npz").stat().st_size / 1e6
    row["json_mb"] = path.stat().st_size / 1e6
    for b in BATCHES:
        out = subprocess.run(
            [sys.executable, __file__, "--child", str(path), str(b), str(args.repeat)]
            + ["--threads", str(args.threads)],
            capture_output=True,
            text=True,
            check=True,
        )
        got = json.loads(out.stdout.strip().splitlines()[-1])
        row["compile_s"] = got["compile_s"]
        row[f"fast_s_per_image_b{b}"] = got["s_per_image"]
        row["fast_process_peak_mb"] = max(
            row.get("fast_process_peak_mb", 0), got["process_peak_mb"]
        )
        row[f"fast_run_peak_mb_b{b}"] = got["run_peak_mb"]
        row[f"fast_run_extra_mb_b{b}"] = got["run_extra_mb"]
    x = np.random.default_rng(1).integers(0, 256, (args.check, *shape), dtype=np.uint8)
    x[0], x[-1] = 0, 255
    sim, ref = SimExecutable(graph), TorchTwin(model, spec, shape, 1000)
    t0 = time.perf_counter()
    want = ref(x)
    row["twin_s_per_image"] = (time.perf_counter() - t0) / len(x)
    row["bit_exact_vs_twin"] = bool(np.array_equal(sim(x), want))
    return row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="benchmarks/results/lowering_imagenet.json")
    parser.add_argument("--models", nargs="+", default=list(SPECS))
    parser.add_argument("--size", type=int, default=224, help="input height and width")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--check", type=int, default=4, help="images compared with the twin")
    parser.add_argument(
        "--child", nargs=3, metavar=("GRAPH", "BATCH", "REPEAT"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    if args.child:
        child(args.child[0], int(args.child[1]), int(args.child[2]), args.threads)
        return
    torch.set_num_threads(args.threads)
    shape = (3, args.size, args.size)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for spec in args.models:
            rows.append(bench(spec, shape, args, Path(tmp)))
            print(
                json.dumps(
                    {k: round(v, 3) if isinstance(v, float) else v for k, v in rows[-1].items()}
                ),
                flush=True,
            )
    cols = [c for c in rows[0] if c != "model"]
    print("\n" + " | ".join(["model", *cols]))
    for r in rows:
        cells = [f"{r[c]:.3g}" if isinstance(r[c], float) else str(r[c]) for c in cols]
        print(" | ".join([r["model"], *cells]))
    doc = {
        "machine": machine(
            "shared 2-core machine; lowering wall time, best-of-repeat fast-path times, peak RSS"
            " of a fresh process (loaded graph, compiled plan, one batch)",
            torch_threads=args.threads,
            torch=torch.__version__,
        ),
        "shape": list(shape),
        "units": {
            "lower_s": "s",
            "npz_mb": "MB (10^6 bytes)",
            "fast_s_per_image_b*": "s",
            "fast_process_peak_mb": "MiB, peak resident set of the whole process",
            "fast_run_peak_mb_b*": "MiB, peak resident set while running the batch",
            "fast_run_extra_mb_b*": "MiB, that peak less the resident set before the run",
        },
        "rows": rows,
    }
    write_results(args.out, doc)


if __name__ == "__main__":
    main()
