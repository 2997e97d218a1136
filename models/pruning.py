"""Pruning at four granularities with the l2-norm criterion (Li et al., 2017; Mao et al., 2017).

``filter`` and ``channel`` physically remove structure: inside each residual block the
intermediate widths shrink, so removing an output filter of one conv also removes the
matching input channel of the next (and its BN channel). ``kernel`` and ``weight`` keep the
shapes and attach masks (``torch.nn.utils.prune``) to the inner convolutions; masked weights
stay zero through fine-tuning. The stem conv and the classifier are never pruned.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils import prune as tprune

from .resnet import FloatBlock, ResNet
from .spec import ModelSpec


def inner_convs(model: ResNet) -> list[nn.Conv2d]:
    """The convolutions pruning acts on: every conv inside a residual block (not shortcuts)."""
    return [conv for block in model.blocks for conv in block.convs]


def keep_count(n: int, rate: float) -> int:
    """How many of ``n`` structures survive pruning at ``rate`` (at least one)."""
    return max(1, n - math.floor(n * rate))


def structure_scores(block: FloatBlock, unit: int, granularity: str) -> torch.Tensor:
    """l2 norm per intermediate channel after conv ``unit`` of a block."""
    if granularity == "filter":  # output filters of this conv
        w = block.convs[unit].weight
        return w.detach().flatten(1).norm(dim=1)
    w = block.convs[unit + 1].weight  # input channels of the next conv
    return w.detach().transpose(0, 1).flatten(1).norm(dim=1)


def prune_model(model: ResNet, spec: ModelSpec) -> ResNet:
    """Return a pruned copy of a float ResNet at ``spec.prune`` granularity and ``spec.rate``."""
    if not isinstance(model, ResNet) or model.spec.quantized:
        raise ValueError("pruning applies to float ResNets; got " + type(model).__name__)
    if spec.prune in ("filter", "channel"):
        return _remove_channels(model, spec)
    pruned = _copy(model, spec)
    pruned.load_state_dict(model.state_dict())  # keep the trained weights, then mask them
    for conv in inner_convs(pruned):
        tprune.custom_from_mask(conv, "weight", _mask(conv.weight.detach(), spec))
    return pruned


def _mask(w: torch.Tensor, spec: ModelSpec) -> torch.Tensor:
    if spec.prune == "kernel":
        scores = w.flatten(2).norm(dim=2)  # [cout, cin], one per k x k kernel
    else:
        scores = w.abs()
    keep = keep_count(scores.numel(), spec.rate)
    mask = torch.zeros(scores.numel(), device=w.device)
    mask[scores.flatten().topk(keep).indices] = 1.0  # exactly ``keep``, even with ties
    mask = mask.view_as(scores)
    if spec.prune == "kernel":
        mask = mask[:, :, None, None].expand_as(w)
    return mask.contiguous()


def _copy(model: ResNet, spec: ModelSpec, mids=None) -> ResNet:
    conv = model.stem_conv
    new = ResNet(spec, conv.in_channels, model.fc.out_features, mids=mids)
    return new.to(next(model.parameters()).device)


def _remove_channels(model: ResNet, spec: ModelSpec) -> ResNet:
    keeps = []
    for block in model.blocks:
        per_unit = []
        for unit in range(len(block.convs) - 1):
            scores = structure_scores(block, unit, spec.prune)
            top = scores.topk(keep_count(scores.numel(), spec.rate)).indices
            per_unit.append(top.sort().values)
        keeps.append(per_unit)
    new = _copy(model, spec, mids=[[len(k) for k in per_unit] for per_unit in keeps])
    src, dst = model.state_dict(), new.state_dict()
    out = {}
    for key, value in dst.items():
        out[key] = _select(key, src[key], value.shape, keeps)
    new.load_state_dict(out)
    return new


def _select(key: str, value: torch.Tensor, shape: torch.Size, keeps) -> torch.Tensor:
    """Slice a source tensor to the pruned shape using the kept channel indices."""
    if value.shape == shape:
        return value
    parts = key.split(".")  # blocks.<b>.convs|bns.<u>.<param>
    block, kind, unit = int(parts[1]), parts[2], int(parts[3])
    per_unit = keeps[block]
    if kind == "bns":
        return value[per_unit[unit]]
    out = value
    if unit < len(per_unit):  # output filters of this conv were pruned
        out = out[per_unit[unit]]
    if unit > 0:  # input channels follow the previous conv's kept filters
        out = out[:, per_unit[unit - 1]]
    return out
