"""The QONNX rendering executed by qonnx (an executor hwbed did not write) equals the
reference executor on every tensor; the rendering refuses what float32 cannot carry."""

from __future__ import annotations

import copy
from functools import cache

import numpy as np
import pytest
import torch

from hwbed.fpga.export.qonnx_render import run_qonnx_render, to_qonnx
from hwbed.ir.reference import execute
from hwbed.ir.types import GraphError, IntType

torch.set_num_threads(1)
pytestmark = pytest.mark.filterwarnings("ignore:Keyword arguments are being passed")

SHAPES = {"cnv": (3, 32, 32), "tfc": (1, 8, 8), "resnet20": (1, 8, 8)}


@pytest.fixture(scope="module")
def graph(random_graph):
    """A random-init network by spec, calibrated over 8 passes, lowered (cached per spec)."""
    return cache(lambda spec: random_graph(spec, SHAPES[spec.split("-")[0]], passes=8))


def pixels(spec: str, n: int, seed: int = 3) -> np.ndarray:
    c, h, w = SHAPES[spec.split("-")[0]]
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, c), dtype=np.uint8)


def assert_same(graph, spec: str, n: int) -> None:
    g = graph(spec)
    x = pixels(spec, n)
    want, got = execute(g, x, keep=True), run_qonnx_render(g, x, keep=True)
    for name, value in got.items():
        assert np.array_equal(value.reshape(want[name].shape), want[name]), f"{spec}: {name}"
    absent = {t for n in g.nodes for t in n.outputs} - set(got)
    assert {g.producer(t).op for t in absent} <= {"FMPadding"}  # paddings fused into Im2Col
    logits = run_qonnx_render(g, x)
    assert logits.dtype == np.float32 and np.array_equal(logits, want[g.output])


@pytest.mark.parametrize("spec, n", [("tfc-w1a1", 16), ("resnet20-xnor", 2), ("cnv-w1a1", 1)])
def test_qonnx_equals_reference(spec, n, graph):
    assert_same(graph, spec, n)


@pytest.mark.slow
@pytest.mark.parametrize(
    "spec, n",
    [
        ("tfc-w1a1", 64),
        ("resnet20-xnor", 8),
        ("cnv-w1a1", 4),
        ("cnv-w2a2", 4),
        ("resnet20-abc3x3", 4),
        ("resnet20-w4a4", 4),
    ],
)
def test_qonnx_equals_reference_more(spec, n, graph):
    assert_same(graph, spec, n)


@pytest.mark.parametrize(
    "spec, ops",
    [
        (
            "cnv-w1a1",
            {
                "MultiThreshold",
                "Im2Col",
                "MatMul",
                "XnorPopcountMatMul",
                "MaxPoolNHWC",
                "Reshape",
                "Mul",
                "Add",
                "Sub",
                "Div",
                "TopK",
            },
        ),
        (
            "resnet20-xnor",
            {
                "MultiThreshold",
                "Pad",
                "Im2Col",
                "MatMul",
                "Add",
                "Slice",
                "ReduceSum",
                "Mul",
                "TopK",
            },
        ),
    ],
)
def test_rendering_uses_qonnx_custom_ops(spec, ops, graph):
    model = to_qonnx(graph(spec))
    used = {n.op_type for n in model.graph.node}
    assert ops <= used, sorted(ops - used)
    assert model.get_tensor_datatype(graph(spec).input).name == "UINT8"
    assert [o.name for o in model.graph.output][0] == graph(spec).output


def test_xnor_thresholds_move_to_the_popcount(graph):
    """d >= T  <=>  P >= ceil((T + K) / 2) for P = (d + K) / 2, at every T and d."""
    g = copy.deepcopy(graph("tfc-w1a1"))
    node = g.node("MVAU_hls_1")
    k = node.params["weights"].shape[1]
    node.params["thresholds"][:, 0] = np.linspace(-k - 1, k + 1, node.params["thresholds"].shape[0])
    x = pixels("tfc-w1a1", 32)
    assert np.array_equal(run_qonnx_render(g, x), execute(g, x))


def test_wrong_annotation_is_caught_by_qonnx(graph):
    """A declared type narrower than the values makes qonnx's sanitizer object: an error."""
    g = copy.deepcopy(graph("tfc-w1a1"))
    g.tensors[g.node("MVAU_hls_3").outputs[0]].dtype = IntType("int", 2)
    with pytest.raises(GraphError, match="QONNX execution: .*can't be represented"):
        run_qonnx_render(g, pixels("tfc-w1a1", 4))


def test_float32_inexact_accumulator_is_refused(graph):
    g = copy.deepcopy(graph("tfc-w2a2"))
    g.node("MVAU_hls_1").params["weights"][0] = 2**20
    with pytest.raises(
        GraphError,
        match=r"node MVAU_hls_1: proven partial-sum bound \d+ "
        "reaches 2\\^24",
    ):
        to_qonnx(g)


def test_float32_inexact_threshold_is_refused(graph):
    g = copy.deepcopy(graph("tfc-w2a2"))
    g.node("MVAU_hls_0").params["thresholds"][0, -1] = 2**24
    with pytest.raises(GraphError, match="node MVAU_hls_0: field thresholds reaches 2\\^24"):
        to_qonnx(g)


def test_wrong_input_shape_is_refused(graph):
    with pytest.raises(GraphError, match="does not match the graph's"):
        run_qonnx_render(graph("tfc-w1a1"), np.zeros((1, 8, 8, 3), dtype=np.uint8))
