"""``Affine`` (hwbed's own; FINN's ChannelwiseOp_hls): float32 logits from the accumulator.

``ops`` lists [op, param] pairs applied in order, op one of :data:`AFFINE_OPS`, each float32
constant per channel or shared: exactly the twin's float32 epilogue.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from hwbed.ir.opdef import OpDef, register
from hwbed.ir.opkit import Proven, in_shape, in_type, param, same_shape, vectors
from hwbed.ir.types import GraphError

if TYPE_CHECKING:
    from hwbed.ir.graph import Graph, Node

AFFINE_OPS = {"mul": np.multiply, "add": np.add, "sub": np.subtract, "div": np.divide}


def _proven(graph: Graph, node: Node, ins: list[Proven]) -> None:
    """Check ``ops`` and its constants; the output is float (no proven range)."""
    ops = node.attrs.get("ops")
    channels = in_shape(graph, node)[-1]
    if not isinstance(ops, list) or not ops:
        raise GraphError(f"node {node.name}: field ops must be a list of [op, param] pairs")
    for op in ops:
        if not (isinstance(op, list) and len(op) == 2 and op[0] in AFFINE_OPS):
            raise GraphError(f"node {node.name}: field ops has {op!r}, expected [op, param]")
        p = param(node, op[1])
        if p.dtype != np.float32 or p.size not in (1, channels):
            raise GraphError(
                f"node {node.name}: param {op[1]!r} is {p.dtype}[{p.size}], "
                f"expected float32[1] or float32[{channels}]"
            )
    return None


def _reference(node: Node, ins: list[np.ndarray]) -> np.ndarray:
    y = ins[0].astype(np.float32)
    for op, key in node.attrs["ops"]:
        y = AFFINE_OPS[op](y, node.params[key].astype(np.float32))
    return y.astype(np.float32)


def _finn(graph: Graph, node: Node) -> dict[str, Any]:
    return {
        "op_type": "ChannelwiseOp_hls",
        "NumChannels": in_shape(graph, node)[-1],
        "inputDataType": in_type(graph, node),
        "outputDataType": "FLOAT32",
        "Func": "affine",
        "numInputVectors": vectors(graph, node),
    }


AFFINE = register(
    OpDef("Affine", "Affine_hls", same_shape, _proven, _reference, _finn, float_params=True)
)
