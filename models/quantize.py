"""A float ResNet's weights carried into a quantized twin of the same structure."""

from __future__ import annotations

import torch
from torch import nn

from .resnet import ResNet
from .spec import ModelSpec, parse_spec


def effective_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """``model``'s state with pruning masks applied: ``w_orig * mask`` stored as ``w``."""
    state = dict(model.state_dict())
    for key in [k for k in state if k.endswith("_orig")]:
        base = key[: -len("_orig")]
        state[base] = state.pop(key) * state.pop(base + "_mask")
    return state


def quantized_copy(model: ResNet, spec: ModelSpec | str) -> ResNet:
    """A ResNet at ``spec``'s precision with ``model``'s (float, maybe pruned) weights.

    Quantizer scales are left at their initial values; calibrate before use.
    """
    spec = parse_spec(spec)
    if not isinstance(model, ResNet) or model.spec.quantized:
        raise ValueError(f"quantized_copy takes a float ResNet, got {type(model).__name__}")
    mids = [[bn.num_features for bn in b.bns[:-1]] for b in model.blocks]
    out = ResNet(spec, model.stem_conv.in_channels, model.fc.out_features, mids=mids)
    target = out.state_dict()
    moved = {}
    for key, value in effective_state(model).items():
        alt = key.removesuffix(".weight") + ".conv.weight"  # XnorConv2d wraps its conv
        for name in (key, alt):
            if name in target and target[name].shape == value.shape:
                moved[name] = value
                break
    out.load_state_dict(moved, strict=False)
    return out.to(next(model.parameters()).device)
