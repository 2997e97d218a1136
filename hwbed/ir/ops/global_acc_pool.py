"""``GlobalAccPool`` (GlobalAccPool_hls): the sum over every position, per channel."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from hwbed.ir.opdef import OpDef, register
from hwbed.ir.opkit import Proven, Shape, hwc, in_shape, stream_attrs
from hwbed.ir.types import GraphError

if TYPE_CHECKING:
    from hwbed.ir.graph import Graph, Node


def _shape(node: Node, shapes: list[Shape]) -> Shape:
    h, w, c = hwc(node, shapes[0])
    if "positions" in node.attrs and node.attrs["positions"] != h * w:
        raise GraphError(
            f"node {node.name}: field positions is {node.attrs['positions']}, but its input "
            f"{list(shapes[0])} has {h * w}"
        )
    return (c,)


def _proven(graph: Graph, node: Node, ins: list[Proven]) -> Proven:
    h, w, _ = in_shape(graph, node)
    return Proven(h * w * ins[0].lo, h * w * ins[0].hi)


def _reference(node: Node, ins: list[np.ndarray]) -> np.ndarray:
    return ins[0].sum(axis=(1, 2))


GLOBAL_ACC_POOL = register(
    OpDef("GlobalAccPool", "GlobalAccPool_hls", _shape, _proven, _reference, stream_attrs)
)
