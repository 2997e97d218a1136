"""Slice model semantics (hand-computed cases, DRC, ranges) and WP486 INT8 packing."""

import numpy as np
import pytest

from hwbed.sim.dsp48 import (
    INMODE_D,
    INMODE_D_MINUS_A,
    INMODE_D_PLUS_A,
    INMODE_ZERO_A,
    LOGIC_TABLE,
    P_MASK,
    AluMode,
    Family,
    LogicOp,
    OpCount,
    Simd,
    SliceConfig,
    WSel,
    XSel,
    YSel,
    ZSel,
    accumulate,
    logic_mode,
    opmode,
    run_chain,
    simd_lanes,
    step,
    to_signed,
)
from hwbed.sim.packing import Int8Packing

E1 = SliceConfig(Family.E1)
E2 = SliceConfig(Family.E2)
PRE1 = SliceConfig(Family.E1, use_preadder=True)
NOMULT = SliceConfig(Family.E1, use_mult=False)
MAC = opmode(XSel.M, YSel.M, ZSel.ZERO)  # 0x05
MAC_C = opmode(XSel.M, YSel.M, ZSel.C)  # 0x35
C_PLUS_AB = opmode(XSel.AB, YSel.ZERO, ZSel.C)  # 0x33


def test_opmode_encoding():
    assert MAC == 0x05 and MAC_C == 0x35 and C_PLUS_AB == 0x33
    assert opmode(XSel.M, YSel.M, ZSel.P) == 0x25
    assert opmode(XSel.AB, YSel.ONES, ZSel.C) == 0x3B
    assert opmode(XSel.ZERO, YSel.ZERO, ZSel.ZERO, WSel.C) == 0x180


# --- port ranges --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("port", "value"),
    [
        ("a", 1 << 30),
        ("a", -(1 << 29) - 1),
        ("b", 1 << 18),
        ("b", -(1 << 17) - 1),
        ("c", 1 << 48),
        ("d", 1 << 25),
        ("pcin", -(1 << 47) - 1),
        ("carryin", 2),
        ("carrycascin", -2),
        ("opmode", 128),
        ("alumode", 16),
        ("inmode", -1),
        ("carryinsel", 8),
        ("p", 1 << 48),
    ],
)
def test_out_of_range_port_raises_naming_it(port, value):
    with pytest.raises(ValueError, match=f"port {port.upper()} "):
        step(E1, **{"opmode": MAC, port: value})


def test_signed_and_unsigned_spellings_agree():
    signed = step(E1, opmode=MAC, a=-1, b=-(1 << 17))
    unsigned = step(E1, opmode=MAC, a=(1 << 30) - 1, b=1 << 17)
    assert signed.p == unsigned.p == 1 << 17
    assert step(E1, opmode=MAC_C, c=np.uint64(P_MASK)).p == -1


def test_port_widths_per_family():
    with pytest.raises(ValueError, match="port D"):
        step(PRE1, opmode=MAC, d=1 << 25)
    step(SliceConfig(Family.E2, use_preadder=True), opmode=MAC, d=1 << 26)
    step(E2, opmode=0x1FF & opmode(XSel.M, YSel.M, ZSel.C, WSel.C))
    with pytest.raises(ValueError, match="port OPMODE"):
        step(E1, opmode=opmode(XSel.M, YSel.M, ZSel.C, WSel.C))


def test_non_integer_port_raises():
    with pytest.raises(ValueError, match="port A must hold integers"):
        step(E1, opmode=MAC, a=1.5)


# --- multiplier, pre-adder, wrap -------------------------------------------------------------


def test_multiplier_hand_cases():
    r = step(
        E1,
        opmode=MAC_C,
        a=[3, -(1 << 24), (0b10101 << 25) | 5, 1 << 24],
        b=[-5, -(1 << 17), 7, 1],
        c=7,
    )
    # A[29:25] is ignored by the 25x18 multiplier; A[24] is its sign bit.
    assert r.p.tolist() == [-8, (1 << 41) + 7, 42, -(1 << 24) + 7]


def test_e2_multiplier_uses_a26():
    assert step(E2, opmode=MAC, a=1 << 26, b=-(1 << 17)).p == 1 << 43
    assert step(E1, opmode=MAC, a=1 << 26, b=-(1 << 17)).p == 0
    assert step(E2, opmode=MAC, a=1 << 25, b=1).p == 1 << 25
    assert step(E1, opmode=MAC, a=1 << 25, b=1).p == 0


def test_accumulation_wraps_at_48_bits():
    worst = np.full(64, -(1 << 24))
    b = np.full(64, -(1 << 17))
    assert accumulate(E1, worst[:63], b[:63]) == 63 << 41  # the safe depth
    assert accumulate(E1, worst, b) == -(1 << 47)  # 64 * 2**41 = 2**47 wraps
    assert accumulate(E1, worst, b, alumode=AluMode.SUB, p0=-(1 << 47)) == 0
    assert accumulate(E1, [1], [1], p0=(1 << 47) - 1) == -(1 << 47)


@pytest.mark.parametrize(
    ("inmode", "d", "a", "expected_ad"),
    [
        (INMODE_D_PLUS_A, 5, 3, 8),
        (INMODE_D_MINUS_A, 5, 3, 2),
        (INMODE_D, 5, 3, 5),
        (0b01000, 5, 3, -3),  # D disabled, subtract: -A
        (0b01110, 5, 3, 5),  # D - 0
        (INMODE_ZERO_A, 5, 3, 0),
        (INMODE_D_PLUS_A, (1 << 24) - 1, 1, -(1 << 24)),  # wraps at 25 bits
        (INMODE_D_MINUS_A, -(1 << 24), 1, (1 << 24) - 1),
        (INMODE_D_PLUS_A, 0, (0b11111 << 25) | 7, 7),  # A[29:25] ignored
    ],
)
def test_preadder(inmode, d, a, expected_ad):
    assert step(PRE1, opmode=MAC, inmode=inmode, a=a, d=d, b=3).p == 3 * expected_ad


def test_e2_preadder_wraps_at_27_bits():
    pre2 = SliceConfig(Family.E2, use_preadder=True)
    assert step(pre2, opmode=MAC, inmode=INMODE_D_PLUS_A, a=1, d=(1 << 26) - 1, b=1).p == -(1 << 26)
    assert step(pre2, opmode=MAC, inmode=INMODE_D_PLUS_A, a=1, d=(1 << 24) - 1, b=1).p == 1 << 24


# --- ALU ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("alumode", "expected"),
    [
        (AluMode.ADD, 10 + 3 + 1),
        (AluMode.NOTZ_ADD, -10 + (3 + 1) - 1),
        (AluMode.NOT_ADD, -10 - 3 - 1 - 1),
        (AluMode.SUB, 10 - (3 + 1)),
    ],
)
def test_arithmetic_alumodes(alumode, expected):
    assert step(NOMULT, opmode=C_PLUS_AB, alumode=alumode, c=10, b=3, carryin=1).p == expected


def test_abus_concatenation_and_y_ones():
    r = step(NOMULT, opmode=opmode(XSel.AB, YSel.ONES, ZSel.ZERO), a=1, b=5)
    assert r.p == (1 << 18) + 5 - 1


@pytest.mark.parametrize("key", sorted(LOGIC_TABLE, key=str))
def test_logic_unit_table(key):
    alumode, y_ones = key
    rng = np.random.default_rng(alumode)
    ab = rng.integers(0, 1 << 48, size=200, dtype=np.int64)
    c = rng.integers(0, 1 << 48, size=200, dtype=np.int64)
    y = YSel.ONES if y_ones else YSel.ZERO
    r = step(
        NOMULT,
        opmode=opmode(XSel.AB, y, ZSel.C),
        alumode=alumode,
        a=ab >> 18,
        b=ab & 0x3FFFF,
        c=c,
        carryin=1,
    )
    expected = {
        LogicOp.XOR: ab ^ c,
        LogicOp.XNOR: ~(ab ^ c),
        LogicOp.AND: ab & c,
        LogicOp.AND_NOT_Z: ab & ~c,
        LogicOp.NAND: ~(ab & c),
        LogicOp.NOT_X_OR_Z: ~ab | c,
        LogicOp.OR: ab | c,
        LogicOp.OR_NOT_Z: ab | ~c,
        LogicOp.NOR: ~(ab | c),
        LogicOp.NOT_X_AND_Z: ~ab & c,
    }[LOGIC_TABLE[key]] & P_MASK
    assert np.array_equal(r.p_bits, expected)
    assert not r.carryout_valid.any()


def test_xnor_48_bits_and_logic_mode_helper():
    y, alumode = logic_mode(LogicOp.XNOR)
    assert (y, alumode) == (YSel.ZERO, 0b0100 | 0b0001)
    ab, c = 0x0123_4567_89AB, 0x0123_4567_89AB ^ 0x8000_0000_0001
    r = step(
        SliceConfig(Family.E1, use_mult=False, pattern=P_MASK, mask=0),
        opmode=opmode(XSel.AB, y, ZSel.C),
        alumode=alumode,
        a=ab >> 18,
        b=ab & 0x3FFFF,
        c=[c, ab],
    )
    assert r.p_bits.tolist() == [P_MASK ^ 0x8000_0000_0001, P_MASK]
    assert r.patterndetect.tolist() == [False, True]  # all 48 bits matched
    for op in LogicOp:
        y, alumode = logic_mode(op)
        assert LOGIC_TABLE[(alumode, y is YSel.ONES)] is op


# --- SIMD and CARRYOUT --------------------------------------------------------------------


def _ab(x):
    return {"a": x >> 18, "b": x & 0x3FFFF}


def test_four12_lanes_cut_carries():
    cfg = SliceConfig(Family.E1, simd=Simd.FOUR12, use_mult=False)
    x, z = 0x001_FFF_800_FFF, 0xFFF_000_800_001  # lane 0 is the least significant
    r = step(cfg, opmode=C_PLUS_AB, c=z, **_ab(x))
    assert r.p_bits == 0x000_FFF_000_000
    assert r.carryout == 0b1011 and r.carryout_valid == 0b1111
    assert simd_lanes(r.p, Simd.FOUR12).tolist() == [0, 0, 0xFFF, 0]
    assert simd_lanes(r.p, Simd.FOUR12, signed=True).tolist() == [0, 0, -1, 0]
    one = step(NOMULT, opmode=C_PLUS_AB, c=z, **_ab(x))
    assert one.p_bits == (x + z) & P_MASK and one.carryout == (x + z) >> 48 << 3
    assert one.carryout_valid == 0b1000


def test_carry_in_enters_lane_zero_only():
    cfg = SliceConfig(Family.E1, simd=Simd.FOUR12, use_mult=False)
    r = step(cfg, opmode=C_PLUS_AB, c=0xFFF_FFF_FFF_FFF, carryin=1)
    assert r.p_bits == 0xFFF_FFF_FFF_000 and r.carryout == 0b0001


def test_two24_and_subtract_carry_is_inverted():
    cfg = SliceConfig(Family.E1, simd=Simd.TWO24, use_mult=False)
    x, z = 0x000005_000003, 0x000004_000007  # upper lane borrows, lower does not
    r = step(cfg, opmode=C_PLUS_AB, alumode=AluMode.SUB, c=z, **_ab(x))
    assert simd_lanes(r.p, Simd.TWO24, signed=True).tolist() == [4, -1]
    assert r.carryout_valid == 0b1010 and r.carryout == 0b0010  # 1 = no borrow


def test_three_operand_carry_reports_bit_w_only():
    # X + Y(ones) + Z with X = Z = ones: 3 * (2**48 - 1) = 0b10_1111...1101
    r = step(NOMULT, opmode=opmode(XSel.AB, YSel.ONES, ZSel.C), c=P_MASK, **_ab(P_MASK))
    assert r.p_bits == (3 * P_MASK) & P_MASK and r.carryout == 0


def test_carryout_undefined_with_multiply():
    r = step(E1, opmode=MAC, a=-1, b=-1)
    assert r.carryout_valid == 0 and r.carryout == 0


# --- Z shifts, carry-in sources, pattern detect ------------------------------------------


def test_shifted_z_sign_extends():
    r = step(E1, opmode=opmode(XSel.ZERO, YSel.ZERO, ZSel.P_SHR17), p=-(1 << 40))
    assert r.p == -(1 << 23)
    r = step(E1, opmode=opmode(XSel.ZERO, YSel.ZERO, ZSel.PCIN_SHR17), pcin=(1 << 47) - 1)
    assert r.p == (1 << 30) - 1


@pytest.mark.parametrize(
    ("carryinsel", "kwargs", "cin"),
    [
        (0b000, {"carryin": 1}, 1),
        (0b001, {"pcin": -1}, 0),
        (0b011, {"pcin": -1}, 1),
        (0b101, {"p": 5}, 1),
        (0b111, {"p": 5}, 0),
        (0b110, {"a": -3, "b": 5}, 0),  # A[24] XNOR B[17]: signs differ
        (0b110, {"a": -3, "b": -5}, 1),
    ],
)
def test_carryinsel(carryinsel, kwargs, cin):
    r = step(E1, opmode=MAC, carryinsel=carryinsel, **kwargs)
    assert r.p == to_signed(kwargs.get("a", 0), 25) * to_signed(kwargs.get("b", 0), 18) + cin


def test_carrycascin_and_macc_extend():
    r = step(
        NOMULT,
        opmode=opmode(XSel.ZERO, YSel.ONES, ZSel.P_MACC),
        carryinsel=0b010,
        carrycascin=1,
        p=7,
    )
    assert r.p == 7


def test_pattern_detect_overflow_idiom():
    r = step(E1, opmode=MAC_C, c=[5, -5, 1 << 46, -(1 << 46) - 1])
    assert r.patterndetect.tolist() == [True, False, False, False]
    assert r.patternbdetect.tolist() == [False, True, False, False]


# --- E2 W multiplexer ---------------------------------------------------------------------


def test_e2_w_mux():
    cfg = SliceConfig(Family.E2, use_mult=False, rnd=1 << 20)
    base = opmode(XSel.AB, YSel.ZERO, ZSel.C)
    r = step(
        cfg, opmode=[base | WSel.C << 7, base | WSel.RND << 7, base | WSel.P << 7], c=10, b=3, p=100
    )
    assert r.p.tolist() == [23, 13 + (1 << 20), 113]
    assert r.carryout_valid.tolist() == [0, 0, 0]
    sub = step(cfg, opmode=base | WSel.C << 7, alumode=AluMode.SUB, c=10, b=3, carryin=1)
    assert sub.p == 10 - (10 + 3 + 1)


# --- DRC ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cfg", "kwargs", "match"),
    [
        (E1, {"opmode": 0b0000001}, "X=M requires Y=M"),
        (E1, {"opmode": 0b1110000}, "Z=111"),
        (NOMULT, {"opmode": MAC}, "USE_MULT='NONE'"),
        (NOMULT, {"opmode": opmode(XSel.AB, YSel.C, ZSel.C), "alumode": 0b0101}, "logic"),
        (E1, {"opmode": MAC, "carryinsel": 0b100}, "not modelled"),
        (E1, {"opmode": MAC, "carryinsel": 0b010}, "illegal with a multiply"),
        (E1, {"opmode": MAC, "inmode": 0b00001}, "AREG"),
        (E1, {"opmode": MAC, "inmode": 0b10000}, "AREG/BREG"),
        (E1, {"opmode": MAC, "inmode": INMODE_D_PLUS_A}, "pre-adder is off"),
        (E1, {"opmode": MAC, "alumode": 0b1000}, "not a documented"),
        (SliceConfig(preg=False), {"opmode": 0x25}, "PREG=0"),
        (SliceConfig(preg=False), {"opmode": MAC, "carryinsel": 0b111}, "PREG=0"),
        (NOMULT, {"opmode": opmode(XSel.ZERO, YSel.ZERO, ZSel.P_MACC)}, "MACC extend"),
        (
            SliceConfig(Family.E2, use_mult=False),
            {"opmode": opmode(XSel.AB, YSel.ZERO, ZSel.C, WSel.C), "alumode": 0b0101},
            "W=0",
        ),
    ],
)
def test_drc_rejects(cfg, kwargs, match):
    with pytest.raises(ValueError, match=match):
        step(cfg, **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"simd": Simd.FOUR12}, "requires USE_MULT='NONE'"),
        ({"use_mult": False, "use_preadder": True}, "requires USE_MULT"),
        ({"rnd": 1}, "DSP48E2 only"),
        ({"mask": 1 << 48}, "48-bit"),
    ],
)
def test_config_rejects(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SliceConfig(**kwargs)


# --- vectorisation and chains -------------------------------------------------------------


def test_controls_vary_per_element_and_broadcast():
    r = step(E1, opmode=[[MAC], [MAC_C]], a=[1, 2, 3], b=4, c=100)
    assert r.p.tolist() == [[4, 8, 12], [104, 108, 112]]


def test_run_chain_matches_stepwise_and_counts():
    rng = np.random.default_rng(1)
    a = rng.integers(-(1 << 24), 1 << 24, size=(20, 5))
    b = rng.integers(-(1 << 17), 1 << 17, size=(20, 5))
    ops = np.where(rng.random((20, 5)) < 0.2, MAC_C, 0x25)
    res = run_chain(E1, opmode=ops, a=a, b=b, c=11, p0=3)
    p = np.full(5, 3)
    for t in range(20):
        p = step(E1, opmode=ops[t], a=a[t], b=b[t], c=11, p=p).p
        assert np.array_equal(res.p[t], p)
    assert res.count == OpCount(mac=100)
    exact = 3
    for t in range(20):
        exact = (11 if ops[t, 0] == MAC_C else exact) + int(a[t, 0]) * int(b[t, 0])
    assert res.p[-1, 0] == exact  # no wrap at these magnitudes


def test_counter_kinds():
    count = OpCount()
    step(E1, opmode=[MAC, C_PLUS_AB], counter=count)
    step(NOMULT, opmode=C_PLUS_AB, alumode=0b0101, counter=count)
    assert count == OpCount(mac=1, add=1, logic=1) and count.total == 3


def test_run_chain_needs_time_axis():
    with pytest.raises(ValueError, match="time axis"):
        run_chain(E1, opmode=MAC)


# --- INT8 packing (WP486) ------------------------------------------------------------------


def test_packing_depth_limits():
    assert Int8Packing(Family.E2).max_depth == 7
    narrow = {"a_range": (-127, 127), "b_range": (-127, 127), "c_range": (-127, 127)}
    assert Int8Packing(Family.E2, **narrow).max_depth == 8
    assert Int8Packing(Family.E1).max_depth == 3
    assert Int8Packing(Family.E1, **narrow).max_depth == 4
    assert Int8Packing(Family.E2, c_range=(0, 255)).max_depth == 4
    with pytest.raises(ValueError, match="pre-adder overflow on E1: a=-128, b=-128"):
        Int8Packing(Family.E1, a_range=(-128, 127))
    with pytest.raises(ValueError, match="no room"):
        Int8Packing(Family.E2, shift=15)


@pytest.mark.parametrize("family", list(Family))
def test_packing_exhaustive_single_product(family):
    """Every (a, b, c) in range, K = 1, through the slice model."""
    pk = Int8Packing(family)
    a, b = np.meshgrid(np.arange(pk.a_range[0], 128), np.arange(-128, 128), indexing="ij")
    a, b = a.ravel(), b.ravel()
    count = OpCount()
    for c in range(-128, 128):
        hi, lo = pk.dot(a[None], b[None], np.full((1, a.size), c), counter=count)
        assert np.array_equal(hi, a * c) and np.array_equal(lo, b * c)
    assert count.packed_int8 == 256 * a.size


@pytest.mark.parametrize("family", list(Family))
def test_packing_worst_case_at_depth_limit(family):
    pk = Int8Packing(family)
    k = pk.max_depth
    corners = [(x, y, z) for x in pk.a_range for y in pk.b_range for z in pk.c_range]
    a, b, c = (np.array([corner[i] for corner in corners]) for i in range(3))
    hi, lo = pk.dot(np.tile(a, (k, 1)), np.tile(b, (k, 1)), np.tile(c, (k, 1)))
    assert np.array_equal(hi, k * a * c) and np.array_equal(lo, k * b * c)


@pytest.mark.parametrize("family", list(Family))
def test_packing_fails_beyond_limit(family):
    """One more worst-case product corrupts the fields, and dot refuses the chain."""
    pk = Int8Packing(family)
    k = pk.max_depth + 1
    a, b, c = np.full((k, 1), 5), np.full((k, 1), -128), np.full((k, 1), -128)
    with pytest.raises(ValueError, match=f"depth {k} exceeds max_depth={k - 1}"):
        pk.dot(a, b, c)
    a_port, d_port = pk.pack(a, b)
    p = accumulate(pk.config, a_port, c, d=d_port, inmode=INMODE_D_PLUS_A)
    hi, lo = pk.unpack(p)
    assert (hi[0], lo[0]) != (k * 5 * -128, k * 16384)


def test_packing_random_chains_and_drain():
    rng = np.random.default_rng(7)
    for pk in (
        Int8Packing(Family.E2),
        Int8Packing(Family.E1),
        Int8Packing(Family.E2, c_range=(0, 255)),
    ):
        for k in range(1, pk.max_depth + 1):
            shape = (k, 2000)
            a = rng.integers(pk.a_range[0], pk.a_range[1] + 1, size=shape)
            b = rng.integers(-128, 128, size=shape)
            c = rng.integers(pk.c_range[0], pk.c_range[1] + 1, size=shape)
            hi, lo = pk.dot(a, b, c)
            assert np.array_equal(hi, (a * c).sum(0)) and np.array_equal(lo, (b * c).sum(0))
        a, b = np.full((100, 3), pk.a_range[0]), np.full((100, 3), -128)
        c = np.full((100, 3), pk.c_range[0])
        count = OpCount()
        hi, lo = pk.dot_drained(a, b, c, counter=count)
        assert hi.tolist() == [100 * pk.a_range[0] * pk.c_range[0]] * 3
        assert lo.tolist() == [100 * -128 * pk.c_range[0]] * 3
        assert count.packed_int8 == 300


def test_packing_operand_ranges_checked():
    pk = Int8Packing(Family.E1)
    with pytest.raises(ValueError, match="operand a outside"):
        pk.dot([[-128]], [[0]], [[1]])
    with pytest.raises(ValueError, match="operand c outside"):
        Int8Packing(Family.E2).dot([[1]], [[1]], [[200]])
