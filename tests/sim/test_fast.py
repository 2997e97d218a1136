"""The fast path equals the reference executor bit for bit; the simulator's Executable."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hwbed.ir.executable import Executable, ReferenceExecutable
from hwbed.ir.graph import Graph, Node, Tensor
from hwbed.ir.reference import execute, threshold
from hwbed.ir.types import FLOAT32, IntType
from hwbed.sim.executable import SimExecutable
from hwbed.sim.fast import Interval, Plan, _thresholding

FAST = [
    ("resnet20-xnor", (1, 8, 8)),
    ("resnet20-abc3x3", (1, 8, 8)),
    ("resnet20-w4a4", (1, 8, 8)),
    ("tfc-w1a1", (1, 8, 8)),
    ("cnv-w1a1", (3, 32, 32)),
    ("cnv-w2a2", (3, 32, 32)),
]


@pytest.fixture(scope="module")
def graphs():
    return {}


@pytest.fixture
def graph_of(graphs, random_graph):
    def get(spec, shape):
        if spec not in graphs:
            graphs[spec] = random_graph(spec, shape, end_stats=True)
        return graphs[spec]

    return get


@pytest.mark.parametrize("spec,shape", FAST)
def test_fast_equals_reference(graph_of, spec, shape):
    graph = graph_of(spec, shape)
    c, h, w = shape
    rng = np.random.default_rng(0)
    pixels = np.concatenate(
        [
            rng.integers(0, 256, (6, h, w, c), dtype=np.uint8),
            np.full((1, h, w, c), 255, np.uint8),  # worst case: all 255
            np.zeros((1, h, w, c), np.uint8),
        ]
    )
    plan = Plan(graph, chunk=3)  # several chunks
    assert np.array_equal(plan.run(pixels), execute(graph, pixels))


def test_im2col_fallback_is_exact(graph_of, monkeypatch):
    graph = graph_of("resnet20-xnor", (1, 8, 8))
    pixels = np.random.default_rng(1).integers(0, 256, (4, 8, 8, 1), dtype=np.uint8)
    plan = Plan(graph)  # the settings are read on every run, not at compile time
    monkeypatch.setattr("hwbed.sim.fast.conv_is_exact", lambda: False)
    assert np.array_equal(plan.run(pixels), execute(graph, pixels))


@pytest.mark.parametrize("spec", ["tfc-w1a1", "resnet20-xnor"])
def test_reduced_precision_matmul_is_promoted(graph_of, spec):
    graph = graph_of(spec, (1, 8, 8))
    pixels = np.random.default_rng(2).integers(0, 256, (4, 8, 8, 1), dtype=np.uint8)
    plan = Plan(graph)  # compiled in full precision; the run reads the setting
    old = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("medium")  # bf16 matmuls would not be exact
    try:
        assert np.array_equal(plan.run(pixels), execute(graph, pixels))
    finally:
        torch.set_float32_matmul_precision(old)


def _dense_graph(weight: int) -> Graph:
    """pixels [1, 1, 8] -> MVAU with all weights ``weight`` -> float logits."""
    tensors = {
        "x": Tensor("x", (1, 1, 8), IntType("uint", 8)),
        "acc": Tensor("acc", (1, 1, 2), IntType("int", 64)),
        "y": Tensor("y", (1, 1, 2), FLOAT32),
    }
    w = np.full((2, 8), weight, np.int64)
    w[1] = -w[1] + 1
    nodes = [
        Node("mvau", "MVAU", ["x"], ["acc"], {"MH": 2, "MW": 8}, {"weights": w}),
        Node(
            "affine",
            "Affine",
            ["acc"],
            ["y"],
            {"ops": [["mul", "s"]]},
            {"s": np.array([0.5], np.float32)},
        ),
    ]
    return Graph(nodes, tensors, "x", "y")


@pytest.mark.parametrize(
    "weight,kernel", [(3, "gemm-f32"), (2**20, "gemm-f64"), (2**46, "gemm-i64")]
)
def test_bound_picks_the_exact_format(weight, kernel):
    graph = _dense_graph(weight)
    plan = Plan(graph)
    assert plan.describe()[0]["kernel"] == kernel
    pixels = np.array([[[[255] * 8]], [[[1, 2, 3, 4, 5, 6, 7, 255]]]], np.uint8)
    assert np.array_equal(plan.run(pixels), execute(graph, pixels))


def test_unprovable_bound_is_refused():
    with pytest.raises(ValueError, match="exceeds int64"):
        Plan(_dense_graph(2**60))


@pytest.mark.parametrize("lut_max,wide", [(16, False), (2**20, False), (2**20, True)])
def test_threshold_kernels_match_reference(monkeypatch, lut_max, wide):
    """Every threshold kernel, on random ranges with thresholds at and beyond both ends.

    ``wide`` claims partial sums up to 2^24 (a wide accumulator): no room for a float32
    shift, so the integer fallbacks run."""
    monkeypatch.setattr("hwbed.sim.fast.LUT_MAX", lut_max)
    rng = np.random.default_rng(3)
    kernels = set()
    for trial in range(100):
        c, steps = int(rng.integers(1, 6)), int(rng.integers(1, 30))
        if trial % 4 == 3:  # the residual requant: int9 sums, 255 thresholds
            lo, hi, steps = -256, 254, 255
        else:
            lo = int(rng.integers(-3000, 50))
            hi = lo + int(rng.integers(0, 9000))
        thr = np.sort(rng.integers(lo - 500, hi + 500, (c, steps)), axis=1)
        if trial % 5 == 4:  # a uniform requantizer: thresholds ceil((j - beta) / alpha)
            alpha, beta = rng.uniform(0.05, 4), rng.uniform(-steps, steps)
            thr = np.ceil(
                (np.arange(1, steps + 1) - beta) / alpha + rng.integers(lo, hi + 1, (c, 1))
            ).astype(np.int64)
            if trial % 10 == 9:  # one threshold off by one: an affine form may not exist
                thr[0, steps // 2] += 1
        elif trial % 3 == 0:  # repeated thresholds (saturating levels)
            thr = np.sort(np.repeat(thr[:, : max(1, steps // 3)], 3, axis=1)[:, :steps], axis=1)
        edges = np.array([lo - 1, lo, lo + 1, hi - 1, hi, hi + 1, hi + 2])
        k = min(thr.shape[1], 7)
        thr[:, :k] = rng.choice(edges, (c, k))
        thr = np.sort(thr, axis=1)
        b, s = int(rng.integers(-4, 4)), int(rng.choice([1, 2, -1, -2]))
        node = Node(
            "t", "Thresholding", ["x"], ["y"], {"out_bias": b, "out_scale": s}, {"thresholds": thr}
        )
        bound = 2**24 if wide else max(abs(lo), abs(hi))
        got = _thresholding(node, thr, Interval(lo, hi), c, bound)
        kernels.add(got.kernel.rstrip("0123456789"))
        x = np.concatenate(
            [
                rng.integers(lo, hi + 1, (300, c)),
                np.full((1, c), lo),
                np.full((1, c), hi),
                np.arange(lo, hi + 1)[:, None].repeat(c, 1),
            ]
        )
        ref = threshold(x, thr, b, s)
        for fmt in (torch.float32, torch.float64, torch.int64):
            v = torch.from_numpy(x).to(fmt)
            assert np.array_equal(got.raw(v).numpy(), ref), got.kernel
            assert np.array_equal(v.numpy(), x)  # the input is not overwritten
        assert got.out.lo <= ref.min() and ref.max() <= got.out.hi
    if wide:  # no float32 shift: affine (needs none), else buckets (lo = 0 only) or integers
        assert kernels - {"thr-bucket", "thr-affine"} == {"thr-cmp", "thr-search"}
    elif lut_max == 16:
        assert kernels == {"thr-sign", "thr-bucket", "thr-search"}
    else:
        assert kernels == {"thr-sign", "thr-lut", "thr-affine"}


def _add_graph(weight: int) -> Graph:
    """pixels [1, 1, 8] -> two MVAUs -> AddStreams -> Thresholding (fused into one step)."""
    tensors = {
        "x": Tensor("x", (1, 1, 8), IntType("uint", 8)),
        "a": Tensor("a", (1, 1, 3), IntType("int", 64)),
        "b": Tensor("b", (1, 1, 3), IntType("int", 64)),
        "s": Tensor("s", (1, 1, 3), IntType("int", 64)),
        "y": Tensor("y", (1, 1, 3), IntType("int", 8)),
    }
    rng = np.random.default_rng(7)
    wa, wb = (rng.integers(-weight, weight + 1, (3, 8)) for _ in range(2))
    bound = 2 * 8 * 255 * weight
    thr = np.sort(rng.integers(-bound, bound, (3, 20)), axis=1)
    nodes = [
        Node("ma", "MVAU", ["x"], ["a"], {"MH": 3, "MW": 8}, {"weights": wa}),
        Node("mb", "MVAU", ["x"], ["b"], {"MH": 3, "MW": 8}, {"weights": wb}),
        Node("add", "AddStreams", ["a", "b"], ["s"], {}, {}),
        Node(
            "thr",
            "Thresholding",
            ["s"],
            ["y"],
            {"out_bias": -10, "out_scale": 1},
            {"thresholds": thr},
        ),
    ]
    return Graph(nodes, tensors, "x", "y")


@pytest.mark.parametrize(
    "weight,kernel", [(1, "add+thr-lut"), (2**8, "add+thr-bucket"), (2**20, "add+thr-search")]
)
def test_add_threshold_fusion(weight, kernel):
    graph = _add_graph(weight)
    plan = Plan(graph)
    assert [r["op"] for r in plan.describe()] == ["MVAU", "MVAU", "Thresholding"]
    assert plan.describe()[-1]["kernel"].rstrip("0123456789") == kernel
    rng = np.random.default_rng(8)
    pixels = np.concatenate(
        [
            rng.integers(0, 256, (50, 1, 1, 8), dtype=np.uint8),
            np.full((1, 1, 1, 8), 255, np.uint8),
            np.zeros((1, 1, 1, 8), np.uint8),
        ]
    )
    assert np.array_equal(plan.run(pixels), execute(graph, pixels))


# -- Executable ------------------------------------------------------------------------------
def test_executable_contract(graph_of):
    graph = graph_of("resnet20-xnor", (1, 8, 8))
    sim, ref = SimExecutable(graph), ReferenceExecutable(graph)
    assert isinstance(sim, Executable) and sim.bit_exact and ref.bit_exact
    assert sim.input_shape == (1, 8, 8) and sim.num_classes == 10
    pixels = np.random.default_rng(4).integers(0, 256, (5, 1, 8, 8), dtype=np.uint8)
    scores = sim(pixels)
    assert scores.dtype == np.float32 and scores.shape == (5, 10)
    assert np.array_equal(scores, ref(pixels))
    assert np.array_equal(sim(pixels.astype(np.float32) / 255.0), scores)  # same 8-bit grid
    assert np.array_equal(sim(torch.from_numpy(pixels[0])), scores[:1])  # one CHW image
    assert sim.queries == 11 and ref.queries == 5
    bad = pixels.astype(np.float32) / 255.0
    bad[3, 0, 2, 2] = np.nan
    with pytest.raises(ValueError, match="image 3"):
        sim(bad)
    with pytest.raises(ValueError, match="expected images"):
        sim(np.zeros((2, 3, 8, 8), np.uint8))
    assert sim.queries == 11
    with pytest.raises(ValueError, match="unknown simulator path"):
        SimExecutable(graph, path="rtl")


def test_executable_loads_saved_graph(graph_of, tmp_path):
    graph = graph_of("tfc-w1a1", (1, 8, 8))
    graph.save(tmp_path / "graph")
    sim = SimExecutable.load(tmp_path)
    pixels = np.random.default_rng(5).integers(0, 256, (3, 1, 8, 8), dtype=np.uint8)
    assert np.array_equal(sim(pixels), SimExecutable(graph)(pixels))


def test_input_outside_the_graph_range_is_refused():
    graph = _dense_graph(1)
    graph.tensors["x"] = Tensor("x", (1, 1, 8), IntType("uint", 4))
    with pytest.raises(ValueError, match="outside the graph input range"):
        Plan(graph).run(np.full((1, 1, 1, 8), 16, np.uint8))


def test_integer_output_keeps_int64():
    graph = _dense_graph(2**20)
    graph.output = "acc"
    pixels = np.full((2, 1, 1, 8), 255, np.uint8)
    got, ref = Plan(graph).run(pixels), execute(graph, pixels)
    assert got.dtype == ref.dtype == np.int64 and np.array_equal(got, ref)


@pytest.mark.parametrize("thr,kernel", [([[1, 2, 3]], "thr-affine"), ([[1, 2, 10]], "thr-lut")])
def test_affine_thresholds_only_when_verified(thr, kernel):
    """A non-uniform threshold table has no affine form; the exhaustive check refuses it."""
    thr = np.array(thr)
    node = Node(
        "t", "Thresholding", ["x"], ["y"], {"out_bias": -1, "out_scale": 1}, {"thresholds": thr}
    )
    got = _thresholding(node, thr, Interval(-5, 20), 1)
    x = np.arange(-5, 21)[:, None]
    assert got.kernel == kernel
    assert np.array_equal(got.raw(torch.from_numpy(x).float()).numpy(), threshold(x, thr, -1, 1))
