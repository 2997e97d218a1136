"""Device memory: what the integer dataflow graph stores, counted at the widths it stores it.

:func:`device_memory` walks a :class:`~hwbed.ir.graph.Graph` and counts every parameter a
node keeps on the device, one row per (node, parameter):

- **MVAU weights** (``weights``, ``MH x MW``) at the width of the node's ``weightDataType``
  (``BINARY``: 1 bit; ``INT<w>``: w bits), the type ``InferAccumulatorWidths`` proved from the
  weights themselves. Pruned weights that the lowering kept as zeros are stored (the MVAU's
  weight memory is dense); pruned filters or channels that the network removed are not there.
- **ABC MVAUs** hold one integer matrix, ``sum_m k_mn B_m`` over the N concatenated
  activation bases, at its ``weightDataType`` (about ``N * (8 + log2 M)`` bits per binary
  weight): that is the MVAU the FINN build instantiates and its BRAM estimate sizes. The
  node's ``bases`` (``[M, co, ci, k, k]``, +/-1) and ``coeffs`` (``k_mn``) are the same
  weights in the form the DSP48 simulator maps onto M*N binary dot products; they are listed
  as ``counted=False`` rows (1 bit per basis weight, coefficients at their integer width) and
  summed in :attr:`DeviceMemory.abc_bases_bits`, not added to the total: storing both would
  count one set of weights twice.
- **Thresholds** (``Thresholding`` nodes and thresholded MVAUs), ``channels x steps`` values
  (a shared ``[1, steps]`` table counts once) at the width of the value they are compared
  with: the MVAU's ``acc_type``, or the Thresholding input's type; one bit more where a
  threshold lies outside that type (the never-reached ``bound + 1``).
- **Constants** of the ``Affine`` (scales, biases, BN/TensorNorm statistics) at float32.
- Any other parameter a node carries: integers at the smallest width holding them, floats
  at their own width.

Padding, windows, pools, adds, concatenations and the label select store nothing. MB are
10^6 bytes, as in :mod:`hwbed.models.cost`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from hwbed.fpga.finn.op_specs import bitwidth
from hwbed.ir.graph import Graph
from hwbed.ir.types import IntType

BITS_PER_MB = 8e6
FLOAT_BITS = 32


@dataclass(frozen=True)
class StoredParam:
    """One parameter array a node stores: ``count`` values of ``bits`` bits each."""

    node: str
    op: str
    param: str
    kind: str
    """``weights``, ``thresholds``, ``constants`` or ``abc-bases`` (the alternative form)."""
    count: int
    bits: int
    counted: bool = True
    """False for ABC bases/coeffs: an alternative encoding of weights already counted."""

    @property
    def total_bits(self) -> int:
        return self.count * self.bits

    @property
    def mb(self) -> float:
        return self.total_bits / BITS_PER_MB


@dataclass
class DeviceMemory:
    """Every stored parameter of a graph and the totals."""

    rows: list[StoredParam]

    @property
    def bits(self) -> int:
        """Bits the device stores (rows with ``counted``)."""
        return sum(r.total_bits for r in self.rows if r.counted)

    @property
    def mb(self) -> float:
        return self.bits / BITS_PER_MB

    def kind_mb(self) -> dict[str, float]:
        """MB per kind of counted parameter (weights, thresholds, constants)."""
        out: dict[str, float] = {}
        for r in self.rows:
            if r.counted:
                out[r.kind] = out.get(r.kind, 0.0) + r.mb
        return out

    @property
    def abc_bases_bits(self) -> int:
        """Bits of the ABC MVAUs' bases and coefficients (0 without ABC layers)."""
        return sum(r.total_bits for r in self.rows if r.kind == "abc-bases")

    @property
    def abc_folded_bits(self) -> int:
        """Bits of the ABC MVAUs' folded weight matrices (part of :attr:`bits`)."""
        abc = {r.node for r in self.rows if r.kind == "abc-bases"}
        return sum(r.total_bits for r in self.rows if r.node in abc and r.param == "weights")

    def to_dict(self) -> dict:
        return {
            "device_memory_mb": self.mb,
            "by_kind_mb": self.kind_mb(),
            "abc_bases_mb": self.abc_bases_bits / BITS_PER_MB,
            "rows": [{**asdict(r), "mb": r.mb} for r in self.rows],
        }


def device_memory(graph: Graph) -> DeviceMemory:
    """The parameters ``graph`` stores on the device, node by node (see the module doc)."""
    rows: list[StoredParam] = []
    for node in graph.nodes:
        abc = "abc" in node.attrs and "bases" in node.params
        for key, value in node.params.items():
            count = int(value.size)
            if node.op == "Affine":
                rows.append(StoredParam(node.name, node.op, key, "constants", count, FLOAT_BITS))
            elif key == "thresholds":
                bits = _threshold_bits(graph, node, value)
                rows.append(StoredParam(node.name, node.op, key, "thresholds", count, bits))
            elif node.op == "MVAU" and key == "weights":
                bits = _weight_bits(node.attrs, value)
                rows.append(StoredParam(node.name, node.op, key, "weights", count, bits))
            elif abc and key == "bases":
                rows.append(StoredParam(node.name, node.op, key, "abc-bases", count, 1, False))
            elif abc and key == "coeffs":
                bits = _fitting_bits(value)
                rows.append(StoredParam(node.name, node.op, key, "abc-bases", count, bits, False))
            else:
                bits = _fitting_bits(value) if value.dtype.kind in "iub" else value.itemsize * 8
                rows.append(StoredParam(node.name, node.op, key, "constants", count, bits))
    return DeviceMemory(rows)


def device_memory_mb(graph: Graph) -> float:
    """Total of :func:`device_memory` in MB (10^6 bytes)."""
    return device_memory(graph).mb


def _weight_bits(attrs: dict, weights: np.ndarray) -> int:
    declared = attrs.get("weightDataType")
    if declared is not None:
        return bitwidth(declared)
    if attrs.get("binary"):
        return 1
    return _fitting_bits(weights)


def _fitting_bits(values: np.ndarray) -> int:
    if values.size == 0:
        return 0
    return IntType.fitting(int(values.min()), int(values.max())).bits


def _threshold_bits(graph: Graph, node, thresholds: np.ndarray) -> int:
    """Width of the compared value's type, widened to hold every threshold."""
    if node.op == "MVAU":
        name = node.attrs.get("acc_type")
        compared = IntType.parse(name) if name is not None else None
    else:
        compared = graph.tensors[node.inputs[0]].dtype
    if thresholds.size == 0:
        return 0
    lo, hi = int(thresholds.min()), int(thresholds.max())
    if compared is None or not compared.is_integer:
        return IntType.fitting(lo, hi).bits
    return max(compared.bits, IntType.fitting(min(lo, compared.min), max(hi, compared.max)).bits)
