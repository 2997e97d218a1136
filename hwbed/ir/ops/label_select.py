"""``LabelSelect`` (LabelSelect_hls): the indices of the ``k`` largest values, largest first
(ties: the lower index), on integer or float32 inputs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from hwbed.ir.opdef import OpDef, register
from hwbed.ir.opkit import Proven, Shape, in_shape, in_type, int_attr

if TYPE_CHECKING:
    from hwbed.ir.graph import Graph, Node


def _shape(node: Node, shapes: list[Shape]) -> Shape:
    x = shapes[0]
    return (*x[:-1], int_attr(node, "k", 1, x[-1]))


def _proven(graph: Graph, node: Node, ins: list[Proven]) -> Proven:
    return Proven(0, in_shape(graph, node)[-1] - 1)


def _reference(node: Node, ins: list[np.ndarray]) -> np.ndarray:
    return np.argsort(-ins[0], axis=-1, kind="stable")[..., : node.attrs["k"]]


def _finn(graph: Graph, node: Node) -> dict[str, Any]:
    return {
        "Labels": node.attrs["Labels"],
        "K": node.attrs["k"],
        "inputDataType": in_type(graph, node),
    }


LABEL_SELECT = register(
    OpDef("LabelSelect", "LabelSelect_hls", _shape, _proven, _reference, _finn, float_inputs=True)
)
