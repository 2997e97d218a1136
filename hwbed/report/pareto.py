"""Robustness against cost: which models no other model beats on both.

A point is on the Pareto front when no other point has every cost ≤ and accuracy ≥ with at
least one strict (costs minimised, accuracy maximised). Points with a NaN cost or accuracy
are never on the front and dominate nothing; identical points do not dominate each other.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from hwbed.report.style import executable_styles, grid, variant_colors

COST_LABELS = {"memory_mb": "memory [MB]", "ncc_m": "NCC [10^6]", "lut": "LUT [count]"}


def pareto_mask(costs: np.ndarray, accuracy: np.ndarray) -> np.ndarray:
    """Mask [N] of the points on the front of ``costs`` [N, k] (or [N]) and ``accuracy`` [N]."""
    c = np.asarray(costs, dtype=float)
    c = c[:, None] if c.ndim == 1 else c  # one cost axis
    a = np.asarray(accuracy, dtype=float).reshape(-1)
    if len(c) != len(a):
        raise ValueError(f"pareto_mask: {len(c)} cost rows but {len(a)} accuracies")
    valid = np.isfinite(c).all(axis=1) & np.isfinite(a)
    cv, av = c[valid], a[valid]
    # dominated[i, j]: point j dominates point i
    le = (cv[None, :, :] <= cv[:, None, :]).all(axis=2) & (av[None, :] >= av[:, None])
    strict = (cv[None, :, :] < cv[:, None, :]).any(axis=2) | (av[None, :] > av[:, None])
    out = np.zeros(len(a), dtype=bool)
    out[valid] = ~(le & strict).any(axis=1)
    return out


def robustness_vs_cost_figure(
    points: pd.DataFrame, costs=("memory_mb", "ncc_m", "lut"), cell_label: str = ""
) -> Figure:
    """One panel per cost column with any value: robust accuracy against that cost, points
    coloured by variant (marker: executable) and labelled by model, that panel's 2-D Pareto
    front drawn as a step line with its points ringed. Panels of all-NaN costs are skipped
    and named in the title, which also names the cell (``cell_label``)."""
    fig = Figure(layout="constrained")
    shown = [c for c in costs if c in points and points[c].notna().any()]
    skipped = [c for c in costs if c not in shown]
    colors = variant_colors(points["variant"].unique())
    styles = executable_styles(points["executable"].unique())
    for ax, cost in zip(grid(fig, len(shown), size=(5.0, 4.0)), shown, strict=True):
        x = points[cost].to_numpy(float)
        y = points["robust_accuracy"].to_numpy(float)
        for (variant, exe), g in points.groupby(["variant", "executable"], sort=True):
            ax.scatter(
                g[cost],
                g["robust_accuracy"],
                color=colors[variant],
                marker=styles[exe]["marker"],
                label=f"{variant} [{exe}]",
                zorder=3,
            )
        for xi, yi, model in zip(x, y, points["model"], strict=True):
            if np.isfinite(xi) and np.isfinite(yi):
                ax.annotate(
                    str(model),
                    (xi, yi),
                    fontsize="x-small",
                    xytext=(3, 3),
                    textcoords="offset points",
                )
        front = pareto_mask(x[:, None], y)
        order = np.argsort(x[front], kind="stable")
        fx, fy = x[front][order], y[front][order]
        ax.step(fx, fy, where="post", color="black", linewidth=1, label="Pareto front")
        ax.scatter(fx, fy, s=160, facecolors="none", edgecolors="black", zorder=4)
        finite = x[np.isfinite(x)]
        if len(finite) and finite.min() > 0 and finite.max() / finite.min() >= 10:
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(COST_LABELS.get(cost, cost))
        ax.set_ylabel("attacked accuracy [fraction]")
        ax.legend(fontsize="x-small")
    title = f"robustness vs cost: {cell_label}" if cell_label else "robustness vs cost"
    if skipped:
        title += f"\n(no {', '.join(COST_LABELS.get(c, c) for c in skipped)} values: skipped)"
    fig.suptitle(title)
    return fig
