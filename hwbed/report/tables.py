"""The on-device vs float table: every cell on every executable, paired image by image.

:func:`device_vs_float` gives one row per (model, attack cell, executable) with the fields
RobustBench users know (``model``, ``dataset``, ``threat_model``, ``eps``, ``clean_acc``,
``robust_acc``, ``n_eval``) plus ``executable``, ``bit_exact`` and ``attack_source``, and
compares each row with three references on the same images:

- ``float``: the float baseline network of the same architecture (``resnet20`` for
  ``resnet20-xnor``), same data, images, attack cell and seed, judged on its reference side;
- ``twin_float``: this model's twin in float space (white-box cells only);
- ``twin``: this model's twin behind the uint8 boundary (what every hardware executable must
  equal; black-box attacks query it directly).

Each comparison is a difference of robust accuracies and an exact McNemar test on the
paired per-image outcomes (``worse``: images robust on the reference and broken here,
``better``: the reverse; the two-sided p of a binomial test on them). A difference of
accuracies without the pairing hides whether the same images broke.

:func:`worst_case` adds, per model, executable and threat model, the per-image worst case over
every attack cell (an image counts only if it survives all of them: mean over images of the
minimum, as Carlini et al. 2019 ask). :func:`masking_flags` marks gradient masking.
"""

from __future__ import annotations

import math
from fractions import Fraction
from types import SimpleNamespace

import numpy as np
import pandas as pd

from hwbed.report.frame import BOUNDARY_SIDE, CELL, FLOAT_SIDE, eps_text

REFERENCES = ("float", "twin_float", "twin")
WORST = "worst-case"
_NORM = {"linf": "Linf", "l2": "L2", "l0": "L0"}


def mcnemar(reference: np.ndarray, other: np.ndarray) -> tuple[int, int, float]:
    """(worse, better, p): paired outcomes of the same images and the exact McNemar p.

    ``worse`` counts images robust on ``reference`` and broken on ``other``, ``better`` the
    reverse; p is the two-sided exact binomial test of ``worse`` against ``worse + better``
    at 1/2 (1.0 when no image differs): ``min(1, 2 · Σ_{k ≤ min} C(n, k) / 2^n)``, summed in
    integers so it is exact (what ``scipy.stats.binomtest`` gives at 1/2, tested equal,
    without its seconds of import and milliseconds per call).
    """
    reference, other = np.asarray(reference, bool), np.asarray(other, bool)
    if reference.shape != other.shape:
        raise ValueError(f"paired outcomes of {reference.shape} and {other.shape} images")
    worse = int(np.sum(reference & ~other))
    better = int(np.sum(~reference & other))
    n = worse + better
    if n == 0:
        return worse, better, 1.0
    tail = sum(math.comb(n, k) for k in range(min(worse, better) + 1))
    return worse, better, min(1.0, float(Fraction(2 * tail, 2**n)))


def device_vs_float(cells: pd.DataFrame, flags: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per cell and executable, with its float, twin-float and twin references
    (``flags``: :func:`masking_flags` of ``cells`` when already computed)."""
    cells = cells.assign(cell_id=_cell_ids(cells))
    index = {
        (row.model, row.executable, row.cell_id, row.seed): row
        for row in cells.itertuples(index=False)
    }
    rows = []
    for row in cells.itertuples(index=False):
        refs = {
            "float": _float_reference(row, index),
            "twin_float": index.get((row.model, FLOAT_SIDE, row.cell_id, row.seed)),
            "twin": index.get((row.model, BOUNDARY_SIDE, row.cell_id, row.seed)),
        }
        rows.append(_table_row(row, refs))
    table = pd.DataFrame(rows)
    return _with_flags(table, masking_flags(cells) if flags is None else flags)


def _cell_ids(cells: pd.DataFrame) -> list[tuple]:
    """A hashable id of each row's attack cell, the model's name left out."""
    return [
        tuple(None if pd.isna(v) else v for v in values)
        for values in cells[[c for c in CELL if c != "model"]].itertuples(index=False)
    ]


def _float_reference(row, index):
    """The float baseline network's result on the same cell (its reference side)."""
    if row.variant == "vanilla":
        return None
    for side in (FLOAT_SIDE if row.white_box else BOUNDARY_SIDE, row.executable):
        hit = index.get((row.arch, side, row.cell_id, row.seed))
        if hit is not None:
            return hit
    return None


def _table_row(row, refs: dict) -> dict:
    out = {
        "model": row.model,
        "variant": row.variant,
        "dataset": row.data,
        "attack": row.attack,
        "threat_model": _NORM.get(row.norm, row.norm or "-"),
        "eps": eps_text(row.eps, row.eps_unit),
        "eps_abs": row.eps_abs,
        "iterations": row.iterations,
        "params": row.params,
        "seed": row.seed,
        "executable": row.executable,
        "attack_source": row.attack_source,
        "bit_exact": row.bit_exact,
        "n_eval": row.n,
        "clean_acc": row.clean_accuracy,
        "robust_acc": row.robust_accuracy,
    }
    for name, ref in refs.items():
        same = ref is not None and np.array_equal(ref.image, row.image)
        acc = ref.robust_accuracy if same else np.nan
        worse, better, p = mcnemar(ref.robust, row.robust) if same else (None, None, np.nan)
        out[f"{name}_acc"] = acc
        out[f"delta_{name}"] = row.robust_accuracy - acc
        out[f"worse_{name}"] = worse
        out[f"better_{name}"] = better
        out[f"p_{name}"] = p
    return out


def worst_case(cells: pd.DataFrame) -> pd.DataFrame:
    """Per model, executable, seed and threat model: images surviving every attack cell.

    Rows have the table's columns with ``attack`` = ``worst-case``, ``params`` naming the
    attacks pooled and ``robust_acc`` the mean over images of the per-image minimum.
    """
    keys = ["model", "variant", "data", "images", "seed", "executable", "norm", "eps_abs"]
    rows = []
    for key, group in cells.groupby(keys, dropna=False, sort=True):
        first = group.iloc[0]
        images = first.image
        if any(not np.array_equal(g, images) for g in group.image):
            continue
        survive = np.logical_and.reduce(list(group.robust))
        rows.append(
            {
                **dict(zip(keys, key, strict=True)),
                "attack": WORST,
                "threat": first.threat,
                "eps": first.eps,
                "eps_unit": first.eps_unit,
                "params": "+".join(sorted(set(group.attack))),
                "n_cells": len(group),
                "n": len(images),
                "clean_accuracy": first.clean_accuracy,
                "robust_accuracy": float(survive.mean()),
                "image": images,
                "robust": survive,
            }
        )
    return pd.DataFrame(rows)


def worst_case_table(cells: pd.DataFrame) -> pd.DataFrame:
    """:func:`worst_case` in the table's columns, with the float and twin references paired."""
    worst = worst_case(cells)
    if worst.empty:
        return worst
    index = {
        (r.model, r.executable, r.seed, r.norm, r.eps_abs): r for r in worst.itertuples(index=False)
    }
    rows = []
    for r in worst.itertuples(index=False):
        base = None
        if r.variant != "vanilla":
            arch = cells.loc[cells.model == r.model, "arch"].iloc[0]
            for side in (r.executable, BOUNDARY_SIDE):
                base = base or index.get((arch, side, r.seed, r.norm, r.eps_abs))
        refs = {
            "float": base,
            "twin_float": index.get((r.model, FLOAT_SIDE, r.seed, r.norm, r.eps_abs)),
            "twin": index.get((r.model, BOUNDARY_SIDE, r.seed, r.norm, r.eps_abs)),
        }
        row = SimpleNamespace(
            **{
                "model": r.model,
                "variant": r.variant,
                "data": r.data,
                "attack": WORST,
                "norm": r.norm,
                "eps": r.eps,
                "eps_unit": r.eps_unit,
                "eps_abs": r.eps_abs,
                "iterations": pd.NA,
                "params": r.params,
                "seed": r.seed,
                "executable": r.executable,
                "attack_source": r.model,
                "bit_exact": None,
                "n": r.n,
                "clean_accuracy": r.clean_accuracy,
                "robust_accuracy": r.robust_accuracy,
                "image": r.image,
                "robust": r.robust,
            }
        )
        rows.append(_table_row(row, refs))
    return pd.DataFrame(rows)


def masking_flags(cells: pd.DataFrame) -> pd.DataFrame:
    """Gradient-masking signs per model and executable: ``gradient_masking``, ``masking_reason``.

    A (model, executable) is flagged when, at some threat model (norm and ε):

    - a black-box attack on it, or a transfer attack (crafted on another model), leaves a
      lower robust accuracy than every white-box attack on the same executable (the white-box
      adversarials are crafted with the twin's gradients; beating them without gradients means
      the gradients mislead), or
    - PGD at its largest ε on it does not bring robust accuracy down to chance (1 / classes):
      ART's security-curve check.

    Reasons name the attacks and the numbers; no flag means neither sign, not proof of
    robustness.
    """
    rows = []
    for (model, exe), group in cells.groupby(["model", "executable"], sort=True):
        reasons = []
        bounded = group[np.isfinite(group.eps_abs.astype(float))]
        for _, g in bounded.groupby(["norm", "eps_abs"], sort=True):
            white = g[g.white_box & (g.attack_source == model)]
            other = g[~g.white_box | (g.attack_source != model)]
            if white.empty or other.empty:
                continue
            best = white.loc[white.robust_accuracy.idxmin()]
            beat = other[other.robust_accuracy < best.robust_accuracy]
            for r in beat.itertuples(index=False):
                kind = "transfer" if r.attack_source != model else "black-box"
                reasons.append(
                    f"{kind} {r.attack} beats white-box {best.attack} at {r.threat} "
                    f"({r.robust_accuracy:.3f} < {best.robust_accuracy:.3f})"
                )
        pgd = group[(group.attack == "pgd") & (group.attack_source == model)]
        for _, g in pgd.groupby("norm", sort=True):
            top = g[g.eps_abs == g.eps_abs.max()]
            acc, chance = top.robust_accuracy.min(), 1.0 / top.classes.iloc[0]
            if acc > chance:
                reasons.append(
                    f"pgd at its largest eps ({top.threat.iloc[0]}) leaves {acc:.3f} "
                    f"> chance {chance:.3f}"
                )
        rows.append(
            {
                "model": model,
                "executable": exe,
                "gradient_masking": bool(reasons),
                "masking_reason": "; ".join(reasons),
            }
        )
    return pd.DataFrame(rows, columns=["model", "executable", "gradient_masking", "masking_reason"])


def _with_flags(table: pd.DataFrame, flags: pd.DataFrame) -> pd.DataFrame:
    return table.merge(flags, on=["model", "executable"], how="left")


def full_table(cells: pd.DataFrame) -> pd.DataFrame:
    """:func:`device_vs_float` rows followed by the worst-case rows, flags on both."""
    worst = worst_case_table(cells)
    flags = masking_flags(cells)
    parts = [device_vs_float(cells, flags)]
    if not worst.empty:
        parts.append(_with_flags(worst, flags))
    return pd.concat(parts, ignore_index=True)


def side_by_side(table: pd.DataFrame) -> pd.DataFrame:
    """The table with one row per model and cell, every executable's accuracy as a column.

    Columns: the cell, ``clean`` (on the twin), ``float net`` (the float baseline network),
    one robust-accuracy column per executable, then per hardware executable ``Δ EXE−ref``
    and ``p EXE`` against its reference (the twin in float space for white-box attacks, the
    twin behind the uint8 boundary for black-box ones: what the attack itself saw) and
    ``Δ EXE−float net``; finally the gradient-masking flag of the hardware rows.
    """
    cell = ["model", "attack", "threat_model", "eps", "iterations", "params", "seed"]
    sides = list(dict.fromkeys(table.executable))
    hardware = [s for s in sides if s not in (FLOAT_SIDE, BOUNDARY_SIDE)]
    rows = []
    table = table.assign(params=table.params.where(table.attack != WORST, "all attacks"))
    for key, g in table.groupby(cell, dropna=False, sort=False):
        by = {r.executable: r for r in g.itertuples(index=False)}
        any_row = g.iloc[0]
        out = dict(zip(cell, key, strict=True))
        out["n"] = any_row.n_eval
        out["clean"] = any_row.clean_acc
        out["float net"] = g.float_acc.dropna().iloc[0] if g.float_acc.notna().any() else np.nan
        for s in sides:
            out[s] = by[s].robust_acc if s in by else np.nan
        for s in hardware:
            r = by.get(s)
            ref = (
                "twin"
                if r is None or r.attack == WORST or pd.isna(r.twin_float_acc)
                else "twin_float"
            )
            out[f"Δ {s}−ref"] = np.nan if r is None else getattr(r, f"delta_{ref}")
            out[f"p {s}"] = np.nan if r is None else getattr(r, f"p_{ref}")
            out[f"Δ {s}−float net"] = np.nan if r is None else r.delta_float
        shown = [s for s in hardware if s in by] or list(by)
        flagged = [by[s].gradient_masking for s in shown]
        out["masking"] = bool(any(flagged))
        rows.append(out)
    out = pd.DataFrame(rows)
    out["iterations"] = out["iterations"].astype("Int64")
    return out
