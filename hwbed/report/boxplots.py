"""Box-plots: per attack, the attacked accuracies of all its grid cells per compression
variant and executable, architectures pooled (ResNet20 and ResNet56 alike).

Quartiles are numpy's default (linear) percentiles; whiskers span min to max, so the figure
and :func:`boxplot_table` show the same five numbers.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from hwbed.report.stress import ATTACKS
from hwbed.report.style import (
    executable_order,
    executable_styles,
    grid,
    variant_colors,
    variant_order,
)

GROUP = ["attack", "variant", "executable"]


def boxplot_table(cells: pd.DataFrame) -> pd.DataFrame:
    """Per (attack, variant, executable): ``n_cells``, ``min``, ``q1``, ``median``, ``q3``,
    ``max`` of ``robust_accuracy`` over all the attack's cells (every ε, iteration count,
    parameter, seed and architecture)."""
    rows = []
    for key, g in cells.groupby(GROUP, sort=True):
        acc = g["robust_accuracy"].to_numpy(float)
        acc = acc[np.isfinite(acc)]
        q = np.percentile(acc, [0, 25, 50, 75, 100]) if len(acc) else [np.nan] * 5
        rows.append({**dict(zip(GROUP, key, strict=True)), "n_cells": len(acc)})
        rows[-1].update(zip(("min", "q1", "median", "q3", "max"), map(float, q), strict=True))
    cols = [*GROUP, "n_cells", "min", "q1", "median", "q3", "max"]
    return pd.DataFrame(rows, columns=cols)


def boxplot_figure(cells: pd.DataFrame) -> Figure:
    """One panel per attack; one box per variant (its colour), executables side by side
    (offset and hatched); y: attacked accuracy."""
    fig = Figure(layout="constrained")
    rank = {a: i for i, a in enumerate(ATTACKS)}
    attacks = sorted(cells["attack"].unique(), key=lambda a: (rank.get(a, 99), a))
    colors = variant_colors(cells["variant"].unique())
    styles = executable_styles(cells["executable"].unique())
    for ax, attack in zip(grid(fig, len(attacks)), attacks, strict=True):
        sub = cells[cells["attack"].eq(attack)]
        variants = variant_order(sub["variant"].unique())
        exes = executable_order(sub["executable"].unique())
        width = 0.8 / len(exes)
        for j, exe in enumerate(exes):
            data, pos, face = [], [], []
            for i, variant in enumerate(variants):
                acc = sub["robust_accuracy"][sub["variant"].eq(variant) & sub["executable"].eq(exe)]
                acc = acc.to_numpy(float)
                if len(acc[np.isfinite(acc)]):
                    data.append(acc[np.isfinite(acc)])
                    pos.append(i - 0.4 + width * (j + 0.5))
                    face.append(colors[variant])
            if not data:
                continue
            boxes = ax.boxplot(
                data,
                positions=pos,
                widths=width * 0.9,
                whis=(0, 100),
                patch_artist=True,
                manage_ticks=False,
                medianprops={"color": "black"},
            )
            for patch, color in zip(boxes["boxes"], face, strict=True):
                patch.set_facecolor(color)
                patch.set_hatch(styles[exe]["hatch"])
        ax.set_xticks(range(len(variants)), variants, rotation=30, ha="right")
        ax.set_xlim(-0.5, len(variants) - 0.5)
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(attack)
        ax.set_xlabel("compression variant")
        ax.set_ylabel("attacked accuracy [fraction]")
        handles = [Patch(facecolor=colors[v], label=v) for v in variants]
        handles += [
            Patch(facecolor="white", edgecolor="black", hatch=styles[e]["hatch"], label=e)
            for e in exes
        ]
        ax.legend(handles=handles, fontsize="x-small")
    if not attacks:
        fig.suptitle("no cells")
    return fig
