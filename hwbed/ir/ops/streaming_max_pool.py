"""``StreamingMaxPool`` (StreamingMaxPool_hls): k x k max pool with stride k (floor)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from hwbed.ir.opdef import OpDef, register
from hwbed.ir.opkit import Shape, hwc, in_shape, in_type, int_attr, same_range

if TYPE_CHECKING:
    from hwbed.ir.graph import Graph, Node


def _shape(node: Node, shapes: list[Shape]) -> Shape:
    h, w, c = hwc(node, shapes[0])
    k = int_attr(node, "kernel", 1, min(h, w))
    return (h // k, w // k, c)


def _reference(node: Node, ins: list[np.ndarray]) -> np.ndarray:
    x, k = ins[0], node.attrs["kernel"]
    n, h, w, c = x.shape
    return x[:, : h // k * k, : w // k * k].reshape(n, h // k, k, w // k, k, c).max(axis=(2, 4))


def _finn(graph: Graph, node: Node) -> dict[str, Any]:
    k, shape = node.attrs["kernel"], in_shape(graph, node)
    return {
        "ImgDim": list(shape[:2]),
        "PoolDim": [k, k],
        "NumChannels": shape[-1],
        "dataType": in_type(graph, node),
    }


STREAMING_MAX_POOL = register(
    OpDef("StreamingMaxPool", "StreamingMaxPool_hls", _shape, same_range, _reference, _finn)
)
