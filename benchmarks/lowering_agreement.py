"""Agreement of the lowered integer graph with the Brevitas twin on trained networks.

For each network of the lowering issue: train briefly (cached in runs/), lower, run the whole
test split through the reference executor and the twin, and a few images through qonnx's
execution of the rendered QONNX graph. Prints a table and writes JSON.

    python benchmarks/lowering_agreement.py [--out benchmarks/results/lowering_agreement.json]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from results import write_results

from hwbed.fpga.export.qonnx_render import run_qonnx_render
from hwbed.fpga.lowering.lower import lower_checkpoint
from hwbed.ir.reference import execute
from hwbed.models.checkpoint import load_checkpoint
from hwbed.models.data import load_dataset, to_float
from hwbed.models.training import TrainConfig, train

RUNS = [  # spec, data, epochs, training-image limit
    ("tfc-w1a1", "digits", 30, None),
    ("resnet20-xnor", "digits", 30, None),
    ("resnet20-w4a4", "digits", 15, None),
    ("resnet20-abc3x3", "digits", 10, None),
    ("cnv-w1a1", "synthetic", 2, 1000),
    ("cnv-w2a2", "synthetic", 2, 1000),
]


def measure(spec: str, data: str, epochs: int, limit: int | None, qonnx_n: int) -> dict:
    ckpt = train(TrainConfig(model=spec, data=data, epochs=epochs, limit=limit, progress=False))
    model, meta = load_checkpoint(ckpt)
    t0 = time.perf_counter()
    graph = lower_checkpoint(ckpt)
    lower_s = time.perf_counter() - t0
    x, y, _ = load_dataset(data, "test", size=meta.input_shape[1])
    ref = execute(graph, x.transpose(0, 2, 3, 1))
    with torch.no_grad():
        twin = model(to_float(x)).numpy()
    q = run_qonnx_render(graph, x[:qonnx_n].transpose(0, 2, 3, 1))
    return {
        "model": spec,
        "data": data,
        "test_images": len(y),
        "twin_accuracy": float((twin.argmax(1) == y).mean()),
        "graph_accuracy": float((ref.argmax(1) == y).mean()),
        "logits_identical_pct": 100.0
        * float(np.mean([np.array_equal(a, b) for a, b in zip(ref, twin, strict=True)])),
        "top1_agreement_pct": 100.0 * float((ref.argmax(1) == twin.argmax(1)).mean()),
        "max_abs_logit_diff": float(np.abs(ref - twin).max()),
        "qonnx_images": qonnx_n,
        "qonnx_identical_pct": 100.0
        * float(np.mean([np.array_equal(a, b) for a, b in zip(q, ref[: len(q)], strict=True)])),
        "lower_seconds": round(lower_s, 2),
        "nodes": len(graph.nodes),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/lowering_agreement.json")
    parser.add_argument("--qonnx-n", type=int, default=4)
    parser.add_argument("--only", nargs="*", help="subset of specs")
    args = parser.parse_args()
    rows = [
        measure(s, d, e, lim, args.qonnx_n)
        for s, d, e, lim in RUNS
        if not args.only or s in args.only
    ]
    head = (
        f"{'model':<17}{'data':<10}{'acc twin':>9}{'acc graph':>10}{'logits =':>10}"
        f"{'top-1 =':>9}{'qonnx =':>9}{'lower s':>9}"
    )
    print(head)
    for r in rows:
        print(
            f"{r['model']:<17}{r['data']:<10}{r['twin_accuracy']:>9.3f}{r['graph_accuracy']:>10.3f}"
            f"{r['logits_identical_pct']:>9.1f}%{r['top1_agreement_pct']:>8.1f}%"
            f"{r['qonnx_identical_pct']:>8.1f}%{r['lower_seconds']:>9.1f}"
        )
    write_results(args.out, rows, indent=2)


if __name__ == "__main__":
    main()
