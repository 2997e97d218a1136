"""Map the nodes of an integer dataflow graph onto DSP48 slices: kind, counts, cycles, headroom.

Rules (``docs/sim.md``, section "Layer mapping"):

* Binary MVAU (``attrs['binary']``: +/-1 weights, BIPOLAR or TERNARY inputs): 48 XNORs per
  slice op on the logic unit (X = A:B activations, Z = C weights, ALUMODE 0101); the valid-tap
  mask of TERNARY zero padding, the popcount and ``2*popcount - K_valid`` are LUT logic.
* ABC MVAU (``attrs['abc'] = [M, N]``): M*N binary dot products of the weight bases against
  the activation bases on the logic unit, combined by a multiplier chain sum_mn coeffs*d_mn.
* Multi-bit MVAU: a MAC chain P <- P + A*B per output, weights on A and activations on B
  (swapped when only that fits); operands wider than the ports are refused.  With
  ``pack_int8``, operands of at most 8 bits use WP486 packing (two output channels share the
  activation on B), chains cut at ``Int8Packing.max_depth`` and drained into fabric.
* AddStreams: SIMD adds, lanes as narrow as the output type allows (FOUR12 / TWO24 / ONE48).
* Thresholding (also embedded in MVAUs), max pools: comparators in LUTs, counted.  The graph
  has no fixed-point requantization (A*B+C with rounding); it uses thresholds instead.
* Everything else (padding, windows, down-sampling, concat, pools, float Affine) is fabric;
  ``Flatten`` (a relabelling of the stream) uses nothing.

Each op registers its entry in :data:`DSP`; an op without one is an error, never "fabric".

A P-accumulating node whose proven bound (``acc_min``/``acc_max``) needs more than 48 bits is
refused with a :class:`MappingError` naming the node.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from hwbed.ir.backend import Backend
from hwbed.ir.graph import Graph, Node
from hwbed.ir.ops.mvau import acc_range
from hwbed.ir.types import BIPOLAR, TERNARY, GraphError, IntType
from hwbed.sim.dsp48 import P_BITS, Family, OpCount, Simd
from hwbed.sim.packing import Int8Packing

LOGIC_WIDTH = 48
"""Bits per logic-unit operation (X = A:B and Z = C are 48 bits wide)."""

B_BITS = 18
"""Width of the signed B port."""


class MappingError(GraphError):
    """A node that cannot be mapped exactly onto the slice family."""


@dataclass(frozen=True)
class MvauPlan:
    """How one MVAU runs on slices.

    kind: ``xnor``, ``abc``, ``mac`` or ``packed_int8``.  vectors: numInputVectors (positions
    per image).  act_range / weight_range: operand ranges (inclusive).  swap: MAC with the
    activations on A and the weights on B.  packing: the WP486 packing of ``packed_int8``.
    m, n, taps: ABC weight bases, activation bases and binary dot length; chain_bound: the
    largest |partial sum| of its coefficient chain, sum |coeffs| * taps.  note: why a
    cheaper mapping was not taken.
    """

    kind: str
    mw: int
    mh: int
    vectors: int
    act_range: tuple[int, int]
    weight_range: tuple[int, int]
    acc_min: int
    acc_max: int
    swap: bool = False
    packing: Int8Packing | None = None
    m: int = 0
    n: int = 0
    taps: int = 0
    chain_bound: int = 0
    note: str = ""

    @property
    def acc_bits(self) -> int:
        """Signed bits of the proven accumulator range."""
        return _signed_bits(self.acc_min, self.acc_max)

    @property
    def words(self) -> int:
        """48-bit logic words per binary dot product."""
        return math.ceil((self.taps if self.kind == "abc" else self.mw) / LOGIC_WIDTH)

    @property
    def chains(self) -> int:
        """Packed chains per output pair and vector (drains into fabric)."""
        return math.ceil(self.mw / self.packing.max_depth) if self.packing else 0

    @property
    def p_bits_used(self) -> int | None:
        """Bits of P the worst case occupies; None where P is not an accumulator (xnor).

        A MAC chain's partial sums stay within the proven range, as every tap's range
        contains 0; an ABC chain's partial sums are bounded by ``chain_bound``.
        """
        if self.kind == "mac":
            return self.acc_bits
        if self.kind == "abc":
            return _signed_bits(-self.chain_bound, self.chain_bound)
        if self.kind == "packed_int8":
            pk = self.packing
            whole = [
                (a * (1 << pk.shift) + b) * c
                for a in pk.a_range
                for b in pk.b_range
                for c in pk.c_range
            ]
            k = min(pk.max_depth, self.mw)
            return _signed_bits(k * min(whole), k * max(whole))
        return None

    def ops(self) -> OpCount:
        """Slice operations per image."""
        v, mh, mw = self.vectors, self.mh, self.mw
        if self.kind == "xnor":
            return OpCount(logic=mh * self.words * v)
        if self.kind == "abc":
            dots = self.m * self.n * mh * v
            return OpCount(logic=dots * self.words, mac=dots)
        if self.kind == "packed_int8":
            return OpCount(packed_int8=math.ceil(mh / 2) * mw * v)
        return OpCount(mac=mh * mw * v)


def _signed_bits(lo: int, hi: int) -> int:
    """Bits of the narrowest signed type holding [lo, hi]."""
    return IntType.fitting(min(lo, -1), hi).bits


def _range(dtype: IntType, where: str) -> tuple[int, int]:
    if dtype.kind == "float":
        raise MappingError(f"node {where}: float input cannot be mapped onto DSP slices")
    return dtype.min, dtype.max


def _fits(rng: tuple[int, int], bits: int) -> bool:
    return -(1 << (bits - 1)) <= rng[0] and rng[1] < 1 << (bits - 1)


def _vectors(graph: Graph, node: Node) -> int:
    return math.prod(graph.tensors[node.inputs[0]].shape[:-1])


def abc_binary_weights(node: Node) -> np.ndarray:
    """ABC weight bases as binary MVAU weights ``[M, MH, k*k*cin]`` in (kh, kw, c) order.

    Raises MappingError unless sum_m coeffs[m, n] * bases[m] reproduces ``weights`` over the
    (kh, kw, n, c) window order.
    """
    bases, coeffs = node.params["bases"].astype(np.int64), node.params["coeffs"]
    m, cout, cin, k, _ = bases.shape
    if coeffs.shape != tuple(node.attrs["abc"]) or coeffs.shape[0] != m:
        raise MappingError(
            f"node {node.name}: coeffs {coeffs.shape} do not match abc "
            f"{node.attrs['abc']} and bases {bases.shape}"
        )
    if not np.isin(bases, (-1, 1)).all():
        raise MappingError(f"node {node.name}: ABC weight bases are not all +/-1")
    w = np.einsum("mn,mocij->oijnc", coeffs, bases).reshape(cout, -1)
    if not np.array_equal(w, node.params["weights"]):
        raise MappingError(f"node {node.name}: sum_m coeffs*bases does not reproduce the weights")
    return bases.transpose(0, 1, 3, 4, 2).reshape(m, cout, k * k * cin)


def plan_mvau(graph: Graph, node: Node, family: Family, pack_int8: bool = True) -> MvauPlan:
    """Choose the slice mapping of one MVAU; MappingError when it cannot be exact."""
    a, w = node.attrs, node.params["weights"]
    in_type = graph.tensors[node.inputs[0]].dtype
    act = _range(in_type, node.name)
    wr = (min(int(w.min()), 0), max(int(w.max()), 0))
    if "acc_min" in a:
        lo, hi = int(a["acc_min"]), int(a["acc_max"])
    else:
        rows_lo, rows_hi = acc_range(w, *act)
        lo, hi = int(rows_lo.min()), int(rows_hi.max())
    base = dict(
        mw=int(a["MW"]),
        mh=int(a["MH"]),
        vectors=_vectors(graph, node),
        act_range=act,
        weight_range=wr,
        acc_min=lo,
        acc_max=hi,
    )
    amult = family.amult_bits
    if a.get("binary"):
        if in_type not in (BIPOLAR, TERNARY) or not np.isin(w, (-1, 1)).all():
            raise MappingError(
                f"node {node.name}: marked binary but its weights are not +/-1 "
                f"or its input {in_type} is not BIPOLAR/TERNARY"
            )
        return MvauPlan("xnor", **base)
    if "abc" in a:
        if in_type not in (BIPOLAR, TERNARY):
            raise MappingError(f"node {node.name}: ABC input {in_type} is not BIPOLAR/TERNARY")
        bw = abc_binary_weights(node)
        coeffs = node.params["coeffs"]
        crange = (int(coeffs.min()), int(coeffs.max()))
        taps = bw.shape[2]
        plan = MvauPlan(
            "abc",
            **base,
            m=bw.shape[0],
            n=int(a["abc"][1]),
            taps=taps,
            chain_bound=int(np.abs(coeffs).sum()) * taps,
        )
        if not _fits(crange, amult) or not _fits((-taps, taps), B_BITS):
            raise MappingError(
                f"node {node.name}: ABC coefficients {list(crange)} or dot range "
                f"+/-{taps} exceed the A ({amult}-bit) / B (18-bit) ports"
            )
        return _checked(plan, node)
    note = ""
    if pack_int8:
        if (_fits(act, 8) or (act[0] >= 0 and act[1] <= 255)) and _fits(wr, 8):
            try:
                pk = Int8Packing(family, a_range=wr, b_range=wr, c_range=act)
                return MvauPlan("packed_int8", **base, packing=pk)
            except ValueError as err:
                note = f"INT8 packing refused: {err}"
        else:
            note = "operands wider than 8 bits: no INT8 packing"
    if _fits(act, B_BITS) and _fits(wr, amult):
        return _checked(MvauPlan("mac", **base, note=note), node)
    if _fits(act, amult) and _fits(wr, B_BITS):
        return _checked(MvauPlan("mac", **base, swap=True, note=note), node)
    raise MappingError(
        f"node {node.name}: activations {list(act)} and weights {list(wr)} do not "
        f"fit the {amult}x18 multiplier either way; wide-operand splitting is "
        "not implemented"
    )


def _checked(plan: MvauPlan, node: Node) -> MvauPlan:
    if plan.p_bits_used > P_BITS:
        raise MappingError(
            f"node {node.name}: the {plan.kind} chain needs {plan.p_bits_used} bits of P "
            f"(proven accumulator range {plan.acc_min}..{plan.acc_max}), more than the "
            f"{P_BITS}-bit P register; split the reduction"
        )
    return plan


def add_range(graph: Graph, node: Node) -> tuple[int, int]:
    """Proven range of an AddStreams sum, from its input types."""
    lo, hi = zip(*(_range(graph.tensors[t].dtype, node.name) for t in node.inputs), strict=True)
    return sum(lo), sum(hi)


def add_simd(graph: Graph, node: Node) -> Simd:
    """Narrowest SIMD mode whose signed lanes hold the proven AddStreams range."""
    rng = add_range(graph, node)
    for simd in (Simd.FOUR12, Simd.TWO24, Simd.ONE48):
        if _fits(rng, simd.width):
            return simd
    raise MappingError(f"node {node.name}: AddStreams range {list(rng)} does not fit 48 bits")


def _fold(node: Node, folding: dict | None, dims: dict[str, int]) -> dict[str, int]:
    """PE/SIMD from ``folding[node]`` or the node's attrs (default 1), checked to divide."""
    given = {**node.attrs, **(folding or {}).get(node.name, {})}
    out = {}
    for key, dim in dims.items():
        val = int(given.get(key, 1))
        if val < 1 or dim % val:
            raise MappingError(f"node {node.name}: {key}={val} does not divide {dim}")
        out[key] = val
    return out


def _thresholds_compares(node: Node, vectors: int, channels: int) -> int:
    thr = node.params.get("thresholds")
    return 0 if thr is None else vectors * channels * thr.shape[1]


def _entry(op: str, kind: str, **kw) -> dict:
    entry = {
        "op": op,
        "kind": kind,
        "PE": None,
        "SIMD": None,
        "ops": asdict(OpCount()),
        "slices": 0,
        "cycles": None,
        "dsp_cycles": None,
        "acc_bits": None,
        "p_bits_used": None,
        "headroom_bits": None,
        "lut": {"popcount_bits": 0, "compare": 0, "add": 0},
        "packing": None,
        "note": "",
    }
    entry.update(kw)
    entry["ops"]["total"] = sum(entry["ops"].values())
    return entry


@dataclass(frozen=True)
class _Target:
    """What a node is mapped onto: its graph, the slice family, the folding, INT8 packing."""

    graph: Graph
    family: Family
    folding: dict | None
    pack_int8: bool

    def dims(self, node: Node) -> tuple[int, int]:
        """Channels (last axis) and vectors (positions) of the node's first input."""
        shape = self.graph.tensors[node.inputs[0]].shape
        return shape[-1], math.prod(shape[:-1])


DSP: Backend[Callable[[_Target, Node], dict]] = Backend("dsp")
"""Op -> its :func:`dsp_report` entry; an op without one is an error naming it."""


@DSP.register("MVAU")
def _mvau_entry(t: _Target, node: Node) -> dict:
    plan = plan_mvau(t.graph, node, t.family, t.pack_int8)
    f = _fold(node, t.folding, {"PE": plan.mh, "SIMD": plan.mw})
    pe, simd = f["PE"], f["SIMD"]
    ops = plan.ops()
    logic_slices = pe * math.ceil(simd / LOGIC_WIDTH)
    if plan.kind == "xnor":
        slices = {"logic": logic_slices}
    elif plan.kind == "abc":
        slices = {"logic": plan.m * logic_slices, "mac": pe}
    elif plan.kind == "packed_int8":
        slices = {"packed_int8": math.ceil(pe / 2) * simd}
    else:
        slices = {"mac": pe * simd}
    lut = {
        "popcount_bits": 0,
        "compare": _thresholds_compares(node, plan.vectors, plan.mh),
        "add": 0,
    }
    if plan.kind in ("xnor", "abc"):
        lut["popcount_bits"] = (
            (plan.m * plan.n * plan.taps if plan.kind == "abc" else plan.mw)
            * plan.mh
            * plan.vectors
        )
    packing = None
    if plan.packing is not None:
        packing = {
            "shift": plan.packing.shift,
            "max_depth": plan.packing.max_depth,
            "chains": plan.chains,
        }
        lut["add"] = 2 * math.ceil(plan.mh / 2) * plan.chains * plan.vectors
    used = plan.p_bits_used
    return _entry(
        "MVAU",
        plan.kind,
        PE=pe,
        SIMD=simd,
        ops=asdict(ops),
        slices=sum(slices.values()),
        cycles=plan.mw // simd * (plan.mh // pe) * plan.vectors,
        dsp_cycles=max(math.ceil(getattr(ops, k) / s) for k, s in slices.items()),
        acc_bits=plan.acc_bits,
        p_bits_used=used,
        headroom_bits=None if used is None else P_BITS - used,
        lut=lut,
        packing=packing,
        note=plan.note,
    )


@DSP.register("AddStreams")
def _add_streams(t: _Target, node: Node) -> dict:
    channels, vectors = t.dims(node)
    simd = add_simd(t.graph, node)
    pe = _fold(node, t.folding, {"PE": channels})["PE"]
    used = _signed_bits(*add_range(t.graph, node))
    ops = OpCount(add=math.ceil(channels / simd.lanes) * vectors)
    slices = math.ceil(pe / simd.lanes)
    return _entry(
        "AddStreams",
        f"simd_add_{simd.name}",
        PE=pe,
        ops=asdict(ops),
        slices=slices,
        cycles=channels // pe * vectors,
        dsp_cycles=math.ceil(ops.add / slices),
        p_bits_used=used,
        headroom_bits=simd.width - used,
        note=f"{simd.lanes} lanes of {simd.width} bits per slice",
    )


@DSP.register("Thresholding")
def _thresholding(t: _Target, node: Node) -> dict:
    channels, vectors = t.dims(node)
    pe = _fold(node, t.folding, {"PE": channels})["PE"]
    return _entry(
        "Thresholding",
        "lut_compare",
        PE=pe,
        cycles=channels // pe * vectors,
        lut={
            "popcount_bits": 0,
            "compare": _thresholds_compares(node, vectors, channels),
            "add": 0,
        },
    )


@DSP.register("StreamingMaxPool", "Pool")
def _max_pool(t: _Target, node: Node) -> dict:
    """k*k - 1 compares per output value."""
    out = t.graph.tensors[node.outputs[0]].shape
    k = node.attrs["kernel"]
    compare = math.prod(out) * (k * k - 1)
    return _entry(node.op, "lut_compare", lut={"popcount_bits": 0, "compare": compare, "add": 0})


@DSP.register("GlobalAccPool")
def _global_acc_pool(t: _Target, node: Node) -> dict:
    channels, vectors = t.dims(node)
    lut = {"popcount_bits": 0, "compare": 0, "add": vectors * channels}
    return _entry(node.op, "fabric_add", lut=lut)


@DSP.register("Affine")
def _affine(t: _Target, node: Node) -> dict:
    return _entry(node.op, "float", note="float32 logits, not on slices")


@DSP.register(
    "FMPadding",
    "ConvolutionInputGenerator",
    "DownSampler",
    "ChannelPad",
    "StreamingConcat",
    "LabelSelect",
)
def _fabric(t: _Target, node: Node) -> dict:
    return _entry(node.op, "fabric")


@DSP.register("Flatten")
def _flatten(t: _Target, node: Node) -> dict:
    return _entry(node.op, "relabel", note="the same stream read flat: no slices, no logic")


def dsp_report(
    graph: Graph, family: Family = Family.E1, folding: dict | None = None, pack_int8: bool = True
) -> dict[str, dict]:
    """Per-node slice mapping of ``graph`` (analysis pass: pure, returns a dict by node name).

    Each entry: op, kind, PE, SIMD, ops (OpCount fields and total, per image), slices
    (instantiated under the folding), cycles (FINN's expected cycles per image), dsp_cycles
    (per-kind slice ops / slices, the slowest kind), acc_bits, p_bits_used and
    headroom_bits (48 - p_bits_used; None where P does not accumulate), lut (popcount_bits,
    compare, add: fabric work per image), packing (shift, max_depth, chains) and note.
    ``folding`` maps node names to {"PE": .., "SIMD": ..}; otherwise node attrs, default 1.
    Raises MappingError for nodes that cannot be mapped exactly, GraphError for an op
    without a :data:`DSP` entry.
    """
    target = _Target(graph, family, folding, pack_int8)
    return {node.name: DSP.entry(node)(target, node) for node in graph.nodes}


def report_totals(report: dict[str, dict]) -> dict:
    """Sums over a :func:`dsp_report`: ops by kind, slices, LUT work, the bottleneck node
    (largest cycles) and the smallest P headroom."""
    ops = {k: sum(e["ops"][k] for e in report.values()) for k in (*asdict(OpCount()), "total")}
    lut = {
        k: sum(e["lut"][k] for e in report.values()) for k in ("popcount_bits", "compare", "add")
    }
    timed = {name: e["cycles"] for name, e in report.items() if e["cycles"] is not None}
    heads = {
        name: e["headroom_bits"] for name, e in report.items() if e["headroom_bits"] is not None
    }
    bottleneck = max(timed, key=timed.get) if timed else None
    tightest = min(heads, key=heads.get) if heads else None
    return {
        "ops": ops,
        "slices": sum(e["slices"] for e in report.values()),
        "lut": lut,
        "bottleneck": bottleneck,
        "bottleneck_cycles": timed.get(bottleneck),
        "min_headroom_node": tightest,
        "min_headroom_bits": heads.get(tightest),
    }


def format_report(report: dict[str, dict]) -> str:
    """A plain-text table of the DSP-mapped nodes of a :func:`dsp_report`."""
    head = (
        "node",
        "kind",
        "mac",
        "pk8",
        "logic",
        "add",
        "slices",
        "cycles",
        "dsp_cyc",
        "P bits",
        "headroom",
    )
    rows = [head]
    for name, e in report.items():
        if e["ops"]["total"] == 0:
            continue
        o = e["ops"]
        rows.append(
            (
                name,
                e["kind"],
                o["mac"],
                o["packed_int8"],
                o["logic"],
                o["add"],
                e["slices"],
                e["cycles"],
                e["dsp_cycles"],
                "-" if e["p_bits_used"] is None else e["p_bits_used"],
                "-" if e["headroom_bits"] is None else e["headroom_bits"],
            )
        )
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(head))]
    return "\n".join(
        "  ".join(
            str(v).rjust(w) if i > 1 else str(v).ljust(w)
            for i, (v, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in rows
    )
