"""Graph passes with the ``apply(graph) -> (graph, modified)`` contract, and the pipeline.

Passes are listed explicitly in :data:`DEFAULT_PASSES`; each is checked for equivalence
(graph before vs after on random inputs) in the tests.
"""

from __future__ import annotations

import copy
from collections import defaultdict

import numpy as np

from hwbed.ir.graph import Graph
from hwbed.ir.opdef import op_def
from hwbed.ir.opkit import MAX_BITS
from hwbed.ir.ops.mvau import acc_range
from hwbed.ir.types import GraphError, IntType


class AbsorbThresholdsIntoMVAU:
    """Merge a Thresholding into the MVAU that alone feeds it (FINN's default MVAU form)."""

    def apply(self, graph: Graph) -> tuple[Graph, bool]:
        g = copy.deepcopy(graph)
        modified = False
        for node in list(g.nodes):
            if node.op != "Thresholding":
                continue
            src = g.producer(node.inputs[0])
            if src is None or src.op != "MVAU" or "thresholds" in src.params:
                continue
            if len(g.consumers(node.inputs[0])) != 1 or node.inputs[0] == g.output:
                continue
            src.params["thresholds"] = node.params["thresholds"]
            src.attrs.update(
                out_bias=node.attrs["out_bias"],
                out_scale=node.attrs["out_scale"],
                acc_type=g.tensors[src.outputs[0]].dtype.finn,
            )
            del g.tensors[src.outputs[0]]
            src.outputs = node.outputs
            g.nodes.remove(node)
            modified = True
        return g, modified


class RemoveIdentityThresholds:
    """Drop a Thresholding that maps every code of its input type to itself.

    An 8-bit activation quantizer that shares the uint8 stream's quantizer (an int ResNet's
    first conv of a block at a8) lowers to such a table: out = x for every x the type holds,
    so its consumers can read the input instead (no LUTs or threshold memory on the device).
    """

    def apply(self, graph: Graph) -> tuple[Graph, bool]:
        g = copy.deepcopy(graph)
        modified = False
        for node in list(g.nodes):
            if node.op != "Thresholding" or node.outputs[0] == g.output:
                continue
            src, dst = node.inputs[0], node.outputs[0]
            if not _is_identity(node, g.tensors[src].dtype, g.tensors[dst].dtype):
                continue
            for other in g.nodes:
                other.inputs = [src if t == dst else t for t in other.inputs]
            g.nodes.remove(node)
            del g.tensors[dst]
            modified = True
        return g, modified


def _is_identity(node, in_type: IntType, out_type: IntType) -> bool:
    if in_type != out_type or in_type.kind not in ("int", "uint") or in_type.frac:
        return False
    t = np.asarray(node.params["thresholds"])
    steps = in_type.max - in_type.min
    if t.ndim != 2 or t.shape[1] != steps:
        return False
    if node.attrs.get("out_bias") != in_type.min or node.attrs.get("out_scale") != 1:
        return False
    return bool((t == in_type.min + 1 + np.arange(steps)).all())


class InferAccumulatorWidths:
    """Prove each MVAU's accumulator range from weights and input type; refuse if too wide."""

    def __init__(self, max_bits: int = MAX_BITS):
        self.max_bits = max_bits

    def apply(self, graph: Graph) -> tuple[Graph, bool]:
        g = copy.deepcopy(graph)
        for node in g.nodes:
            if node.op != "MVAU":
                continue
            in_type = g.tensors[node.inputs[0]].dtype
            w = node.params["weights"]
            rows_lo, rows_hi = acc_range(w, in_type.min, in_type.max)
            lo, hi = int(rows_lo.min()), int(rows_hi.max())
            acc = IntType.fitting(lo, hi)
            if acc.bits > self.max_bits:
                raise GraphError(
                    f"node {node.name}: accumulator needs {acc.bits} bits "
                    f"(range {lo}..{hi}), more than the configured "
                    f"{self.max_bits}"
                )
            node.attrs.update(
                acc_type=acc.finn,
                acc_min=lo,
                acc_max=hi,
                inputDataType=in_type.finn,
                weightDataType=_weight_type(w, node.attrs.get("binary", False)),
            )
            if "thresholds" not in node.params:
                g.tensors[node.outputs[0]].dtype = acc
        return g, False


def _weight_type(w: np.ndarray, binary: bool) -> str:
    if binary:
        return "BINARY"
    return IntType.fitting(int(w.min()), int(w.max())).finn


class GiveFinnNames:
    """Rename nodes to FINN's ``<Op>_<impl>_<i>``, numbered per op in graph order.

    An op without a FINN node (``Flatten``) is numbered under its own name.
    """

    def apply(self, graph: Graph) -> tuple[Graph, bool]:
        g = copy.deepcopy(graph)
        counts: dict[str, int] = defaultdict(int)
        modified = False
        for node in g.nodes:
            opdef = op_def(node)
            prefix = opdef.finn or opdef.op
            name = f"{prefix}_{counts[prefix]}"
            counts[prefix] += 1
            modified |= name != node.name
            node.name = name
        return g, modified


DEFAULT_PASSES = (
    RemoveIdentityThresholds(),
    AbsorbThresholdsIntoMVAU(),
    InferAccumulatorWidths(),
    GiveFinnNames(),
)


def run_passes(graph: Graph, passes=DEFAULT_PASSES) -> Graph:
    """Apply each pass until it reports no change, in order; validate the result."""
    for p in passes:
        graph, modified = p.apply(graph)
        while modified:
            graph, modified = p.apply(graph)
    graph.validate()
    return graph
