"""``Thresholding`` (Thresholding_rtl): out = out_bias + out_scale * #{thresholds <= x}."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from hwbed.ir.opdef import OpDef, register
from hwbed.ir.opkit import (
    Proven,
    in_shape,
    in_type,
    magnitude,
    same_shape,
    threshold_range,
    threshold_table,
    vectors,
)
from hwbed.ir.reference import threshold
from hwbed.ir.types import IntType

if TYPE_CHECKING:
    from hwbed.ir.graph import Graph, Node


def _proven(graph: Graph, node: Node, ins: list[Proven]) -> Proven:
    dtype = graph.tensors[node.inputs[0]].dtype
    thr = threshold_table(node, in_shape(graph, node)[-1], magnitude(dtype), f"its input {dtype}")
    x = ins[0]
    return threshold_range(node, thr, np.array([x.lo]), np.array([x.hi]))


def _reference(node: Node, ins: list[np.ndarray]) -> np.ndarray:
    a = node.attrs
    return threshold(ins[0], node.params["thresholds"], a["out_bias"], a["out_scale"])


def _finn(graph: Graph, node: Node) -> dict[str, Any]:
    thr = node.params["thresholds"]
    return {
        "NumChannels": in_shape(graph, node)[-1],
        "inputDataType": in_type(graph, node),
        "weightDataType": IntType.fitting(int(thr.min()), int(thr.max())).finn,
        "outputDataType": graph.tensors[node.outputs[0]].dtype.finn,
        "numSteps": int(thr.shape[1]),
        "numInputVectors": vectors(graph, node),
    }


THRESHOLDING = register(
    OpDef("Thresholding", "Thresholding_rtl", same_shape, _proven, _reference, _finn)
)
