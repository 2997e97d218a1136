"""Norm balls, the valid box, distortion measures and the step onto the 8-bit grid.

All distances are in the [0, 1] image space. ``to_grid`` is how a float adversarial reaches
hardware: the nearest uint8 image that is still inside the attack's ε-ball, so that what the
board sees obeys the same threat model as what the twin saw.
"""

from __future__ import annotations

import numpy as np
import torch

SLACK = 1e-6
"""Relative float tolerance of a norm bound on float images (float32 rounding of δ)."""


def norms(delta: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-example norm [N] of ``delta`` [N, ...]."""
    flat = delta.flatten(1)
    if norm == "linf":
        return flat.abs().amax(dim=1)
    return flat.norm(dim=1)


def project(delta: torch.Tensor, norm: str, eps: float | torch.Tensor) -> torch.Tensor:
    """``delta`` projected onto the ε-ball of ``norm`` (per example)."""
    if norm == "linf":
        eps = torch.as_tensor(eps, dtype=delta.dtype, device=delta.device)
        eps = eps.view(-1, *[1] * (delta.dim() - 1)) if eps.dim() else eps
        return torch.maximum(torch.minimum(delta, eps), -eps)
    n = norms(delta, "l2").clamp_min(1e-12)
    eps = torch.as_tensor(eps, dtype=delta.dtype, device=delta.device)
    factor = torch.clamp(eps / n, max=1.0)
    return delta * factor.view(-1, *[1] * (delta.dim() - 1))


def normalize(g: torch.Tensor, norm: str) -> torch.Tensor:
    """The steepest-ascent direction of unit ``norm`` for gradient ``g``: sign(g) for L∞,
    g/‖g‖₂ for L2 (0 where g is 0)."""
    if norm == "linf":
        return g.sign()
    n = norms(g, "l2").clamp_min(1e-12)
    return g / n.view(-1, *[1] * (g.dim() - 1))


def random_in_ball(shape, norm: str, eps: float, generator: torch.Generator) -> torch.Tensor:
    """Uniform samples of the ε-ball (L∞: uniform per coordinate; L2: uniform in volume)."""
    if norm == "linf":
        return (torch.rand(shape, generator=generator) * 2 - 1) * eps
    n, d = shape[0], int(np.prod(shape[1:]))
    g = torch.randn((n, d), generator=generator)
    g = g / g.norm(dim=1, keepdim=True).clamp_min(1e-12)
    r = torch.rand((n, 1), generator=generator) ** (1.0 / d)
    return (g * r * eps).view(shape)


def distortion(clean: np.ndarray, adv: np.ndarray) -> dict[str, np.ndarray]:
    """L0 (changed values), L2 and L∞ of ``adv - clean`` per image, in [0, 1] units.

    uint8 arrays are read as k/255; float arrays as [0, 1] values. Shapes [..., C, H, W].
    """
    c = _unit(clean)
    a = _unit(adv)
    d = (a - c).reshape(*a.shape[:-3], -1)
    return {
        "l0": np.count_nonzero(d, axis=-1).astype(np.int64),
        "l2": np.sqrt(np.sum(d * d, axis=-1)),
        "linf": np.abs(d).max(axis=-1),
    }


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype == np.uint8:
        return x.astype(np.float64) / 255.0
    return x.astype(np.float64)


def to_grid(clean: np.ndarray, adv: np.ndarray, norm: str | None, eps: float) -> np.ndarray:
    """The uint8 image nearest to float ``adv`` that stays in the ε-ball around ``clean``.

    ``clean`` is uint8 [N, C, H, W]; ``adv`` float in [0, 1]. L∞: round half to even, then clip
    to ``clean ± floor(255 ε)``. L2: round; an image whose rounded δ leaves the ball is
    rounded toward ``clean`` instead (|trunc(255 δ)| ≤ |255 δ| in every coordinate, so its
    norm cannot grow). ``norm`` None or ε = inf: plain rounding (minimum-norm attacks).
    """
    c = clean.astype(np.int64)
    target = np.clip(np.asarray(adv, dtype=np.float64), 0.0, 1.0) * 255.0
    q = np.rint(target).astype(np.int64)
    if norm is None or not np.isfinite(eps):
        return np.clip(q, 0, 255).astype(np.uint8)
    if norm == "linf":
        k = int(np.floor(eps * 255.0 + 1e-9))
        return np.clip(q, np.maximum(c - k, 0), np.minimum(c + k, 255)).astype(np.uint8)
    flat = (q - c).reshape(len(c), -1).astype(np.float64)
    outside = np.sqrt((flat * flat).sum(axis=1)) / 255.0 > eps * (1 + 1e-12)
    if outside.any():
        trunc = c[outside] + np.trunc(target[outside] - c[outside]).astype(np.int64)
        q[outside] = trunc
    return np.clip(q, 0, 255).astype(np.uint8)
