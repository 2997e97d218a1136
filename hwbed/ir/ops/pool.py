"""``Pool`` (Pool_hls): the max over each window of a ConvolutionInputGenerator, per channel.

A max never widens: the output lies within the input's range.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from hwbed.ir.opdef import OpDef, register
from hwbed.ir.opkit import Shape, hwc, in_type, int_attr, same_range
from hwbed.ir.types import GraphError

if TYPE_CHECKING:
    from hwbed.ir.graph import Graph, Node


def _shape(node: Node, shapes: list[Shape]) -> Shape:
    x = shapes[0]
    h, w, taps = hwc(node, x)
    if node.attrs.get("Function") != "MaxPool":
        raise GraphError(
            f"node {node.name}: field Function {node.attrs.get('Function')!r} is not supported "
            "(only 'MaxPool')"
        )
    k, c = int_attr(node, "kernel", 1), int_attr(node, "channels", 1)
    if k * k * c != taps:
        raise GraphError(
            f"node {node.name}: input {list(x)} does not hold kernel {k} x {k} windows "
            f"of {c} channels ({k * k * c} values per position)"
        )
    return (h, w, c)


def _reference(node: Node, ins: list[np.ndarray]) -> np.ndarray:
    """Windows [N, OH, OW, k*k*C] in (kh, kw, c) order -> max per c."""
    n, oh, ow, _ = ins[0].shape
    return ins[0].reshape(n, oh, ow, node.attrs["kernel"] ** 2, node.attrs["channels"]).max(axis=3)


def _finn(graph: Graph, node: Node) -> dict[str, Any]:
    k = node.attrs["kernel"]
    out = graph.tensors[node.outputs[0]]
    return {
        "Channels": node.attrs["channels"],
        "KernelSize": [k, k],
        "Function": node.attrs["Function"],
        "OutImgDims": list(out.shape[:2]),
        "InputDataType": in_type(graph, node),
        "OutputDataType": out.dtype.finn,
    }


POOL = register(OpDef("Pool", "Pool_hls", _shape, same_range, _reference, _finn))
