"""Semantic checks of a loaded graph: shapes, parameter sizes, types and proven bounds."""

from __future__ import annotations

import numpy as np

from .graph import Graph, GraphError, IntType


def proven_range(weights: np.ndarray, in_type: IntType) -> tuple[int, int]:
    """Smallest and largest value any row of ``weights`` . x can take for x of ``in_type``."""
    lo = np.where(weights > 0, weights * in_type.min, weights * in_type.max).sum(axis=1)
    hi = np.where(weights > 0, weights * in_type.max, weights * in_type.min).sum(axis=1)
    return int(lo.min()), int(hi.max())


def _check_fits(node, out: IntType, lo: int, hi: int, what: str) -> None:
    if out.kind != "float" and (lo < out.min or hi > out.max):
        raise GraphError(f"node {node.name}: output type {out} cannot hold the {what} {lo}..{hi}")


def check_graph(graph: Graph) -> None:
    """Raise :class:`GraphError` naming node and field for anything inconsistent."""
    for node in graph.nodes:
        a, p = node.attrs, node.params
        if node.op == "MVAU":
            w = _param(node, "weights")
            in_shape = graph.tensors[node.inputs[0]].shape
            if w.ndim != 2 or w.shape[1] != in_shape[-1] or w.shape != (a.get("MH"), a.get("MW")):
                raise GraphError(
                    f"node {node.name}: field weights has shape {w.shape}, expected "
                    f"(MH={a.get('MH')}, MW={a.get('MW')}) matching input {in_shape}"
                )
            lo, hi = proven_range(w, graph.tensors[node.inputs[0]].dtype)
            if "thresholds" not in p:
                _check_fits(
                    node, graph.tensors[node.outputs[0]].dtype, lo, hi, "proven accumulator range"
                )
            if "acc_type" in a:
                acc = IntType.parse(a["acc_type"])
                if lo < acc.min or hi > acc.max:
                    raise GraphError(
                        f"node {node.name}: field acc_type {acc} cannot hold the "
                        f"proven accumulator range {lo}..{hi}"
                    )
        if "thresholds" in p:
            thr = _param(node, "thresholds")
            channels = (
                graph.tensors[node.outputs[0]].shape[-1]
                if node.op == "MVAU"
                else graph.tensors[node.inputs[0]].shape[-1]
            )
            if thr.ndim != 2 or thr.shape[0] not in (channels, 1):
                raise GraphError(
                    f"node {node.name}: field thresholds has shape {thr.shape}, "
                    f"expected ({channels}, steps)"
                )
            if (np.diff(thr, axis=1) < 0).any():
                raise GraphError(f"node {node.name}: field thresholds is not sorted per channel")
            for key in ("out_bias", "out_scale"):
                if not isinstance(a.get(key), int):
                    raise GraphError(f"node {node.name}: field {key} must be an integer")
            ends = sorted((a["out_bias"], a["out_bias"] + a["out_scale"] * thr.shape[1]))
            _check_fits(node, graph.tensors[node.outputs[0]].dtype, *ends, "threshold outputs")


def _param(node, key: str) -> np.ndarray:
    if key not in node.params:
        raise GraphError(f"node {node.name}: missing param {key!r}")
    return node.params[key]
