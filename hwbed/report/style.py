"""One look for every report figure: a colour per compression variant, a line style, marker
and hatch per executable, ε labels with norm and unit, and :func:`save`.

Colours are fixed for the study's variants (matplotlib's colour-blind-aware ``tab10``, in
:data:`VARIANTS` order); any other variant takes the next colours of :data:`PALETTE` in
sorted order of the unknown names passed. Pass every variant of a report to
:func:`variant_colors` to keep those extra colours the same across its figures.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from matplotlib.figure import Figure

VARIANTS = (
    "vanilla",
    "kd",
    "prune-filter50",
    "prune-channel50",
    "prune-kernel50",
    "prune-weight50",
    "xnor",
    "abc1x1",
    "abc3x3",
    "abc5x5",
)
"""The study's variants, in the order of their fixed colours (and of plot groups)."""
_TAB10 = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)
_TAB20_LIGHT = (
    "#aec7e8",
    "#ffbb78",
    "#98df8a",
    "#ff9896",
    "#c5b0d5",
    "#c49c94",
    "#f7b6d2",
    "#c7c7c7",
    "#dbdb8d",
    "#9edae5",
)
PALETTE = _TAB10 + _TAB20_LIGHT
"""tab10 (the known variants), then tab20's light shades; cycled beyond 20 variants."""

EXECUTABLES = ("twin-float", "twin", "sim", "ort")
"""Executables with fixed styles, in plot order; others follow in sorted order."""
_LINESTYLES = ("-", "--", ":", "-.", (0, (5, 1)), (0, (3, 1, 1, 1, 1, 1)), (0, (1, 3)))
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
_HATCHES = ("", "//", "..", "xx", "\\\\", "oo", "++", "--")
NORMS = {"linf": "L∞", "l2": "L2", "l0": "L0"}


def variant_order(variants) -> list[str]:
    """Known variants in :data:`VARIANTS` order, then the others sorted."""
    names = set(variants)
    return [v for v in VARIANTS if v in names] + sorted(names - set(VARIANTS))


def variant_colors(variants) -> dict[str, str]:
    """Colour per variant: fixed for :data:`VARIANTS`, next palette colours for the rest."""
    colors = {v: PALETTE[i] for i, v in enumerate(VARIANTS)}
    unknown = sorted(set(variants) - set(VARIANTS))
    for i, v in enumerate(unknown):
        colors[v] = PALETTE[(len(VARIANTS) + i) % len(PALETTE)]
    return {v: colors[v] for v in variant_order(variants)}


def executable_order(executables) -> list[str]:
    """Known executables in :data:`EXECUTABLES` order, then the others sorted."""
    names = set(executables)
    return [e for e in EXECUTABLES if e in names] + sorted(names - set(EXECUTABLES))


def executable_styles(executables) -> dict[str, dict]:
    """``{executable: {"linestyle", "marker", "hatch"}}``; fixed for :data:`EXECUTABLES`."""
    slot = {e: i for i, e in enumerate(EXECUTABLES)}
    for i, e in enumerate(sorted(set(executables) - set(EXECUTABLES))):
        slot[e] = len(EXECUTABLES) + i
    return {
        e: {
            "linestyle": _LINESTYLES[slot[e] % len(_LINESTYLES)],
            "marker": _MARKERS[slot[e] % len(_MARKERS)],
            "hatch": _HATCHES[slot[e] % len(_HATCHES)],
        }
        for e in executable_order(executables)
    }


def eps_label(eps, unit: str | None, norm: str | None) -> str:
    """``ε = 8/255 (L∞)`` in pixel units, ``ε = 0.5 (L2)`` on [0, 1], ``ε = ∞ (L2)``."""
    name = NORMS.get(norm, str(norm or "-"))
    if eps is None or (isinstance(eps, float) and not math.isfinite(eps)):
        return f"ε = ∞ ({name})"
    value = f"{eps:g}/255" if unit == "px" else f"{eps:g}"
    return f"ε = {value} ({name})"


def save(fig: Figure, path: str | os.PathLike, dpi: int = 150) -> Path:
    """Write ``fig`` as PNG at ``dpi`` (parents created), free it, and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, format="png", bbox_inches="tight")
    fig.clf()
    return path


def grid(fig: Figure, n: int, ncols: int = 3, size=(5.0, 3.8)) -> list:
    """``n`` axes on ``fig`` in rows of ``ncols`` (unused cells removed), sized per panel."""
    ncols = max(1, min(ncols, n))
    nrows = max(1, math.ceil(n / ncols))
    fig.set_size_inches(size[0] * ncols, size[1] * nrows)
    axes = list(fig.subplots(nrows, ncols, squeeze=False).ravel())
    for ax in axes[n:]:
        fig.delaxes(ax)
    return axes[:n]
