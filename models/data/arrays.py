"""Array helpers applied after loading: seeded subsets and resizing of uint8 NCHW images."""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

ResizeMode = Literal["bilinear", "nearest"]
_CHUNK = 1024  # images resized per step, to bound the float32 copy


def subset_indices(n: int, limit: int | None, seed: int) -> np.ndarray | None:
    """Indices of a seeded random subset of `limit` out of `n` items, in their original order.

    Returns None when no subset is needed (`limit` is None or at least `n`).
    """
    if limit is None or limit >= n:
        return None
    if limit < 1:
        raise ValueError(f"limit must be a positive integer, got {limit}")
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=limit, replace=False))


def resize_images(x: np.ndarray, size: int, mode: ResizeMode = "bilinear") -> np.ndarray:
    """Resize uint8 images [N, C, H, W] to [N, C, size, size].

    "bilinear" uses torch's bilinear interpolation (half-pixel centres, antialiased when
    shrinking) on float32 and rounds back to uint8; "nearest" uses torch's "nearest-exact",
    which repeats pixels for integer upscaling factors. Square output only.
    """
    if x.dtype != np.uint8 or x.ndim != 4:
        raise ValueError(f"expected uint8 images [N, C, H, W], got {x.dtype} {x.shape}")
    if size < 1:
        raise ValueError(f"size must be a positive integer, got {size}")
    if x.shape[2:] == (size, size):
        return x
    if mode not in ("bilinear", "nearest"):
        raise ValueError(f"mode must be 'bilinear' or 'nearest', got {mode!r}")
    out = np.empty((x.shape[0], x.shape[1], size, size), dtype=np.uint8)
    for start in range(0, x.shape[0], _CHUNK):
        chunk = torch.tensor(x[start : start + _CHUNK], dtype=torch.float32)
        if mode == "bilinear":
            resized = F.interpolate(
                chunk, size=(size, size), mode="bilinear", align_corners=False, antialias=True
            )
        else:
            resized = F.interpolate(chunk, size=(size, size), mode="nearest-exact")
        out[start : start + _CHUNK] = resized.round_().clamp_(0, 255).to(torch.uint8).numpy()
    return out
