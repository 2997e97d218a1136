"""Every registered op's definition on a small hand-computed case: shape inference, reference
output (inside the proven range), and the refusal of a bad attribute."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from hwbed.ir.graph import Graph, Node, Tensor
from hwbed.ir.opdef import load_ops, op_def
from hwbed.ir.opkit import Proven
from hwbed.ir.types import GraphError, IntType

INT8 = IntType("int", 8)
F32 = np.float32


@dataclass
class Case:
    """One node on ``inputs`` (one batch item each, [*shape]), its expected output, and a
    change to its attrs/params (or input shapes) that must be refused with ``bad_match``."""

    inputs: list[Any]
    attrs: dict[str, Any]
    shape: tuple[int, ...]
    output: Any
    bad: dict[str, Any]
    bad_match: str
    params: dict[str, np.ndarray] = field(default_factory=dict)
    bad_shapes: list[tuple[int, ...]] | None = None


CASES = {
    "Thresholding": Case(
        [[[[0, 3, 7]]]],
        {"out_bias": -1, "out_scale": 2},
        (1, 1, 3),
        [[[-1, 1, 3]]],
        {"thresholds": np.array([[5, 1]])},
        "field thresholds is not sorted per channel",
        {"thresholds": np.array([[1, 5]])},
    ),
    "FMPadding": Case(
        [[[[1], [2]]]],
        {"pad": 1, "pad_value": -3},
        (3, 4, 1),
        [[[-3]] * 4, [[-3], [1], [2], [-3]], [[-3]] * 4],
        {"pad": -1},
        r"field pad must be an integer >= 0, got -1",
    ),
    "ConvolutionInputGenerator": Case(
        [np.arange(9).reshape(3, 3, 1)],
        {"kernel": 2, "stride": 1},
        (2, 2, 4),
        [[[0, 1, 3, 4], [1, 2, 4, 5]], [[3, 4, 6, 7], [4, 5, 7, 8]]],
        {"kernel": 4},
        r"field kernel must be an integer in 1\.\.3, got 4",
    ),
    "MVAU": Case(
        [[[[2, 1]]]],
        {"MW": 2, "MH": 2},
        (1, 1, 2),
        [[[0, 6]]],
        {"MH": 0},
        r"field MH must be an integer >= 1, got 0",
        {"weights": np.array([[1, -2], [3, 0]])},
    ),
    "StreamingMaxPool": Case(
        [[[[1], [5]], [[3], [2]]]],
        {"kernel": 2},
        (1, 1, 1),
        [[[5]]],
        {"kernel": 0},
        r"field kernel must be an integer in 1\.\.2, got 0",
    ),
    "Pool": Case(
        [[[[3, 9, 2, 4]]]],
        {"Function": "MaxPool", "kernel": 2, "channels": 1},
        (1, 1, 1),
        [[[9]]],
        {"Function": "AvgPool"},
        r"field Function 'AvgPool' is not supported",
    ),
    "AddStreams": Case(
        [[[[1, 2]]], [[[3, -4]]]],
        {},
        (1, 1, 2),
        [[[4, -2]]],
        {},
        r"input shapes \[\[1, 1, 2\], \[1, 1, 3\]\] differ",
        bad_shapes=[(1, 1, 2), (1, 1, 3)],
    ),
    "DownSampler": Case(
        [np.arange(9).reshape(3, 3, 1)],
        {"stride": 2},
        (2, 2, 1),
        [[[0], [2]], [[6], [8]]],
        {"stride": 0},
        r"field stride must be an integer >= 1, got 0",
    ),
    "ChannelPad": Case(
        [[[[7, 8]]]],
        {"before": 1, "after": 2},
        (1, 1, 5),
        [[[0, 7, 8, 0, 0]]],
        {"before": -1},
        r"field before must be an integer >= 0, got -1",
    ),
    "StreamingConcat": Case(
        [[[[1]]], [[[2, 3]]]],
        {},
        (1, 1, 3),
        [[[1, 2, 3]]],
        {},
        r"input shapes \[\[1, 1, 1\], \[1, 2, 1\]\] differ",
        bad_shapes=[(1, 1, 1), (1, 2, 1)],
    ),
    "GlobalAccPool": Case(
        [[[[1], [2]], [[3], [4]]]],
        {"positions": 4},
        (1,),
        [10],
        {"positions": 3},
        r"field positions is 3, but its input \[2, 2, 1\] has 4",
    ),
    "Affine": Case(
        [[2, 3]],
        {"ops": [["mul", "p0"], ["add", "p1"]]},
        (2,),
        np.array([2.0, 0.5], F32),
        {"ops": [["pow", "p0"]]},
        r"field ops has \['pow', 'p0'\], expected \[op, param\]",
        {"p0": np.array([0.5], F32), "p1": np.array([1.0, -1.0], F32)},
    ),
    "LabelSelect": Case(
        [[1, 5, 5]],
        {"k": 1, "Labels": 3},
        (1,),
        [1],  # ties: the lower index
        {"k": 4},
        r"field k must be an integer in 1\.\.3, got 4",
    ),
    "Flatten": Case(
        [[[[1, 2]], [[3, 4]]]],
        {},
        (4,),
        [1, 2, 3, 4],
        {},
        r"input shape \[4\] is not \[H, W, C\]",
        bad_shapes=[(4,)],
    ),
}
OPS = sorted(load_ops())


def one_node(op: str, case: Case, shapes=None, attrs=None, params=None) -> Graph:
    """A graph of the one node ``op`` on int8 inputs of ``shapes`` (the case's by default)."""
    shapes = shapes or [np.shape(x) for x in case.inputs]
    tensors = {f"x{i}": Tensor(f"x{i}", tuple(s), INT8) for i, s in enumerate(shapes)}
    tensors["y"] = Tensor("y", case.shape, INT8)
    node = Node(
        op, op, list(tensors)[:-1], ["y"], {**case.attrs, **(attrs or {})},
        {**case.params, **(params or {})},
    )  # fmt: skip
    return Graph([node], tensors, "x0", "y")


def test_every_op_has_a_case():
    assert sorted(CASES) == OPS


@pytest.mark.parametrize("op", OPS)
def test_shape_inference(op):
    case, graph = CASES[op], one_node(op, CASES[op])
    node = graph.nodes[0]
    assert op_def(node).shape(node, [graph.tensors[t].shape for t in node.inputs]) == case.shape


@pytest.mark.parametrize("op", OPS)
def test_reference_output_lies_in_the_proven_range(op):
    case, graph = CASES[op], one_node(op, CASES[op])
    node, opdef = graph.nodes[0], op_def(graph.nodes[0])
    xs = [np.asarray(x, np.int64)[None] for x in case.inputs]
    y = opdef.reference(node, xs)
    assert y.shape == (1, *case.shape)
    assert np.array_equal(y[0], np.asarray(case.output))
    proven = opdef.proven(graph, node, [Proven(int(x.min()), int(x.max())) for x in xs])
    if proven is None:
        assert y.dtype == np.float32
    else:
        assert proven.lo <= y.min() and y.max() <= proven.hi


@pytest.mark.parametrize("op", OPS)
def test_bad_attribute_is_refused(op):
    case = CASES[op]
    bad_params = {k: v for k, v in case.bad.items() if isinstance(v, np.ndarray)}
    bad_attrs = {k: v for k, v in case.bad.items() if k not in bad_params}
    graph = one_node(op, case, case.bad_shapes, bad_attrs, bad_params)
    node, opdef = graph.nodes[0], op_def(graph.nodes[0])
    ins = [Proven(-1, 1)] * len(node.inputs)
    with pytest.raises(GraphError, match=rf"^node {op}: {case.bad_match}"):
        opdef.shape(node, [graph.tensors[t].shape for t in node.inputs])
        opdef.proven(graph, node, ins)


@pytest.mark.parametrize("op", OPS)
def test_finn_name_and_attributes_go_together(op):
    opdef = load_ops()[op]
    assert (opdef.finn is None) == (opdef.finn_attrs is None)
    assert opdef.finn is None or opdef.finn.rsplit("_", 1)[-1] in ("hls", "rtl")


def test_unknown_op_is_a_graph_error():
    with pytest.raises(GraphError, match=r"node n: unknown op 'Conv'"):
        op_def(Node("n", "Conv", ["x"], ["y"]))
