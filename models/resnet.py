"""ResNets of the study: CIFAR-style ResNet20/32/44/56 and ImageNet-style ResNet18/50.

One block class per precision. Float blocks are the classic post-activation blocks
(He et al., 2016). Quantized blocks (XNOR, ABC, wXaY) keep an int8 residual stream with a
power-of-two scale: each conv sees a quantized activation of its input, the block's residual
branch is requantized to the stream's scale (a shared Brevitas proxy) before the add, and the
sum is requantized once more. The first conv (on uint8 pixels) and the final FC are 8-bit.
"""

from __future__ import annotations

import torch
from brevitas.nn import QuantIdentity, QuantReLU
from torch import nn

from .layers import AbcConv2d, XnorConv2d, first_conv, int_conv, last_fc, option_a_shortcut
from .quantizers import BinaryAct, PixelQuant, StreamQuant, UintAct
from .spec import CIFAR_RESNETS, ModelSpec


def make_conv(spec: ModelSpec, cin: int, cout: int, k: int, stride: int) -> nn.Module:
    """The inner convolution of a block for the spec's precision."""
    pad = k // 2
    if spec.quant == "xnor":
        return XnorConv2d(cin, cout, k, stride, pad)
    if spec.quant == "abc":
        return AbcConv2d(cin, cout, k, stride, pad, m=spec.m, n=spec.n)
    if spec.quant == "int":
        return int_conv(cin, cout, k, stride, pad, spec.w_bits)
    conv = nn.Conv2d(cin, cout, k, stride=stride, padding=pad, bias=False)
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    return conv


def make_act(spec: ModelSpec) -> nn.Module:
    """The activation quantizer in front of an inner conv (ABC holds its own bases)."""
    if spec.quant == "xnor":
        return QuantIdentity(act_quant=BinaryAct)
    if spec.quant == "int":
        return QuantReLU(act_quant=UintAct, bit_width=spec.a_bits)
    return nn.Identity()


class FloatBlock(nn.Module):
    """Post-activation block: relu(bn(conv(... relu(bn(conv(x)))...)) + shortcut(x))."""

    def __init__(self, spec, widths, kernels, strides, shortcut):
        super().__init__()
        self.convs = nn.ModuleList(
            make_conv(spec, ci, co, k, s)
            for ci, co, k, s in zip(widths[:-1], widths[1:], kernels, strides, strict=True)
        )
        self.bns = nn.ModuleList(nn.BatchNorm2d(c) for c in widths[1:])
        self.shortcut = shortcut
        self.out_channels, self.stride = widths[-1], max(strides)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for i, (conv, bn) in enumerate(zip(self.convs, self.bns, strict=True)):
            h = bn(conv(h))
            if i < len(self.convs) - 1:
                h = torch.relu(h)
        return torch.relu(h + self._shortcut(x))

    def _shortcut(self, x):
        if self.shortcut is None:
            return option_a_shortcut(x, self.out_channels, self.stride)
        return self.shortcut(x)


class QuantBlock(FloatBlock):
    """Block on an int8 stream: h = bn(conv(act(...))); out = q_out(q_h(h) + shortcut(x))."""

    def __init__(self, spec, widths, kernels, strides, shortcut, in_quant: QuantIdentity):
        super().__init__(spec, widths, kernels, strides, shortcut)
        self.acts = nn.ModuleList(make_act(spec) for _ in self.convs)
        self.h_quant = QuantIdentity(act_quant=in_quant.act_quant)  # shares the stream's scale
        self.out_quant = QuantIdentity(act_quant=StreamQuant)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for act, conv, bn in zip(self.acts, self.convs, self.bns, strict=True):
            h = bn(conv(act(h)))
        return self.out_quant(self.h_quant(h) + self._shortcut(x))


class ResNet(nn.Module):
    """CIFAR (option-A) or ImageNet (1x1 projection) ResNet for any variant of the spec."""

    def __init__(
        self,
        spec: ModelSpec,
        in_channels: int,
        num_classes: int,
        mids: list[list[int]] | None = None,
    ):
        super().__init__()
        self.spec = spec
        q = spec.quantized
        cifar = spec.arch in CIFAR_RESNETS
        if cifar:
            depth = CIFAR_RESNETS[spec.arch]
            per_stage, stages, stem_k, stem_s = (depth - 2) // 6, (16, 32, 64), 3, 1
            expansion, bottleneck = 1, False
        else:
            per_stage = {"resnet18": (2, 2, 2, 2), "resnet50": (3, 4, 6, 3)}[spec.arch]
            stages, stem_k, stem_s = (64, 128, 256, 512), 7, 2
            bottleneck = spec.arch == "resnet50"
            expansion = 4 if bottleneck else 1
        counts = per_stage if not cifar else (per_stage,) * 3
        stem = stages[0]
        if q:
            self.pixel = QuantIdentity(act_quant=PixelQuant)
            self.stem_conv = first_conv(in_channels, stem, stem_k, stem_s, stem_k // 2)
            self.stem_quant = QuantIdentity(act_quant=StreamQuant)
        else:
            self.stem_conv = nn.Conv2d(in_channels, stem, stem_k, stem_s, stem_k // 2, bias=False)
        self.stem_bn = nn.BatchNorm2d(stem)
        self.pool = None if cifar else nn.MaxPool2d(3, 2, 1)
        blocks, cin, stream = [], stem, getattr(self, "stem_quant", None)
        for si, (width, count) in enumerate(zip(stages, counts, strict=True)):
            for bi in range(count):
                stride = 2 if (bi == 0 and si > 0) else 1
                cout = width * expansion
                if bottleneck:
                    default_mid, kernels, strides = [width, width], (1, 3, 1), (1, stride, 1)
                else:
                    default_mid, kernels, strides = [width], (3, 3), (stride, 1)
                mid = mids[len(blocks)] if mids is not None else default_mid
                widths = [cin, *mid, cout]
                shortcut = None
                if not cifar and (stride != 1 or cin != cout):
                    shortcut = self._projection(spec, cin, cout, stride, stream)
                if q:
                    block = QuantBlock(spec, widths, kernels, strides, shortcut, stream)
                    stream = block.out_quant
                else:
                    block = FloatBlock(spec, widths, kernels, strides, shortcut)
                blocks.append(block)
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.fc = last_fc(cin, num_classes) if q else nn.Linear(cin, num_classes)

    @staticmethod
    def _projection(spec, cin, cout, stride, stream) -> nn.Sequential:
        if spec.quant == "xnor":  # XNOR keeps the 1x1 downsampling convs at 8 bits
            conv = first_conv(cin, cout, 1, stride, 0)
        else:
            conv = make_conv(spec, cin, cout, 1, stride)
        layers = [conv, nn.BatchNorm2d(cout)]
        if stream is not None:
            layers.append(QuantIdentity(act_quant=stream.act_quant))
        return nn.Sequential(*layers)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Last convolutional feature map (used for class activation maps)."""
        if self.spec.quantized:
            x = self.stem_quant(self.stem_bn(self.stem_conv(self.pixel(255.0 * x))))
        else:
            x = torch.relu(self.stem_bn(self.stem_conv(x)))
        if self.pool is not None:
            x = self.pool(x)
        return self.blocks(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean(dim=(2, 3)))
