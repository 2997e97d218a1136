"""The differentiable twin white-box attacks take gradients of.

A :class:`Twin` wraps the Brevitas (or float) torch module: float [0, 1] NCHW images in,
logits out. Binary twins differentiate through their straight-through estimators as they were
trained (Brevitas' clamped sign: gradient 1 on [-1, 1], 0 outside). For gradient-masking
checks (Athalye et al. 2018; Gupta & Ajanthan 2020) it offers:

- ``bpda``: backward pass differentiable approximation of every binary activation. The
  forward value stays exact (``q(x) + s(x) - s(x).detach()``); the backward pass sees the
  surrogate ``s``: ``"identity"`` (s(x) = x) or ``"tanh"`` (s(x) = tanh(x / width)).
- ``temperature``: logits divided by T before the loss (T > 1 un-saturates the softmax).

Example::

    twin = Twin.from_checkpoint("runs/resnet20-xnor-digits-s0/model.pt", bpda="tanh")
    logits = twin(x)  # x: float tensor [N, C, H, W] in [0, 1]
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from .inputs import AttackError

BPDA = (None, "identity", "tanh")


class Twin:
    """A torch module as a differentiable model of the network; ``twin(x)`` gives logits."""

    def __init__(
        self,
        model: nn.Module,
        input_shape: tuple[int, ...],
        num_classes: int,
        name: str = "twin",
        *,
        bpda: str | None = None,
        bpda_width: float = 1.0,
        temperature: float = 1.0,
        device: str = "cpu",
    ):
        if bpda not in BPDA:
            raise AttackError(f"unknown bpda {bpda!r}; choose one of identity, tanh (or None)")
        if not temperature > 0:
            raise AttackError(f"temperature must be > 0, got {temperature!r}")
        if not bpda_width > 0:
            raise AttackError(f"bpda_width must be > 0, got {bpda_width!r}")
        self.model = model.to(device).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.input_shape = tuple(int(v) for v in input_shape)
        self.num_classes = int(num_classes)
        self.name = name
        self.bpda = bpda
        self.bpda_width = float(bpda_width)
        self.temperature = float(temperature)
        self.device = device
        self.binary_activations = [m for m in self.model.modules() if _is_binary_act(m)]
        if bpda is not None and not self.binary_activations:
            raise AttackError(
                f"{name}: bpda={bpda!r} asked for, but the network has no binary activations"
            )

    @classmethod
    def from_checkpoint(cls, path: str | Path, **options) -> Twin:
        """The twin of a checkpoint (``model.pt``) or of a build folder's ``model.pt``."""
        from hwbed.models.checkpoint import load_checkpoint

        path = Path(path)
        if path.is_dir():
            path = path / "model.pt"
        model, meta = load_checkpoint(path)
        options.setdefault("name", f"twin:{meta.spec.name}")
        return cls(model, meta.input_shape, meta.classes, **options)

    def variant(self, **changes) -> Twin:
        """The same module with other gradient options (bpda, temperature, ...)."""
        options = {
            "name": self.name,
            "bpda": self.bpda,
            "bpda_width": self.bpda_width,
            "temperature": self.temperature,
            "device": self.device,
            **changes,
        }
        return Twin(self.model, self.input_shape, self.num_classes, **options)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (divided by the temperature) of float images [N, C, H, W] in [0, 1]."""
        with self._surrogates():
            logits = self.model(x.to(self.device))
        return logits.float() / self.temperature if self.temperature != 1.0 else logits.float()

    def predict(self, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
        """Top-1 labels of float images, without gradients."""
        with torch.no_grad():
            return torch.cat(
                [self(x[i : i + batch_size]).argmax(1).cpu() for i in range(0, len(x), batch_size)]
            )

    @contextmanager
    def _surrogates(self):
        if self.bpda is None:
            yield
            return
        hooks = [m.register_forward_hook(self._bpda_hook) for m in self.binary_activations]
        try:
            yield
        finally:
            for h in hooks:
                h.remove()

    def _bpda_hook(self, module: nn.Module, args, output):
        x = args[0]
        if not isinstance(output, torch.Tensor) or not isinstance(x, torch.Tensor):
            raise AttackError(
                f"{self.name}: bpda needs binary activations on plain tensors, "
                f"{type(module).__name__} passes {type(output).__name__}"
            )
        s = x if self.bpda == "identity" else torch.tanh(x / self.bpda_width)
        return output.detach() + (s - s.detach())

    def __repr__(self) -> str:
        return (
            f"Twin({self.name!r}, bpda={self.bpda!r}, temperature={self.temperature:g}, "
            f"{len(self.binary_activations)} binary activations)"
        )


def _is_binary_act(module: nn.Module) -> bool:
    """A Brevitas activation whose quantizer is a (clamped) binary sign."""
    proxy = getattr(getattr(module, "act_quant", None), "fused_activation_quant_proxy", None)
    quant = getattr(proxy, "tensor_quant", None)
    return type(quant).__name__ in ("ClampedBinaryQuant", "BinaryQuant")
