"""Memory demand and normalized compute complexity (NCC) as the study counts them.

Memory [MB = 10^6 bytes] is the study's column: the **stored weights** of every layer --
32 bits per full-precision weight and bias, 1 bit per binary weight per basis, W bits per
weight of a ``wXaY`` layer -- plus the scales that define those weights, at 32 bits each:
XNOR's alpha (one per output channel), ABC's alpha_m (one per weight basis) and the
weight quantizer's scale of a ``wXaY`` layer. As in the study, the first convolution and the
final classifier count as full precision in every variant, and pruned (masked or removed)
weights are not stored.

Not counted, because on the device they fold into the thresholds (or the final affine's
biases) and the study's column leaves them out: BatchNorm (and BNN-PYNQ's TensorNorm), and
every activation-side parameter -- learned activation quantizer scales and ABC's activation
bases' beta_n and shift v_n. They stay visible: their rows keep their parameter count with
``memory_mb`` 0, and ``folded_mb`` (per row and in total) is what they would take at 32 bits,
so ``memory_mb + folded_mb`` counts every parameter, those at 32 bits. (METHOD.md's wording
lists BN among the 32-bit parameters; the study's memory column counts stored weights only,
and this module follows the column.) What the integer graph really stores, thresholds
included, is ``hwbed.fpga.finn.memory.device_memory``.

NCC [10^6] takes the DSP48 slice as unit: a full-precision (or multi-bit) MAC counts 1, a
binary XNOR-popcount MAC counts 1/48, an ABC-MxN MAC counts M*N/48; pruned MACs count 0.
MACs are counted per image as output positions times surviving weights.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from brevitas.nn import QuantConv2d, QuantIdentity, QuantLinear, QuantReLU
from torch import nn

from .layers import AbcConv2d, XnorConv2d
from .spec import ModelSpec, parse_spec

FP_BITS = 32
XNORS_PER_SLICE = 48
MB = 8e6
"""Bits per MB (10^6 bytes)."""


@dataclass
class LayerCost:
    """One row of the cost table."""

    name: str
    kind: str
    precision: str
    params: int
    memory_mb: float
    macs: int
    ncc_m: float
    folded_mb: float = 0.0
    """32-bit size of this row's parameters the memory does not count (BN, activation scales)."""


@dataclass
class ModelCost:
    """Totals and per-layer rows for one network."""

    model: str
    params: int
    memory_mb: float
    macs: int
    ncc_m: float
    layers: list[LayerCost]
    folded_mb: float = 0.0
    """BN and activation-side parameters at 32 bits: not in ``memory_mb`` (see the module doc)."""

    def to_dict(self) -> dict:
        return asdict(self)


def _weight_bits(module: nn.Module) -> int | None:
    if isinstance(module, (QuantConv2d, QuantLinear)):
        bits = module.quant_weight().bit_width
        return None if bits is None else int(bits)
    return None


def _surviving(weight: torch.Tensor, module: nn.Module) -> int:
    mask = getattr(module, "weight_mask", None)
    return int(mask.sum().item()) if mask is not None else weight.numel()


def _conv_positions(out: torch.Tensor) -> int:
    return int(out.shape[2] * out.shape[3]) if out.dim() == 4 else 1


def model_cost(
    model: nn.Module, spec: ModelSpec | str, input_shape: tuple[int, int, int]
) -> ModelCost:
    """Cost of ``model`` (built for ``spec``) on one image of ``input_shape`` (C, H, W)."""
    spec = parse_spec(spec)
    names = {m: n for n, m in model.named_modules()}
    xnor_inner = {m.conv for m in model.modules() if isinstance(m, XnorConv2d)}
    compute = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear, AbcConv2d))]
    first, last = compute[0], compute[-1]
    full_precision = {first, last}
    if spec.quant == "xnor":  # XNOR keeps the 1x1 downsampling convs at full precision too
        full_precision |= {m for m in compute if ".shortcut." in f".{names[m]}."}
    rows: list[LayerCost] = []

    def on_compute(module, _inputs, out):
        positions = _conv_positions(out)
        folded = 0
        if isinstance(module, AbcConv2d):
            weights = module.weight.numel()
            scales = module.alpha.numel() + module.beta.numel() + module.shift.numel()
            bits = weights * module.m + FP_BITS * module.alpha.numel()  # bases + alpha_m
            folded = FP_BITS * (module.beta.numel() + module.shift.numel())  # activation bases
            macs = positions * weights
            ncc = macs * module.m * module.n / XNORS_PER_SLICE
            precision = f"abc{module.m}x{module.n}"
        else:
            weights = _surviving(module.weight, module)
            macs = positions * weights
            params_bias = module.bias.numel() if module.bias is not None else 0
            wbits = _weight_bits(module)
            if module in full_precision or wbits is None:
                precision, bits, ncc = "fp32", FP_BITS * (weights + params_bias), float(macs)
            elif module in xnor_inner:
                precision = "xnor"
                bits = weights + FP_BITS * module.out_channels  # sign bits + alpha
                ncc = macs / XNORS_PER_SLICE
            else:
                scale = module.quant_weight().scale
                bits = wbits * weights + FP_BITS * (scale.numel() + params_bias)
                binary = wbits == 1 and spec.a_bits == 1
                precision = "binary" if binary else f"int{wbits}"
                ncc = macs / XNORS_PER_SLICE if binary else float(macs)
            scales = 0
        kind = "linear" if isinstance(module, nn.Linear) else "conv"
        bias = getattr(module, "bias", None)
        params = weights + scales + (bias.numel() if bias is not None else 0)
        rows.append(
            LayerCost(
                names[module], kind, precision, params, bits / MB, macs, ncc / 1e6, folded / MB
            )
        )

    def on_norm(module, _inputs, _out):
        n = sum(
            b.numel() for b in (module.weight, module.bias, module.running_mean, module.running_var)
        )
        rows.append(LayerCost(names[module], "norm", "fp32", n, 0.0, 0, 0.0, FP_BITS * n / MB))

    hooks = [m.register_forward_hook(on_compute) for m in compute]
    norms = [m for m in model.modules() if _is_norm(m)]
    hooks += [m.register_forward_hook(on_norm) for m in norms]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.rand(1, *input_shape, device=next(model.parameters()).device))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    n_scales = _activation_scales(model)
    if n_scales:
        rows.append(
            LayerCost(
                "activation scales",
                "scales",
                "fp32",
                n_scales,
                0.0,
                0,
                0.0,
                FP_BITS * n_scales / MB,
            )
        )
    return ModelCost(
        model=spec.name,
        params=sum(r.params for r in rows),
        memory_mb=sum(r.memory_mb for r in rows),
        macs=sum(r.macs for r in rows),
        ncc_m=sum(r.ncc_m for r in rows),
        layers=rows,
        folded_mb=sum(r.folded_mb for r in rows),
    )


def _activation_scales(model: nn.Module) -> int:
    """Learned activation scales, counting a proxy shared by several layers once."""
    proxies = {
        id(m.act_quant): m.act_quant
        for m in model.modules()
        if isinstance(m, (QuantIdentity, QuantReLU))
    }
    return sum(p.numel() for proxy in proxies.values() for p in proxy.parameters())


def _is_norm(module: nn.Module) -> bool:
    return all(
        hasattr(module, a) for a in ("running_mean", "running_var", "weight", "bias")
    ) and not isinstance(module, (nn.Conv2d, nn.Linear))
