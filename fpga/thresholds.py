"""Thresholds by enumeration (LOWERING.md §2): exact integer stand-ins for float epilogues.

A float epilogue (alpha, BN, bias, quantizer) that follows an exact integer accumulator d is a
function f(d) on a finite domain. Evaluating f on every d with the twin's own torch modules,
and recording where the output level steps, gives per-channel thresholds that reproduce the
twin exactly. Decreasing channels are flipped (the caller negates that weight row).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from .graph import GraphError
from .reference import threshold

CHUNK = 1 << 18
ENUMERATE_LIMIT = 1 << 22
"""Domains up to this many (channel, value) pairs are enumerated in full; larger ones are
bisected (every epilogue is a chain of monotone float ops) and then spot-checked."""


def enumerate_levels(
    fn: Callable[[torch.Tensor], torch.Tensor], bound: int, channels: int
) -> np.ndarray:
    """f(d) for d in [-bound, bound] and every channel: int64 [channels, 2*bound+1].

    ``fn`` maps float32 accumulator values [channels, D] to integer output codes.
    """
    grid = torch.arange(-bound, bound + 1, dtype=torch.float32)
    out = []
    with torch.no_grad():
        for start in range(0, len(grid), CHUNK):
            d = grid[start : start + CHUNK].expand(channels, -1).contiguous()
            out.append(fn(d).to(torch.int64).numpy())
    return np.concatenate(out, axis=1)


def fit_thresholds(
    levels: np.ndarray, bound: int, out_levels: list[int], where: str
) -> tuple[np.ndarray, np.ndarray]:
    """Thresholds [C, L-1] and a flip mask [C] such that ``threshold(d)`` equals ``levels``.

    For a flipped channel the thresholds apply to -d. ``out_levels`` are the quantizer's
    evenly spaced output codes, lowest first. Raises naming ``where`` when a channel is not
    monotone or emits a code outside ``out_levels``.
    """
    levels = np.asarray(levels, dtype=np.int64)
    channels, size = levels.shape
    codes = np.asarray(out_levels, dtype=np.int64)
    bad = ~np.isin(levels, codes)
    if bad.any():
        c = int(np.argwhere(bad)[0][0])
        raise GraphError(
            f"{where}: channel {c} emits codes {sorted(set(levels[c][bad[c]]))} "
            f"outside the output type's {codes.min()}..{codes.max()}"
        )
    step = np.diff(levels, axis=1)
    rising, falling = (step >= 0).all(axis=1), (step <= 0).all(axis=1)
    flip = ~rising & falling
    if not (rising | falling).all():
        c = int(np.argwhere(~(rising | falling))[0][0])
        raise GraphError(
            f"{where}: channel {c} is not monotone in its accumulator; "
            "no threshold table can represent it"
        )
    oriented = np.where(flip[:, None], levels[:, ::-1], levels)
    thr = np.empty((channels, len(codes) - 1), dtype=np.int64)
    for c in range(channels):
        idx = np.searchsorted(oriented[c], codes[1:], side="left")
        thr[c] = np.where(idx >= size, bound + 1, idx - bound)
    grid = np.arange(-bound, bound + 1)
    scale = int(codes[1] - codes[0]) if len(codes) > 1 else 1
    check = threshold(np.where(flip[:, None], -grid, grid).T, thr, int(codes[0]), scale).T
    if not np.array_equal(check, levels):
        raise GraphError(f"{where}: output codes are not evenly spaced; thresholds cannot match")
    return thr, flip


def quant_levels(bits: int, signed: bool, bipolar: bool) -> list[int]:
    """The integer codes a quantizer can emit."""
    if bipolar:
        return [-1, 1]
    if signed:
        return list(range(-(2 ** (bits - 1)), 2 ** (bits - 1)))
    return list(range(2**bits))


def thresholds_for(
    fn: Callable[[torch.Tensor], torch.Tensor],
    bound: int,
    channels: int,
    out_levels: list[int],
    where: str,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Thresholds and flip mask reproducing ``fn`` on [-bound, bound] for every channel."""
    if (2 * bound + 1) * channels <= ENUMERATE_LIMIT:
        return fit_thresholds(enumerate_levels(fn, bound, channels), bound, out_levels, where)
    codes = torch.tensor(out_levels[1:], dtype=torch.int64)
    with torch.no_grad():
        ends = fn(
            torch.tensor([[-bound, bound]], dtype=torch.float32).expand(channels, 2).contiguous()
        )
        flip = (ends[:, 0] > ends[:, 1]).numpy()
        sign = torch.tensor(np.where(flip, -1.0, 1.0), dtype=torch.float32)[:, None]

        def g(d: torch.Tensor) -> torch.Tensor:
            return fn((d * sign).contiguous()).to(torch.int64)

        lo = torch.full((channels, len(codes)), -bound - 1, dtype=torch.int64)
        hi = torch.full((channels, len(codes)), bound + 1, dtype=torch.int64)
        while (hi - lo > 1).any():
            mid = (lo + hi) // 2
            ok = g(mid.to(torch.float32)) >= codes
            hi, lo = torch.where(ok, mid, hi), torch.where(ok, lo, mid)
        thr = hi.numpy()
        rng = np.random.default_rng(seed)
        probe = np.concatenate(
            [
                rng.integers(-bound, bound + 1, (channels, 2048)),
                np.clip(thr - 1, -bound, bound),
                np.clip(thr, -bound, bound),
            ],
            1,
        )
        want = g(torch.tensor(probe, dtype=torch.float32)).numpy()
    scale = out_levels[1] - out_levels[0] if len(out_levels) > 1 else 1
    got = threshold(probe.T, thr, out_levels[0], scale).T
    if not np.array_equal(got, want):
        c = int(np.argwhere((got != want).any(axis=1))[0][0])
        raise GraphError(
            f"{where}: channel {c} is not monotone or leaves the output codes; "
            "no threshold table can represent it"
        )
    return thr, flip
