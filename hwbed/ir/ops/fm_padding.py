"""``FMPadding`` (FMPadding_rtl): ``pad`` rows and columns of ``pad_value`` on every side."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from hwbed.ir.opdef import OpDef, register
from hwbed.ir.opkit import Proven, Shape, hwc, in_shape, in_type, int_attr

if TYPE_CHECKING:
    from hwbed.ir.graph import Graph, Node


def _shape(node: Node, shapes: list[Shape]) -> Shape:
    h, w, c = hwc(node, shapes[0])
    int_attr(node, "pad_value")
    q = int_attr(node, "pad", 0)
    return (h + 2 * q, w + 2 * q, c)


def _proven(graph: Graph, node: Node, ins: list[Proven]) -> Proven:
    value = node.attrs["pad_value"]
    return ins[0].union(Proven(value, value))


def _reference(node: Node, ins: list[np.ndarray]) -> np.ndarray:
    q = node.attrs["pad"]
    return np.pad(ins[0], ((0, 0), (q, q), (q, q), (0, 0)), constant_values=node.attrs["pad_value"])


def _finn(graph: Graph, node: Node) -> dict[str, Any]:
    shape, p = in_shape(graph, node), node.attrs["pad"]
    return {
        "ImgDim": list(shape[:2]),
        "Padding": [p, p, p, p],
        "NumChannels": shape[-1],
        "inputDataType": in_type(graph, node),
    }


FM_PADDING = register(OpDef("FMPadding", "FMPadding_rtl", _shape, _proven, _reference, _finn))
