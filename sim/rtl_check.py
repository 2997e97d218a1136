"""Cross-check the slice model against yosys' DSP48E1 simulation model under Icarus Verilog.

Each case is one slice configuration and a block of N independent chains of length L (vectors
shaped ``(L, N)``).  The RTL clocks them one after another through a single DSP48E1
(``sim/rtl/tb_dsp48e1.v``); the model runs the N chains side by side.  The first cycle of
every chain never reads P, so chains do not depend on each other.  P, the defined CARRYOUT
bits (and which bits are undefined) and both pattern-detect outputs are compared bit for bit.

Needs ``iverilog``/``vvp`` and yosys' ``xilinx/cells_sim.v``; :func:`missing_tools` says
what is absent.  CLI: ``python -m hwbed.sim.rtl_check [--vectors N] [CASE ...]``.
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import subprocess
import tempfile
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hwbed.sim.dsp48 import (
    INMODE_D_PLUS_A,
    P_MASK,
    AluMode,
    Family,
    Simd,
    SliceConfig,
    XSel,
    YSel,
    ZSel,
    check_control,
    opmode,
    run_chain,
)

TESTBENCH = Path(__file__).with_name("rtl") / "tb_dsp48e1.v"
CHAIN_LENGTH = 100
_FIELDS = (
    "c",
    "a",
    "b",
    "d",
    "pcin",
    "opmode",
    "alumode",
    "inmode",
    "carryinsel",
    "carryin",
    "carrycascin",
)
_WIDTHS = {"c": 48, "a": 30, "b": 18, "d": 25, "pcin": 48}


def find_cells_sim() -> Path | None:
    """Locate yosys' ``xilinx/cells_sim.v``: $HWBED_CELLS_SIM, yosys-config, or the yosys
    data folder next to the ``yosys`` binary (Debian: /usr/share/yosys)."""
    candidates = []
    if os.environ.get("HWBED_CELLS_SIM"):
        candidates.append(Path(os.environ["HWBED_CELLS_SIM"]))
    if shutil.which("yosys-config"):
        datdir = subprocess.run(
            ["yosys-config", "--datdir"], capture_output=True, text=True, check=False
        ).stdout.strip()
        if datdir:
            candidates.append(Path(datdir) / "xilinx" / "cells_sim.v")
    if shutil.which("yosys"):
        prefix = Path(shutil.which("yosys")).resolve().parent.parent
        candidates.append(prefix / "share" / "yosys" / "xilinx" / "cells_sim.v")
    candidates.append(Path("/usr/share/yosys/xilinx/cells_sim.v"))
    return next((p for p in candidates if p.is_file()), None)


def missing_tools() -> str | None:
    """Why the RTL check cannot run (None when iverilog, vvp and cells_sim.v are present)."""
    absent = [t for t in ("iverilog", "vvp") if shutil.which(t) is None]
    if find_cells_sim() is None:
        absent.append("yosys' xilinx/cells_sim.v")
    if absent:
        return "missing " + ", ".join(absent) + " (apt-get install -y iverilog yosys)"
    return None


@dataclass(frozen=True)
class Vectors:
    """A configuration and its stimulus: control and port bit patterns shaped (L, N)."""

    name: str
    config: SliceConfig
    ports: dict[str, np.ndarray]

    @property
    def n(self) -> int:
        return self.ports["opmode"].size

    def flat(self, name: str) -> np.ndarray:
        """Port ``name`` in RTL order: chain after chain."""
        return self.ports[name].T.reshape(-1)


@dataclass(frozen=True)
class RtlOutput:
    """Per vector, in RTL (chain-major) order.  -1 marks an x/z in P, PD or PBD."""

    p: np.ndarray
    carryout: np.ndarray  # x bits read as 0
    carryout_known: np.ndarray  # bit set where CARRYOUT is 0/1
    patterndetect: np.ndarray
    patternbdetect: np.ndarray
    compile_s: float
    sim_s: float


@dataclass
class Report:
    """Outcome of one case; ``ok`` when every compared bit agrees."""

    name: str
    n: int
    p_mismatches: int = 0
    carry_mismatches: int = 0
    carry_bits_compared: int = 0
    pattern_mismatches: int = 0
    examples: list[str] = field(default_factory=list)
    compile_s: float = 0.0
    sim_s: float = 0.0

    @property
    def ok(self) -> bool:
        return not (self.p_mismatches or self.carry_mismatches or self.pattern_mismatches)

    def __str__(self) -> str:
        return (
            f"{self.name}: {self.n} vectors, P mismatches {self.p_mismatches}, CARRYOUT "
            f"mismatches {self.carry_mismatches} ({self.carry_bits_compared} bits), "
            f"pattern mismatches {self.pattern_mismatches}; iverilog {self.compile_s:.2f}"
            f" s, vvp {self.sim_s:.2f} s"
        )


def run_rtl(v: Vectors, workdir: Path, cells_sim: Path | None = None) -> RtlOutput:
    """Compile the testbench for ``v.config`` and clock all vectors through it (one vvp run)."""
    cfg = v.config
    if cfg.family is not Family.E1 or not cfg.preg:
        raise ValueError("the RTL oracle is yosys' DSP48E1 with PREG=1")
    cells_sim = cells_sim or find_cells_sim()
    workdir = Path(workdir)
    vec_path, out_path, vvp_path = (workdir / f"{v.name}.{e}" for e in ("vec", "out", "vvp"))
    cols = [v.flat(f) for f in _FIELDS]
    lines = (" ".join(format(int(x), "x") for x in row) for row in zip(*cols, strict=True))
    vec_path.write_text("\n".join(lines) + "\n")
    params = {
        "USE_SIMD": f'"{cfg.simd.name}"',
        "USE_DPORT": '"TRUE"' if cfg.use_preadder else '"FALSE"',
        "USE_MULT": '"MULTIPLY"' if cfg.use_mult else '"NONE"',
        "PATTERN": f"48'h{cfg.pattern:012x}",
        "MASK": f"48'h{cfg.mask:012x}",
    }
    t0 = time.perf_counter()
    subprocess.run(
        [
            "iverilog",
            "-g2012",
            "-s",
            "tb",
            "-o",
            str(vvp_path),
            *(f"-Ptb.{k}={val}" for k, val in params.items()),
            str(TESTBENCH),
            str(cells_sim),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    t1 = time.perf_counter()
    sim = subprocess.run(
        ["vvp", "-n", str(vvp_path), f"+vec={vec_path}", f"+out={out_path}", f"+n={v.n}"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    t2 = time.perf_counter()
    if sim.returncode != 0:
        raise RuntimeError(f"vvp failed ({sim.returncode}): {sim.stdout[-2000:]}")
    rows = [line.split() for line in out_path.read_text().splitlines()]
    if len(rows) != v.n:
        raise RuntimeError(f"RTL wrote {len(rows)} results for {v.n} vectors")

    def known(tok: str, base: int) -> int:
        return -1 if any(ch in "xXzZ" for ch in tok) else int(tok, base)

    co = [r[1].lower() for r in rows]
    return RtlOutput(
        p=np.array([known(r[0], 16) for r in rows], dtype=np.int64),
        carryout=np.array([int(s.replace("x", "0").replace("z", "0"), 2) for s in co]),
        carryout_known=np.array(
            [int("".join("0" if ch in "xz" else "1" for ch in s), 2) for s in co]
        ),
        patterndetect=np.array([known(r[2], 2) for r in rows]),
        patternbdetect=np.array([known(r[3], 2) for r in rows]),
        compile_s=t1 - t0,
        sim_s=t2 - t1,
    )


def model(v: Vectors) -> dict[str, np.ndarray]:
    """The slice model's outputs for ``v``, flattened to RTL (chain-major) order."""
    r = run_chain(v.config, **v.ports)
    return {
        "p": r.p.T.reshape(-1) & P_MASK,
        "carryout": r.carryout.T.reshape(-1),
        "carryout_valid": r.carryout_valid.T.reshape(-1),
        "patterndetect": r.patterndetect.T.reshape(-1).astype(np.int64),
        "patternbdetect": r.patternbdetect.T.reshape(-1).astype(np.int64),
    }


def compare(v: Vectors, rtl: RtlOutput, ref: dict[str, np.ndarray] | None = None) -> Report:
    """Bit-for-bit comparison of RTL output with the model (``ref`` defaults to model(v))."""
    ref = model(v) if ref is None else ref
    rep = Report(v.name, v.n, compile_s=rtl.compile_s, sim_s=rtl.sim_s)
    bad_p = rtl.p != ref["p"]
    valid = ref["carryout_valid"]
    bad_c = (rtl.carryout_known != valid) | ((rtl.carryout ^ ref["carryout"]) & valid != 0)
    bad_pat = (rtl.patterndetect != ref["patterndetect"]) | (
        rtl.patternbdetect != ref["patternbdetect"]
    )
    rep.p_mismatches = int(bad_p.sum())
    rep.carry_mismatches = int(bad_c.sum())
    rep.carry_bits_compared = int(sum(bin(x).count("1") for x in valid.tolist()))
    rep.pattern_mismatches = int(bad_pat.sum())
    for i in np.flatnonzero(bad_p | bad_c | bad_pat)[:5].tolist():
        ctl = {f: int(v.flat(f)[i]) for f in _FIELDS}
        rep.examples.append(
            f"#{i} {ctl}: rtl P={rtl.p[i]:x} CO={rtl.carryout[i]:04b}/{rtl.carryout_known[i]:04b}"
            f" model P={ref['p'][i]:x} CO={ref['carryout'][i]:04b}/{valid[i]:04b}"
        )
    return rep


def check(v: Vectors, workdir: Path | None = None) -> Report:
    """Run ``v`` on the RTL and compare (temporary work folder unless ``workdir``)."""
    if workdir is not None:
        return compare(v, run_rtl(v, workdir))
    with tempfile.TemporaryDirectory(prefix="hwbed-rtl-") as tmp:
        return compare(v, run_rtl(v, Path(tmp)))


# ---------------------------------------------------------------------------------------
# Stimulus.  Values mix uniform bit patterns, port extremes and small (int8/int16) numbers;
# controls are drawn per element and redrawn until legal; cycle 0 of a chain never reads P.


def _reads_p(opm: int, cis: int) -> bool:
    z = opm >> 4 & 7
    return (
        opm & 3 == XSel.P
        or z in (ZSel.P, ZSel.P_MACC, ZSel.P_SHR17)
        or opm >> 7 & 3 == 1
        or cis in (0b101, 0b111)
    )


@functools.cache
def _legal(config: SliceConfig, opm: int, alu: int, inm: int, cis: int) -> bool:
    try:
        check_control(config, opm, alu, inm, cis)
    except ValueError:
        return False
    return True


def _controls(
    rng: np.random.Generator,
    config: SliceConfig,
    shape: tuple[int, int],
    choices: dict[str, list[int]],
) -> dict[str, np.ndarray]:
    """Draw OPMODE/ALUMODE/INMODE/CARRYINSEL (uniform over ``choices``) until legal."""
    out = {k: rng.choice(np.array(v), size=shape) for k, v in choices.items()}
    for _ in range(1000):
        bad = np.zeros(shape, dtype=bool)
        for idx in np.ndindex(shape):
            o, a, i, c = (int(out[k][idx]) for k in ("opmode", "alumode", "inmode", "carryinsel"))
            bad[idx] = not _legal(config, o, a, i, c) or (idx[0] == 0 and _reads_p(o, c))
        if not bad.any():
            return out
        for k, v in choices.items():
            out[k][bad] = rng.choice(np.array(v), size=int(bad.sum()))
    raise RuntimeError("could not draw legal controls")


def _values(rng: np.random.Generator, shape, width: int, specials: list[int] = ()) -> np.ndarray:
    """Bit patterns of a ``width``-bit port: uniform, extremes, int8, int16 (equal odds)."""
    m = (1 << width) - 1
    ext = [0, 1, m, 1 << (width - 1), (1 << (width - 1)) - 1, *specials]
    pools = [
        rng.integers(0, 1 << width, size=shape, dtype=np.int64),
        rng.choice(np.array(ext, dtype=np.int64) & m, size=shape),
        rng.integers(-128, 128, size=shape, dtype=np.int64) & m,
        rng.integers(-32768, 32768, size=shape, dtype=np.int64) & m,
    ]
    kind = rng.integers(0, len(pools), size=shape)
    return np.choose(kind, pools)


def _lanes(rng: np.random.Generator, shape) -> np.ndarray:
    """48-bit patterns built from 12-bit fields that favour carries across lane edges."""
    specials = np.array([0, 1, 0x7FF, 0x800, 0xFFE, 0xFFF], dtype=np.int64)
    out = np.zeros(shape, dtype=np.int64)
    for k in range(4):
        field_ = np.where(
            rng.random(shape) < 0.5,
            rng.choice(specials, size=shape),
            rng.integers(0, 1 << 12, size=shape),
        )
        out |= field_ << (12 * k)
    return out


def case_mac(rng: np.random.Generator, n: int) -> Vectors:
    """A[24:0]*B with C/PCIN/P/shifted Z, all arithmetic ALUMODEs and carry-ins; 40% of the
    chains start next to a 48-bit limit and accumulate worst-case products, so P wraps."""
    cfg = SliceConfig(Family.E1)
    shape = (CHAIN_LENGTH, -(-n // CHAIN_LENGTH))
    mm = (XSel.M, YSel.M)
    choices = {
        "opmode": [opmode(*mm, z) for z in ZSel if z != ZSel.P_MACC]
        + [opmode(*mm, ZSel.P)] * 6
        + [opmode(XSel.AB, YSel.C, ZSel.P), opmode(XSel.P, YSel.ZERO, ZSel.C)],
        "alumode": [0b0000] * 4 + [0b0011] * 2 + [0b0001, 0b0010],
        "inmode": [0b00000] * 5 + [0b00010],
        "carryinsel": [0b000] * 4 + [0b001, 0b010, 0b011, 0b101, 0b110, 0b111],
    }
    ports = _controls(rng, cfg, shape, choices)
    ports.update(
        a=_values(rng, shape, 30, [1 << 24, (1 << 24) - 1, (1 << 30) - (1 << 24)]),
        b=_values(rng, shape, 18),
        c=_values(rng, shape, 48),
        d=np.zeros(shape, int),
        pcin=_values(rng, shape, 48),
        carryin=rng.integers(0, 2, shape),
        carrycascin=rng.integers(0, 2, shape),
    )
    worst = rng.random(shape[1]) < 0.4
    k = int(worst.sum())
    a_w = rng.choice([-(1 << 24), (1 << 24) - 1], size=k)
    b_w = rng.choice([-(1 << 17), (1 << 17) - 1], size=k)
    alu_w = rng.choice([AluMode.ADD, AluMode.SUB], size=k)
    up = (a_w * b_w > 0) == (alu_w == AluMode.ADD)  # direction of the accumulation
    ports["opmode"][:, worst] = opmode(*mm, ZSel.P)
    ports["opmode"][0, worst] = opmode(*mm, ZSel.C)
    ports["c"][0, worst] = np.where(up, (1 << 47) - (1 << 43), (1 << 47) + (1 << 43))
    ports["alumode"][:, worst] = alu_w
    ports["inmode"][:, worst] = 0
    ports["carryinsel"][:, worst] = 0
    ports["a"][:, worst] = a_w & ((1 << 30) - 1)
    ports["b"][:, worst] = b_w & ((1 << 18) - 1)
    return Vectors("mac", cfg, ports)


def case_preadd(rng: np.random.Generator, n: int) -> Vectors:
    """USE_DPORT: every legal INMODE (D+A, D-A, D, -A, A, 0) with wrapping pre-adder sums;
    40% of the chains are WP486 INT8-packed MACs (A = a << 17, D = b, B = c)."""
    cfg = SliceConfig(Family.E1, use_preadder=True)
    shape = (CHAIN_LENGTH, -(-n // CHAIN_LENGTH))
    mm = (XSel.M, YSel.M)
    choices = {
        "opmode": [opmode(*mm, ZSel.ZERO), opmode(*mm, ZSel.C)] + [opmode(*mm, ZSel.P)] * 4,
        "alumode": [0b0000] * 3 + [0b0011],
        "inmode": [0b00000, 0b00010, 0b00100, 0b00110, 0b01000, 0b01010, 0b01100, 0b01110],
        "carryinsel": [0b000] * 3 + [0b110],
    }
    ports = _controls(rng, cfg, shape, choices)
    ports.update(
        a=_values(rng, shape, 30, [1 << 24, (1 << 24) - 1]),
        b=_values(rng, shape, 18),
        c=_values(rng, shape, 48),
        d=_values(rng, shape, 25),
        pcin=np.zeros(shape, int),
        carryin=rng.integers(0, 2, shape),
        carrycascin=np.zeros(shape, int),
    )
    packed = rng.random(shape[1]) < 0.4
    k = int(packed.sum())
    int8 = functools.partial(rng.integers, -128, 128, size=(shape[0], k))
    ports["a"][:, packed] = (int8() << 17) & ((1 << 30) - 1)
    ports["d"][:, packed] = int8() & ((1 << 25) - 1)
    ports["b"][:, packed] = int8() & ((1 << 18) - 1)
    ports["opmode"][:, packed] = opmode(*mm, ZSel.P)
    ports["opmode"][0, packed] = opmode(*mm, ZSel.ZERO)
    ports["alumode"][:, packed] = 0
    ports["inmode"][:, packed] = INMODE_D_PLUS_A
    ports["carryinsel"][:, packed] = 0
    ports["carryin"][:, packed] = 0
    return Vectors("preadd", cfg, ports)


def case_logic(rng: np.random.Generator, n: int) -> Vectors:
    """All eight logic ALUMODEs with Y = 0 and Y = ones over X in {0, P, A:B} and every Z;
    PATTERN = ones, MASK = 0 flags all-ones results (XNOR of equal words)."""
    cfg = SliceConfig(Family.E1, use_mult=False, pattern=P_MASK, mask=0)
    shape = (CHAIN_LENGTH, -(-n // CHAIN_LENGTH))
    xs = [XSel.ZERO, XSel.P, XSel.AB, XSel.AB]
    zs = [z for z in ZSel if z != ZSel.P_MACC] + [ZSel.C] * 3
    choices = {
        "opmode": [opmode(x, y, z) for x in xs for y in (YSel.ZERO, YSel.ONES) for z in zs],
        "alumode": [0b0100, 0b0101, 0b0110, 0b0111, 0b1100, 0b1101, 0b1110, 0b1111],
        "inmode": [0],
        "carryinsel": [0b000],
    }
    ports = _controls(rng, cfg, shape, choices)
    ports.update(
        a=_values(rng, shape, 30),
        b=_values(rng, shape, 18),
        c=_values(rng, shape, 48),
        d=np.zeros(shape, int),
        pcin=_values(rng, shape, 48),
        carryin=rng.integers(0, 2, shape),
        carrycascin=np.zeros(shape, int),
    )
    ab = ports["a"] << 18 | ports["b"]
    r = rng.random(shape)
    ports["c"] = np.select([r < 0.2, r < 0.3], [ab, ab ^ P_MASK], ports["c"])
    return Vectors("logic", cfg, ports)


def _case_simd(name: str, simd: Simd, rng: np.random.Generator, n: int) -> Vectors:
    cfg = SliceConfig(Family.E1, simd=simd, use_mult=False, use_preadder=False)
    shape = (CHAIN_LENGTH, -(-n // CHAIN_LENGTH))
    ops = [
        opmode(x, y, z)
        for x in (XSel.ZERO, XSel.P, XSel.AB)
        for y in (YSel.ZERO, YSel.ONES, YSel.C)
        for z in ZSel
        if z != ZSel.P_MACC
    ]
    hot = [opmode(XSel.AB, YSel.ZERO, ZSel.C), opmode(XSel.AB, YSel.ZERO, ZSel.P)]
    choices = {
        "opmode": ops + hot * 12 + [opmode(XSel.ZERO, YSel.ONES, ZSel.P_MACC)] * 2,
        "alumode": [0b0000] * 3 + [0b0011] * 3 + [0b0001, 0b0010, 0b0101, 0b1100],
        "inmode": [0],
        "carryinsel": [0b000] * 4 + [0b001, 0b010, 0b011, 0b101, 0b111],
    }
    ports = _controls(rng, cfg, shape, choices)
    ab, c, pcin = _lanes(rng, shape), _lanes(rng, shape), _lanes(rng, shape)
    ports.update(
        a=ab >> 18,
        b=ab & ((1 << 18) - 1),
        c=c,
        d=np.zeros(shape, int),
        pcin=pcin,
        carryin=rng.integers(0, 2, shape),
        carrycascin=rng.integers(0, 2, shape),
    )
    return Vectors(name, cfg, ports)


def case_rng(name: str, seed: int = 0) -> np.random.Generator:
    """The seeded generator for case ``name``."""
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


CASES: dict[str, Callable[[np.random.Generator, int], Vectors]] = {
    "mac": case_mac,
    "preadd": case_preadd,
    "logic": case_logic,
    "four12": functools.partial(_case_simd, "four12", Simd.FOUR12),
    "two24": functools.partial(_case_simd, "two24", Simd.TWO24),
    "one48": functools.partial(_case_simd, "one48", Simd.ONE48),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cases", nargs="*", help=f"subset of {', '.join(CASES)} (default all)")
    parser.add_argument("--vectors", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    unknown = set(args.cases) - set(CASES)
    if unknown:
        parser.error(f"unknown cases: {sorted(unknown)}")
    reason = missing_tools()
    if reason:
        print(reason)
        return 2
    ok = True
    for name in args.cases or CASES:
        rep = check(CASES[name](case_rng(name, args.seed), args.vectors))
        print(rep, *rep.examples, sep="\n  ")
        ok &= rep.ok
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
