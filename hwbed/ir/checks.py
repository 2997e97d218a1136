"""Semantic checks of a graph: shapes, parameters, and every declared type against proven ranges.

:func:`check_graph` proves an integer range for every tensor by interval propagation from the
graph input, the uint8 pixels at the executable boundary, through each node's semantics
(``hwbed/ir/reference.py``); it trusts no declared type. Every declared width is then checked
against what it must hold: each tensor type and MVAU ``acc_type`` its proven range,
``inputDataType`` the proven input range, ``weightDataType`` the weights, and thresholds the
comparator domain. No type may be wider than :data:`MAX_BITS`. Each refusal is one
:class:`GraphError` line naming the node, the field, the declared type and the proven range.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hwbed.ir.graph import Graph, Node
from hwbed.ir.types import BIPOLAR, FLOAT32, TERNARY, GraphError, IntType

MAX_BITS = 32
"""The widest integer the hardware holds: accumulators, streams, weights."""

AFFINE_OPS = ("mul", "add", "sub", "div")
ARITY = {"AddStreams": 2}
"""Inputs per op (StreamingConcat: one or more; every other op: one)."""


@dataclass(frozen=True)
class Proven:
    """Proven values of a tensor: integers in [lo, hi]; ``zero`` False when 0 cannot occur."""

    lo: int
    hi: int
    zero: bool = True

    @property
    def has_zero(self) -> bool:
        return self.zero and self.lo <= 0 <= self.hi

    def union(self, *others: Proven) -> Proven:
        every = (self, *others)
        return Proven(
            min(p.lo for p in every), max(p.hi for p in every), any(p.has_zero for p in every)
        )

    def smallest_type(self) -> IntType:
        """The narrowest type holding these values (BIPOLAR/TERNARY for +/-1 values)."""
        if (self.lo, self.hi) == (-1, 1):
            return TERNARY if self.has_zero else BIPOLAR
        return IntType.fitting(self.lo, self.hi)

    def __str__(self) -> str:
        return f"[{self.lo}, {self.hi}]"


PIXELS = Proven(0, 255)
"""The graph input: uint8 pixels (the ``Executable`` boundary)."""


def holds(dtype: IntType, values: Proven) -> bool:
    """Whether every value in ``values`` is a value of ``dtype`` (BIPOLAR has no 0)."""
    if not dtype.is_integer or values.lo < dtype.min or values.hi > dtype.max:
        return False
    return not (dtype == BIPOLAR and values.has_zero)


def proven_range(weights: np.ndarray, in_type: IntType) -> tuple[int, int]:
    """Smallest and largest value any row of ``weights`` . x can take for x of ``in_type``."""
    lo, hi = _row_ranges(weights, Proven(in_type.min, in_type.max))
    return int(lo.min()), int(hi.max())


def acc_bound(weights: np.ndarray, dtype: IntType) -> int:
    """max |w . x| over inputs of ``dtype``: the domain the lowering builds thresholds on."""
    return int(np.abs(weights).astype(np.int64).sum(axis=1).max()) * _magnitude(dtype)


def _magnitude(dtype: IntType) -> int:
    return max(abs(dtype.min), abs(dtype.max))


def _row_ranges(weights: np.ndarray, x: Proven) -> tuple[np.ndarray, np.ndarray]:
    """Per output row, the smallest and largest w . x for x in [x.lo, x.hi] (int64, exact)."""
    w = weights.astype(np.int64)
    lo = np.where(w > 0, w * x.lo, w * x.hi).sum(axis=1)
    hi = np.where(w > 0, w * x.hi, w * x.lo).sum(axis=1)
    return lo, hi


def check_graph(graph: Graph) -> dict[str, Proven | None]:
    """Check ``graph`` (structure already validated); return each tensor's proven range.

    ``None`` marks a float tensor. Raises :class:`GraphError` naming node and field for
    anything inconsistent.
    """
    pixels = graph.tensors[graph.input]
    where = f"graph input {pixels.name!r}"
    check_fits(where, "type", pixels.dtype, PIXELS, "uint8 pixel range")
    if len(pixels.shape) != 3:
        raise GraphError(f"{where}: shape {list(pixels.shape)} is not [H, W, C]")
    proven: dict[str, Proven | None] = {graph.input: PIXELS}
    for node in graph.nodes:
        ins = [proven[t] for t in node.inputs]
        _check_inputs(graph, node, ins)
        _check_shape(graph, node)
        out = _OPS[node.op](graph, node, ins)
        _check_output(graph, node, out)
        proven[node.outputs[0]] = out
    stray = sorted(set(graph.tensors) - set(proven))
    if stray:
        raise GraphError(f"tensor {stray[0]}: declared but no node produces it")
    return proven


def check_fits(where: str, field: str, dtype: IntType, values: Proven, what="proven range"):
    """Refuse a declared ``dtype`` that is not an integer type, too wide, or misses ``values``."""
    if not dtype.is_integer:
        raise GraphError(f"{where}: {field} {dtype} is not an integer type")
    if dtype.bits > MAX_BITS:
        raise GraphError(
            f"{where}: {field} {dtype} is wider than the {MAX_BITS} bits the hardware holds"
        )
    if not holds(dtype, values):
        raise GraphError(
            f"{where}: {field} {dtype} cannot hold the {what} {values} "
            f"(needs {values.smallest_type()})"
        )


# -- structure -----------------------------------------------------------------------------
def _check_inputs(graph: Graph, node: Node, ins: list[Proven | None]) -> None:
    want = ARITY.get(node.op, 1)
    if node.op == "StreamingConcat" and ins:
        want = len(ins)
    if len(ins) != want:
        raise GraphError(f"node {node.name}: {len(ins)} inputs, {node.op} takes {want}")
    for t, p in zip(node.inputs, ins, strict=True):
        if p is None and node.op != "LabelSelect":
            raise GraphError(
                f"node {node.name}: input {t!r} is {graph.tensors[t].dtype}, "
                f"{node.op} takes integers"
            )


def _check_shape(graph: Graph, node: Node) -> None:
    """The declared output shape is the node's natural one, or a flat relabelling of it."""
    shapes = [tuple(graph.tensors[t].shape) for t in node.inputs]
    natural = _natural_shape(node, shapes)
    out = graph.tensors[node.outputs[0]]
    if tuple(out.shape) == natural:
        return
    size, n = int(np.prod(natural)), int(np.prod(out.shape))
    if size != n or len(out.shape) != 1:
        raise GraphError(
            f"node {node.name}: input shape {list(shapes[0])} gives {list(natural)} "
            f"({size} values), which disagrees with output {out.name!r} declared "
            f"{list(out.shape)} ({n} values)"
        )


def _natural_shape(node: Node, shapes: list[tuple[int, ...]]) -> tuple[int, ...]:
    x, a = shapes[0], node.attrs
    if node.op in ("FMPadding", "ConvolutionInputGenerator", "StreamingMaxPool", "DownSampler"):
        return _map_shape(node, _hwc(node, x))
    if node.op == "MVAU":
        return (*x[:-1], _int_attr(node, "MH", 1))
    if node.op in ("AddStreams", "StreamingConcat"):
        if any(s[:-1] != x[:-1] or (node.op == "AddStreams" and s != x) for s in shapes):
            raise GraphError(f"node {node.name}: input shapes {[list(s) for s in shapes]} differ")
        return (*x[:-1], sum(s[-1] for s in shapes)) if node.op == "StreamingConcat" else x
    if node.op == "ChannelPad":
        pad = _int_attr(node, "before", 0) + _int_attr(node, "after", 0)
        return (*x[:-1], x[-1] + pad)
    if node.op == "Pool":
        h, w, taps = _hwc(node, x)
        if a.get("Function") != "MaxPool":
            raise GraphError(
                f"node {node.name}: field Function {a.get('Function')!r} is not supported "
                "(only 'MaxPool')"
            )
        k, c = _int_attr(node, "kernel", 1), _int_attr(node, "channels", 1)
        if k * k * c != taps:
            raise GraphError(
                f"node {node.name}: input {list(x)} does not hold kernel {k} x {k} windows "
                f"of {c} channels ({k * k * c} values per position)"
            )
        return (h, w, c)
    if node.op == "GlobalAccPool":
        h, w, c = _hwc(node, x)
        if "positions" in a and a["positions"] != h * w:
            raise GraphError(
                f"node {node.name}: field positions is {a['positions']}, but its input "
                f"{list(x)} has {h * w}"
            )
        return (c,)
    if node.op == "LabelSelect":
        return (*x[:-1], _int_attr(node, "k", 1, x[-1]))
    return x  # Thresholding, Affine


def _map_shape(node: Node, hwc: tuple[int, int, int]) -> tuple[int, ...]:
    """Output shape of the spatial ops on an [H, W, C] input."""
    h, w, c = hwc
    if node.op == "FMPadding":
        _int_attr(node, "pad_value")
        q = _int_attr(node, "pad", 0)
        return (h + 2 * q, w + 2 * q, c)
    if node.op == "DownSampler":
        s = _int_attr(node, "stride", 1)
        return (-(-h // s), -(-w // s), c)
    k = _int_attr(node, "kernel", 1, min(h, w))
    if node.op == "StreamingMaxPool":
        return (h // k, w // k, c)
    s = _int_attr(node, "stride", 1)
    return ((h - k) // s + 1, (w - k) // s + 1, k * k * c)


def _hwc(node: Node, shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(shape) != 3:
        raise GraphError(f"node {node.name}: input shape {list(shape)} is not [H, W, C]")
    return shape  # type: ignore[return-value]


def _int_attr(node: Node, key: str, lo: int | None = None, hi: int | None = None) -> int:
    value = node.attrs.get(key)
    ok = isinstance(value, int | np.integer) and not isinstance(value, bool)
    if not ok or (lo is not None and value < lo) or (hi is not None and value > hi):
        bounds = f" in {lo}..{hi}" if hi is not None else f" >= {lo}" if lo is not None else ""
        raise GraphError(f"node {node.name}: field {key} must be an integer{bounds}, got {value!r}")
    return value


def _param(node: Node, key: str) -> np.ndarray:
    if key not in node.params:
        raise GraphError(f"node {node.name}: missing param {key!r}")
    return node.params[key]


def _declared(node: Node, key: str) -> IntType:
    """An attribute naming a data type (``acc_type``, ``inputDataType``, ...)."""
    text = node.attrs[key]
    if not isinstance(text, str):
        raise GraphError(f"node {node.name}: field {key} must be a data type name, got {text!r}")
    if text.upper() == "BINARY":  # FINN's name for +/-1 weights read by XNOR
        return BIPOLAR
    try:
        return IntType.parse(text)
    except GraphError as err:
        raise GraphError(f"node {node.name}: field {key}: {err}") from err


def _check_output(graph: Graph, node: Node, out: Proven | None) -> None:
    tensor = graph.tensors[node.outputs[0]]
    if out is None:
        if tensor.dtype != FLOAT32:
            raise GraphError(f"node {node.name}: output {tensor.dtype}, but {node.op} is FLOAT32")
        return
    check_fits(f"node {node.name}", "output", tensor.dtype, out)


# -- proven ranges, node by node -----------------------------------------------------------
def _same(graph: Graph, node: Node, ins: list[Proven]) -> Proven:
    """Windows, max pools and down-sampling move values without changing them."""
    return ins[0]


def _pad(graph: Graph, node: Node, ins: list[Proven]) -> Proven:
    value = node.attrs["pad_value"] if node.op == "FMPadding" else 0
    return ins[0].union(Proven(value, value))


def _add(graph: Graph, node: Node, ins: list[Proven]) -> Proven:
    x, y = ins
    return Proven(x.lo + y.lo, x.hi + y.hi)


def _concat(graph: Graph, node: Node, ins: list[Proven]) -> Proven:
    return ins[0].union(*ins[1:])


def _pool(graph: Graph, node: Node, ins: list[Proven]) -> Proven:
    h, w, _ = graph.tensors[node.inputs[0]].shape
    return Proven(h * w * ins[0].lo, h * w * ins[0].hi)


def _label(graph: Graph, node: Node, ins: list[Proven | None]) -> Proven:
    return Proven(0, graph.tensors[node.inputs[0]].shape[-1] - 1)


def _affine(graph: Graph, node: Node, ins: list[Proven]) -> None:
    """float32 constants applied by op in order; each constant per channel or shared."""
    ops = node.attrs.get("ops")
    channels = graph.tensors[node.inputs[0]].shape[-1]
    if not isinstance(ops, list) or not ops:
        raise GraphError(f"node {node.name}: field ops must be a list of [op, param] pairs")
    for op in ops:
        if not (isinstance(op, list) and len(op) == 2 and op[0] in AFFINE_OPS):
            raise GraphError(f"node {node.name}: field ops has {op!r}, expected [op, param]")
        p = _param(node, op[1])
        if p.dtype != np.float32 or p.size not in (1, channels):
            raise GraphError(
                f"node {node.name}: param {op[1]!r} is {p.dtype}[{p.size}], "
                f"expected float32[1] or float32[{channels}]"
            )
    return None


def _thresholding(graph: Graph, node: Node, ins: list[Proven]) -> Proven:
    in_type = graph.tensors[node.inputs[0]].dtype
    channels = graph.tensors[node.inputs[0]].shape[-1]
    thr = _thresholds(node, channels, _magnitude(in_type), f"its input {in_type}")
    x = ins[0]
    return _threshold_range(node, thr, np.array([x.lo]), np.array([x.hi]))


def _mvau(graph: Graph, node: Node, ins: list[Proven]) -> Proven:
    x, a = ins[0], node.attrs
    in_t = graph.tensors[node.inputs[0]]
    w = _weights(node, in_t.shape)
    where = f"node {node.name}"
    if "inputDataType" in a:
        check_fits(where, "inputDataType", _declared(node, "inputDataType"), x)
    lo, hi = _row_ranges(w, x)
    acc = Proven(int(lo.min()), int(hi.max()))
    _check_accumulator(node, acc)
    if "thresholds" not in node.params:
        if "out_bias" in a or "out_scale" in a:
            raise GraphError(
                f"{where}: missing param 'thresholds' (out_bias/out_scale say its "
                "accumulator is thresholded)"
            )
        return acc
    thr = _thresholds(node, w.shape[0], acc_bound(w, in_t.dtype), "its accumulator")
    return _threshold_range(node, thr, lo, hi)


_OPS = {
    "Thresholding": _thresholding,
    "FMPadding": _pad,
    "ConvolutionInputGenerator": _same,
    "MVAU": _mvau,
    "StreamingMaxPool": _same,
    "Pool": _same,  # a max never widens: its output lies within its input's range
    "AddStreams": _add,
    "DownSampler": _same,
    "ChannelPad": _pad,
    "StreamingConcat": _concat,
    "GlobalAccPool": _pool,
    "Affine": _affine,
    "LabelSelect": _label,
}


# -- MVAU parameters -----------------------------------------------------------------------
def _weights(node: Node, in_shape: tuple[int, ...]) -> np.ndarray:
    """The weight matrix, checked against MH x MW, weightDataType and the binary flag."""
    w, a = _param(node, "weights"), node.attrs
    if w.ndim != 2 or w.shape[1] != in_shape[-1] or w.shape != (a.get("MH"), a.get("MW")):
        raise GraphError(
            f"node {node.name}: field weights has shape {w.shape}, expected "
            f"(MH={a.get('MH')}, MW={a.get('MW')}) matching input {in_shape}"
        )
    values = Proven(int(w.min()), int(w.max()), bool((w == 0).any()))
    if "weightDataType" in a:
        wdt = _declared(node, "weightDataType")
        check_fits(f"node {node.name}", "weightDataType", wdt, values, "range of its weights")
    if a.get("binary") and not holds(BIPOLAR, values):
        raise GraphError(
            f"node {node.name}: field binary is set but its weights {values} are not ±1"
        )
    return w


def _check_accumulator(node: Node, acc: Proven) -> None:
    """acc_type holds the proven range; acc_min/acc_max cover it and fit acc_type."""
    a, where = node.attrs, f"node {node.name}"
    if "acc_type" not in a:
        return
    acc_type = _declared(node, "acc_type")
    check_fits(where, "acc_type", acc_type, acc)
    if "acc_min" in a or "acc_max" in a:
        lo, hi = _int_attr(node, "acc_min"), _int_attr(node, "acc_max")
        if lo > acc.lo or hi < acc.hi:
            raise GraphError(
                f"{where}: fields acc_min/acc_max [{lo}, {hi}] do not cover the proven range {acc}"
            )
        check_fits(where, "acc_type", acc_type, Proven(lo, hi), "range acc_min/acc_max")


# -- thresholds ----------------------------------------------------------------------------
def _thresholds(node: Node, channels: int, bound: int, of: str) -> np.ndarray:
    """The [C or 1, steps] table: sorted, inside [-bound, bound + 1], integer out_bias/scale.

    ``bound`` is the largest |x| the comparator sees; the lowering puts "always" at
    -bound and "never" at bound + 1, so nothing wider is ever needed.
    """
    if "thresholds" not in node.params:
        raise GraphError(f"node {node.name}: missing param 'thresholds'")
    thr = node.params["thresholds"]
    if thr.ndim != 2 or thr.shape[0] not in (channels, 1) or thr.shape[1] == 0:
        raise GraphError(
            f"node {node.name}: field thresholds has shape {thr.shape}, "
            f"expected ({channels}, steps)"
        )
    if (np.diff(thr, axis=1) < 0).any():
        raise GraphError(f"node {node.name}: field thresholds is not sorted per channel")
    _int_attr(node, "out_bias")
    _int_attr(node, "out_scale")
    lo, hi = int(thr.min()), int(thr.max())
    if lo < -bound or hi > bound + 1:
        raise GraphError(
            f"node {node.name}: field thresholds [{lo}, {hi}] exceeds the domain "
            f"[{-bound}, {bound + 1}] of {of}"
        )
    return thr


def _threshold_range(node: Node, thr: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> Proven:
    """Outputs out_bias + out_scale * count for inputs in [lo, hi] (per channel or shared)."""
    b, s = node.attrs["out_bias"], node.attrs["out_scale"]
    first = (thr <= lo[:, None]).sum(axis=1)  # counts reached at the lowest input
    last = (thr <= hi[:, None]).sum(axis=1)
    ends = (b + s * first, b + s * last)
    zero = _reaches_zero(b, s, first, last)
    return Proven(int(np.minimum(*ends).min()), int(np.maximum(*ends).max()), zero)


def _reaches_zero(b: int, s: int, first: np.ndarray, last: np.ndarray) -> bool:
    """Whether b + s * count = 0 for a count in [first, last] of some channel."""
    if s == 0:
        return b == 0
    if -b % s:
        return False
    count = -b // s
    return bool(((first <= count) & (count <= last)).any())
