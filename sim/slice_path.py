"""Slice-level executor: every MVAU and AddStreams pushed through the DSP48 slice model.

The reference path of the simulator: values go through :func:`hwbed.sim.dsp48.step` /
``run_chain`` (vectorised over batch x positions x channels) exactly as
:mod:`hwbed.sim.mapping` maps them.  The ops on slices register in :data:`SLICES`; LUT
and fabric nodes (thresholds, padding, windows, pools, concat, affine, flatten) take its
declared fallback, the reference semantics (:func:`hwbed.ir.reference.run_node`).  It must
agree with :func:`hwbed.ir.reference.execute` on every output bit.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from hwbed.ir.backend import Backend
from hwbed.ir.graph import Graph, Node
from hwbed.ir.reference import run_node, threshold
from hwbed.sim.dsp48 import (
    AluMode,
    Family,
    LogicOp,
    OpCount,
    SliceConfig,
    XSel,
    YSel,
    ZSel,
    logic_mode,
    opmode,
    run_chain,
    simd_lanes,
    step,
)
from hwbed.sim.mapping import (
    LOGIC_WIDTH,
    MappingError,
    MvauPlan,
    abc_binary_weights,
    add_simd,
    plan_mvau,
)

_XNOR_Y, _XNOR_ALUMODE = logic_mode(LogicOp.XNOR)
_XNOR_OPMODE = opmode(XSel.AB, _XNOR_Y, ZSel.C)  # P = XNOR(A:B, C)
_ADD_OPMODE = opmode(XSel.AB, YSel.ZERO, ZSel.C)  # P = C + A:B (per SIMD lane)
_MAC_FIRST = opmode(XSel.M, YSel.M, ZSel.ZERO)  # P = A*B (a chain starts)
_MAC_NEXT = opmode(XSel.M, YSel.M, ZSel.P)  # P = P + A*B
_CHUNK = 1 << 19
"""Elements (cycles x slices) per slice-model call, to bound memory."""


@dataclass
class _Run:
    """One slice-level execution: the graph, the slice family, INT8 packing, op counts."""

    graph: Graph
    family: Family
    pack_int8: bool
    counts: dict[str, OpCount] | None


def _reference(run: _Run, node: Node, ins: list[np.ndarray]) -> np.ndarray:
    """LUT and fabric nodes: the reference semantics."""
    return run_node(node, ins)


SLICES: Backend[Callable[[_Run, Node, list[np.ndarray]], np.ndarray]] = Backend(
    "slices", fallback=_reference, fallback_is="reference"
)
"""Op -> its execution on DSP48 slices; other ops run the reference semantics."""


def execute_slices(
    graph: Graph,
    pixels: np.ndarray,
    family: Family = Family.E1,
    *,
    pack_int8: bool = True,
    counts: dict[str, OpCount] | None = None,
) -> np.ndarray:
    """Run uint8 NHWC ``pixels`` through ``graph`` with MVAUs and AddStreams on slices.

    Returns the graph output (logits).  ``counts``, when given, receives the slice
    operations actually executed per node (for the whole batch).  Raises MappingError when
    a node cannot be mapped exactly or a value leaves its declared type.
    """
    graph.check_input(pixels)
    run = _Run(graph, family, pack_int8, counts)
    env = {graph.input: pixels.astype(np.int64)}
    for node in graph.nodes:
        env[node.outputs[0]] = SLICES.entry(node)(run, node, [env[t] for t in node.inputs])
    return env[graph.output]


def _on_slices(run: _Run, node: Node, ins: list[np.ndarray]) -> OpCount:
    """Check that the inputs hold their declared types (the slice bounds are proven from
    them); a fresh count of the node's slice operations."""
    for t, x in zip(node.inputs, ins, strict=True):
        _check_values(run.graph, node, t, x)
    count = OpCount()
    if run.counts is not None:
        run.counts[node.name] = count
    return count


def _check_values(graph: Graph, node: Node, tensor: str, x: np.ndarray) -> None:
    dtype = graph.tensors[tensor].dtype
    if x.size and (x.min() < dtype.min or x.max() > dtype.max):
        raise MappingError(
            f"node {node.name}: input {tensor} holds values outside its declared "
            f"type {dtype}; the proven slice bounds would not hold"
        )


@SLICES.register("MVAU")
def _mvau(run: _Run, node: Node, ins: list[np.ndarray]) -> np.ndarray:
    count = _on_slices(run, node, ins)
    family, x = run.family, ins[0]
    plan = plan_mvau(run.graph, node, family, run.pack_int8)
    rows = x.reshape(-1, plan.mw)
    w = node.params["weights"].astype(np.int64)
    if plan.kind == "xnor":
        acc = binary_dots(rows, w, family, count)
    elif plan.kind == "abc":
        acc = _abc(node, plan, rows, family, count)
    elif plan.kind == "packed_int8":
        acc = _packed(plan, rows, w, count)
    else:
        acc = mac_dots(rows, w, family, count, swap=plan.swap)
    acc = acc.reshape(*x.shape[:-1], plan.mh)
    if "thresholds" in node.params:
        a = node.attrs
        return threshold(acc, node.params["thresholds"], a["out_bias"], a["out_scale"])
    return acc


def _pack_bits(bits: np.ndarray) -> np.ndarray:
    """[..., K] bool -> [..., ceil(K/48)] int64 words; bit j of word i is element 48*i + j."""
    k = bits.shape[-1]
    words = math.ceil(k / LOGIC_WIDTH)
    padded = np.zeros((*bits.shape[:-1], words * LOGIC_WIDTH), dtype=np.int64)
    padded[..., :k] = bits
    lanes = padded.reshape(*bits.shape[:-1], words, LOGIC_WIDTH)
    return (lanes << np.arange(LOGIC_WIDTH, dtype=np.int64)).sum(axis=-1)


def binary_dots(x: np.ndarray, w: np.ndarray, family: Family, count: OpCount) -> np.ndarray:
    """x [R, K] in {-1, 0, +1} times w [H, K] in {-1, +1} -> [R, H] through 48-bit XNORs.

    A:B carries the activation signs, C the weight signs; the logic unit (ALUMODE 0101,
    Y = 0) gives agree bits, and fabric computes 2 * popcount(agree & valid) - K_valid.
    """
    cfg = SliceConfig(family, use_mult=False)
    xs, valid, ws = _pack_bits(x > 0), _pack_bits(x != 0), _pack_bits(w > 0)
    k_valid = np.bitwise_count(valid).sum(axis=-1, dtype=np.int64)
    out = np.empty((x.shape[0], w.shape[0]), dtype=np.int64)
    step_rows = max(1, _CHUNK // (w.shape[0] * xs.shape[1]))
    for lo in range(0, x.shape[0], step_rows):
        sl = slice(lo, lo + step_rows)
        ab = xs[sl, None, :]
        r = step(
            cfg,
            opmode=_XNOR_OPMODE,
            alumode=_XNOR_ALUMODE,
            a=ab >> 18,
            b=ab & 0x3FFFF,
            c=ws[None, :, :],
            counter=count,
        )
        agree = np.bitwise_count(r.p_bits & valid[sl, None, :]).sum(axis=-1, dtype=np.int64)
        out[sl] = 2 * agree - k_valid[sl, None]
    return out


def mac_dots(
    x: np.ndarray, w: np.ndarray, family: Family, count: OpCount, swap: bool = False
) -> np.ndarray:
    """x [R, K] times w [H, K] -> [R, H]: one MAC chain of K cycles per (row, output).

    Weights enter on A and activations on B (``swap``: the other way round); the chain
    starts with Z = 0 and accumulates with Z = P.
    """
    cfg = SliceConfig(family)
    k, h = w.shape[1], w.shape[0]
    opm = np.where(np.arange(k) == 0, _MAC_FIRST, _MAC_NEXT)[:, None, None]
    out = np.empty((x.shape[0], h), dtype=np.int64)
    step_rows = max(1, _CHUNK // (k * h))
    for lo in range(0, x.shape[0], step_rows):
        sl = slice(lo, lo + step_rows)
        a, b = w.T[:, None, :], x[sl].T[:, :, None]
        if swap:
            a, b = b, a
        res = run_chain(cfg, opmode=opm, a=a, b=b)
        _add_counts(count, res.count)
        out[sl] = res.p[-1]
    return out


def _add_counts(total: OpCount, more: OpCount) -> None:
    for key in ("mac", "packed_int8", "logic", "add"):
        setattr(total, key, getattr(total, key) + getattr(more, key))


def _packed(plan: MvauPlan, x: np.ndarray, w: np.ndarray, count: OpCount) -> np.ndarray:
    """WP486: output channels 2j+1 (shifted, A) and 2j (D) share the activation on B."""
    h = plan.mh
    wp = np.zeros((h + h % 2, plan.mw), dtype=np.int64)
    wp[:h] = w
    out = np.empty((x.shape[0], wp.shape[0]), dtype=np.int64)
    step_rows = max(1, _CHUNK // (plan.mw * wp.shape[0] // 2))
    a, b = wp[1::2].T[:, None, :], wp[0::2].T[:, None, :]
    for lo in range(0, x.shape[0], step_rows):
        sl = slice(lo, lo + step_rows)
        hi, low = plan.packing.dot_drained(a, b, x[sl].T[:, :, None], count)
        out[sl, 1::2], out[sl, 0::2] = hi, low
    return out[:, :h]


def _abc(node: Node, plan: MvauPlan, x: np.ndarray, family: Family, count: OpCount) -> np.ndarray:
    """sum_mn coeffs[m, n] * (bases[m] . x_n): M*N XNOR dots, then one MAC chain of M*N."""
    bw = abc_binary_weights(node)  # [M, H, k*k*cin]
    cin = node.params["bases"].shape[2]
    xn = x.reshape(x.shape[0], -1, plan.n, cin)  # (kh, kw) taps, activation base, channel
    dots = np.stack(
        [
            binary_dots(xn[:, :, n, :].reshape(x.shape[0], -1), bw[m], family, count)
            for m in range(plan.m)
            for n in range(plan.n)
        ]
    )  # [M*N, R, H]
    coeffs = node.params["coeffs"].astype(np.int64).reshape(-1, 1)
    return mac_dots(
        dots.transpose(1, 2, 0).reshape(-1, len(coeffs)), coeffs.T, family, count
    ).reshape(x.shape[0], plan.mh)


@SLICES.register("AddStreams")
def _add(run: _Run, node: Node, ins: list[np.ndarray]) -> np.ndarray:
    """AddStreams as SIMD adds: A:B and C each carry ``lanes`` channels, P = C + A:B."""
    if len(ins) != 2:
        raise MappingError(f"node {node.name}: AddStreams with {len(ins)} inputs, expected 2")
    count = _on_slices(run, node, ins)
    family, graph = run.family, run.graph
    simd = add_simd(graph, node)
    cfg = SliceConfig(family, simd=simd, use_mult=False)
    lanes, width = simd.lanes, simd.width
    channels = ins[0].shape[-1]
    groups = math.ceil(channels / lanes)
    shifts = np.arange(lanes, dtype=np.int64) * width

    def words(v: np.ndarray) -> np.ndarray:
        padded = np.zeros((v.size // channels, groups * lanes), dtype=np.int64)
        padded[:, :channels] = v.reshape(-1, channels)
        return ((padded.reshape(-1, groups, lanes) & ((1 << width) - 1)) << shifts).sum(axis=-1)

    ab, c = words(ins[0]), words(ins[1])
    r = step(
        cfg, opmode=_ADD_OPMODE, alumode=AluMode.ADD, a=ab >> 18, b=ab & 0x3FFFF, c=c, counter=count
    )
    out = simd_lanes(r.p, simd, signed=True).reshape(-1, groups * lanes)[:, :channels]
    return out.reshape(ins[0].shape)
