"""Bit-accurate, numpy-vectorised model of one DSP48E1 / DSP48E2 slice operation.

The model covers the datapath with all input pipeline registers bypassed (AREG = BREG = CREG =
DREG = ADREG = MREG = 0) and the P register present (PREG = 1): one call to :func:`step`
computes the next P from the ports and the current P, element-wise over arrays of any shape.
Pipeline registers add latency only and are not modelled.

Semantics follow UG479 (DSP48E1) and UG579 (DSP48E2); see ``docs/sim.md`` and
``shared/docs/reference/dsp48.md``.  Every value is carried as a non-negative bit pattern in
int64 and masked explicitly; ``P`` wraps modulo 2**48 exactly as the hardware does.

Port values may be given in signed or unsigned spelling of their width (for a w-bit port any
integer in ``[-2**(w-1), 2**w)``); anything else raises ``ValueError`` naming the port.
Configurations the hardware forbids (DRC) or that are not modelled raise ``ValueError`` too.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np

P_BITS = 48
P_MASK = (1 << P_BITS) - 1


class Family(enum.Enum):
    """Slice generation. Value: (multiplier A / pre-adder / D width, OPMODE width)."""

    E1 = (25, 7)  # DSP48E1, 7-series (XC7Z020 on the PYNQ-Z2)
    E2 = (27, 9)  # DSP48E2, UltraScale / UltraScale+

    @property
    def amult_bits(self) -> int:
        """Width of the multiplier A input, the pre-adder and the D port."""
        return self.value[0]

    @property
    def opmode_bits(self) -> int:
        return self.value[1]

    @property
    def product_bits(self) -> int:
        """Width of the signed product (43 on E1, 45 on E2)."""
        return self.amult_bits + 18


class Simd(enum.Enum):
    """USE_SIMD: number of independent adder lanes."""

    ONE48 = 1
    TWO24 = 2
    FOUR12 = 4

    @property
    def lanes(self) -> int:
        return self.value

    @property
    def width(self) -> int:
        return P_BITS // self.value

    @property
    def carryout_mask(self) -> int:
        """CARRYOUT bits that are defined: bit (k + 1) * 4/lanes - 1 ends lane k."""
        stride = 4 // self.value
        return sum(1 << (stride * (k + 1) - 1) for k in range(self.value))


class XSel(enum.IntEnum):
    """OPMODE[1:0]."""

    ZERO = 0b00
    M = 0b01
    P = 0b10
    AB = 0b11  # {A[29:0], B[17:0]}


class YSel(enum.IntEnum):
    """OPMODE[3:2]."""

    ZERO = 0b00
    M = 0b01
    ONES = 0b10
    C = 0b11


class ZSel(enum.IntEnum):
    """OPMODE[6:4]. ``P_MACC`` (100) is the MACC-extend P, legal only with OPMODE[3:0] = 1000."""

    ZERO = 0b000
    PCIN = 0b001
    P = 0b010
    C = 0b011
    P_MACC = 0b100
    PCIN_SHR17 = 0b101
    P_SHR17 = 0b110


class WSel(enum.IntEnum):
    """OPMODE[8:7], DSP48E2 only."""

    ZERO = 0b00
    P = 0b01
    RND = 0b10
    C = 0b11


class AluMode(enum.IntEnum):
    """Arithmetic ALUMODE codes (E2 adds W wherever X + Y appears)."""

    ADD = 0b0000  # Z + X + Y + CIN
    NOTZ_ADD = 0b0001  # ~Z + X + Y + CIN  = -Z + (X + Y + CIN) - 1
    NOT_ADD = 0b0010  # ~(Z + X + Y + CIN)  = -Z - X - Y - CIN - 1
    SUB = 0b0011  # Z - (X + Y + CIN)  = ~(~Z + X + Y + CIN)


class LogicOp(enum.Enum):
    """Two-input bitwise functions of X and Z of the logic unit."""

    XOR = "x ^ z"
    XNOR = "~(x ^ z)"
    AND = "x & z"
    AND_NOT_Z = "x & ~z"
    NAND = "~(x & z)"
    NOT_X_OR_Z = "~x | z"
    OR = "x | z"
    OR_NOT_Z = "x | ~z"
    NOR = "~(x | z)"
    NOT_X_AND_Z = "~x & z"


# UG479 table 2-13 / UG579 table 2-11: (ALUMODE, Y = all ones) -> function of (X, Z).
LOGIC_TABLE: dict[tuple[int, bool], LogicOp] = {
    (0b0100, False): LogicOp.XOR,
    (0b0100, True): LogicOp.XNOR,
    (0b0101, False): LogicOp.XNOR,
    (0b0101, True): LogicOp.XOR,
    (0b0110, False): LogicOp.XNOR,
    (0b0110, True): LogicOp.XOR,
    (0b0111, False): LogicOp.XOR,
    (0b0111, True): LogicOp.XNOR,
    (0b1100, False): LogicOp.AND,
    (0b1100, True): LogicOp.OR,
    (0b1101, False): LogicOp.AND_NOT_Z,
    (0b1101, True): LogicOp.OR_NOT_Z,
    (0b1110, False): LogicOp.NAND,
    (0b1110, True): LogicOp.NOR,
    (0b1111, False): LogicOp.NOT_X_OR_Z,
    (0b1111, True): LogicOp.NOT_X_AND_Z,
}

_LOGIC_FN = {
    LogicOp.XOR: lambda x, z: x ^ z,
    LogicOp.XNOR: lambda x, z: ~(x ^ z),
    LogicOp.AND: lambda x, z: x & z,
    LogicOp.AND_NOT_Z: lambda x, z: x & ~z,
    LogicOp.NAND: lambda x, z: ~(x & z),
    LogicOp.NOT_X_OR_Z: lambda x, z: ~x | z,
    LogicOp.OR: lambda x, z: x | z,
    LogicOp.OR_NOT_Z: lambda x, z: x | ~z,
    LogicOp.NOR: lambda x, z: ~(x | z),
    LogicOp.NOT_X_AND_Z: lambda x, z: ~x & z,
}

INMODE_A = 0b00000  # multiplier gets A
INMODE_ZERO_A = 0b00010  # multiplier gets 0 (or D with the pre-adder)
INMODE_D_PLUS_A = 0b00100
INMODE_D_MINUS_A = 0b01100
INMODE_D = 0b00110


def opmode(x: XSel, y: YSel, z: ZSel, w: WSel = WSel.ZERO) -> int:
    """Assemble an OPMODE word from its multiplexer selections."""
    return int(x) | int(y) << 2 | int(z) << 4 | int(w) << 7


def logic_mode(op: LogicOp) -> tuple[YSel, int]:
    """The (Y selection, ALUMODE) pair that makes the logic unit compute ``op``; Y = 0 and
    the lowest ALUMODE are preferred (XNOR: Y = 0, ALUMODE = 0101)."""
    for (alumode, y_ones), fn in sorted(LOGIC_TABLE.items(), key=lambda kv: kv[0][::-1]):
        if fn is op:
            return (YSel.ONES if y_ones else YSel.ZERO), alumode
    raise AssertionError(op)  # every LogicOp is in the table


@dataclass(frozen=True)
class SliceConfig:
    """Static attributes of a slice.

    family: E1 or E2.  simd: USE_SIMD.  use_mult: USE_MULT = "MULTIPLY" (else "NONE").
    use_preadder: E1 USE_DPORT = "TRUE" / E2 AMULTSEL = "AD" (PREADDINSEL = "A",
    BMULTSEL = "B" on E2).  preg: PREG = 1.  pattern, mask: pattern detector (SEL_PATTERN =
    "PATTERN", SEL_MASK = "MASK").  rnd: E2 RND constant for W = RND.
    """

    family: Family = Family.E1
    simd: Simd = Simd.ONE48
    use_mult: bool = True
    use_preadder: bool = False
    preg: bool = True
    pattern: int = 0
    mask: int = 0x3FFF_FFFF_FFFF
    rnd: int = 0

    def __post_init__(self) -> None:
        if self.use_mult and self.simd is not Simd.ONE48:
            raise ValueError(f"USE_SIMD={self.simd.name} requires USE_MULT='NONE'")
        if self.use_preadder and not self.use_mult:
            raise ValueError("the pre-adder (USE_DPORT / AMULTSEL='AD') requires USE_MULT")
        for name in ("pattern", "mask", "rnd"):
            if not 0 <= getattr(self, name) <= P_MASK:
                raise ValueError(f"{name} must be a 48-bit unsigned pattern")
        if self.rnd and self.family is not Family.E2:
            raise ValueError("RND exists on DSP48E2 only")


@dataclass
class OpCount:
    """Slice operations (one P update of one slice each), by kind."""

    mac: int = 0  # multiplier in use
    packed_int8: int = 0  # multiplier ops carrying two INT8 products (see hwbed.sim.packing)
    logic: int = 0  # 48-bit logic-unit ops
    add: int = 0  # ALU arithmetic without the multiplier (any SIMD mode)

    @property
    def total(self) -> int:
        return self.mac + self.packed_int8 + self.logic + self.add


@dataclass(frozen=True)
class SliceResult:
    """Outputs after the clock edge; arrays shaped like the broadcast inputs.

    p: P as signed int64 (sign-extended from bit 47).  carryout: CARRYOUT[3:0] with undefined
    bits cleared; carryout_valid: which CARRYOUT bits are defined.  patterndetect /
    patternbdetect: pattern detector outputs (bool).
    """

    p: np.ndarray
    carryout: np.ndarray
    carryout_valid: np.ndarray
    patterndetect: np.ndarray
    patternbdetect: np.ndarray

    @property
    def p_bits(self) -> np.ndarray:
        """P as an unsigned 48-bit pattern."""
        return self.p & P_MASK


_PORTS = ("a", "b", "c", "d", "pcin", "carryin", "carrycascin")
_CONTROLS = ("opmode", "alumode", "inmode", "carryinsel")


def port_widths(family: Family) -> dict[str, int]:
    """Widths of the data ports and of P (the register fed back)."""
    return {
        "a": 30,
        "b": 18,
        "c": 48,
        "d": family.amult_bits,
        "pcin": 48,
        "carryin": 1,
        "carrycascin": 1,
        "p": 48,
    }


def to_signed(bits: np.ndarray | int, width: int) -> np.ndarray:
    """Sign-extend a ``width``-bit pattern held in int64."""
    v = np.asarray(bits, dtype=np.int64) & ((1 << width) - 1)
    return v - ((v >> (width - 1)) << width)


def simd_lanes(p: np.ndarray, simd: Simd, signed: bool = False) -> np.ndarray:
    """Split P into its SIMD lanes: shape ``p.shape + (lanes,)``, lane 0 = least significant."""
    w = simd.width
    bits = np.asarray(p, dtype=np.int64) & P_MASK
    lanes = np.stack([(bits >> (k * w)) & ((1 << w) - 1) for k in range(simd.lanes)], axis=-1)
    return to_signed(lanes, w) if signed else lanes


def _as_int64(name: str, value, lo: int, hi: int) -> np.ndarray:
    """Check ``lo <= value < hi`` and return int64; ValueError names the port."""
    arr = np.asarray(value)
    if arr.dtype == bool:
        arr = arr.astype(np.int64)
    if arr.dtype.kind not in "iuO":
        raise ValueError(f"port {name.upper()} must hold integers, got dtype {arr.dtype}")
    if arr.size and (arr.min() < lo or arr.max() >= hi):
        raise ValueError(f"port {name.upper()} out of range [{lo}, {hi})")
    return arr.astype(np.int64)


def _port(name: str, value, width: int) -> np.ndarray:
    return _as_int64(name, value, -(1 << (width - 1)), 1 << width) & ((1 << width) - 1)


def check_control(config: SliceConfig, opm: int, alu: int, inm: int, cis: int) -> None:
    """Raise ValueError unless (OPMODE, ALUMODE, INMODE, CARRYINSEL) is legal and modelled
    for ``config`` (UG479/UG579 DRC rules and the yosys model's run-time checks)."""
    x, y, z, w = XSel(opm & 3), YSel(opm >> 2 & 3), opm >> 4 & 7, opm >> 7 & 3
    e2 = config.family is Family.E2
    if z == 0b111:
        raise ValueError("OPMODE Z=111 is illegal")
    if (x is XSel.M) != (y is YSel.M):
        raise ValueError(f"OPMODE {opm:#x}: X=M requires Y=M and vice versa")
    mult = x is XSel.M
    if mult and not config.use_mult:
        raise ValueError(f"OPMODE {opm:#x} selects M but USE_MULT='NONE'")
    uses_p = x is XSel.P or z in (ZSel.P, ZSel.P_MACC, ZSel.P_SHR17) or w == WSel.P
    if (uses_p or cis in (0b101, 0b111)) and not config.preg:
        raise ValueError(f"OPMODE {opm:#x} / CARRYINSEL {cis:#05b} read P but PREG=0")
    if z == ZSel.P_MACC and (opm & 0xF != 0b1000 or cis != 0b010):
        raise ValueError("OPMODE Z=100 (MACC extend) requires OPMODE[3:0]=1000, CARRYINSEL=010")
    if alu >> 2 == 0b10:
        raise ValueError(f"ALUMODE {alu:#06b} is not a documented function")
    if alu & 0b0100:
        if y not in (YSel.ZERO, YSel.ONES) or (e2 and w != WSel.ZERO):
            raise ValueError(f"logic ALUMODE {alu:#06b} requires Y in {{0, ones}} and W=0")
    if cis == 0b100:
        raise ValueError("CARRYINSEL=100 (CARRYCASCOUT feedback) is not modelled")
    if cis == 0b010 and mult:
        raise ValueError("CARRYINSEL=010 (CARRYCASCIN) is illegal with a multiply")
    if cis == 0b110 and not config.use_mult:
        raise ValueError("CARRYINSEL=110 rounds the multiplier and requires USE_MULT")
    if inm & 0b00001 or inm & 0b10000:
        raise ValueError(f"INMODE {inm:#07b}: A1/B1 selection needs AREG/BREG=2 (not modelled)")
    if inm & 0b01100 and not config.use_preadder:
        raise ValueError(f"INMODE {inm:#07b} uses D but the pre-adder is off")


def _prepare(config: SliceConfig, kwargs: dict) -> dict[str, np.ndarray]:
    """Range-check, DRC and broadcast the step inputs to int64 arrays of one shape."""
    fam = config.family
    widths = port_widths(fam)
    ctl_bits = {"opmode": fam.opmode_bits, "alumode": 4, "inmode": 5, "carryinsel": 3}
    arrs = {k: _as_int64(k, kwargs[k], 0, 1 << ctl_bits[k]) for k in _CONTROLS}
    arrs.update({k: _port(k, kwargs[k], widths[k]) for k in _PORTS})
    opm, alu, inm, cis = np.broadcast_arrays(*(arrs[k] for k in _CONTROLS))
    for k in np.unique(opm | alu << 9 | inm << 13 | cis << 18).tolist():
        check_control(config, k & 0x1FF, k >> 9 & 0xF, k >> 13 & 0x1F, k >> 18 & 0x7)
    names = list(arrs)
    bcast = np.broadcast_arrays(*arrs.values())
    return {k: np.array(v) for k, v in zip(names, bcast, strict=True)}


def _sra17(v: np.ndarray) -> np.ndarray:
    return (to_signed(v, P_BITS) >> 17) & P_MASK


def _compute(
    config: SliceConfig, s: dict[str, np.ndarray], p: np.ndarray, counter: OpCount | None
) -> SliceResult:
    """One clock edge on prepared inputs ``s`` (same shapes) and current P bits ``p``."""
    fam = config.family
    am = fam.amult_bits
    opm, alu, inm, cis = s["opmode"], s["alumode"], s["inmode"], s["carryinsel"]
    a, b, c = s["a"], s["b"], s["c"]

    # Pre-adder and multiplier: A[am-1:0] and D are signed am-bit, the sum wraps at am bits.
    a_mult = np.where(inm & 0b00010, 0, to_signed(a, am))
    if config.use_preadder:
        d_op = np.where(inm & 0b00100, to_signed(s["d"], am), 0)
        ad = np.where(inm & 0b01000, d_op - a_mult, d_op + a_mult)
        a_mult = to_signed(ad, am)
    b_mult = to_signed(b, 18)
    m = (a_mult * b_mult) & P_MASK

    xs, ys, zs, ws = opm & 3, opm >> 2 & 3, opm >> 4 & 7, opm >> 7 & 3
    x = np.select([xs == XSel.M, xs == XSel.P, xs == XSel.AB], [m, p, a << 18 | b], 0)
    y = np.select([ys == YSel.ONES, ys == YSel.C], [P_MASK, c], 0)
    z = np.select(
        [
            zs == ZSel.PCIN,
            (zs == ZSel.P) | (zs == ZSel.P_MACC),
            zs == ZSel.C,
            zs == ZSel.PCIN_SHR17,
            zs == ZSel.P_SHR17,
        ],
        [s["pcin"], p, c, _sra17(s["pcin"]), _sra17(p)],
        0,
    )
    w = np.select([ws == WSel.P, ws == WSel.RND, ws == WSel.C], [p, config.rnd, c], 0)

    p47, pcin47 = p >> 47 & 1, s["pcin"] >> 47 & 1
    cin = np.select(
        [cis == 0b001, cis == 0b010, cis == 0b011, cis == 0b101, cis == 0b110, cis == 0b111],
        [
            1 - pcin47,
            s["carrycascin"],
            pcin47,
            1 - p47,
            ((a_mult < 0) == (b_mult < 0)).astype(np.int64),
            p47,
        ],
        s["carryin"],
    )

    # Arithmetic: per lane, T = Z' + W + X + Y + CIN (CIN into lane 0 only), Z' = ~Z for
    # ALUMODE[0]; P lane = T mod 2**w, inverted for ALUMODE[1]; CARRYOUT = bit w of T,
    # inverted for ALUMODE = 0011.
    width, lanes = config.simd.width, config.simd.lanes
    lm = (1 << width) - 1
    stride = 4 // lanes
    arith = np.zeros_like(p)
    carry = np.zeros_like(p)
    for k in range(lanes):
        sh = k * width
        zl = (z >> sh) & lm
        zl = np.where(alu & 1, zl ^ lm, zl)
        t = zl + (x >> sh & lm) + (y >> sh & lm) + (w >> sh & lm) + (cin if k == 0 else 0)
        r = np.where(alu & 2, (t & lm) ^ lm, t & lm)
        arith |= r << sh
        carry |= ((t >> width & 1) ^ (alu == AluMode.SUB)) << (stride * (k + 1) - 1)

    # Logic unit: a bitwise function of X and Z chosen by (ALUMODE, Y = ones).
    is_logic = (alu & 0b0100) != 0
    out = arith
    if is_logic.any():
        for (code, y_ones), op in LOGIC_TABLE.items():
            sel = is_logic & (alu == code) & ((ys == YSel.ONES) == y_ones)
            if sel.any():
                out[sel] = _LOGIC_FN[op](x[sel], z[sel]) & P_MASK

    mult = xs == XSel.M
    undefined = mult | is_logic
    if fam is Family.E2:
        undefined |= ws != WSel.ZERO
    valid = np.where(undefined, 0, config.simd.carryout_mask)
    pd = ((out ^ config.pattern) & ~config.mask & P_MASK) == 0
    pbd = ((out ^ ~config.pattern) & ~config.mask & P_MASK) == 0
    if counter is not None:
        n_mult, n_logic = int(mult.sum()), int(is_logic.sum())
        counter.mac += n_mult
        counter.logic += n_logic
        counter.add += out.size - n_mult - n_logic
    return SliceResult(to_signed(out, P_BITS), carry & valid, valid, pd, pbd)


def step(
    config: SliceConfig,
    *,
    opmode,
    alumode=0,
    inmode=0,
    carryinsel=0,
    a=0,
    b=0,
    c=0,
    d=0,
    pcin=0,
    carryin=0,
    carrycascin=0,
    p=0,
    counter: OpCount | None = None,
) -> SliceResult:
    """One slice operation: the value P takes at the next clock edge.

    All arguments broadcast together (element-wise independent slices); controls may vary per
    element.  ``p`` is the current P register (feedback for X/Z/W = P and CARRYINSEL 101/111).
    ``counter`` is incremented by the number of slice operations per kind.
    """
    kwargs = dict(
        opmode=opmode,
        alumode=alumode,
        inmode=inmode,
        carryinsel=carryinsel,
        a=a,
        b=b,
        c=c,
        d=d,
        pcin=pcin,
        carryin=carryin,
        carrycascin=carrycascin,
    )
    s = _prepare(config, kwargs)
    shape = s["opmode"].shape
    pb = np.broadcast_to(_port("p", p, P_BITS), shape)
    return _compute(config, s, np.array(pb), counter)


@dataclass(frozen=True)
class ChainResult:
    """Per-cycle outputs of :func:`run_chain`, each shaped ``(T, ...)``; see SliceResult."""

    p: np.ndarray
    carryout: np.ndarray
    carryout_valid: np.ndarray
    patterndetect: np.ndarray
    patternbdetect: np.ndarray
    count: OpCount = field(default_factory=OpCount)


def run_chain(
    config: SliceConfig,
    *,
    opmode,
    alumode=0,
    inmode=0,
    carryinsel=0,
    a=0,
    b=0,
    c=0,
    d=0,
    pcin=0,
    carryin=0,
    carrycascin=0,
    p0=0,
) -> ChainResult:
    """Clock a slice (or an array of independent slices) through T cycles with P feedback.

    Inputs broadcast to a common shape ``(T, ...)``; axis 0 is time.  ``p0`` (shape ``...``)
    is P before the first edge (0 after reset).  Returns P and the flags after every edge.
    """
    kwargs = dict(
        opmode=opmode,
        alumode=alumode,
        inmode=inmode,
        carryinsel=carryinsel,
        a=a,
        b=b,
        c=c,
        d=d,
        pcin=pcin,
        carryin=carryin,
        carrycascin=carrycascin,
    )
    s = _prepare(config, kwargs)
    shape = s["opmode"].shape
    if not shape:
        raise ValueError("run_chain needs a leading time axis")
    p = np.array(np.broadcast_to(_port("p0", p0, P_BITS), shape[1:]))
    count = OpCount()
    outs = []
    for t in range(shape[0]):
        r = _compute(config, {k: v[t, ...] for k, v in s.items()}, p, count)
        p = r.p_bits
        outs.append(r)
    return ChainResult(
        *(
            np.stack([getattr(r, f) for r in outs])
            for f in ("p", "carryout", "carryout_valid", "patterndetect", "patternbdetect")
        ),
        count=count,
    )


def accumulate(
    config: SliceConfig, a, b, *, d=0, inmode=INMODE_A, alumode=AluMode.ADD, carryin=0, p0=0
) -> np.ndarray:
    """Multiply-accumulate chain P <- P +/- (A*B or (D+-A)*B) + CIN over axis 0 of the inputs.

    OPMODE is 0x25 (X=Y=M, Z=P) every cycle, starting from P = ``p0``; returns the final P
    (signed int64, wrapped modulo 2**48).
    """
    z_p = opmode(XSel.M, YSel.M, ZSel.P)
    return run_chain(
        config, opmode=z_p, alumode=alumode, inmode=inmode, a=a, b=b, d=d, carryin=carryin, p0=p0
    ).p[-1]
