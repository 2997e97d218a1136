"""Bit-for-bit cross-check of the slice model against yosys' DSP48E1 model under iverilog.

One iverilog compile and one vvp run per configuration, HWBED_RTL_VECTORS (default 10,000)
vectors each.
"""

import dataclasses
import os

import numpy as np
import pytest

from hwbed.sim import dsp48, rtl_check
from hwbed.sim.dsp48 import P_MASK, AluMode, LogicOp, Simd, to_signed

N_VECTORS = int(os.environ.get("HWBED_RTL_VECTORS", "10000"))
_REASON = rtl_check.missing_tools()
pytestmark = [pytest.mark.rtl, pytest.mark.skipif(_REASON is not None, reason=str(_REASON))]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Vectors, RTL output and model output per case, simulated once per module."""
    cache = {}

    def get(name):
        if name not in cache:
            v = rtl_check.CASES[name](rtl_check.case_rng(name), N_VECTORS)
            rtl = rtl_check.run_rtl(v, tmp_path_factory.mktemp(name))
            cache[name] = (v, rtl, rtl_check.model(v))
        return cache[name]

    return get


@pytest.mark.parametrize("name", list(rtl_check.CASES))
def test_model_matches_rtl(runs, name):
    v, rtl, ref = runs(name)
    rep = rtl_check.compare(v, rtl, ref)
    print(rep)
    assert v.n >= N_VECTORS
    assert rep.ok, "\n".join([str(rep), *rep.examples])
    assert (rep.p_mismatches, rep.carry_mismatches, rep.pattern_mismatches) == (0, 0, 0)


def test_mac_case_wraps_p(runs):
    """The MAC stimulus really overflows 48 bits (P +/- A*B steps whose exact sum wraps)."""
    v, _, ref = runs("mac")
    s = {k: v.flat(k) for k in ("opmode", "alumode", "inmode", "carryinsel", "a", "b", "carryin")}
    p = to_signed(ref["p"], 48)
    length = rtl_check.CHAIN_LENGTH
    first = np.arange(p.size) % length == 0
    prev = np.roll(p, 1)
    m = to_signed(s["a"], 25) * to_signed(s["b"], 18) + s["carryin"]
    sel = (s["opmode"] == 0x25) & (s["inmode"] == 0) & (s["carryinsel"] == 0) & ~first
    exact = np.where(s["alumode"] == AluMode.SUB, prev - m, prev + m)
    sel &= (s["alumode"] == AluMode.ADD) | (s["alumode"] == AluMode.SUB)
    assert np.array_equal(exact[sel] & P_MASK, ref["p"][sel])
    wrapped = sel & ((exact < -(1 << 47)) | (exact >= 1 << 47))
    assert wrapped.sum() >= N_VECTORS // 400


def test_preadd_case_wraps_preadder(runs):
    v, _, _ = runs("preadd")
    a, d, inm = (v.flat(k) for k in ("a", "d", "inmode"))
    a_op = np.where(inm & 2, 0, to_signed(a, 25))
    d_op = np.where(inm & 4, to_signed(d, 25), 0)
    ad = np.where(inm & 8, d_op - a_op, d_op + a_op)
    assert ((ad < -(1 << 24)) | (ad >= 1 << 24)).sum() >= min(100, N_VECTORS // 100)


def test_stimulus_covers_every_logic_function_and_pattern_hits(runs):
    v, _, ref = runs("logic")
    alu = v.flat("alumode")
    y_ones = (v.flat("opmode") >> 2 & 3) == 2
    seen = {dsp48.LOGIC_TABLE[(int(a), bool(y))] for a, y in zip(alu, y_ones, strict=True)}
    assert seen == set(LogicOp)
    assert ref["patterndetect"].sum() >= N_VECTORS // 50


@pytest.mark.parametrize(
    ("name", "wrong"),
    [
        ("four12", {"simd": Simd.ONE48}),
        ("two24", {"simd": Simd.FOUR12}),
    ],
)
def test_comparison_detects_a_wrong_model(runs, name, wrong):
    """Teeth: a model configured wrongly must disagree with the RTL."""
    v, rtl, _ = runs(name)
    bad = dataclasses.replace(v, config=dataclasses.replace(v.config, **wrong))
    rep = rtl_check.compare(v, rtl, rtl_check.model(bad))
    assert rep.p_mismatches > v.n // 10 and rep.carry_mismatches > v.n // 10


def test_comparison_detects_swapped_xnor(runs, monkeypatch):
    v, rtl, _ = runs("logic")
    for key, op in dsp48.LOGIC_TABLE.items():
        swap = {LogicOp.XOR: LogicOp.XNOR, LogicOp.XNOR: LogicOp.XOR}.get(op, op)
        monkeypatch.setitem(dsp48.LOGIC_TABLE, key, swap)
    rep = rtl_check.compare(v, rtl, rtl_check.model(v))
    assert rep.p_mismatches > v.n // 10
