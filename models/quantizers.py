"""Brevitas quantizers of the study, chosen so that the integer graph can equal the twin.

Every scale in a quantized network is either a constant 1 (binary values, pixels) or a power
of two (``*FixedPoint`` quantizers): products of integers with such scales are exact in
float32, so each conv/linear output is an exact integer times a known scale and every later
float op is a function of that integer alone (see docs/architecture.md, "exactness").
"""

from __future__ import annotations

from brevitas.quant.fixed_point import (
    Int8ActPerTensorFixedPoint,
    Int8WeightPerChannelFixedPoint,
    Int8WeightPerTensorFixedPoint,
    Uint8ActPerTensorFixedPoint,
)
from brevitas_examples.bnn_pynq.models.common import CommonActQuant, CommonWeightQuant

__all__ = [
    "BinaryAct",
    "BinaryWeight",
    "PixelQuant",
    "StreamQuant",
    "IntWeight",
    "FirstLastWeight",
    "UintAct",
    "UintStreamQuant",
    "BranchQuant",
    "CommonActQuant",
    "CommonWeightQuant",
]


class BinaryWeight(CommonWeightQuant):
    """sign(W) with unit scale (``BipolarQuant(W, 1)``); XNOR's alpha is applied after the sum."""

    bit_width = 1


class BinaryAct(CommonActQuant):
    """sign(x) in {-1, +1} with unit scale, hard-tanh straight-through estimator; sign(0) = +1."""

    bit_width = 1


class PixelQuant(CommonActQuant):
    """The hardware boundary: 255*x rounded half-to-even and saturated to uint8, scale 1."""

    signed = False
    narrow_range = False
    bit_width = 8
    min_val = 0.0
    max_val = 255.0


StreamQuant = Int8ActPerTensorFixedPoint
"""int8 residual stream / multi-bit signed activations, power-of-two scale."""

UintAct = Uint8ActPerTensorFixedPoint
"""Unsigned activations after ReLU (bit width set per layer), power-of-two scale."""

IntWeight = Int8WeightPerTensorFixedPoint
"""Inner multi-bit weights (bit width set per layer), per-tensor power-of-two scale."""

FirstLastWeight = Int8WeightPerChannelFixedPoint
"""8-bit weights of the first convolution, per-channel power-of-two scale."""


UintStreamQuant = Uint8ActPerTensorFixedPoint
"""uint8 post-ReLU residual stream of the int (wXaY) ResNets, power-of-two scale."""


class BranchQuant(Int8ActPerTensorFixedPoint):
    """Signed 9-bit residual branch of the int ResNets, built on the uint8 stream's own
    ``scaling_impl`` (``models.resnet.branch_quant``): 2^(9-1) = 2^8 codes per unit scale as
    the uint8 stream has, so branch and stream share one power-of-two scale and the add is
    an exact integer sum."""

    bit_width = 9
