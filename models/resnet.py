"""ResNets of the study: CIFAR-style ResNet20/32/44/56 and ImageNet-style ResNet18/50.

One block class per precision. Float blocks are the classic post-activation blocks
(He et al., 2016). Quantized blocks keep a quantized residual stream with a power-of-two
scale: each conv sees a quantized activation of its input, the block's residual branch is
requantized to the stream's scale before the add, and the sum is requantized once more. The
first conv (on uint8 pixels) and the final FC are 8-bit.

Two streams (``ResNet.relu_stream``):

* uint8 post-ReLU stream (int wXaY ResNets): the float network's function, ReLU after the
  stem and after every add; the branch is requantized by a signed 9-bit quantizer on the
  stream's own scale (:func:`branch_quant`). A float checkpoint quantizes onto it (PTQ,
  ``models.quantize``).
* int8 signed stream without ReLU after the add (XNOR, ABC, and int checkpoints saved before
  the uint8 stream existed, whose ``arch_config`` lacks ``"stream"``): ReLU/sign only in
  front of the convs, so the shortcut carries pre-activation values.
"""

from __future__ import annotations

import torch
from brevitas.nn import QuantIdentity, QuantReLU
from torch import nn

from .layers import (
    AbcConv2d,
    XnorConv2d,
    exact_fc,
    first_conv,
    int_conv,
    option_a_shortcut,
)
from .quantizers import BinaryAct, BranchQuant, PixelQuant, StreamQuant, UintAct, UintStreamQuant
from .spec import CIFAR_RESNETS, ModelSpec

RELU_STREAM = "uint8-relu"
"""``arch_config["stream"]`` of an int ResNet on the uint8 post-ReLU stream (absent: int8)."""


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


def make_act(spec: ModelSpec, stream: nn.Module | None = None) -> nn.Module:
    """The activation quantizer in front of an inner conv (ABC holds its own bases).

    ``stream``: the uint8 post-ReLU stream quantizer a block's first conv reads (int ResNets
    on that stream). At 8-bit activations the conv reads the stream itself (the stream's
    quantizer shared: an identity on its codes); at fewer bits the stream is requantized.
    """
    if spec.quant == "xnor":
        return QuantIdentity(act_quant=BinaryAct)
    if spec.quant == "int":
        if stream is not None and spec.a_bits == 8:
            return QuantIdentity(act_quant=stream.act_quant)
        return QuantReLU(act_quant=UintAct, bit_width=spec.a_bits)
    return nn.Identity()


def stream_quant(relu_stream: bool) -> nn.Module:
    """A residual-stream quantizer: uint8 after a ReLU, or the signed int8 stream."""
    if relu_stream:
        return QuantReLU(act_quant=UintStreamQuant)
    return QuantIdentity(act_quant=StreamQuant)


def _scaling(quant: nn.Module) -> nn.Module:
    return quant.act_quant.fused_activation_quant_proxy.tensor_quant.scaling_impl


def branch_quant(stream: nn.Module) -> QuantIdentity:
    """Signed 9-bit quantizer on the uint8 ``stream``'s scale: the same ``scaling_impl``
    module (one learned power-of-two scale, statistics from both), so ``h + x`` of a branch
    ``h`` and the stream ``x`` is an exact integer sum times that scale.

    Brevitas rebuilds a proxy's modules when a state dict is loaded, which unties them;
    :class:`ResNet` ties them again after every ``load_state_dict``.
    """
    return QuantIdentity(act_quant=BranchQuant, scaling_impl=_scaling(stream))


def tie_branch_scale(branch: nn.Module, stream: nn.Module) -> None:
    """Make ``branch`` (from :func:`branch_quant`) use ``stream``'s current scale module."""
    branch.act_quant.fused_activation_quant_proxy.tensor_quant.scaling_impl = _scaling(stream)


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
    """Block on a quantized stream: h = bn(conv(act(...))); out = q_out(q_h(h) + shortcut(x)).

    ``relu_stream``: q_out is ReLU + uint8 and q_h a signed 9-bit quantizer on the input
    stream's scale (the float block's function); else both are the int8 stream quantizer
    (q_h shares the input stream's proxy) and no ReLU follows the add.
    """

    def __init__(
        self,
        spec,
        widths,
        kernels,
        strides,
        shortcut,
        in_quant: nn.Module,
        relu_stream: bool = False,
    ):
        super().__init__(spec, widths, kernels, strides, shortcut)
        if relu_stream:
            first = make_act(spec, in_quant)
            self.acts = nn.ModuleList([first, *(make_act(spec) for _ in self.convs[1:])])
            self.h_quant = branch_quant(in_quant)
        else:
            self.acts = nn.ModuleList(make_act(spec) for _ in self.convs)
            self.h_quant = QuantIdentity(act_quant=in_quant.act_quant)  # the stream's scale
        self.out_quant = stream_quant(relu_stream)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for act, conv, bn in zip(self.acts, self.convs, self.bns, strict=True):
            h = bn(conv(act(h)))
        return self.out_quant(self.h_quant(h) + self._shortcut(x))


def _tie_after_load(model: ResNet, _incompatible_keys) -> None:
    model.tie_scales()


class ResNet(nn.Module):
    """CIFAR (option-A) or ImageNet (1x1 projection) ResNet for any variant of the spec."""

    def __init__(
        self,
        spec: ModelSpec,
        in_channels: int,
        num_classes: int,
        mids: list[list[int]] | None = None,
        relu_stream: bool | None = None,
    ):
        """``relu_stream``: the uint8 post-ReLU stream (see the module docstring); only int
        ResNets have one, and they do by default (False builds the earlier int8 stream)."""
        super().__init__()
        self.spec = spec
        q = spec.quantized
        self.relu_stream = spec.quant == "int" and relu_stream is not False
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
            self.stem_quant = stream_quant(self.relu_stream)
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
                    block = QuantBlock(
                        spec, widths, kernels, strides, shortcut, stream, self.relu_stream
                    )
                    stream = block.out_quant
                else:
                    block = FloatBlock(spec, widths, kernels, strides, shortcut)
                blocks.append(block)
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        if self.relu_stream:
            self.register_load_state_dict_post_hook(_tie_after_load)
        if not q:
            self.fc = nn.Linear(cin, num_classes)
        else:  # exact FC sum at any width (ImageNet also quantizes the pooled mean)
            self.fc = exact_fc(cin, num_classes)

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

    def tie_scales(self) -> None:
        """Share each block's branch scale with its input stream's (uint8 post-ReLU stream).

        Loading a state dict re-creates each Brevitas proxy's scale module (and loads the
        value into it), so the branch would keep the old one; this runs after every load.
        """
        stream = self.stem_quant
        for block in self.blocks:
            tie_branch_scale(block.h_quant, stream)
            stream = block.out_quant

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Last convolutional feature map (used for class activation maps)."""
        if self.spec.quantized:
            x = self.stem_quant(self.stem_bn(self.stem_conv(self.pixel(255.0 * x))))
        else:
            x = torch.relu(self.stem_bn(self.stem_conv(x)))
        if self.pool is not None:
            x = self.pool(x)
        return self.blocks(x)

    @property
    def pool_quant(self) -> nn.Module | None:
        """The quantizer of the pooled mean in a quantized ImageNet head, else None.

        It is the last block's stream quantizer itself (no new parameters or state): the mean
        of stream values lies within the stream's range, so it is rounded to the stream's
        grid and never clipped, and the FC reads integer codes with a power-of-two scale.
        Over H*W positions that are not a power of two the mean is not an integer times a
        power of two, but it is a function of the exact integer sum (torch sums, then divides
        once), so its codes are too. CIFAR ResNets feed the mean itself to the FC.
        """
        if not self.spec.quantized or self.spec.arch in CIFAR_RESNETS:
            return None
        return self.blocks[-1].out_quant

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.features(x).mean(dim=(2, 3))
        quant = self.pool_quant
        return self.fc(pooled if quant is None else quant(pooled))
