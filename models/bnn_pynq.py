"""FINN's BNN-PYNQ reference networks (CNV, TFC, SFC, LFC) from ``brevitas_examples``.

Quantized variants (``w<W>a<A>``) are brevitas_examples' own classes with BNN-PYNQ's bit
widths (CNV input at 8 bits, FC input at the activation width), with power-of-two scales
(:func:`power_of_two_scales`) and, where a sum can pass 2^24, float64 sums
(:func:`exact_sums`), so that the integer graph can equal them. The float variant
keeps the topology and state-dict names with plain torch layers: ``nn.Conv2d``/``nn.Linear``
for the weight layers, ``nn.Identity`` for the input quantizer and ``nn.Hardtanh`` for each
activation quantizer.
"""

from __future__ import annotations

import math

from brevitas.core.restrict_val import RestrictValueType
from brevitas.nn import QuantConv2d, QuantIdentity, QuantLinear
from brevitas.quant_tensor import QuantTensor
from brevitas_examples.bnn_pynq.models.CNV import CNV
from brevitas_examples.bnn_pynq.models.FC import FC
from torch import nn

from .spec import ModelSpec

FC_WIDTHS = {"tfc": (64, 64, 64), "sfc": (256, 256, 256), "lfc": (1024, 1024, 1024)}
CNV_INPUT = 32
"""CNV's valid 3x3 convolutions need a 32x32 input to end on a 1x1 map."""
POWER_OF_TWO = RestrictValueType.POWER_OF_TWO
EXACT_FLOAT32 = 2**24
"""float32 holds every integer up to 2^24: integer sums below it are exact in any order."""


def bnn_pynq(spec: ModelSpec, channels: int, height: int, width: int, classes: int) -> nn.Module:
    """Build CNV/TFC/SFC/LFC for the data set's shape; float when the spec is not ``int``."""
    wb, ab = (spec.w_bits, spec.a_bits) if spec.quant == "int" else (None, None)
    if spec.arch == "cnv":
        if (height, width) != (CNV_INPUT, CNV_INPUT):
            raise ValueError(
                f"cnv needs {CNV_INPUT}x{CNV_INPUT} inputs, got {height}x{width}; "
                f"load the data with size={CNV_INPUT}"
            )
        net = CNV(classes, wb, ab, 8 if wb else None, channels)
    else:
        net = FC(classes, wb, ab, ab, channels, FC_WIDTHS[spec.arch], (channels * height * width,))
    if wb is None:
        _float_layers(net)
    else:
        power_of_two_scales(net)
        exact_sums(net, wb, ab, 8 if spec.arch == "cnv" else ab)
    return net


def power_of_two_scales(net: nn.Module) -> nn.Module:
    """Give every quantizer of 3 bits or more Brevitas' power-of-two scale restriction.

    brevitas_examples' ``CommonWeightQuant``/``CommonActQuant`` map the largest code to 1:
    scale 1/(2^(b-1) - 1), i.e. 1 at 1 and 2 bits (left unchanged: w1a1 and w2a2 stay
    FINN's networks) but 1/7, 1/127, ... from 3 bits, where float32 products and sums of
    dequantized values round and depend on the summation order. Restricted to a power of
    two, the scale becomes 2^-(b-1) (Q1.(b-1) over the same [-1, 1]); codes and clamping
    are otherwise brevitas_examples'. Each quantizer's own injector is re-bound and
    re-initialised (Brevitas' ``let`` + ``init_tensor_quant``); the state dict is unchanged.
    """
    for module in net.modules():
        for proxy in (getattr(module, "weight_quant", None), getattr(module, "act_quant", None)):
            if proxy is None or not getattr(proxy, "is_quant_enabled", False):
                continue
            injector = proxy.quant_injector
            if "bit_width" not in injector or int(injector.bit_width) <= 2:
                continue
            if injector.restrict_scaling_type == POWER_OF_TWO:
                continue  # CNV's 8-bit Q1.7 input quantizer already is
            proxy.quant_injector = injector.let(restrict_scaling_type=POWER_OF_TWO)
            proxy.init_tensor_quant()
    return net


class ExactSumConv2d(QuantConv2d):
    """A QuantConv2d whose eval-mode sum is taken in float64 and rounded once to float32.

    Its output is then float32(d) * 2^-f for the integer sum d at any size, which the
    lowering's thresholds reproduce; float32 partial sums past 2^24 would round in an order
    that depends on oneDNN's blocking and the batch. Training runs Brevitas' float32 conv.
    """

    exact_sum = True

    def inner_forward_impl(self, x, quant_weight, quant_bias):
        if self.training:
            return super().inner_forward_impl(x, quant_weight, quant_bias)
        x, w = _value(x), _value(quant_weight)
        y = super().inner_forward_impl(x.double(), w.double(), None).to(x.dtype)
        return y if quant_bias is None else y + _value(quant_bias)


def exact_sums(net: nn.Module, w_bits: int, a_bits: int, in_bits: int) -> nn.Module:
    """Make each conv whose worst-case sum (taps x largest weight x largest input code)
    passes 2^24 an :class:`ExactSumConv2d`: CNV's 3x3x128 and 3x3x256 layers from about
    w7a8 / w8a7. Its class is swapped in place (as torch's parametrize does); the module,
    its quantizers and its state dict stay. FC layers (at most 1024 inputs) never need it.
    """
    w_max, first = max(1, 2 ** (w_bits - 1) - 1), True
    for module in net.modules():
        if not isinstance(module, QuantConv2d):
            continue
        a_max = 2 ** ((in_bits if first else a_bits) - 1)
        first = False
        taps = module.in_channels // module.groups * math.prod(module.kernel_size)
        if taps * w_max * a_max > EXACT_FLOAT32 and type(module) is QuantConv2d:
            module.__class__ = ExactSumConv2d
    return net


def _value(t):
    return t.value if isinstance(t, QuantTensor) else t


def _float_layers(net: nn.Module) -> None:
    """Swap the quant layers (built with no quantizer) for plain torch layers, in place.

    The first QuantIdentity of each network is its input quantizer (nn.Identity); the others
    are activations (nn.Hardtanh, the BNN-PYNQ float activation). Weight parameters move over.
    """
    seen = 0
    for parent in list(net.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, QuantIdentity):
                setattr(parent, name, nn.Hardtanh() if seen else nn.Identity())
                seen += 1
            elif isinstance(child, QuantConv2d):
                plain = nn.Conv2d(
                    child.in_channels,
                    child.out_channels,
                    child.kernel_size,
                    child.stride,
                    child.padding,
                    child.dilation,
                    child.groups,
                    bias=child.bias is not None,
                    device="meta",
                )
                setattr(parent, name, _take_parameters(plain, child))
            elif isinstance(child, QuantLinear):
                plain = nn.Linear(
                    child.in_features,
                    child.out_features,
                    bias=child.bias is not None,
                    device="meta",
                )
                setattr(parent, name, _take_parameters(plain, child))


def _take_parameters(plain: nn.Module, quant: nn.Module) -> nn.Module:
    plain.weight = quant.weight
    if quant.bias is not None:
        plain.bias = quant.bias
    return plain
