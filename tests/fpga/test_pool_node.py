"""The windowed max (``Pool``, FINN's Pool_hls) and padding with a non-zero value, in every
backend: each equals the reference executor on random small graphs, and the checks, the
FINN view, the estimates, the folding and the slice mapping know the op."""

from __future__ import annotations

import numpy as np
import pytest

from hwbed.fpga.export.qonnx_render import run_qonnx_render, to_qonnx
from hwbed.fpga.finn.estimates import node_cycles, node_resources
from hwbed.fpga.finn.folding import fold_to_fit, set_folding
from hwbed.fpga.finn.nodes import finn_nodes
from hwbed.ir.builder import GraphBuilder
from hwbed.ir.checks import check_graph
from hwbed.ir.graph import Graph
from hwbed.ir.reference import execute
from hwbed.ir.types import GraphError, IntType
from hwbed.sim.fast import Plan
from hwbed.sim.mapping import dsp_report
from hwbed.sim.slice_path import execute_slices

INT8 = IntType("int", 8)


def pool_graph(h: int, w: int, c: int, k: int, s: int, q: int, signed: bool) -> Graph:
    """pixels -> (signed: Thresholding to int8 codes x - 128) -> FMPadding(q, type minimum)
    -> window k x k stride s -> Pool (MaxPool): the lowering of ``nn.MaxPool2d(k, s, q)``."""
    b = GraphBuilder((h, w, c), IntType("uint", 8))
    x, dtype = b.input, IntType("uint", 8)
    if signed:
        thr = np.arange(1, 256, dtype=np.int64)[None]  # count = x: codes x - 128
        x = b.add(
            "Thresholding",
            [x],
            (h, w, c),
            INT8,
            {"out_bias": -128, "out_scale": 1},
            {"thresholds": thr},
        )
        dtype = INT8
    if q:
        h, w = h + 2 * q, w + 2 * q
        x = b.add("FMPadding", [x], (h, w, c), dtype, {"pad": q, "pad_value": dtype.min})
    oh, ow = (h - k) // s + 1, (w - k) // s + 1
    win = b.add(
        "ConvolutionInputGenerator",
        [x],
        (oh, ow, k * k * c),
        dtype,
        {"kernel": k, "stride": s, "IFMDim": [h, w], "OFMDim": [oh, ow], "IFMChannels": c},
    )
    out = b.add(
        "Pool", [win], (oh, ow, c), dtype, {"Function": "MaxPool", "kernel": k, "channels": c}
    )
    return b.finish(out, {})


def taps_graph(oh: int, ow: int, c: int, k: int) -> Graph:
    """A lone Pool on a uint8 input already laid out as windows [OH, OW, k*k*C]."""
    b = GraphBuilder((oh, ow, k * k * c), IntType("uint", 8))
    out = b.add(
        "Pool",
        [b.input],
        (oh, ow, c),
        IntType("uint", 8),
        {"Function": "MaxPool", "kernel": k, "channels": c},
    )
    return b.finish(out, {})


def torch_pool(pixels: np.ndarray, k: int, s: int, q: int, signed: bool) -> np.ndarray:
    """The twin's op: nn.MaxPool2d (padding with -inf) on the codes."""
    import torch

    x = torch.from_numpy(pixels.astype(np.float32) - (128 if signed else 0)).permute(0, 3, 1, 2)
    return torch.nn.functional.max_pool2d(x, k, s, q).permute(0, 2, 3, 1).numpy().astype(np.int64)


CASES = [  # h, w, c, k, s, q, signed
    (7, 7, 3, 3, 2, 1, True),  # the ImageNet stem pool on an int8 stream
    (8, 6, 2, 3, 2, 1, False),  # ... on a uint8 stream (pad value 0)
    (9, 8, 1, 3, 1, 1, True),
    (6, 9, 4, 2, 2, 0, True),
    (8, 8, 2, 5, 3, 2, True),
    (5, 7, 3, 3, 3, 0, False),
]


def pixels_for(h, w, c, n=6, seed=0):
    rng = np.random.default_rng(seed)
    return np.concatenate(
        [
            rng.integers(0, 256, (n, h, w, c), dtype=np.uint8),
            np.zeros((1, h, w, c), np.uint8),  # every input at the type's minimum
            np.full((1, h, w, c), 255, np.uint8),
        ]
    )


@pytest.mark.parametrize("case", CASES, ids=[str(c) for c in CASES])
def test_every_executor_equals_reference_and_torch(case):
    h, w, c, k, s, q, signed = case
    graph = pool_graph(*case)
    x = pixels_for(h, w, c)
    want = execute(graph, x)
    assert np.array_equal(want, torch_pool(x, k, s, q, signed)), "padding with the minimum != -inf"
    assert np.array_equal(Plan(graph, chunk=3).run(x), want)
    assert np.array_equal(execute_slices(graph, x), want)
    assert np.array_equal(run_qonnx_render(graph, x[:3]), want[:3])


def test_fast_path_fuses_window_and_padding_into_one_max_pool():
    graph = pool_graph(7, 7, 3, 3, 2, 1, True)
    steps = Plan(graph).describe()
    assert [(r["op"], r["kernel"]) for r in steps][-1] == ("Pool", "maxpool-pad")
    assert steps[-1]["interval"] == [-128, 127]


def test_qonnx_renders_the_padded_pool_as_max_pool_nhwc():
    ops = [n.op_type for n in to_qonnx(pool_graph(7, 7, 3, 3, 2, 1, True)).graph.node]
    assert ops == ["MultiThreshold", "MaxPoolNHWC"]  # -inf padding: an independent check


@pytest.mark.parametrize("oh, ow, c, k", [(3, 4, 2, 3), (2, 2, 5, 2), (1, 3, 1, 1)])
def test_lone_pool_on_windows(oh, ow, c, k):
    graph = taps_graph(oh, ow, c, k)
    x = np.random.default_rng(1).integers(0, 256, (5, oh, ow, k * k * c), dtype=np.uint8)
    want = x.reshape(5, oh, ow, k * k, c).max(axis=3).astype(np.int64)
    assert np.array_equal(execute(graph, x), want)
    assert np.array_equal(Plan(graph).run(x), want)
    assert np.array_equal(execute_slices(graph, x), want)
    assert np.array_equal(run_qonnx_render(graph, x[:2]), want[:2])
    assert [n.op_type for n in to_qonnx(graph).graph.node] == ["Reshape", "ReduceMax"]


def test_checks_prove_a_max_never_widens():
    graph = pool_graph(7, 7, 3, 3, 2, 1, True)
    proven = check_graph(graph)
    assert (proven[graph.output].lo, proven[graph.output].hi) == (-128, 127)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"Function": "AvgPool"}, "field Function 'AvgPool' is not supported"),
        ({"channels": 2}, "does not hold kernel 3 x 3 windows of 2 channels"),
        ({"kernel": 0}, "field kernel must be an integer >= 1"),
    ],
)
def test_checks_refuse_bad_pool_fields(change, message):
    graph = pool_graph(7, 7, 3, 3, 2, 1, True)
    graph.nodes[-1].attrs.update(change)
    with pytest.raises(GraphError, match=message):
        check_graph(graph)


def test_saved_graph_round_trips(tmp_path):
    graph = pool_graph(7, 7, 3, 3, 2, 1, True)
    loaded = Graph.load(graph.save(tmp_path / "g"))
    x = pixels_for(7, 7, 3)
    assert np.array_equal(execute(loaded, x), execute(graph, x))


def test_finn_view_estimates_and_folding():
    graph = pool_graph(112, 112, 64, 3, 2, 1, True)
    nodes = finn_nodes(graph)
    window, pool = nodes[-2], nodes[-1]
    assert window["depthwise"] == 1  # FINN's Pool_hls reads a depthwise window
    assert pool["op_type"] == "Pool_hls"
    assert (pool["Channels"], pool["KernelSize"], pool["OutImgDims"]) == (64, [3, 3], [56, 56])
    assert pool["Function"] == "MaxPool" and pool["InputDataType"] == "INT8"
    assert node_cycles(pool) == 64 * 9 * 56 * 56  # FINN's get_exp_cycles, PE 1
    assert node_cycles({**pool, "PE": 16}) == 4 * 9 * 56 * 56
    assert node_resources(pool, "xc7z020clg400-1")["LUT"] > 0
    folded = set_folding(nodes, 200_000, two_pass_relaxation=False)  # FMPadding_rtl: unfolded
    f_pool, f_win = folded[-1], folded[-2]
    assert node_cycles(f_pool) < 200_000 and f_win["SIMD"] == f_pool["PE"]  # FINN ties them
    from hwbed.fpga.finn.boards import get_board

    fit = fold_to_fit(nodes, get_board("zcu104"))
    assert max(node_cycles(n) for n in fit) < node_cycles(window)  # the window folds too


def test_slice_mapping_counts_pool_compares():
    graph = pool_graph(7, 7, 3, 3, 2, 1, True)
    entry = dsp_report(graph)[graph.nodes[-1].name]
    assert entry["kind"] == "lut_compare"
    assert entry["lut"]["compare"] == 4 * 4 * 3 * 8
