"""``Flatten`` (no hardware node): [H, W, C] -> (H*W*C,) in NHWC (row-major) order.

The values and their order on the stream are unchanged, so FINN has no node for it: its
consumer reads the producer's stream (:func:`hwbed.fpga.finn.nodes.finn_nodes`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from hwbed.ir.opdef import OpDef, register
from hwbed.ir.opkit import Shape, hwc, same_range

if TYPE_CHECKING:
    from hwbed.ir.graph import Node


def _shape(node: Node, shapes: list[Shape]) -> Shape:
    h, w, c = hwc(node, shapes[0])
    return (h * w * c,)


def _reference(node: Node, ins: list[np.ndarray]) -> np.ndarray:
    return ins[0].reshape(len(ins[0]), -1)


FLATTEN = register(OpDef("Flatten", None, _shape, same_range, _reference))
