"""``AddStreams`` (AddStreams_hls): the elementwise sum of two streams of one shape."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from hwbed.ir.opdef import OpDef, register
from hwbed.ir.opkit import Proven, Shape, stream_attrs
from hwbed.ir.types import GraphError

if TYPE_CHECKING:
    from hwbed.ir.graph import Graph, Node


def _shape(node: Node, shapes: list[Shape]) -> Shape:
    if any(s != shapes[0] for s in shapes):
        raise GraphError(f"node {node.name}: input shapes {[list(s) for s in shapes]} differ")
    return shapes[0]


def _proven(graph: Graph, node: Node, ins: list[Proven]) -> Proven:
    x, y = ins
    return Proven(x.lo + y.lo, x.hi + y.hi)


def _reference(node: Node, ins: list[np.ndarray]) -> np.ndarray:
    return ins[0] + ins[1]


ADD_STREAMS = register(
    OpDef("AddStreams", "AddStreams_hls", _shape, _proven, _reference, stream_attrs, arity=2)
)
