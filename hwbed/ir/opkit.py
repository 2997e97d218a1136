"""Building blocks of the op definitions (:mod:`hwbed.ir.ops`): proven ranges, readers of
attributes and params that refuse bad values, and threshold tables.

Each refusal is one :class:`GraphError` line naming the node and the field.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from hwbed.ir.types import BIPOLAR, TERNARY, GraphError, IntType

if TYPE_CHECKING:
    from hwbed.ir.graph import Graph, Node

MAX_BITS = 32
"""The widest integer the hardware holds: accumulators, streams, weights."""

Shape = tuple[int, ...]


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


def holds(dtype: IntType, values: Proven) -> bool:
    """Whether every value in ``values`` is a value of ``dtype`` (BIPOLAR has no 0)."""
    if not dtype.is_integer or values.lo < dtype.min or values.hi > dtype.max:
        return False
    return not (dtype == BIPOLAR and values.has_zero)


def check_fits(
    where: str, field: str, dtype: IntType, values: Proven, what: str = "proven range"
) -> None:
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


def magnitude(dtype: IntType) -> int:
    """The largest |x| of ``dtype``."""
    return max(abs(dtype.min), abs(dtype.max))


# -- attributes and params -----------------------------------------------------------------
def int_attr(node: Node, key: str, lo: int | None = None, hi: int | None = None) -> int:
    """The integer attribute ``key``, refused when missing, not an integer or out of bounds."""
    value: Any = node.attrs.get(key)
    ok = isinstance(value, int | np.integer) and not isinstance(value, bool)
    if not ok or (lo is not None and value < lo) or (hi is not None and value > hi):
        bounds = f" in {lo}..{hi}" if hi is not None else f" >= {lo}" if lo is not None else ""
        raise GraphError(f"node {node.name}: field {key} must be an integer{bounds}, got {value!r}")
    return int(value)


def param(node: Node, key: str) -> np.ndarray:
    """The param ``key``; a missing one is refused."""
    if key not in node.params:
        raise GraphError(f"node {node.name}: missing param {key!r}")
    return node.params[key]


def declared(node: Node, key: str) -> IntType:
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


def hwc(node: Node, shape: Shape) -> tuple[int, int, int]:
    """``shape`` as [H, W, C]; anything else is refused."""
    if len(shape) != 3:
        raise GraphError(f"node {node.name}: input shape {list(shape)} is not [H, W, C]")
    return shape[0], shape[1], shape[2]


def same_shape(node: Node, shapes: list[Shape]) -> Shape:
    """Ops whose output has their input's shape."""
    return shapes[0]


def same_range(graph: Graph, node: Node, ins: list[Proven]) -> Proven:
    """Ops that move values without changing them (windows, max pools, down-sampling)."""
    return ins[0]


def in_shape(graph: Graph, node: Node, i: int = 0) -> Shape:
    """The shape of the node's ``i``-th input."""
    return graph.tensors[node.inputs[i]].shape


def in_type(graph: Graph, node: Node, i: int = 0) -> str:
    """FINN's name of the type of the node's ``i``-th input."""
    return graph.tensors[node.inputs[i]].dtype.finn


def vectors(graph: Graph, node: Node) -> list[int]:
    """FINN's ``numInputVectors``: batch 1 and every input axis but the channels."""
    return [1, *in_shape(graph, node)[:-1]]


def stream_attrs(graph: Graph, node: Node) -> dict[str, Any]:
    """FINN's attributes of a node over its input stream's channels (AddStreams_hls, ...)."""
    return {
        "NumChannels": in_shape(graph, node)[-1],
        "inputDataType": in_type(graph, node),
        "numInputVectors": vectors(graph, node),
    }


# -- threshold tables ----------------------------------------------------------------------
def threshold_table(node: Node, channels: int, bound: int, of: str) -> np.ndarray:
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
    int_attr(node, "out_bias")
    int_attr(node, "out_scale")
    lo, hi = int(thr.min()), int(thr.max())
    if lo < -bound or hi > bound + 1:
        raise GraphError(
            f"node {node.name}: field thresholds [{lo}, {hi}] exceeds the domain "
            f"[{-bound}, {bound + 1}] of {of}"
        )
    return thr


def threshold_range(node: Node, thr: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> Proven:
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
