"""Plain numpy executor of the integer dataflow graph: obviously correct, not fast.

Each node runs its op's reference semantics (:attr:`hwbed.ir.opdef.OpDef.reference`, a few
lines of int64 numpy); the simulator's fast and slice-level paths and qonnx's execution of
the QONNX rendering are checked against it.
"""

from __future__ import annotations

import numpy as np

from hwbed.ir.graph import Graph, Node
from hwbed.ir.opdef import op_def


def threshold(x: np.ndarray, thresholds: np.ndarray, out_bias: int, out_scale: int) -> np.ndarray:
    """out = out_bias + out_scale * #{j : x >= thresholds[c, j]} per channel c (last axis)."""
    counts = (x[..., None] >= thresholds).sum(axis=-1)
    return out_bias + out_scale * counts


def sliding_window(x: np.ndarray, k: int, stride: int) -> np.ndarray:
    """[N, H, W, C] -> [N, OH, OW, k*k*C] with (kh, kw, c) ordering (FINN's im2col)."""
    n, h, w, c = x.shape
    oh, ow = (h - k) // stride + 1, (w - k) // stride + 1
    cols = [
        x[:, i : i + stride * oh : stride, j : j + stride * ow : stride, :]
        for i in range(k)
        for j in range(k)
    ]
    return np.concatenate(cols, axis=-1)


def run_node(node: Node, ins: list[np.ndarray]) -> np.ndarray:
    """Execute one node on int64 inputs (an unknown op is a GraphError naming the node)."""
    return op_def(node).reference(node, ins)


def execute(graph: Graph, pixels: np.ndarray, keep: bool = False) -> np.ndarray | dict:
    """Run uint8 NHWC ``pixels`` through the graph; the output tensor (or every tensor)."""
    graph.check_input(pixels)
    env = {graph.input: pixels.astype(np.int64)}
    for node in graph.nodes:
        env[node.outputs[0]] = run_node(node, [env[t] for t in node.inputs])
    return env if keep else env[graph.output]
