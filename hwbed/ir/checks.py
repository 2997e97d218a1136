"""Checks of a graph: structure, shapes, parameters, and every declared type against proven
ranges.

:func:`check_graph` first checks the structure (:meth:`Graph.validate`), then proves an
integer range for every tensor by interval propagation from the graph input, the uint8 pixels
at the executable boundary, through each node's op definition (:mod:`hwbed.ir.ops`); it
trusts no declared type. Every declared width is then checked against what it must hold: each
tensor type and MVAU ``acc_type`` its proven range, ``inputDataType`` the proven input range,
``weightDataType`` the weights, and thresholds the comparator domain. No type may be wider
than :data:`~hwbed.ir.opkit.MAX_BITS`. Each refusal is one :class:`GraphError` line naming
the node, the field, the declared type and the proven range.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import numpy as np

from hwbed.ir.opdef import OpDef, op_def
from hwbed.ir.opkit import Proven, check_fits
from hwbed.ir.types import FLOAT32, GraphError

if TYPE_CHECKING:
    from hwbed.ir.graph import Graph, Node

PIXELS = Proven(0, 255)
"""The graph input: uint8 pixels (the ``Executable`` boundary)."""


def check_graph(graph: Graph) -> dict[str, Proven | None]:
    """Check ``graph``'s structure and semantics; return each tensor's proven range.

    ``None`` marks a float tensor. Raises :class:`GraphError` naming node and field for
    anything inconsistent.
    """
    graph.validate()
    pixels = graph.tensors[graph.input]
    where = f"graph input {pixels.name!r}"
    check_fits(where, "type", pixels.dtype, PIXELS, "uint8 pixel range")
    if len(pixels.shape) != 3:
        raise GraphError(f"{where}: shape {list(pixels.shape)} is not [H, W, C]")
    proven: dict[str, Proven | None] = {graph.input: PIXELS}
    for node in graph.nodes:
        opdef = op_def(node)
        ins = [proven[t] for t in node.inputs]
        _check_inputs(graph, node, opdef, ins)
        _check_shape(graph, node, opdef)
        out = opdef.proven(graph, node, cast(list[Proven], ins))
        _check_output(graph, node, out)
        proven[node.outputs[0]] = out
    stray = sorted(set(graph.tensors) - set(proven))
    if stray:
        raise GraphError(f"tensor {stray[0]}: declared but no node produces it")
    return proven


def _check_inputs(graph: Graph, node: Node, opdef: OpDef, ins: list[Proven | None]) -> None:
    want = len(ins) if opdef.arity is None and ins else opdef.arity or 1
    if len(ins) != want:
        raise GraphError(f"node {node.name}: {len(ins)} inputs, {node.op} takes {want}")
    for t, p in zip(node.inputs, ins, strict=True):
        if p is None and not opdef.float_inputs:
            raise GraphError(
                f"node {node.name}: input {t!r} is {graph.tensors[t].dtype}, "
                f"{node.op} takes integers"
            )


def _check_shape(graph: Graph, node: Node, opdef: OpDef) -> None:
    """The declared output shape is the one the op gives its input shapes."""
    shapes = [tuple(graph.tensors[t].shape) for t in node.inputs]
    natural = opdef.shape(node, shapes)
    out = graph.tensors[node.outputs[0]]
    if tuple(out.shape) != natural:
        size, n = int(np.prod(natural)), int(np.prod(out.shape))
        raise GraphError(
            f"node {node.name}: input shape {list(shapes[0])} gives {list(natural)} "
            f"({size} values), which disagrees with output {out.name!r} declared "
            f"{list(out.shape)} ({n} values)"
        )


def _check_output(graph: Graph, node: Node, out: Proven | None) -> None:
    tensor = graph.tensors[node.outputs[0]]
    if out is None:
        if tensor.dtype != FLOAT32:
            raise GraphError(f"node {node.name}: output {tensor.dtype}, but {node.op} is FLOAT32")
        return
    check_fits(f"node {node.name}", "output", tensor.dtype, out)
