"""The deployed version of a float network: its weights in a quantized twin, calibrated.

A float ResNet (vanilla, distilled or pruned) runs on an FPGA at 8 bits. Post-training
quantization (PTQ) makes that twin:

* :func:`quantized_copy` carries the float weights into a ResNet of the same structure at a
  ``w<W>a<A>`` precision (the int ResNets compute the float function: ReLU after the stem
  and after every add, a uint8 post-ReLU stream, ``models.resnet``). Each weight becomes its
  own power-of-two quantization (``round(w / s)``, ``s = 2^ceil(log2 max|w|) / 2^(W-1)``, per
  tensor, per channel for the stem); BN stays float and folds into the lowering's
  thresholds. Filter/channel-pruned widths carry over, kernel/weight pruning masks too, so
  pruned weights stay zero through a fine-tune.
* :func:`calibrate` sets every activation scale from the float network's activations on
  training images: Brevitas' ``calibration_mode`` (quantization off, each runtime-statistics
  quantizer records the 99.999th percentile of its input, averaged over the batches, and
  takes the power of two above it as its learned scale).
* :func:`hwbed.models.quantize_checkpoint.quantize_checkpoint` does both for a checkpoint,
  optionally fine-tunes with quantization-aware training (``models.training``'s loop,
  ``TrainConfig(init=...)``), and writes a checkpoint of spec ``<float spec>-w<W>a<A>``
  whose card says where it came from.
"""

from __future__ import annotations

import hashlib
import re

import numpy as np
import torch
from torch import nn
from torch.nn.utils import prune as tprune

from .layers import AbcConv2d, XnorConv2d
from .resnet import ResNet
from .spec import ModelSpec, SpecError, parse_spec

DEFAULT_CALIBRATION_IMAGES = 1024
"""Training images whose activations set the scales (all of them when the split is smaller)."""
PRECISION = re.compile(r"^w\d+a\d+$")


class QuantizeError(ValueError):
    """A network or precision that post-training quantization does not take."""


def effective_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """``model``'s state with pruning masks applied: ``w_orig * mask`` stored as ``w``."""
    state = dict(model.state_dict())
    for key in [k for k in state if k.endswith("_orig")]:
        base = key[: -len("_orig")]
        state[base] = state.pop(key) * state.pop(base + "_mask")
    return state


def weight_owner(conv: nn.Module) -> nn.Module:
    """The module holding an inner conv's ``weight`` parameter (XnorConv2d wraps its conv)."""
    return conv.conv if isinstance(conv, XnorConv2d) else conv


def quantized_copy(model: ResNet, spec: ModelSpec | str) -> ResNet:
    """A ResNet at ``spec``'s precision with ``model``'s (float, maybe pruned) weights.

    The stem's weights are divided by 255: the quantized stem reads uint8 pixels, the float
    one pixels in [0, 1]. Kernel/weight pruning masks are attached to the copy's inner convs.
    Activation scales are left at their initial values: :func:`calibrate` an int copy (XNOR
    and ABC copies set them in their statistics phase, the first training steps).
    """
    spec = parse_spec(spec)
    if not isinstance(model, ResNet) or model.spec.quantized:
        raise ValueError(f"quantized_copy takes a float ResNet, got {type(model).__name__}")
    mids = [[bn.num_features for bn in b.bns[:-1]] for b in model.blocks]
    out = ResNet(spec, model.stem_conv.in_channels, model.fc.out_features, mids=mids)
    target = out.state_dict()
    moved = {}
    for key, value in effective_state(model).items():
        if key == "stem_conv.weight":
            value = value / 255.0
        alt = key.removesuffix(".weight") + ".conv.weight"  # XnorConv2d wraps its conv
        for name in (key, alt):
            if name in target and target[name].shape == value.shape:
                moved[name] = value
                break
    out.load_state_dict(moved, strict=False)
    for src, dst in zip(_inner(model), _inner(out), strict=True):
        if isinstance(dst, AbcConv2d):
            _refit_alpha(dst)
        mask = getattr(src, "weight_mask", None)
        if mask is not None:
            tprune.custom_from_mask(weight_owner(dst), "weight", mask.detach().clone())
    return out.to(next(model.parameters()).device)


def _inner(model: ResNet) -> list[nn.Module]:
    return [conv for block in model.blocks for conv in block.convs]


@torch.no_grad()
def _refit_alpha(conv: AbcConv2d) -> None:
    """Least-squares alpha for the carried-over weights, as AbcConv2d's own initialisation."""
    b = conv.weight_bases().reshape(conv.m, -1).T
    alpha = torch.linalg.lstsq(b, conv.weight.reshape(-1, 1)).solution.flatten()
    conv.alpha.copy_(alpha.abs().clamp_min(1e-3))


def _stats_scalings(model: nn.Module) -> list[nn.Module]:
    """Brevitas' runtime-statistics scales (each once, shared ones too)."""
    return [
        m for m in model.modules() if hasattr(m, "collect_stats_steps") and hasattr(m, "counter")
    ]


@torch.no_grad()
def end_stats_phase(model: nn.Module, x: torch.Tensor) -> None:
    """Set a fresh network's quantizer scales from ``x``: a training-mode pass, Brevitas'
    statistics phase marked over, another pass (the learned scales take over from the
    statistics). BN statistics move too; the train/eval mode is left as it was."""
    was = model.training
    model.train()
    model(x)
    for module in _stats_scalings(model):
        module.counter = max(module.counter, module.collect_stats_steps)
    model(x)
    model.train(was)


@torch.no_grad()
def calibrate(model: nn.Module, images: np.ndarray, batch_size: int = 256) -> None:
    """Set ``model``'s activation scales from its float activations on uint8 ``images``.

    Brevitas' ``calibration_mode``: the float network runs (every quantizer passes its input
    through, BN in eval mode on the float network's running statistics), each runtime-stats
    scale averages its input's percentile over the batches and then takes it as its learned
    power-of-two value. Afterwards each scale is in the state a loaded checkpoint has
    (statistics phase over, its step count restored), so training continues from it as QAT.
    """
    from brevitas.graph.calibrate import calibration_mode

    from .data import to_float

    if len(images) == 0:
        raise QuantizeError("calibration needs at least one image")
    scalings = _stats_scalings(model)
    saved = [(m, m.collect_stats_steps, m.momentum) for m in scalings]
    device = next(model.parameters()).device
    model.eval()
    with calibration_mode(model):
        for i in range(0, len(images), batch_size):
            model(to_float(images[i : i + batch_size]).to(device))
    for module, steps, momentum in saved:  # calibration_mode extends the phase to sys.maxsize
        module.collect_stats_steps, module.momentum = steps, momentum
        module.counter = steps + 1
    model.eval()


def calibration_subset(x: np.ndarray, n: int, seed: int) -> np.ndarray:
    """A seeded subset of ``n`` images (in their order), or all of ``x`` when it is smaller."""
    from .data import subset_indices

    keep = subset_indices(len(x), n, seed)
    return x if keep is None else x[keep]


def images_digest(x: np.ndarray) -> str:
    """SHA-256 of uint8 images (shape and bytes): which images calibrated a network."""
    h = hashlib.sha256(f"{x.dtype.str}{x.shape}".encode())
    h.update(np.ascontiguousarray(x).tobytes())
    return h.hexdigest()


def ptq(model: ResNet, spec: ModelSpec | str, images: np.ndarray) -> ResNet:
    """:func:`quantized_copy` of a float ResNet, calibrated on ``images`` when ``spec`` is int."""
    out = quantized_copy(model, spec)
    if parse_spec(spec).quant == "int":
        calibrate(out, images)
    return out


def deployed_spec(spec: ModelSpec | str, precision: str) -> ModelSpec:
    """``spec`` (a float ResNet) at ``precision`` (``w<W>a<A>``); QuantizeError otherwise."""
    spec = parse_spec(spec)
    precision = precision.strip().lower()
    if not PRECISION.match(precision):
        raise QuantizeError(
            f"--quantize takes a precision w<W>a<A> (e.g. w8a8, the FPGA target), got {precision!r}"
        )
    if spec.quantized:
        raise QuantizeError(
            f"{spec.name} is already quantized ({spec.precision}); --quantize makes the "
            f"deployed version of a float network (e.g. {spec.at_precision('').name})"
        )
    if spec.family == "bnn-pynq":
        raise QuantizeError(
            f"--quantize takes a float ResNet; {spec.name} is a BNN-PYNQ network: train "
            f"{spec.arch}-{precision} instead"
        )
    try:
        return spec.at_precision(precision)
    except SpecError as err:
        raise QuantizeError(f"--quantize {precision}: {err}") from None
