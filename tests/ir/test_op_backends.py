"""Every registered op has an entry (or a declared fallback) in every backend, and the
executing backends agree with the reference on a random one-node graph of each op."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from hwbed.fpga.export.qonnx_render import RENDERERS, run_qonnx_render
from hwbed.fpga.finn.estimates import COST
from hwbed.fpga.finn.nodes import finn_nodes
from hwbed.ir.builder import GraphBuilder
from hwbed.ir.graph import Graph
from hwbed.ir.opdef import load_ops
from hwbed.ir.reference import execute
from hwbed.ir.types import FLOAT32, IntType
from hwbed.sim.fast import KERNELS, Plan
from hwbed.sim.mapping import DSP, dsp_report
from hwbed.sim.slice_path import SLICES, execute_slices

UINT8 = IntType("uint", 8)
OPS = sorted(load_ops())


def _one(op: str, shape, dtype, attrs=None, params=None, inputs=None, hwc=(6, 6, 3)) -> Graph:
    """pixels [H, W, C] -> one ``op`` node -> its output, the graph output."""
    b = GraphBuilder(hwc, UINT8)
    out = b.add(op, inputs or [b.input], shape, dtype, attrs, params)
    return b.finish(out, {"model": f"one-{op}"})


def _thresholds(rng, channels: int, steps: int, lo: int, hi: int) -> np.ndarray:
    return np.sort(rng.integers(lo, hi + 1, (channels, steps)), axis=1).astype(np.int64)


def _thresholding(rng) -> Graph:
    attrs = {"out_bias": -2, "out_scale": 1, "bound": 255}
    params = {"thresholds": _thresholds(rng, 3, 4, 0, 256)}
    return _one("Thresholding", (6, 6, 3), IntType("int", 3), attrs, params)


def _mvau(rng) -> Graph:
    w = rng.integers(-3, 4, (4, 3)).astype(np.int64)
    lo = int(np.where(w > 0, 0, w * 255).sum(axis=1).min())
    hi = int(np.where(w > 0, w * 255, 0).sum(axis=1).max())
    attrs = {"MW": 3, "MH": 4, "binary": False, "out_bias": 0, "out_scale": 1}
    params = {"weights": w, "thresholds": _thresholds(rng, 4, 3, lo, hi)}
    return _one("MVAU", (6, 6, 4), IntType("uint", 2), attrs, params)


def _window(rng) -> Graph:
    attrs = {"kernel": 3, "stride": 2, "IFMDim": [7, 7], "OFMDim": [3, 3], "IFMChannels": 3}
    return _one("ConvolutionInputGenerator", (3, 3, 27), UINT8, attrs, hwc=(7, 7, 3))


def _affine(rng) -> Graph:
    ops = [["mul", "s"], ["add", "b"]]
    params = {
        "s": rng.standard_normal(3).astype(np.float32),
        "b": rng.standard_normal(1).astype(np.float32),
    }
    return _one("Affine", (6, 6, 3), FLOAT32, {"ops": ops}, params)


FACTORIES: dict[str, Callable[[np.random.Generator], Graph]] = {
    "Thresholding": _thresholding,
    "FMPadding": lambda rng: _one(
        "FMPadding", (8, 8, 3), UINT8, {"pad": 1, "pad_value": int(rng.integers(0, 256))}
    ),
    "ConvolutionInputGenerator": _window,
    "MVAU": _mvau,
    "StreamingMaxPool": lambda rng: _one("StreamingMaxPool", (3, 3, 3), UINT8, {"kernel": 2}),
    "Pool": lambda rng: _one(
        "Pool",
        (3, 3, 2),
        UINT8,
        {"Function": "MaxPool", "kernel": 2, "channels": 2},
        hwc=(3, 3, 8),
    ),
    "AddStreams": lambda rng: _one(
        "AddStreams", (6, 6, 3), IntType("uint", 9), inputs=["pixels", "pixels"]
    ),
    "DownSampler": lambda rng: _one("DownSampler", (3, 3, 3), UINT8, {"stride": 2}),
    "ChannelPad": lambda rng: _one("ChannelPad", (6, 6, 6), UINT8, {"before": 1, "after": 2}),
    "StreamingConcat": lambda rng: _one(
        "StreamingConcat", (6, 6, 6), UINT8, inputs=["pixels", "pixels"]
    ),
    "GlobalAccPool": lambda rng: _one(
        "GlobalAccPool", (3,), IntType("uint", 14), {"positions": 36}
    ),
    "Affine": _affine,
    "LabelSelect": lambda rng: _one(
        "LabelSelect", (1, 1, 3), IntType("uint", 4), {"Labels": 10, "k": 3}, hwc=(1, 1, 10)
    ),
    "Flatten": lambda rng: _one("Flatten", (108,), UINT8),
}
"""Op -> a random one-node graph of it on uint8 pixels."""


def _factory(op: str) -> Callable[[np.random.Generator], Graph]:
    if op not in FACTORIES:
        pytest.fail(f"op {op!r} has no one-node graph factory in tests/ir/test_op_backends.py")
    return FACTORIES[op]


def _finn_op_types(op: str) -> list[str]:
    return [d["op_type"] for d in finn_nodes(_factory(op)(np.random.default_rng(0)))]


BACKENDS = {"fast": KERNELS, "slices": SLICES, "dsp": DSP, "qonnx": RENDERERS}


@pytest.mark.parametrize("backend", [*BACKENDS, "cost"])
@pytest.mark.parametrize("op", OPS)
def test_every_backend_handles_every_op(op, backend):
    if backend == "cost":
        finn = load_ops()[op].finn
        types = _finn_op_types(op)
        assert (finn is None) == (not types), f"op {op!r}: OpDef.finn {finn!r}, FINN nodes {types}"
        missing = [t for t in types if not COST.covers(t)]
        assert not missing, f"the cost backend has no entry for op {op!r} (FINN {missing})"
        return
    table = BACKENDS[backend]
    assert table.covers(op) or table.fallback is not None, (
        f"the {backend} backend has no entry for op {op!r} and no declared fallback"
    )


@pytest.mark.parametrize("op", OPS)
def test_one_node_graph_agrees_with_the_reference(op):
    rng = np.random.default_rng(sorted(load_ops()).index(op))
    graph = _factory(op)(rng)
    h, w, c = graph.tensors[graph.input].shape
    pixels = np.concatenate(
        [
            rng.integers(0, 256, (4, h, w, c), dtype=np.uint8),
            np.full((1, h, w, c), 255, np.uint8),
            np.zeros((1, h, w, c), np.uint8),
        ]
    )
    want = execute(graph, pixels)
    for name, got in (
        ("fast", Plan(graph, chunk=4).run(pixels)),
        ("slices", execute_slices(graph, pixels)),
        ("qonnx", run_qonnx_render(graph, pixels)),
    ):
        assert got.shape == want.shape, f"{name} on {op}: shape {got.shape} != {want.shape}"
        assert np.array_equal(got, want), f"{name} on {op}: outputs differ from the reference"
    assert set(dsp_report(graph)) == {n.name for n in graph.nodes}
