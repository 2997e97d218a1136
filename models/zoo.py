"""Build any network of the study from its spec and the data set's shape."""

from __future__ import annotations

from typing import Any

from torch import nn
from torch.nn.utils import prune as tprune

from .bnn_pynq import CNV_INPUT, bnn_pynq
from .pruning import inner_convs, prune_model
from .quantize import quantized_copy, weight_owner
from .resnet import RELU_STREAM, ResNet
from .spec import ModelSpec, parse_spec


def input_size(spec: ModelSpec | str) -> int | None:
    """Image side length the architecture requires, or None when it follows the data."""
    return CNV_INPUT if parse_spec(spec).arch == "cnv" else None


def build_model(
    spec: ModelSpec | str,
    channels: int,
    height: int,
    width: int,
    classes: int,
    arch_config: dict[str, Any] | None = None,
) -> nn.Module:
    """A network for ``spec`` on inputs of shape (channels, height, width) in [0, 1].

    ``arch_config`` (from a checkpoint) restores a pruned structure with placeholder masks
    ready for ``load_state_dict``, and the residual stream of an int ResNet: the uint8
    post-ReLU stream when it records ``"stream": "uint8-relu"``, else (a checkpoint saved
    before that stream existed) the int8 stream. Without it, a pruned spec is initialised and
    pruned at its rate, so costs of a fresh network are those of the pruned one, and int
    ResNets get the uint8 post-ReLU stream.
    """
    spec = parse_spec(spec)
    if spec.family == "bnn-pynq":
        return bnn_pynq(spec, channels, height, width, classes)
    relu_stream = None if arch_config is None else arch_config.get("stream") == RELU_STREAM
    if spec.prune is None:
        return ResNet(spec, channels, classes, relu_stream=relu_stream)
    if arch_config is None:  # prune a fresh float network, then give it the spec's precision
        full = spec.at_precision("")
        pruned = prune_model(ResNet(full, channels, classes), full)
        return quantized_copy(pruned, spec) if spec.quantized else pruned
    model = ResNet(spec, channels, classes, mids=arch_config.get("mids"), relu_stream=relu_stream)
    if spec.prune in ("kernel", "weight"):
        for conv in inner_convs(model):
            tprune.identity(weight_owner(conv), "weight")
    return model


def arch_config(model: nn.Module) -> dict[str, Any]:
    """What a checkpoint must record to rebuild the structure: pruned widths, and for int
    ResNets on the uint8 post-ReLU stream ``"stream": "uint8-relu"``."""
    if isinstance(model, ResNet):
        config: dict[str, Any] = {
            "mids": [[bn.num_features for bn in b.bns[:-1]] for b in model.blocks]
        }
        if model.relu_stream:
            config["stream"] = RELU_STREAM
        return config
    return {}
