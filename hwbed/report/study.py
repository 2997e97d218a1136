"""The study's table shapes: one attack's robust accuracy by strength and iterations.

FGSM by ε; PGD (and every attack with an iteration axis) by ε and iterations; GenAttack by
generation with two numbers per cell, accuracy to the original label and to the target
label (``label/target``), as BreakingBED reports it. Rows are models × executables, so the
on-device columns sit under the float ones.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from hwbed.report.frame import eps_text

ROWS = ["model", "variant", "executable"]


def study_table(cells: pd.DataFrame, attack: str) -> pd.DataFrame:
    """``attack``'s cells pivoted: rows model × executable (× threat, params), columns ε or i.

    Attacks without an iteration axis (FGSM) get one column per ε (``eps=8/255``); the
    others one row per threat model and parameters and one column per iteration count
    (``i=5``). Targeted attacks (GenAttack) hold ``label/target`` text per cell: accuracy to
    the original label, then to the target label.
    """
    c = cells[cells.attack == attack]
    if c.empty:
        raise ValueError(f"the store holds no {attack} cell")
    c = c.assign(value=[_value(r) for r in c.itertuples(index=False)])
    if c.iterations.isna().all():
        c = c.assign(
            column=[f"eps={eps_text(r.eps, r.eps_unit)}" for r in c.itertuples(index=False)]
        )
        rows = [*ROWS, "norm", "params", "seed"]
        order = c.sort_values("eps_abs").column.unique()
    else:
        c = c.assign(column=[f"i={int(i)}" for i in c.iterations])
        c = c.assign(eps_text=[eps_text(r.eps, r.eps_unit) for r in c.itertuples(index=False)])
        rows = [*ROWS, "norm", "eps_abs", "eps_text", "params", "seed"]
        order = [f"i={int(i)}" for i in sorted(c.iterations.unique())]
    table = c.pivot_table(
        index=rows + ["clean_accuracy"], columns="column", values="value", aggfunc="first"
    )
    table = table.reindex(columns=order).reset_index().drop(columns="eps_abs", errors="ignore")
    table.columns.name = None
    return table.rename(columns={"eps_text": "eps", "clean_accuracy": "clean"})


def _value(row) -> float | str:
    if row.targeted and row.target_accuracy is not None and not np.isnan(row.target_accuracy):
        return f"{row.robust_accuracy:.3f}/{row.target_accuracy:.3f}"
    return row.robust_accuracy


def study_tables(cells: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """:func:`study_table` of every attack in the store, in the study's order."""
    order = ["fgsm", "pgd", "cw", "deepfool", "localsearch", "genattack", "hopskipjump"]
    present = set(cells.attack)
    names = [a for a in order if a in present] + sorted(present - set(order))
    return {a: study_table(cells, a) for a in names}
