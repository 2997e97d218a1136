"""``MVAU`` (MVAU_hls): acc = x . W^T over the last axis, optionally thresholded.

``weights`` is [MH, MW]; with ``thresholds`` (and ``out_bias``, ``out_scale``) the output is
the thresholded accumulator. ``inputDataType``, ``weightDataType`` and ``acc_type`` (with
``acc_min``/``acc_max``), where declared, must hold what the weights and input prove.

:func:`acc_range` and :func:`acc_bound` are the one accumulator bound of the project: the
checks, the lowering, the simulator and the QONNX rendering all use them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from hwbed.ir.opdef import OpDef, register
from hwbed.ir.opkit import (
    Proven,
    Shape,
    check_fits,
    declared,
    holds,
    in_type,
    int_attr,
    magnitude,
    param,
    threshold_range,
    threshold_table,
    vectors,
)
from hwbed.ir.reference import threshold
from hwbed.ir.types import BIPOLAR, GraphError, IntType

if TYPE_CHECKING:
    from hwbed.ir.graph import Graph, Node


def acc_range(weights: np.ndarray, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
    """Per output row, the smallest and largest w . x for integer x in [lo, hi] (int64, exact)."""
    w = weights.astype(np.int64)
    return (
        np.where(w > 0, w * lo, w * hi).sum(axis=1),
        np.where(w > 0, w * hi, w * lo).sum(axis=1),
    )


def acc_bound(weights: np.ndarray, dtype: IntType) -> int:
    """max over rows of sum |w| * max |x| for x of ``dtype``: a bound on |w . x| (Sigma|w| max|x|).

    The domain the lowering builds thresholds on, and the bound the float32 kernels and the
    QONNX rendering must keep below 2^24.
    """
    return int(np.abs(weights).astype(np.int64).sum(axis=1).max()) * magnitude(dtype)


def _shape(node: Node, shapes: list[Shape]) -> Shape:
    return (*shapes[0][:-1], int_attr(node, "MH", 1))


def _proven(graph: Graph, node: Node, ins: list[Proven]) -> Proven:
    """Check weights and declared widths; the accumulator's range, or the thresholds' outputs."""
    x, a, where = ins[0], node.attrs, f"node {node.name}"
    in_t = graph.tensors[node.inputs[0]]
    w = _weights(node, in_t.shape)
    if "inputDataType" in a:
        check_fits(where, "inputDataType", declared(node, "inputDataType"), x)
    lo, hi = acc_range(w, x.lo, x.hi)
    acc = Proven(int(lo.min()), int(hi.max()))
    _check_accumulator(node, acc)
    if "thresholds" not in node.params:
        if "out_bias" in a or "out_scale" in a:
            raise GraphError(
                f"{where}: missing param 'thresholds' (out_bias/out_scale say its "
                "accumulator is thresholded)"
            )
        return acc
    thr = threshold_table(node, w.shape[0], acc_bound(w, in_t.dtype), "its accumulator")
    return threshold_range(node, thr, lo, hi)


def _weights(node: Node, in_shape: Shape) -> np.ndarray:
    """The weight matrix, checked against MH x MW, weightDataType and the binary flag."""
    w, a = param(node, "weights"), node.attrs
    if w.ndim != 2 or w.shape[1] != in_shape[-1] or w.shape != (a.get("MH"), a.get("MW")):
        raise GraphError(
            f"node {node.name}: field weights has shape {w.shape}, expected "
            f"(MH={a.get('MH')}, MW={a.get('MW')}) matching input {in_shape}"
        )
    values = Proven(int(w.min()), int(w.max()), bool((w == 0).any()))
    if "weightDataType" in a:
        wdt = declared(node, "weightDataType")
        check_fits(f"node {node.name}", "weightDataType", wdt, values, "range of its weights")
    if a.get("binary") and not holds(BIPOLAR, values):
        raise GraphError(
            f"node {node.name}: field binary is set but its weights {values} are not ±1"
        )
    return w


def _check_accumulator(node: Node, acc: Proven) -> None:
    """acc_type holds the proven range; acc_min/acc_max cover it and fit acc_type."""
    a, where = node.attrs, f"node {node.name}"
    if "acc_type" not in a:
        return
    acc_type = declared(node, "acc_type")
    check_fits(where, "acc_type", acc_type, acc)
    if "acc_min" in a or "acc_max" in a:
        lo, hi = int_attr(node, "acc_min"), int_attr(node, "acc_max")
        if lo > acc.lo or hi < acc.hi:
            raise GraphError(
                f"{where}: fields acc_min/acc_max [{lo}, {hi}] do not cover the proven range {acc}"
            )
        check_fits(where, "acc_type", acc_type, Proven(lo, hi), "range acc_min/acc_max")


def _reference(node: Node, ins: list[np.ndarray]) -> np.ndarray:
    acc = ins[0] @ node.params["weights"].astype(np.int64).T
    if "thresholds" in node.params:
        return threshold(
            acc, node.params["thresholds"], node.attrs["out_bias"], node.attrs["out_scale"]
        )
    return acc


def _finn(graph: Graph, node: Node) -> dict[str, Any]:
    a = node.attrs
    return {
        "MW": a["MW"],
        "MH": a["MH"],
        "inputDataType": in_type(graph, node),
        "weightDataType": a.get("weightDataType", "INT32"),
        "outputDataType": graph.tensors[node.outputs[0]].dtype.finn,
        "accDataType": a.get("acc_type", "INT32"),
        "numInputVectors": vectors(graph, node),
        "binaryXnorMode": int(a.get("binary", False)),
        "noActivation": int("thresholds" not in node.params),
    }


MVAU = register(OpDef("MVAU", "MVAU_hls", _shape, _proven, _reference, _finn))
