"""``StreamingConcat`` (StreamingConcat_hls): one or more streams joined along the channels."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from hwbed.ir.opdef import OpDef, register
from hwbed.ir.opkit import Proven, Shape, in_type, vectors
from hwbed.ir.types import GraphError

if TYPE_CHECKING:
    from hwbed.ir.graph import Graph, Node


def _shape(node: Node, shapes: list[Shape]) -> Shape:
    x = shapes[0]
    if any(s[:-1] != x[:-1] for s in shapes):
        raise GraphError(f"node {node.name}: input shapes {[list(s) for s in shapes]} differ")
    return (*x[:-1], sum(s[-1] for s in shapes))


def _proven(graph: Graph, node: Node, ins: list[Proven]) -> Proven:
    return ins[0].union(*ins[1:])


def _reference(node: Node, ins: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(ins, axis=-1)


def _finn(graph: Graph, node: Node) -> dict[str, Any]:
    return {
        "ChannelsPerStream": [graph.tensors[t].shape[-1] for t in node.inputs],
        "inputDataType": in_type(graph, node),
        "numInputVectors": vectors(graph, node),
    }


STREAMING_CONCAT = register(
    OpDef("StreamingConcat", "StreamingConcat_hls", _shape, _proven, _reference, _finn, arity=None)
)
