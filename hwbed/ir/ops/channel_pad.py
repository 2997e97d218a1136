"""``ChannelPad`` (hwbed's own): ``before`` and ``after`` zero channels (option-A shortcuts)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from hwbed.ir.opdef import OpDef, register
from hwbed.ir.opkit import Proven, Shape, in_type, int_attr, vectors

if TYPE_CHECKING:
    from hwbed.ir.graph import Graph, Node


def _shape(node: Node, shapes: list[Shape]) -> Shape:
    x = shapes[0]
    return (*x[:-1], x[-1] + int_attr(node, "before", 0) + int_attr(node, "after", 0))


def _proven(graph: Graph, node: Node, ins: list[Proven]) -> Proven:
    return ins[0].union(Proven(0, 0))


def _reference(node: Node, ins: list[np.ndarray]) -> np.ndarray:
    x, a = ins[0], node.attrs
    return np.pad(x, ((0, 0),) * (x.ndim - 1) + ((a["before"], a["after"]),))


def _finn(graph: Graph, node: Node) -> dict[str, Any]:
    return {
        "NumChannels": graph.tensors[node.outputs[0]].shape[-1],
        "inputDataType": in_type(graph, node),
        "numInputVectors": vectors(graph, node),
    }


CHANNEL_PAD = register(OpDef("ChannelPad", "ChannelPad_hls", _shape, _proven, _reference, _finn))
