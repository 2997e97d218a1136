"""Device memory (hwbed.fpga.finn.memory) against graphs counted by hand, node by node."""

from __future__ import annotations

import numpy as np
import pytest

from hwbed.fpga.finn.memory import device_memory, device_memory_mb
from hwbed.ir.graph import Graph, Node, Tensor
from hwbed.ir.types import BIPOLAR, FLOAT32, IntType

UINT8, INT9 = IntType("uint", 8), IntType("int", 9)


def _tensors(*specs) -> dict[str, Tensor]:
    return {name: Tensor(name, shape, dtype) for name, shape, dtype in specs}


def hand_graph() -> Graph:
    """Pixels -> Thresholding (3 steps) -> ABC MVAU (M=2, N=1, thresholded) -> shared-table
    Thresholding -> binary MVAU without declared widths -> Affine, every width chosen here."""
    bases = np.array([1, -1, 1, 1, -1, -1, 1, -1, 1, 1, 1, -1] * 2, dtype=np.int8)
    bases = bases.reshape(2, 4, 3, 1, 1)
    coeffs = np.array([[3], [-5]])
    weights = np.einsum("mn,mocij->oijnc", coeffs, bases).reshape(4, 3)  # values in {-8,-2,2,8}
    nodes = [
        Node(
            "thr0", "Thresholding", ["x"], ["a"],
            {"out_bias": 0, "out_scale": 1},
            {"thresholds": np.array([[10, 100, 256], [0, 5, 6], [1, 2, 3]])},
        ),
        Node(
            "abc0", "MVAU", ["a"], ["b"],
            {"MW": 3, "MH": 4, "abc": [2, 1], "weightDataType": "INT5", "acc_type": "INT12"},
            {"weights": weights, "thresholds": np.array([[-7], [0], [9], [2047]]),
             "bases": bases, "coeffs": coeffs},
        ),
        Node(
            "thr1", "Thresholding", ["b"], ["c"],
            {"out_bias": -1, "out_scale": 2},
            {"thresholds": np.array([[-3, 4]])},  # one table shared by every channel
        ),
        Node(
            "fc", "MVAU", ["c"], ["d"], {"MW": 4, "MH": 2, "binary": True},
            {"weights": np.array([[1, -1, 1, 1], [-1, -1, 1, -1]])},
        ),
        Node(
            "aff", "Affine", ["d"], ["y"], {"ops": [["mul", "p0"], ["add", "p1"]]},
            {"p0": np.ones(1, np.float32), "p1": np.zeros(2, np.float32)},
        ),
    ]  # fmt: skip
    tensors = _tensors(
        ("x", (4, 4, 3), UINT8),
        ("a", (4, 4, 3), IntType("uint", 2)),
        ("b", (4, 4, 4), INT9),
        ("c", (4, 4, 4), BIPOLAR),
        ("d", (4, 4, 2), IntType("int", 4)),
        ("y", (4, 4, 2), FLOAT32),
    )
    graph = Graph(nodes, tensors, "x", "y")
    graph.validate()
    return graph


def test_hand_graph_counted_by_hand():
    memory = device_memory(hand_graph())
    # thr0: 3 channels x 3 steps, compared with UINT8 pixels; 256 needs a ninth bit
    # abc0: 4 x 3 folded weights at INT5; 4 x 1 thresholds at the INT12 accumulator
    # thr1: one shared table of 2 steps on an INT9 stream
    # fc: 2 x 4 binary weights, no declared type -> 1 bit; aff: 1 + 2 float32 constants
    bits = {"thresholds": 9 * 9 + 4 * 12 + 2 * 9, "weights": 12 * 5 + 8 * 1, "constants": 3 * 32}
    assert memory.bits == sum(bits.values()) == 311
    assert memory.mb == pytest.approx(311 / 8e6, rel=1e-12)
    assert memory.kind_mb() == pytest.approx({k: v / 8e6 for k, v in bits.items()})
    # the ABC bases (24 x 1 bit) and coefficients (3, -5: INT4) are listed, not counted
    assert memory.abc_bases_bits == 24 + 2 * 4
    assert memory.abc_folded_bits == 60
    rows = {(r.node, r.param): r for r in memory.rows}
    assert not rows["abc0", "bases"].counted and not rows["abc0", "coeffs"].counted
    assert (rows["thr0", "thresholds"].count, rows["thr0", "thresholds"].bits) == (9, 9)
    assert (rows["thr1", "thresholds"].count, rows["thr1", "thresholds"].bits) == (2, 9)
    assert device_memory_mb(hand_graph()) == memory.mb


def test_lowered_tfc_w1a1_counted_by_hand(random_graph):
    """tfc-w1a1 on 1x8x8: 64 pixels -> 64 -> 64 -> 64 -> 10, lowered as the build lowers it."""
    graph = random_graph("tfc-w1a1", (1, 8, 8))
    # input quantizer: one channel, one step (bipolar), compared with UINT8 pixels
    input_thresholds = 1 * 1 * 8
    # three 64x64 binary MVAUs on bipolar inputs, each with 64 one-step thresholds on an
    # accumulator in [-64, 64] (INT8); the last 10x64 binary MVAU has none
    weights = 3 * 64 * 64 * 1 + 10 * 64 * 1
    thresholds = 3 * 64 * 1 * 8
    # the final Affine: acc scale, TensorNorm's mean, sqrt(var + eps), gamma, beta (scalars)
    constants = 5 * 32
    total = input_thresholds + weights + thresholds + constants
    assert total == 14_632
    memory = device_memory(graph)
    assert memory.bits == total
    assert memory.kind_mb() == pytest.approx(
        {"thresholds": (8 + thresholds) / 8e6, "weights": weights / 8e6, "constants": 160 / 8e6}
    )
    assert memory.abc_bases_bits == 0
