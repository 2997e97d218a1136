"""``DownSampler`` (DownSampler_hls): every ``stride``-th row and column (a 1x1 strided conv's
input, an option-A shortcut)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from hwbed.ir.opdef import OpDef, register
from hwbed.ir.opkit import Shape, hwc, in_shape, in_type, int_attr, same_range

if TYPE_CHECKING:
    from hwbed.ir.graph import Graph, Node


def _shape(node: Node, shapes: list[Shape]) -> Shape:
    h, w, c = hwc(node, shapes[0])
    s = int_attr(node, "stride", 1)
    return (-(-h // s), -(-w // s), c)


def _reference(node: Node, ins: list[np.ndarray]) -> np.ndarray:
    s = node.attrs["stride"]
    return ins[0][:, ::s, ::s, :]


def _finn(graph: Graph, node: Node) -> dict[str, Any]:
    shape = in_shape(graph, node)
    return {
        "ImgDim": shape[0],
        "NumChannels": shape[-1],
        "Stride": node.attrs["stride"],
        "inputDataType": in_type(graph, node),
    }


DOWN_SAMPLER = register(
    OpDef("DownSampler", "DownSampler_hls", _shape, same_range, _reference, _finn)
)
