"""Slice mapping: counts, cycles and headroom of hand-computed layers; refusals."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hwbed.ir.builder import GraphBuilder
from hwbed.ir.graph import Graph
from hwbed.ir.types import BIPOLAR, TERNARY, GraphError, IntType
from hwbed.sim.dsp48 import Family, Simd
from hwbed.sim.mapping import (
    MappingError,
    add_simd,
    dsp_report,
    format_report,
    plan_mvau,
    report_totals,
)

INT8 = IntType("int", 8)
UINT8 = IntType("uint", 8)


def mvau_graph(
    in_shape: tuple[int, ...],
    in_type: IntType,
    weights: np.ndarray,
    binary: bool = False,
    attrs: dict | None = None,
) -> Graph:
    """input -> one MVAU without activation (accumulator range from weights and type)."""
    b = GraphBuilder(in_shape, in_type)
    w = weights.astype(np.int64)
    lo = int(np.where(w > 0, w * in_type.min, w * in_type.max).sum(axis=1).min())
    hi = int(np.where(w > 0, w * in_type.max, w * in_type.min).sum(axis=1).max())
    out = b.add(
        "MVAU",
        [b.input],
        (*in_shape[:-1], w.shape[0]),
        IntType.fitting(lo, hi),
        {
            "MW": w.shape[1],
            "MH": w.shape[0],
            "binary": binary,
            "acc_min": lo,
            "acc_max": hi,
            **(attrs or {}),
        },
        {"weights": w},
    )
    return b.finish(out, {})


def test_binary_mvau_96x4_is_two_xnor_ops_per_output():
    rng = np.random.default_rng(0)
    w = rng.choice([-1, 1], size=(4, 96))
    g = mvau_graph((2, 3, 96), BIPOLAR, w, binary=True)
    e = dsp_report(g, Family.E1)["MVAU_0"]
    vectors = 6
    assert e["kind"] == "xnor"
    assert e["ops"] == {"mac": 0, "packed_int8": 0, "logic": 2 * 4 * vectors, "add": 0, "total": 48}
    assert e["cycles"] == 96 * 4 * vectors  # FINN: (MW/SIMD) * (MH/PE) * vectors
    assert e["slices"] == 1 and e["dsp_cycles"] == 48
    assert e["lut"]["popcount_bits"] == 96 * 4 * vectors
    assert e["p_bits_used"] is None and e["headroom_bits"] is None
    assert e["acc_bits"] == 8  # +/-96

    folded = dsp_report(g, Family.E1, {"MVAU_0": {"PE": 2, "SIMD": 48}})["MVAU_0"]
    assert folded["cycles"] == 2 * 2 * vectors
    assert folded["slices"] == 2 and folded["dsp_cycles"] == 24


def test_mac_counts_and_headroom():
    w = np.arange(-15, 15).reshape(3, 10)  # INT5 weights, INT10 activations: no packing
    g = mvau_graph((5, 10), IntType("int", 10), w)
    e = dsp_report(g, Family.E1)["MVAU_0"]
    assert e["kind"] == "mac"
    assert e["ops"]["mac"] == 3 * 10 * 5
    bound = int(np.abs(w).sum(axis=1).max()) * 512
    assert e["acc_bits"] == IntType.fitting(-bound, bound).bits
    assert e["p_bits_used"] == e["acc_bits"] and e["headroom_bits"] == 48 - e["acc_bits"]
    assert "wider than 8 bits" in e["note"]
    assert dsp_report(g, Family.E1, {"MVAU_0": {"PE": 3, "SIMD": 5}})["MVAU_0"]["slices"] == 15


@pytest.mark.parametrize(("family", "depth"), [(Family.E1, 2), (Family.E2, 4)])
def test_int8_packing_depth_split(family, depth):
    """uint8 x [-127, 127]: |b*c| <= 32385, so 2 (S=17) or 4 (S=18) products per chain."""
    w = np.full((5, 9), 127)
    w[:, ::2] = -127
    g = mvau_graph((4, 4, 9), UINT8, w)
    plan = plan_mvau(g, g.nodes[0], family)
    assert plan.kind == "packed_int8" and plan.packing.max_depth == depth
    e = dsp_report(g, family)["MVAU_0"]
    assert e["packing"] == {
        "shift": plan.packing.shift,
        "max_depth": depth,
        "chains": math.ceil(9 / depth),
    }
    assert e["ops"]["packed_int8"] == 3 * 9 * 16  # ceil(MH/2) pairs x MW x vectors
    assert e["ops"]["mac"] == 0
    assert e["lut"]["add"] == 2 * 3 * math.ceil(9 / depth) * 16
    assert 0 < e["headroom_bits"] < 48


def test_e1_packing_refused_for_minus_128_falls_back_to_mac():
    w = np.full((2, 9), -128)
    g = mvau_graph((9,), INT8, w)
    assert plan_mvau(g, g.nodes[0], Family.E2).kind == "packed_int8"
    plan = plan_mvau(g, g.nodes[0], Family.E1)
    assert plan.kind == "mac" and "pre-adder overflow" in plan.note
    assert plan_mvau(g, g.nodes[0], Family.E2, pack_int8=False).kind == "mac"


def test_refuses_bound_beyond_48_bits():
    w = np.full((2, 128), 2**24 - 1)  # fits A (25 bits); INT18 activations fit B
    g = mvau_graph((128,), IntType("int", 18), w)
    with pytest.raises(MappingError, match=r"MVAU_0: the mac chain needs 49 bits of P.*48-bit P"):
        dsp_report(g, Family.E1)
    small = mvau_graph((64,), IntType("int", 18), w[:, :64])
    assert dsp_report(small, Family.E1)["MVAU_0"]["headroom_bits"] == 0


def test_refuses_operands_wider_than_ports():
    g = mvau_graph((4,), IntType("int", 20), np.full((2, 4), 2**20))
    with pytest.raises(MappingError, match="MVAU_0.*do not fit the 25x18 multiplier"):
        dsp_report(g, Family.E1)
    swapped = mvau_graph((4,), IntType("int", 20), np.full((2, 4), 100))
    assert plan_mvau(swapped, swapped.nodes[0], Family.E1, pack_int8=False).swap


def test_binary_flag_with_multibit_weights_is_refused():
    g = mvau_graph((8,), BIPOLAR, np.full((2, 8), 2), binary=True)
    with pytest.raises(MappingError, match="MVAU_0: marked binary"):
        dsp_report(g, Family.E1)


def test_folding_must_divide():
    g = mvau_graph((96,), BIPOLAR, np.ones((4, 96), dtype=np.int64), binary=True)
    with pytest.raises(MappingError, match="MVAU_0: PE=3 does not divide 4"):
        dsp_report(g, Family.E1, {"MVAU_0": {"PE": 3}})


def add_graph(t: IntType, channels: int) -> Graph:
    b = GraphBuilder((2, 2, channels), t)
    thr = np.arange(3, dtype=np.int64)[None, :].repeat(channels, 0)
    x = b.add(
        "Thresholding",
        [b.input],
        (2, 2, channels),
        t,
        {"out_bias": 0, "out_scale": 1},
        {"thresholds": thr},
    )
    s = b.add("AddStreams", [x, b.input], (2, 2, channels), IntType.fitting(2 * t.min, 2 * t.max))
    return b.finish(s, {})


@pytest.mark.parametrize(
    ("t", "simd", "headroom"),
    [
        (INT8, Simd.FOUR12, 3),
        (IntType("int", 12), Simd.TWO24, 11),
        (IntType("int", 24), Simd.ONE48, 23),
    ],
)
def test_addstreams_simd_lanes(t, simd, headroom):
    g = add_graph(t, 10)
    assert add_simd(g, g.nodes[1]) is simd
    r = dsp_report(g, Family.E2, {"AddStreams_1": {"PE": 5}})
    e = r["AddStreams_1"]
    assert e["ops"]["add"] == math.ceil(10 / simd.lanes) * 4
    assert e["headroom_bits"] == headroom
    assert e["cycles"] == 10 // 5 * 4 and e["slices"] == math.ceil(5 / simd.lanes)
    th = r["Thresholding_0"]
    assert th["kind"] == "lut_compare" and th["lut"]["compare"] == 4 * 10 * 3
    assert th["ops"]["total"] == 0 and th["cycles"] == 40


def test_totals_sum_the_nodes():
    g = add_graph(INT8, 8)
    r = dsp_report(g, Family.E1)
    t = report_totals(r)
    assert t["ops"]["add"] == 8 and t["ops"]["total"] == 8
    assert t["lut"]["compare"] == 4 * 8 * 3
    assert t["bottleneck"] in r and t["min_headroom_node"] == "AddStreams_1"
    assert "AddStreams_1" in format_report(r) and "Thresholding_0" not in format_report(r)


def abc_graph(coeffs: np.ndarray, weights_delta: int = 0) -> Graph:
    """A 1x1 ABC conv: M weight bases [M, 2, 4, 1, 1], N activation bases of 4 channels."""
    m, n = coeffs.shape
    bases = np.where(np.random.default_rng(3).random((m, 2, 4, 1, 1)) < 0.5, -1, 1)
    w = np.einsum("mn,mocij->oijnc", coeffs, bases).reshape(2, -1) + weights_delta
    g = mvau_graph((3, 3, 4 * n), TERNARY, w, attrs={"abc": [m, n], "frac": 0})
    g.nodes[0].params.update(bases=bases.astype(np.int8), coeffs=coeffs.astype(np.int64))
    return g


def test_abc_counts_and_chain_bound():
    g = abc_graph(np.array([[3, 1], [5, -2]]))
    e = dsp_report(g, Family.E1)["MVAU_0"]
    vectors, dots = 9, 2 * 2 * 2  # M*N bases pairs x MH outputs
    assert e["kind"] == "abc"
    assert e["ops"]["logic"] == dots * 1 * vectors and e["ops"]["mac"] == dots * vectors
    assert e["lut"]["popcount_bits"] == dots * 4 * vectors
    assert e["p_bits_used"] == IntType.fitting(-44, 44).bits  # sum|coeffs| * 4 taps
    assert e["p_bits_used"] >= e["acc_bits"]


def test_abc_decomposition_must_reproduce_weights():
    with pytest.raises(MappingError, match="MVAU_0: sum_m coeffs"):
        dsp_report(abc_graph(np.array([[3], [5]]), weights_delta=1), Family.E1)


def test_an_op_without_a_dsp_entry_is_an_error_not_fabric():
    g = mvau_graph((2, 2, 4), UINT8, np.ones((3, 4)))
    g.nodes[0].op = "Foo"
    with pytest.raises(GraphError, match="node MVAU_0: the dsp backend has no entry for 'Foo'"):
        dsp_report(g, Family.E1)
