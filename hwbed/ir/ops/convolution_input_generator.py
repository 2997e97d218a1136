"""``ConvolutionInputGenerator`` (ConvolutionInputGenerator_rtl): the sliding window.

[H, W, C] -> [OH, OW, k*k*C] in (kh, kw, c) order (FINN's im2col); values unchanged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from hwbed.ir.opdef import OpDef, register
from hwbed.ir.opkit import Shape, hwc, in_shape, in_type, int_attr, same_range
from hwbed.ir.reference import sliding_window

if TYPE_CHECKING:
    from hwbed.ir.graph import Graph, Node


def _shape(node: Node, shapes: list[Shape]) -> Shape:
    h, w, c = hwc(node, shapes[0])
    k = int_attr(node, "kernel", 1, min(h, w))
    s = int_attr(node, "stride", 1)
    return ((h - k) // s + 1, (w - k) // s + 1, k * k * c)


def _reference(node: Node, ins: list[np.ndarray]) -> np.ndarray:
    return sliding_window(ins[0], node.attrs["kernel"], node.attrs["stride"])


def _finn(graph: Graph, node: Node) -> dict[str, Any]:
    k, s = node.attrs["kernel"], node.attrs["stride"]
    shape = in_shape(graph, node)
    d = {
        "ConvKernelDim": [k, k],
        "IFMChannels": shape[-1],
        "IFMDim": list(shape[:2]),
        "OFMDim": list(graph.tensors[node.outputs[0]].shape[:2]),
        "Stride": [s, s],
        "inputDataType": in_type(graph, node),
    }
    if any(u.op == "Pool" for u in graph.consumers(node.outputs[0])):
        d["depthwise"] = 1  # FINN's Pool_hls reads a depthwise window (InferPool)
    return d


CONVOLUTION_INPUT_GENERATOR = register(
    OpDef(
        "ConvolutionInputGenerator",
        "ConvolutionInputGenerator_rtl",
        _shape,
        same_range,
        _reference,
        _finn,
    )
)
