"""Input checks shared by every attack: images, labels, targets, norms and epsilons.

Attacks work in one canonical space, float NCHW images in [0, 1] that lie on the 8-bit grid
(k/255), because that is what the hardware boundary carries. ε is an absolute radius in that
space with an explicit norm: ``linf`` (print it in pixel units, ε·255, e.g. 8/255) or ``l2``.
Every error names the culprit and is raised before any attack work starts.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np

NORMS = ("linf", "l2")
GRID_TOLERANCE = 1e-3
"""How far (in pixel units) a float pixel may sit from k/255 and still count as on the grid."""


class AttackError(ValueError):
    """Bad attack input or configuration; the message names the culprit."""


def px(k: float) -> float:
    """ε of ``k`` pixel units (k/255) in the [0, 1] image space."""
    return float(k) / 255.0


def check_norm(norm: Any, attack: str) -> str:
    """The norm's canonical name; an unknown or missing norm names the choices."""
    if norm is None:
        raise AttackError(f"{attack}: ε needs a norm; pass norm='linf' or norm='l2'")
    name = str(norm).lower().replace("∞", "inf").replace("_", "")
    name = {"inf": "linf", "linfinity": "linf", "2": "l2"}.get(name, name)
    if name not in NORMS:
        raise AttackError(f"{attack}: unknown norm {norm!r}; choose one of {', '.join(NORMS)}")
    return name


def check_epsilons(epsilons: Any, attack: str, *, bounded: bool = True) -> np.ndarray:
    """ε values as float64 [E]; ``bounded`` attacks need finite ε ≥ 0 (minimum-norm attacks
    accept ``None``/inf for "unbounded")."""
    if epsilons is None:
        if bounded:
            raise AttackError(f"{attack}: give epsilons=[...] (radii in [0, 1] image units)")
        return np.array([np.inf])
    if np.isscalar(epsilons):
        epsilons = [epsilons]
    values = []
    for eps in epsilons:
        if eps is None and not bounded:
            values.append(np.inf)
            continue
        try:
            value = float(eps)
        except (TypeError, ValueError):
            raise AttackError(f"{attack}: ε {eps!r} is not a number") from None
        if np.isnan(value) or value < 0 or (bounded and not np.isfinite(value)):
            raise AttackError(f"{attack}: ε {eps!r} must be a finite number >= 0")
        values.append(value)
    if not values:
        raise AttackError(f"{attack}: epsilons is empty")
    return np.asarray(values, dtype=np.float64)


def check_images(images: Any, input_shape: Sequence[int] | None, attack: str) -> np.ndarray:
    """uint8 pixels [N, C, H, W] from uint8 pixels or float images on the [0, 1] 8-bit grid."""
    if hasattr(images, "detach"):
        images = images.detach().cpu().numpy()
    x = np.asarray(images)
    if x.ndim != 4 or x.shape[0] == 0:
        raise AttackError(
            f"{attack}: expected a batch of images [N, C, H, W], got shape {tuple(x.shape)}"
        )
    if input_shape is not None and tuple(x.shape[1:]) != tuple(input_shape):
        raise AttackError(
            f"{attack}: images of shape {tuple(x.shape[1:])} do not fit the model "
            f"input {tuple(input_shape)} (C, H, W)"
        )
    if x.dtype == np.uint8:
        return x
    if x.dtype.kind != "f":
        raise AttackError(
            f"{attack}: expected uint8 pixels or float images in [0, 1], got dtype {x.dtype}"
        )
    bad = ~np.isfinite(x)
    if bad.any():
        raise AttackError(
            f"{attack}: image {int(np.argwhere(bad)[0][0])} holds NaN or infinite pixels"
        )
    lo, hi = float(x.min()), float(x.max())
    if lo < 0 or hi > 1:
        where = int(np.argwhere((x < 0) | (x > 1))[0][0])
        raise AttackError(
            f"{attack}: float images must lie in [0, 1]; image {where} has values "
            f"in [{lo:g}, {hi:g}] (0..255 floats? pass uint8 or divide by 255)"
        )
    scaled = x.astype(np.float64) * 255.0
    off = np.abs(scaled - np.rint(scaled))
    if off.max() > GRID_TOLERANCE:
        where = int(np.argwhere(off > GRID_TOLERANCE)[0][0])
        raise AttackError(
            f"{attack}: image {where} is not on the 8-bit grid (k/255) the "
            "hardware receives; pass uint8 pixels or k/255 floats"
        )
    return np.rint(scaled).astype(np.uint8)


def check_labels(
    labels: Any, n: int, num_classes: int, attack: str, what: str = "labels"
) -> np.ndarray:
    """int64 labels [N] in 0..num_classes-1."""
    if hasattr(labels, "detach"):
        labels = labels.detach().cpu().numpy()
    y = np.asarray(labels)
    if y.shape != (n,):
        raise AttackError(
            f"{attack}: expected {n} {what} (one per image), got shape {tuple(y.shape)}"
        )
    if y.dtype.kind not in "iu":
        if y.dtype.kind != "f" or not np.all(np.equal(np.mod(y, 1), 0)):
            raise AttackError(f"{attack}: {what} must be integers, got dtype {y.dtype}")
    y = y.astype(np.int64)
    bad = (y < 0) | (y >= num_classes)
    if bad.any():
        i = int(np.argwhere(bad)[0][0])
        raise AttackError(f"{attack}: {what}[{i}] = {int(y[i])} is outside 0..{num_classes - 1}")
    return y


def random_targets(labels: np.ndarray, num_classes: int, seed: int) -> np.ndarray:
    """One uniformly random target ≠ label per image (GenAttack's ``generate_data``)."""
    rng = np.random.default_rng([seed, 0x7A12])
    shift = rng.integers(1, num_classes, size=len(labels))
    return (labels + shift) % num_classes


def check_positive(
    value: Any, name: str, attack: str, *, integer: bool = True, allow_none: bool = False
) -> Any:
    """A positive integer (or float) parameter; 0 and negatives name the parameter."""
    if value is None and allow_none:
        return None
    ok = isinstance(value, numbers.Integral if integer else numbers.Real)
    if isinstance(value, (bool, np.bool_)) or not ok or value <= 0:
        kind = "integer" if integer else "number"
        raise AttackError(f"{attack}: {name} must be a positive {kind}, got {value!r}")
    return value
