"""Plain numpy executor of the integer dataflow graph: obviously correct, not fast.

Every node is a few lines of int64 numpy that restate its semantics; the simulator's fast
and slice-level paths and qonnx's execution of the QONNX rendering are checked against it.
"""

from __future__ import annotations

import numpy as np

from hwbed.ir.graph import Graph, Node
from hwbed.ir.types import GraphError


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
    """Execute one node on int64 inputs."""
    a, p = node.attrs, node.params
    x = ins[0]
    if node.op == "Thresholding":
        return threshold(x, p["thresholds"], a["out_bias"], a["out_scale"])
    if node.op == "FMPadding":
        q = a["pad"]
        return np.pad(x, ((0, 0), (q, q), (q, q), (0, 0)), constant_values=a["pad_value"])
    if node.op == "ConvolutionInputGenerator":
        return sliding_window(x, a["kernel"], a["stride"])
    if node.op == "MVAU":
        acc = x @ p["weights"].astype(np.int64).T
        if "thresholds" in p:
            return threshold(acc, p["thresholds"], a["out_bias"], a["out_scale"])
        return acc
    if node.op == "StreamingMaxPool":
        k = a["kernel"]
        n, h, w, c = x.shape
        return x[:, : h // k * k, : w // k * k].reshape(n, h // k, k, w // k, k, c).max(axis=(2, 4))
    if node.op == "Pool":  # windows [N, OH, OW, k*k*C] in (kh, kw, c) order -> max per c
        n, oh, ow, _ = x.shape
        return x.reshape(n, oh, ow, a["kernel"] ** 2, a["channels"]).max(axis=3)
    if node.op == "AddStreams":
        return x + ins[1]
    if node.op == "DownSampler":
        s = a["stride"]
        return x[:, ::s, ::s, :]
    if node.op == "ChannelPad":
        return np.pad(x, ((0, 0),) * (x.ndim - 1) + ((a["before"], a["after"]),))
    if node.op == "StreamingConcat":
        return np.concatenate(ins, axis=-1)
    if node.op == "GlobalAccPool":
        return x.sum(axis=(1, 2))
    if node.op == "Affine":
        y = x.astype(np.float32)
        for op, key in a["ops"]:
            v = p[key].astype(np.float32)
            y = {"mul": np.multiply, "add": np.add, "sub": np.subtract, "div": np.divide}[op](y, v)
        return y.astype(np.float32)
    if node.op == "LabelSelect":
        return np.argsort(-x, axis=-1, kind="stable")[..., : a["k"]]
    raise GraphError(f"node {node.name}: the reference executor has no semantics for {node.op!r}")


def execute(graph: Graph, pixels: np.ndarray, keep: bool = False) -> np.ndarray | dict:
    """Run uint8 NHWC ``pixels`` through the graph; the output tensor (or every tensor)."""
    expect = graph.tensors[graph.input].shape
    if pixels.ndim != 1 + len(expect) or tuple(pixels.shape[1:]) != tuple(expect):
        raise GraphError(
            f"input shape {tuple(pixels.shape)} does not match the graph's "
            f"[N, {', '.join(map(str, expect))}]"
        )
    env = {graph.input: pixels.astype(np.int64)}
    for node in graph.nodes:
        out = node.outputs[0]
        result = run_node(node, [env[t] for t in node.inputs])
        env[out] = result.reshape(len(pixels), *graph.tensors[out].shape)  # flatten = relabel
    return env if keep else env[graph.output]
