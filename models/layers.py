"""Binary and multi-bit layers of the compressed variants, on Brevitas quant layers.

Shapes are chosen for exactness: binary convolutions sum unit +/-1 products (an exact integer
in float32), and every scale applied afterwards is per output channel (XNOR's alpha) or a
power of two (ABC's fixed-point coefficients), so the result depends on the integer alone.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from brevitas.function.ops_ste import round_ste
from brevitas.nn import QuantConv2d, QuantIdentity, QuantLinear
from brevitas.quant_tensor import QuantTensor
from torch import nn

from .quantizers import BinaryAct, BinaryWeight, FirstLastWeight, IntWeight


class XnorConv2d(nn.Module):
    """XNOR-Net convolution (Rastegari et al., 2016): conv(a, sign(W)) * alpha.

    alpha is the mean absolute latent weight per output channel, recomputed every call;
    gradients reach W through the straight-through sign and through alpha. The +/-1 sum is
    applied first so that the float result is an exact integer before alpha scales it.
    """

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, padding: int = 0):
        super().__init__()
        self.conv = QuantConv2d(
            cin, cout, k, stride=stride, padding=padding, bias=False, weight_quant=BinaryWeight
        )
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="relu")

    @property
    def weight(self) -> torch.Tensor:
        return self.conv.weight

    def alpha(self) -> torch.Tensor:
        """Per-output-channel scale, mean |W|."""
        return self.conv.weight.abs().mean(dim=(1, 2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) * self.alpha().view(1, -1, 1, 1)


class AbcConv2d(nn.Module):
    """ABC-Net convolution (Lin et al., 2017): sum_mn c_mn * conv(A_n(x), B_m(W)).

    B_m = sign(W - mean W + u_m std W), u_m evenly spaced in [-1, 1] (M weight bases);
    A_n = sign(x + v_n) with learnable shifts v_n (N activation bases). The coefficients
    c_mn = alpha_m * beta_n are quantized to int8 with one power-of-two scale 2^-F per layer
    (``coeff_bits``), as the DSP48 datapath holds them, so the output equals
    2^-F * S with S = sum_mn k_mn d_mn an exact integer.
    """

    def __init__(
        self,
        cin: int,
        cout: int,
        k: int,
        stride: int = 1,
        padding: int = 0,
        *,
        m: int,
        n: int,
        coeff_bits: int = 8,
    ):
        super().__init__()
        self.stride, self.padding, self.m, self.n, self.coeff_bits = (
            stride,
            padding,
            m,
            n,
            coeff_bits,
        )
        self.weight = nn.Parameter(torch.empty(cout, cin, k, k))
        nn.init.kaiming_normal_(self.weight, mode="fan_out", nonlinearity="relu")
        self.register_buffer("u", torch.linspace(-1.0, 1.0, m) if m > 1 else torch.zeros(1))
        self.shift = nn.Parameter(torch.linspace(-1.0, 1.0, n) if n > 1 else torch.zeros(1))
        self.beta = nn.Parameter(torch.full((n,), 1.0 / n))
        self.sign = QuantIdentity(act_quant=BinaryAct)
        with torch.no_grad():  # least-squares alpha for the initial weight, as in the paper
            b = self.weight_bases().reshape(m, -1).T
            alpha = torch.linalg.lstsq(b, self.weight.reshape(-1, 1)).solution.flatten()
        self.alpha = nn.Parameter(alpha.abs().clamp_min(1e-3))

    def weight_bases(self) -> torch.Tensor:
        """[M, cout, cin, k, k] unit +/-1 weight bases."""
        w = self.weight
        shifted = w.unsqueeze(0) - w.mean() + self.u.view(-1, 1, 1, 1, 1) * w.std()
        return self.sign(shifted)

    def coefficients(self) -> tuple[torch.Tensor, int]:
        """(k [M, N] integer-valued, F): c_mn ~= k_mn * 2^-F."""
        c = self.alpha.view(-1, 1) * self.beta.view(1, -1)
        qmax = 2 ** (self.coeff_bits - 1) - 1
        frac = math.floor(math.log2(qmax / c.detach().abs().max().clamp_min(1e-12).item()))
        rnd = round_ste if self.training else torch.round
        return torch.clamp(rnd(c * 2.0**frac), -qmax, qmax), frac

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cin, h, w = x.shape[1:]
        acts = self.sign(x.unsqueeze(0) + self.shift.view(-1, 1, 1, 1, 1))  # [N, B, C, H, W]
        bases = self.weight_bases()  # [M, cout, cin, k, k]
        cout = bases.shape[1]
        d = F.conv2d(
            acts.reshape(-1, cin, h, w),
            bases.reshape(self.m * cout, *bases.shape[2:]),
            stride=self.stride,
            padding=self.padding,
        )
        d = d.view(self.n, -1, self.m, cout, *d.shape[-2:])
        k, frac = self.coefficients()
        return torch.einsum("nbmchw,mn->bchw", d, k) * 2.0**-frac


F32_EXACT = 2**24
"""float32 holds every integer up to 2^24, so integer sums below it are exact in any order."""
MAX_INPUT_CODE = 2**8
"""Largest |code| a multi-bit layer reads: activations and residual streams are 8 bits at most."""


def _value(t):
    return t.value if isinstance(t, QuantTensor) else t


class IntConv2d(QuantConv2d):
    """Multi-bit convolution whose eval-mode output is a function of its integer sum alone.

    The output is d * 2^-f with d = sum(w x) an integer. When the worst case over its taps,
    K * 2^(bits-1) * 2^8, reaches 2^24 (8-bit weights over 512 or more taps), float32 partial
    sums could round in an order-dependent way (oneDNN's blocking, the batch size). Such a
    layer (``exact_sum``) sums in float64 in eval mode, exact far beyond any reachable d, and
    rounds once to float32: the result is float32(d) * 2^-f, which the lowering's thresholds
    reproduce. Elsewhere float32 is already exact and the conv is Brevitas' own; training
    always runs the float32 conv (its rounding never reaches an evaluated network).
    """

    def __init__(self, cin: int, cout: int, k: int, stride: int, padding: int, bits: int):
        super().__init__(
            cin,
            cout,
            k,
            stride=stride,
            padding=padding,
            bias=False,
            weight_quant=IntWeight,
            weight_bit_width=bits,
        )
        self.exact_sum = cin * k * k * 2 ** (bits - 1) * MAX_INPUT_CODE >= F32_EXACT

    def inner_forward_impl(self, x, quant_weight, quant_bias):
        if self.training or not self.exact_sum or torch.onnx.is_in_onnx_export():
            return super().inner_forward_impl(x, quant_weight, quant_bias)
        x, w = _value(x), _value(quant_weight)
        y = super().inner_forward_impl(x.double(), w.double(), None).to(x.dtype)
        return y if quant_bias is None else y + _value(quant_bias)


def int_conv(cin: int, cout: int, k: int, stride: int, padding: int, bits: int) -> IntConv2d:
    """Multi-bit convolution with a per-tensor power-of-two weight scale."""
    return IntConv2d(cin, cout, k, stride, padding, bits)


def first_conv(cin: int, cout: int, k: int, stride: int, padding: int) -> QuantConv2d:
    """8-bit first convolution on uint8 pixels (per-channel power-of-two weight scale)."""
    return QuantConv2d(
        cin, cout, k, stride=stride, padding=padding, bias=False, weight_quant=FirstLastWeight
    )


class ExactLinear(QuantLinear):
    """8-bit classifier whose logits are a function of its integer sum alone.

    In eval mode the dot products are taken in float64 (exact) and rounded once to float32,
    then the float bias is added once. ``F.linear`` with a bias lets the GEMM add the bias to
    partial sums (MKL does for 512 or more inputs), so its logits depend on the blocking and
    even differ between batch sizes; this head has neither problem at any width.
    """

    exact_sum = True

    def inner_forward_impl(self, x, quant_weight, quant_bias):
        x, w = _value(x), _value(quant_weight)
        if self.training or torch.onnx.is_in_onnx_export():  # QONNX/onnxruntime run float32
            y = F.linear(x, w)
        else:
            y = F.linear(x.double(), w.double()).to(x.dtype)
        return y if quant_bias is None else y + _value(quant_bias)


def exact_fc(cin: int, classes: int) -> ExactLinear:
    """8-bit final classifier of every quantized ResNet: an exact sum, then its float bias."""
    return ExactLinear(cin, classes, bias=True, weight_quant=IntWeight, weight_bit_width=8)


def option_a_shortcut(x: torch.Tensor, cout: int, stride: int) -> torch.Tensor:
    """CIFAR ResNet option A: subsample by ``stride`` and zero-pad channels to ``cout``."""
    if stride != 1:
        x = x[:, :, ::stride, ::stride]
    extra = cout - x.shape[1]
    if extra:
        x = F.pad(x, (0, 0, 0, 0, extra // 2, extra - extra // 2))
    return x
