"""Throughput (images/s) of the simulator's fast path against the other executables.

``python benchmarks/sim_throughput.py [--out benchmarks/results/sim_throughput.json]``

For resnet20-xnor, resnet20-abc3x3 and cnv-w1a1 on 3x32x32 inputs (``--shape 1 8 8`` for
the digits size, resnets only) (random-init, calibrated
networks: only speed matters here), on the same random uint8 images in the same run: the fast
path (batch 1, 64, 256), the slice-level path (a couple of images), the Brevitas twin
(TorchTwin), qonnx ``execute_onnx`` on the exported QONNX (a handful of images, batch 1) and
onnxruntime on the float ``resnet20`` of the same shape (None for cnv, whose float variant is
a Brevitas module). Timings on a shared
machine are noisy: each number is the best of ``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from results import machine, write_results

from hwbed.fpga.lowering.lower import lower
from hwbed.ir.executable import TorchTwin
from hwbed.models.zoo import build_model
from hwbed.sim.executable import SimExecutable

MODELS = {"resnet20-xnor": "resnet20", "resnet20-abc3x3": "resnet20", "cnv-w1a1": "cnv"}
"""Quantized spec -> its float counterpart for the onnxruntime column."""
BATCHES = (1, 64, 256)


def _twin(spec: str, shape: tuple[int, int, int]) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model(spec, *shape, 10).train()
    with torch.no_grad():
        for _ in range(3):  # Brevitas calibration
            model(torch.rand(8, *shape))
    return model.eval()


def images_per_s(
    fn: Callable[[np.ndarray], object], x: np.ndarray, batch: int, n: int, repeat: int
) -> float:
    """Best-of-``repeat`` throughput over ``n`` images fed ``batch`` at a time."""
    fn(x[:batch])  # warm-up (allocations, oneDNN primitive creation)
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for i in range(0, n, batch):
            fn(x[i : i + batch])
        best = min(best, time.perf_counter() - t0)
    return n / best


def bench(spec: str, x: np.ndarray, args, tmp: Path) -> dict:
    shape = tuple(x.shape[1:])
    model = _twin(spec, shape)
    t0 = time.perf_counter()
    graph = lower(model, spec, shape)
    row: dict = {"model": spec, "lower_s": round(time.perf_counter() - t0, 2)}
    sim = SimExecutable(graph)
    twin = TorchTwin(model, spec, shape, 10)
    for b in BATCHES:
        n = max(b, args.images) if b > 1 else args.single
        row[f"fast_b{b}"] = images_per_s(sim, x, b, n, args.repeat)
        row[f"twin_b{b}"] = images_per_s(twin, x, b, n, args.repeat)
    row["bit_exact_vs_twin"] = bool(np.array_equal(sim(x[:64]), twin(x[:64])))
    try:
        from hwbed.sim.slice_path import execute_slices
    except ImportError:
        row["slice_b1"] = None
    else:
        nhwc = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        row["slice_b1"] = images_per_s(
            lambda v: execute_slices(graph, v), nhwc, 1, args.slow_images, 1
        )
    try:
        from hwbed.fpga.export.qonnx_export import export_qonnx, run_qonnx
    except ImportError:
        row["qonnx_b1"] = None
    else:
        path = tmp / f"{spec}.onnx"
        export_qonnx(model, shape, path)
        xf = x.astype(np.float32) / 255.0
        row["qonnx_b1"] = images_per_s(lambda v: run_qonnx(path, v), xf, 1, args.slow_images, 1)
    from hwbed.fpga.export.ort import OrtRunner
    from hwbed.fpga.export.qonnx_export import ExportError, export_onnx

    try:  # the float twin; BNN-PYNQ's float variants are Brevitas modules and do not export
        ort = OrtRunner(export_onnx(build_model(MODELS[spec], *shape, 10).eval(), shape))
    except ExportError:
        ort = None
    xf = x.astype(np.float32) / 255.0
    for b in BATCHES:
        n = max(b, args.images) if b > 1 else args.single
        row[f"ort_float_b{b}"] = None if ort is None else images_per_s(ort, xf, b, n, args.repeat)
    row["fast/twin_b64"] = row["fast_b64"] / row["twin_b64"]
    row["fast/ort_float_b1"] = None if ort is None else row["fast_b1"] / row["ort_float_b1"]
    if row["qonnx_b1"]:
        row["fast_b64/qonnx_b1"] = row["fast_b64"] / row["qonnx_b1"]
    return row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="benchmarks/results/sim_throughput.json")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument(
        "--shape",
        type=int,
        nargs=3,
        default=[3, 32, 32],
        metavar=("C", "H", "W"),
        help="input shape (default 3 32 32; cnv needs 32x32)",
    )
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--images", type=int, default=256, help="images per batched timing")
    parser.add_argument("--single", type=int, default=32, help="images for batch-1 timings")
    parser.add_argument("--slow-images", type=int, default=2, help="images for qonnx/slice")
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    shape = tuple(args.shape)
    x = np.random.default_rng(0).integers(0, 256, (max(args.images, 256), *shape), dtype=np.uint8)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for spec in args.models:
            rows.append(bench(spec, x, args, Path(tmp)))
            print(
                json.dumps(
                    {k: round(v, 2) if isinstance(v, float) else v for k, v in rows[-1].items()}
                ),
                flush=True,
            )
    cols = [c for c in rows[0] if c not in ("model",)]
    print("\n" + " | ".join(["model", *cols]))
    for r in rows:
        print(
            " | ".join(
                [
                    r["model"],
                    *(f"{r[c]:.1f}" if isinstance(r[c], float) else str(r[c]) for c in cols),
                ]
            )
        )
    doc = {
        "machine": machine(
            "shared 2-core machine; best-of-repeat timings, noisy",
            torch_threads=args.threads,
            torch=torch.__version__,
        ),
        "units": "images/s",
        "shape": list(shape),
        "rows": rows,
    }
    write_results(args.out, doc)


if __name__ == "__main__":
    main()
