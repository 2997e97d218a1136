"""The integer graph seen as FINN hardware nodes: one attribute dict per node, FINN's names.

This is the view the estimator, the folding search and the FINN writer share
(``fpga/finn/op_specs.py`` documents the dict format); each op's attributes come from its
definition (:attr:`hwbed.ir.opdef.OpDef.finn_attrs`). hwbed's final ``Affine`` maps onto
FINN's ``ChannelwiseOp_hls``; ``ChannelPad`` is hwbed's own (option-A shortcuts). An op with
no hardware node (``Flatten``) gets no dict: its consumer reads the producer's stream.
"""

from __future__ import annotations

from typing import Any

from hwbed.ir.graph import Graph
from hwbed.ir.opdef import op_def


def finn_nodes(graph: Graph) -> list[dict[str, Any]]:
    """FINN-style node dicts (name, op_type, attributes, input/output tensor names)."""
    nodes = []
    stream: dict[str, str] = {}  # a Flatten's output -> the stream it relabels
    for node in graph.nodes:
        opdef = op_def(node)
        inputs = [stream.get(t, t) for t in node.inputs]
        if opdef.finn is None:
            stream[node.outputs[0]] = inputs[0]
            continue
        d: dict[str, Any] = {
            "name": node.name,
            "op_type": opdef.finn,
            "input": inputs,
            "output": list(node.outputs),
        }
        if opdef.finn_attrs is not None:
            d.update(opdef.finn_attrs(graph, node))
        nodes.append(d)
    return nodes
