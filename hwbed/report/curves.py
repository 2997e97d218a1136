"""PGD curves: accuracy and loss against iterations, mean and spread over restarts.

A curve is the PGD cells of one (model, executable, threat, params, seed) at their
iteration counts; each cell carries the per-restart mean accuracy and loss at its
iteration (``restarts_accuracy``/``restarts_loss``). The *breaking line* is chance accuracy
(1/classes); a curve breaks at the first recorded iteration whose mean accuracy over
restarts is ≤ chance (within 1e-12).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from hwbed.report.frame import FLOAT_SIDE
from hwbed.report.style import eps_label, executable_styles, grid, variant_colors, variant_order

CURVE = ["model", "variant", "executable", "norm", "eps_unit", "eps", "params", "seed"]
"""What identifies one curve in :func:`pgd_curves`' frame."""
_TOL = 1e-12


def pgd_curves(cells: pd.DataFrame, executables=(FLOAT_SIDE,)) -> pd.DataFrame:
    """One row per (curve, iteration) of the PGD cells that carry restart traces.

    Columns: :data:`CURVE`, ``arch``, ``classes``, ``threat``, ``iteration``, ``restarts``,
    ``accuracy_mean/min/max`` and ``loss_mean/min/max`` over restarts, and the cell's
    ``robust_accuracy`` (worst case over restarts). The traces are made where the attack was
    crafted, so only ``executables`` (default: the float-space twin) are kept; None keeps
    every executable whose rows carry them.
    """
    has = cells["attack"].eq("pgd") & cells["restarts_accuracy"].map(_is_list)
    has &= cells["iterations"].notna()
    if executables is not None:
        has &= cells["executable"].isin(list(executables))
    rows = []
    for _, c in cells[has].iterrows():
        acc = np.asarray(c["restarts_accuracy"], dtype=float)
        loss = np.asarray(c["restarts_loss"] if _is_list(c["restarts_loss"]) else [], float)
        loss = loss if len(loss) else np.full(1, np.nan)
        rows.append(
            {
                **{k: c[k] for k in CURVE},
                "arch": c.get("arch", c["model"]),
                "classes": int(c.get("classes", 10)),
                "threat": c.get("threat", eps_label(c["eps"], c["eps_unit"], c["norm"])),
                "iteration": int(c["iterations"]),
                "restarts": len(acc),
                "accuracy_mean": acc.mean(),
                "accuracy_min": acc.min(),
                "accuracy_max": acc.max(),
                "loss_mean": loss.mean(),
                "loss_min": loss.min(),
                "loss_max": loss.max(),
                "robust_accuracy": float(c["robust_accuracy"]),
            }
        )
    cols = [*CURVE, "arch", "classes", "threat", "iteration", "restarts"]
    cols += [f"{q}_{s}" for q in ("accuracy", "loss") for s in ("mean", "min", "max")]
    out = pd.DataFrame(rows, columns=[*cols, "robust_accuracy"])
    return out.sort_values([*CURVE, "iteration"], kind="stable").reset_index(drop=True)


def breaking_iteration(curve_df: pd.DataFrame, chance: float | None = None) -> pd.DataFrame:
    """Per curve: the first recorded iteration with mean accuracy ≤ ``chance``.

    ``chance`` defaults to 1/classes of each curve. Columns: :data:`CURVE`, ``chance``,
    ``breaking_iteration`` (Int64, <NA> when never), ``max_iteration``, ``broken``, ``note``
    (``breaks at i = 20`` or ``not broken within 100 iterations``).
    """
    rows = []
    for key, g in curve_df.groupby(CURVE, sort=True, dropna=False):
        g = g.sort_values("iteration")
        line = chance if chance is not None else 1.0 / int(g["classes"].iloc[0])
        hit = g["iteration"][g["accuracy_mean"] <= line + _TOL]
        last = int(g["iteration"].max())
        it = int(hit.iloc[0]) if len(hit) else pd.NA
        note = f"breaks at i = {it}" if len(hit) else f"not broken within {last} iterations"
        rows.append(
            {
                **dict(zip(CURVE, key, strict=True)),
                "chance": line,
                "breaking_iteration": it,
                "max_iteration": last,
                "broken": bool(len(hit)),
                "note": note,
            }
        )
    cols = [*CURVE, "chance", "breaking_iteration", "max_iteration", "broken", "note"]
    out = pd.DataFrame(rows, columns=cols)
    out["breaking_iteration"] = out["breaking_iteration"].astype("Int64")
    return out


def pgd_curve_figure(curve_df: pd.DataFrame, chance: float | None = None) -> Figure:
    """One panel per threat model (norm, ε): accuracy (solid, left axis) and loss (dashed,
    right axis) against iterations per curve, mean over restarts with the min–max spread
    shaded, the breaking line at chance and each curve's breaking iteration marked (or
    "not broken within N iterations" in the legend). Two axes per panel: accuracy, loss."""
    fig = Figure(layout="constrained")
    threats = curve_df[["norm", "eps_unit", "eps"]].drop_duplicates()
    threats = list(threats.sort_values(["norm", "eps_unit", "eps"]).itertuples(index=False))
    colors = variant_colors(curve_df["variant"].unique())
    styles = executable_styles(curve_df["executable"].unique())
    breaks = {tuple(r[CURVE]): r for _, r in breaking_iteration(curve_df, chance).iterrows()}
    for ax, (norm, unit, eps) in zip(grid(fig, len(threats)), threats, strict=True):
        on = curve_df["norm"].eq(norm) & curve_df["eps_unit"].eq(unit) & curve_df["eps"].eq(eps)
        _panel(ax, curve_df[on], breaks, colors, styles, chance)
        ax.set_title(f"PGD {eps_label(eps, unit, norm)}")
    if not threats:
        fig.suptitle("no PGD cells with restart traces")
    return fig


def _panel(ax, panel, breaks, colors, styles, chance) -> None:
    loss_ax = ax.twinx()
    many = {c: panel[c].nunique() > 1 for c in ("params", "seed")}
    order = {v: i for i, v in enumerate(variant_order(panel["variant"].unique()))}
    groups = sorted(panel.groupby(CURVE, sort=True), key=lambda kg: order[kg[0][1]])
    for key, g in groups:
        info = dict(zip(CURVE, key, strict=True))
        g = g.sort_values("iteration")
        color, marker = colors[info["variant"]], styles[info["executable"]]["marker"]
        label = f"{info['model']} [{info['executable']}]"
        label += f" {info['params']}" if many["params"] else ""
        label += f" seed {info['seed']}" if many["seed"] else ""
        x = g["iteration"].to_numpy()
        ax.plot(x, g["accuracy_mean"], "-", color=color, marker=marker, label=label)
        ax.fill_between(x, g["accuracy_min"], g["accuracy_max"], color=color, alpha=0.2)
        loss_ax.plot(x, g["loss_mean"], "--", color=color, marker=marker, mfc="none")
        loss_ax.fill_between(x, g["loss_min"], g["loss_max"], color=color, alpha=0.1)
        b = breaks[key]
        if b["broken"]:
            it = int(b["breaking_iteration"])
            at = g["accuracy_mean"][g["iteration"].eq(it)].iloc[0]
            ax.axvline(it, color=color, linestyle=":", linewidth=1)
            ax.plot([it], [at], "X", color=color, markersize=9, markeredgecolor="black")
        ax.plot([], [], " ", label=f"  {info['model']}: {b['note']}")
    line = chance if chance is not None else 1.0 / int(panel["classes"].iloc[0])
    ax.axhline(line, color="black", linestyle=":", linewidth=1.2)
    ax.plot([], [], "k:", label=f"breaking line: chance = {line:.0%}")
    ax.plot([], [], "k-", label="accuracy (mean, min–max shaded)")
    ax.plot([], [], "k--", label="loss (mean, min–max shaded)")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("PGD iterations")
    ax.set_ylabel("accuracy [fraction of images]")
    loss_ax.set_ylabel(_loss_name(panel["params"]))
    ax.legend(fontsize="x-small", loc="best")


def _loss_name(params: pd.Series) -> str:
    names = {p.split("=", 1)[1] for s in params for p in str(s).split() if p.startswith("loss=")}
    if not names or names == {"ce"}:
        return "cross-entropy loss"
    return f"{' / '.join(sorted(names))} loss"


def _is_list(value) -> bool:
    return isinstance(value, (list, tuple, np.ndarray)) and len(value) > 0
