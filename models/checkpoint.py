"""Checkpoints (``.pt``) and the model card (``.json``) written beside each one.

A checkpoint is a dict loadable with ``torch.load(weights_only=True)`` (no pickled code):
spec, data set, input shape, class count, structure (pruned widths), weights, and, while
training, optimizer/scheduler/RNG state so that a killed run resumes where it stopped.
"""

from __future__ import annotations

import json
import os
import platform
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.utils import prune as tprune

from .spec import ModelSpec, SpecError, parse_spec
from .zoo import arch_config, build_model

FORMAT = "hwbed-checkpoint"
VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that is missing, corrupt, or does not match what it is loaded into."""


@dataclass
class CheckpointMeta:
    """What a checkpoint says about its network."""

    spec: ModelSpec
    data: str
    input_shape: tuple[int, int, int]
    classes: int
    arch: dict[str, Any] = field(default_factory=dict)
    epoch: int = 0
    complete: bool = False
    card: dict[str, Any] = field(default_factory=dict)


def versions() -> dict[str, str]:
    """Versions of the stack that produced a result."""
    import brevitas

    import hwbed

    return {
        "hwbed": hwbed.__version__,
        "torch": torch.__version__,
        "brevitas": brevitas.__version__,
        "python": platform.python_version(),
    }


def card_path(path: str | Path) -> Path:
    """The model card beside a checkpoint: ``model.pt`` -> ``model.json``."""
    return Path(path).with_suffix(".json")


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    meta: CheckpointMeta,
    state: dict[str, Any] | None = None,
) -> None:
    """Write checkpoint and model card atomically (a kill never leaves half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "spec": meta.spec.name,
        "data": meta.data,
        "input_shape": list(meta.input_shape),
        "classes": meta.classes,
        "arch": arch_config(model),
        "epoch": meta.epoch,
        "complete": meta.complete,
        "state_dict": model.state_dict(),
        "train_state": state or {},
    }
    tmp = path.with_suffix(".pt.tmp")
    with open(tmp, "wb") as f:
        torch.save(payload, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)  # the commit point: a kill before the card is written leaves it stale
    write_card(path, meta)


def write_card(path: str | Path, meta: CheckpointMeta) -> None:
    """Write the model card of the checkpoint ``path`` atomically."""
    path = Path(path)
    card = {
        "spec": meta.spec.name,
        "data": meta.data,
        "input_shape": list(meta.input_shape),
        "classes": meta.classes,
        "epoch": meta.epoch,
        "complete": meta.complete,
        "checkpoint": path.name,
        "versions": versions(),
        **meta.card,
    }
    tmp_card = card_path(path).with_suffix(".json.tmp")
    tmp_card.write_text(json.dumps(card, indent=2, default=str) + "\n")
    os.replace(tmp_card, card_path(path))


def _unreadable(path: Path, err: Exception) -> str:
    """Why torch could not load ``path``, in hwbed's words (never torch's advice to load it
    with ``weights_only=False``: that would run whatever code an unknown file holds)."""
    with open(path, "rb") as f:
        head = f.read(4)
    if not head:
        return "empty file"
    if head != b"PK\x03\x04":
        return "not a torch zip archive"
    if not zipfile.is_zipfile(path):
        return "truncated or corrupt torch archive"
    text = str(err)
    if "Unsupported global" in text:
        name = text.split("GLOBAL ", 1)[1].split(" ", 1)[0] if "GLOBAL " in text else "?"
        return f"holds pickled objects ({name}), not only tensors and plain values"
    if "weights_only" in text or "\n" in text.strip():
        return type(err).__name__
    return f"{type(err).__name__}: {text.strip()[:200]}"


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The raw checkpoint dict, validated; raises :class:`CheckpointError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for truncated/garbage files
        raise CheckpointError(
            f"{path}: not a hwbed checkpoint (unreadable: {_unreadable(path, err)})"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a hwbed checkpoint (no '{FORMAT}' header)")
    if payload.get("version") != VERSION:
        raise CheckpointError(
            f"{path} has checkpoint version {payload.get('version')}, expected {VERSION}"
        )
    missing = {"spec", "data", "input_shape", "classes", "state_dict"} - payload.keys()
    if missing:
        raise CheckpointError(f"{path} lacks the fields {sorted(missing)}")
    return payload


def runtime_state(model: nn.Module) -> dict[str, dict[str, Any]]:
    """Training state that ``state_dict`` leaves out or rewrites: Brevitas' statistics phase.

    A runtime-statistics scale (or zero point) keeps a step ``counter`` and a running
    ``buffer``; ``state_dict`` saves the buffer *as* the learned value and loading it ends
    the statistics phase. Continuing a run exactly needs the counter and the raw tensors.
    """
    state = {}
    for name, module in model.named_modules():
        attrs = {
            key: getattr(module, key)
            for key in ("counter", "init_done")
            if isinstance(getattr(module, key, None), (bool, int))
        }
        if not attrs:
            continue
        tensors = {**module._parameters, **module._buffers}
        state[name] = {
            "attrs": attrs,
            "tensors": {k: v.detach().clone() for k, v in tensors.items() if v is not None},
        }
    return state


@torch.no_grad()
def restore_runtime_state(model: nn.Module, state: dict[str, dict[str, Any]]) -> None:
    """Undo what loading ``state_dict`` did to the modules :func:`runtime_state` saved."""
    for name, saved in state.items():
        module = model.get_submodule(name)
        for key, value in saved["attrs"].items():
            setattr(module, key, value)
        for key, value in saved["tensors"].items():
            target = module._parameters.get(key)
            if target is None:
                target = module._buffers[key]
            target.copy_(value)


def _uncalibrated_scale(model: nn.Module, key: str) -> bool:
    """True for the learned value of a Brevitas stats-initialised scale that never saw data.

    Brevitas leaves such a value out of ``state_dict`` (its statistics buffer still holds the
    initial 1.0), so a network saved before its first training step lacks the key; the
    freshly built network is in the same uncalibrated state and behaves identically.
    """
    prefix, _, leaf = key.rpartition(".")
    if leaf != "value":
        return False
    try:
        module = model.get_submodule(prefix)
    except AttributeError:
        return False
    return getattr(module, "counter", None) == 0 and hasattr(module, "collect_stats_steps")


@torch.no_grad()
def _refresh_pruned_weights(model: nn.Module) -> None:
    """Recompute ``weight = weight_orig * weight_mask`` of masked layers after loading.

    ``torch.nn.utils.prune`` only refreshes the masked weight in a forward pre-hook, so
    without this the loaded network's ``.weight`` would hold the placeholder's until the
    first forward pass (wrong for anything that reads weights: export, inspection). The
    refreshed weight is computed without autograd, so the loaded network can be deep-copied
    (the QONNX export copies it); training's forward pre-hook recomputes it with gradients.
    """
    for module in model.modules():
        for hook in module._forward_pre_hooks.values():
            if isinstance(hook, tprune.BasePruningMethod):
                setattr(module, hook._tensor_name, hook.apply_mask(module))


def load_checkpoint(
    path: str | Path, expect_spec: str | ModelSpec | None = None, device: str = "cpu"
) -> tuple[nn.Module, CheckpointMeta]:
    """Rebuild the network from a checkpoint and load its weights (eval mode)."""
    payload = read_checkpoint(path)
    try:
        spec = parse_spec(payload["spec"])
    except SpecError as err:
        raise CheckpointError(f"{path}: {err}") from err
    if expect_spec is not None and parse_spec(expect_spec) != spec:
        raise CheckpointError(
            f"{path} holds a {spec.name} network, not {parse_spec(expect_spec).name}"
        )
    c, h, w = payload["input_shape"]
    model = build_model(spec, c, h, w, payload["classes"], arch_config=payload.get("arch") or {})
    try:
        result = model.load_state_dict(payload["state_dict"], strict=False)
    except RuntimeError as err:
        raise CheckpointError(f"{path} does not fit a {spec.name} network: {err}") from err
    missing = [k for k in result.missing_keys if not _uncalibrated_scale(model, k)]
    if missing or result.unexpected_keys:
        raise CheckpointError(
            f"{path} does not fit a {spec.name} network: missing keys {missing[:5]}, "
            f"unexpected keys {list(result.unexpected_keys)[:5]}"
        )
    _refresh_pruned_weights(model)
    model.to(device).eval()
    card = {}
    if card_path(path).is_file():
        card = json.loads(card_path(path).read_text())
    meta = CheckpointMeta(
        spec,
        payload["data"],
        (c, h, w),
        payload["classes"],
        payload.get("arch") or {},
        payload.get("epoch", 0),
        payload.get("complete", False),
        card,
    )
    return model, meta
