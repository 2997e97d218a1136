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

from hwbed.ir.types import GraphError

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
    check = int(codes[0]) + scale * count_reached(np.where(flip[:, None], -grid, grid), thr)
    if not np.array_equal(check, levels):
        raise GraphError(f"{where}: output codes are not evenly spaced; thresholds cannot match")
    return thr, flip


GALLOP_ROUNDS = 8
"""Rounds of widening brackets around guessed thresholds before plain bisection takes over."""
PROBES = 1 << 15
"""Values of g a bisection round aims to evaluate at once (it probes several points per bracket)."""
MAX_WAYS = 64


def spot_checks(channels: int) -> int:
    """Random points per channel at which a bisected table is checked against the function,
    besides both sides of every threshold: 2048, fewer for wide layers (2^20 in all, at
    least 256 per channel), whose evaluations otherwise dominate the lowering."""
    return min(2048, max(256, (1 << 20) // channels))


def count_reached(x: np.ndarray, thr: np.ndarray) -> np.ndarray:
    """#{j : x[c, p] >= thr[c, j]} for [C, P] inputs and per-channel sorted [C, L] thresholds.

    :func:`~hwbed.ir.reference.threshold`'s count, by binary search instead of comparing
    every input with every threshold.
    """
    return np.stack([np.searchsorted(t, v, side="right") for t, v in zip(thr, x, strict=True)])


def _bisect(g, codes: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """Per (channel, code): the smallest t in (lo, hi] with g(t) >= code, for monotone g.

    Brackets hold g(lo) < code <= g(hi), where lo = -bound - 1 means "below the domain" and
    hi = bound + 1 "never reached"; a bracket of width 1 is done. Each round probes ``ways``
    points strictly inside every open bracket (a k-ary search: about log_(ways+1) of the
    width rounds), with ways chosen so that a round evaluates g on some PROBES values: a few
    large calls instead of many small ones, whose per-call cost the twin's modules dominate.
    """
    channels, n = lo.shape
    ways = max(1, min(MAX_WAYS, PROBES // max(1, channels * n)))
    steps = torch.arange(1, ways + 1, dtype=torch.int64)
    while (active := hi - lo > 1).any():
        span = (hi - lo)[..., None]
        # evenly spaced in (lo, hi): ways = 1 is the midpoint; below hi since i < ways + 1
        probes = lo[..., None] + ((span * steps) // (ways + 1)).clamp(min=1)
        ok = g(probes.reshape(channels, -1).to(torch.float32)).reshape(channels, n, ways)
        bad = (ok < codes[:, None]).sum(dim=-1, keepdim=True)  # ok is monotone in the probe
        below = probes.gather(-1, (bad - 1).clamp(min=0))[..., 0]
        above = probes.gather(-1, bad.clamp(max=ways - 1))[..., 0]
        bad = bad[..., 0]
        lo = torch.where(active & (bad > 0), below, lo)
        hi = torch.where(active & (bad < ways), above, hi)
    return hi


def _search(g, codes: torch.Tensor, bound: int, channels: int) -> torch.Tensor:
    """Thresholds [C, L] of a monotone g on [-bound, bound]: bisection, fewer evaluations.

    A full bisection evaluates g about log2(2 bound) times on every (channel, code). Instead
    the lowest and highest steps are bisected, the steps in between are guessed on the line
    through them (exact for a uniform quantizer after an affine map, up to rounding), and a
    bracket around each guess is widened until it holds the step; bisection then finishes
    inside the brackets. Every result is still the bisection's: the smallest t with
    g(t) >= code, whatever the guesses were.
    """
    n = len(codes)
    lo = torch.full((channels, n), -bound - 1, dtype=torch.int64)
    hi = torch.full((channels, n), bound + 1, dtype=torch.int64)
    if n <= 2:
        return _bisect(g, codes, lo, hi)
    ends = [0, n - 1]
    first, last = _bisect(g, codes[ends], lo[:, ends], hi[:, ends]).unbind(1)
    frac = torch.arange(n, dtype=torch.float64) / (n - 1)
    line = first[:, None] + (last - first)[:, None].to(torch.float64) * frac
    guess = line.round().to(torch.int64)
    below, above = -bound - 1, bound + 1
    width = 1
    for _ in range(GALLOP_ROUNDS):
        a = (guess - width).clamp(below, above)  # candidate lower end of the bracket
        b = (guess + width - 1).clamp(below, above)  # candidate upper end
        pair = g(torch.cat([a, b], dim=1).to(torch.float32))
        ga, gb = pair[:, :n] >= codes, pair[:, n:] >= codes
        lo = torch.where((a <= below) | ~ga, torch.maximum(lo, a), lo)
        hi = torch.where(ga & (a > below), torch.minimum(hi, a), hi)
        hi = torch.where((b >= above) | gb, torch.minimum(hi, b), hi)
        lo = torch.where(~gb & (b < above), torch.maximum(lo, b), lo)
        if (hi - lo <= 2 * width).all():
            break
        width *= 4
    return _bisect(g, codes, lo, hi)


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

        thr = _search(g, codes, bound, channels).numpy()
        if (np.diff(thr, axis=1) < 0).any():
            c = int(np.argwhere((np.diff(thr, axis=1) < 0).any(axis=1))[0][0])
            raise GraphError(
                f"{where}: channel {c} is not monotone or leaves the output codes; "
                "no threshold table can represent it"
            )
        rng = np.random.default_rng(seed)
        probe = np.concatenate(
            [
                rng.integers(-bound, bound + 1, (channels, spot_checks(channels))),
                np.clip(thr - 1, -bound, bound),
                np.clip(thr, -bound, bound),
            ],
            1,
        )
        want = g(torch.tensor(probe, dtype=torch.float32)).numpy()
    scale = out_levels[1] - out_levels[0] if len(out_levels) > 1 else 1
    got = out_levels[0] + scale * count_reached(probe, thr)
    if not np.array_equal(got, want):
        c = int(np.argwhere((got != want).any(axis=1))[0][0])
        raise GraphError(
            f"{where}: channel {c} is not monotone or leaves the output codes; "
            "no threshold table can represent it"
        )
    return thr, flip
