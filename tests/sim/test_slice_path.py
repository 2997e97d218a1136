"""Slice-level executor == reference executor, bit for bit; op tallies == the mapping's counts."""

from __future__ import annotations

from dataclasses import asdict
from functools import cache

import numpy as np
import pytest
import torch

from hwbed.ir.builder import GraphBuilder
from hwbed.ir.graph import Graph
from hwbed.ir.reference import execute
from hwbed.ir.types import TERNARY, IntType
from hwbed.sim.dsp48 import Family, OpCount
from hwbed.sim.mapping import MappingError, dsp_report
from hwbed.sim.slice_path import binary_dots, execute_slices, mac_dots

torch.set_num_threads(1)

FAMILIES = [Family.E1, Family.E2]
BREVITAS_NOISE = pytest.mark.filterwarnings("ignore:Keyword arguments are being passed")


def mvau_graph(in_shape, in_type: IntType, weights: np.ndarray) -> Graph:
    b = GraphBuilder(in_shape, in_type)
    w = weights.astype(np.int64)
    lo = int(np.where(w > 0, w * in_type.min, w * in_type.max).sum(axis=1).min())
    hi = int(np.where(w > 0, w * in_type.max, w * in_type.min).sum(axis=1).max())
    out = b.add(
        "MVAU",
        [b.input],
        (*in_shape[:-1], w.shape[0]),
        IntType.fitting(lo, hi),
        {"MW": w.shape[1], "MH": w.shape[0], "binary": False, "acc_min": lo, "acc_max": hi},
        {"weights": w},
    )
    return b.finish(out, {})


def assert_exact(graph: Graph, x: np.ndarray, family: Family, **kw) -> dict[str, OpCount]:
    """Slice path == reference on every bit; return the executed slice-op tallies."""
    counts: dict[str, OpCount] = {}
    got = execute_slices(graph, x, family, counts=counts, **kw)
    want = execute(graph, x)
    assert got.dtype == want.dtype and np.array_equal(got, want)
    report = dsp_report(graph, family, **kw)
    for name, count in counts.items():
        per_image = {k: v for k, v in report[name]["ops"].items() if k != "total"}
        assert asdict(count) == {k: v * len(x) for k, v in per_image.items()}, name
    return counts


@pytest.mark.parametrize("family", FAMILIES)
def test_binary_dots_with_ternary_taps(family):
    rng = np.random.default_rng(0)
    x = rng.integers(-1, 2, (7, 100))
    x[0] = 0
    x[1] = 1
    w = rng.choice([-1, 1], (5, 100))
    count = OpCount()
    assert np.array_equal(binary_dots(x, w, family, count), x @ w.T)
    assert count.logic == 7 * 5 * 3 and count.mac == 0


@pytest.mark.parametrize("swap", [False, True])
def test_mac_dots_extremes(swap):
    x = np.array([[-(2**17)] * 6, [2**17 - 1] * 6, [0, 1, -1, 5, -7, 3]])
    w = np.array([[2**24 - 1] * 6, [-(2**24)] * 6])
    if swap:
        x, w = w, x
    count = OpCount()
    got = mac_dots(x, w, Family.E1, count, swap=swap)
    assert np.array_equal(got, x @ w.T) and count.mac == x.size * w.shape[0]


@pytest.mark.parametrize("family", FAMILIES)
def test_packed_worst_case_chains_drain_exactly(family):
    """+/-127 (and -128 on E2) weights against 255 pixels: chains at max_depth, borrows."""
    w = np.array([[127] * 9, [-127] * 9, [127, -127] * 4 + [127], [-127] * 9, [5] * 9])
    if family is Family.E2:
        w[3] = -128
    g = mvau_graph((3, 3, 9), IntType("uint", 8), w)
    x = np.random.default_rng(1).integers(0, 256, (4, 3, 3, 9))
    x[0], x[1] = 0, 255
    x[2, :, :, ::2] = 255
    counts = assert_exact(g, x, family)
    assert counts["MVAU_0"].packed_int8 == 4 * 9 * 3 * 9


def test_mac_at_the_48_bit_limit_is_exact():
    w = np.full((2, 64), 2**24 - 1)
    w[1] = -(2**24) + 1
    g = mvau_graph((64,), IntType("int", 18), w)
    x = np.stack([np.full(64, -(2**17)), np.full(64, 2**17 - 1), np.arange(64) - 32])
    assert dsp_report(g, Family.E1)["MVAU_0"]["headroom_bits"] == 0
    assert_exact(g, x, Family.E1)


@pytest.mark.parametrize("family", FAMILIES)
def test_addstreams_lanes_at_their_extremes(family):
    t = IntType("int", 8)
    b = GraphBuilder((3, 5), t)
    s = b.add("AddStreams", [b.input, b.input], (3, 5), IntType("int", 9))
    g = b.finish(s, {})
    x = np.array([[[-128] * 5, [127] * 5, [-1, 0, 1, -128, 127]]])
    assert_exact(g, x, family)


@pytest.mark.parametrize("family", FAMILIES)
def test_abc_with_negative_coefficients(family):
    coeffs = np.array([[3, -1, 2], [-5, 7, 1]])
    bases = np.where(np.random.default_rng(3).random((2, 3, 2, 3, 3)) < 0.5, -1, 1)
    w = np.einsum("mn,mocij->oijnc", coeffs, bases).reshape(3, -1)
    g = mvau_graph((2, 2, 54), TERNARY, w)
    g.nodes[0].attrs.update(abc=[2, 3], frac=0)
    g.nodes[0].params.update(bases=bases.astype(np.int8), coeffs=coeffs)
    x = np.random.default_rng(4).integers(-1, 2, (3, 2, 2, 54))
    x[0], x[1] = 1, -1
    counts = assert_exact(g, x, family)
    assert counts["MVAU_0"].logic == 3 * 4 * 6 * 3 * 1 and counts["MVAU_0"].mac == 3 * 4 * 6 * 3


def test_value_outside_declared_type_is_refused():
    b = GraphBuilder((4,), TERNARY)
    out = b.add(
        "MVAU",
        [b.input],
        (2,),
        IntType("int", 4),
        {"MW": 4, "MH": 2, "binary": True},
        {"weights": np.ones((2, 4), np.int64)},
    )
    g = b.finish(out, {})
    with pytest.raises(MappingError, match="MVAU_0: input pixels holds values outside"):
        execute_slices(g, np.array([[2, 0, 1, -1]]))


# -- lowered networks ----------------------------------------------------------------------
def shape(spec: str) -> tuple[int, int, int]:
    return (3, 32, 32) if spec.startswith("cnv") else (1, 8, 8)


@pytest.fixture(scope="module")
def lowered(random_graph):
    """``lowered(spec)``: a random-init network, calibrated by a few train-mode forwards,
    lowered (once per spec)."""
    return cache(lambda spec: random_graph(spec, shape(spec)))


def pixels(spec: str, n: int = 3) -> np.ndarray:
    """n random images, then an all-0 and an all-255 one (NHWC uint8)."""
    c, h, w = shape(spec)
    x = np.random.default_rng(2).integers(0, 256, (n + 2, h, w, c), dtype=np.uint8)
    x[-2], x[-1] = 0, 255
    return x


@BREVITAS_NOISE
@pytest.mark.parametrize(
    ("spec", "family"),
    [
        ("resnet20-xnor", Family.E1),
        ("resnet20-xnor", Family.E2),
        ("tfc-w1a1", Family.E1),
        ("tfc-w1a1", Family.E2),
        ("resnet20-w4a4", Family.E1),
        ("resnet20-abc3x3", Family.E1),
        ("resnet20-abc3x3", Family.E2),
        ("cnv-w1a1", Family.E1),
        # 110 s on 2 cores: the fast path covers cnv-w2a2 by default, this runs with -m slow
        pytest.param("cnv-w2a2", Family.E1, marks=pytest.mark.slow),
    ],
)
def test_network_bit_exact(lowered, spec, family):
    counts = assert_exact(lowered(spec), pixels(spec), family)
    assert sum(c.total for c in counts.values()) > 0
    if "abc" in spec:
        assert sum(c.logic for c in counts.values()) and sum(c.mac for c in counts.values())


@pytest.mark.slow
@BREVITAS_NOISE
@pytest.mark.parametrize("family", FAMILIES)
def test_w4a4_more_images_slow(lowered, family):
    assert_exact(lowered("resnet20-w4a4"), pixels("resnet20-w4a4", 8), family)


@BREVITAS_NOISE
def test_unpacked_network_bit_exact(lowered):
    assert_exact(lowered("resnet20-xnor"), pixels("resnet20-xnor", 1), Family.E1, pack_int8=False)
