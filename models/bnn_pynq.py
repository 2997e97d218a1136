"""FINN's BNN-PYNQ reference networks (CNV, TFC, SFC, LFC) from ``brevitas_examples``.

Quantized variants (``w<W>a<A>``) are brevitas_examples' own classes with BNN-PYNQ's bit
widths (CNV input at 8 bits, FC input at the activation width). The float variant keeps the
topology and replaces each activation quantizer by a hard tanh.
"""

from __future__ import annotations

from brevitas.nn import QuantIdentity
from brevitas_examples.bnn_pynq.models.CNV import CNV
from brevitas_examples.bnn_pynq.models.FC import FC
from torch import nn

from .spec import ModelSpec

FC_WIDTHS = {"tfc": (64, 64, 64), "sfc": (256, 256, 256), "lfc": (1024, 1024, 1024)}
CNV_INPUT = 32
"""CNV's valid 3x3 convolutions need a 32x32 input to end on a 1x1 map."""


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
        first_act = 1
    else:
        net = FC(classes, wb, ab, ab, channels, FC_WIDTHS[spec.arch], (channels * height * width,))
        first_act = 0
    if wb is None:
        _hardtanh_activations(net, skip=first_act)
    return net


def _hardtanh_activations(net: nn.Module, skip: int) -> None:
    """Swap every activation QuantIdentity after the first ``skip`` for nn.Hardtanh."""
    seen = 0
    for parent in net.modules():
        for name, child in parent.named_children():
            if isinstance(child, QuantIdentity):
                if seen >= skip:
                    setattr(parent, name, nn.Hardtanh())
                seen += 1
