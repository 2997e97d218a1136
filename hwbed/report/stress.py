"""Stress–strain: how much of its clean accuracy a model loses as an attack gets stronger.

Strain ε_s = (A − A*)/A, A the clean and A* the attacked (robust) accuracy of a cell (NaN
when A = 0), both averaged over seeds first. Stress σ per attack (:data:`STUDY`): FGSM ε;
PGD ε at 3 iterations; C&W iterations at initial_const 1; DeepFool iterations; LocalSearch
iterations at ε 16/255; GenAttack generations at ε 8/255 and population 16; any other
attack its iterations (ε when it has none), nothing fixed.

Slice: a *family* is one attack with one norm, ε unit and value of every parameter that is
neither the stress nor fixed. Per family, over all its cells, each fixed parameter in the
order listed takes the study's value when the family has it, else the value closest to the
study's (ties: the larger), and the cells are narrowed to it before the next one; a
parameter a cell does not record takes the attack's constructor default. The choice is
stated in the ``slice`` column and the figure titles.

Classification rule, per (model, executable, family) curve with its stresses
sorted ascending and cells of undefined strain dropped: the curve *breaks* at the first
stress whose strain ≥ threshold (default 0.5, half the clean accuracy lost; compared with a
1e-9 tolerance so exact halves computed in floating point count). Never breaks: ``strong``.
Breaks at the curve's weakest stress: ``brittle``. Breaks later: ``ductile``.
``breaking_stress``: for ductile curves the stress where the straight line between the last
unbroken and the breaking point crosses the threshold; for brittle ones the weakest stress;
NaN for strong ones.
"""

from __future__ import annotations

import inspect
import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from hwbed.report.style import executable_styles, grid, variant_colors

STUDY = {
    "fgsm": ("eps", {}),
    "pgd": ("eps", {"iterations": 3}),
    "cw": ("iterations", {"initial_const": 1.0}),
    "deepfool": ("iterations", {}),
    "localsearch": ("iterations", {"eps": 16}),
    "genattack": ("iterations", {"eps": 8, "population": 16}),
}
"""Attack → (stress axis, fixed parameters in selection order); ε values in pixel units."""
ATTACKS = ("fgsm", "pgd", "cw", "deepfool", "localsearch", "genattack", "hopskipjump")
"""Panel order; other attacks follow sorted."""
CURVE = ["model", "variant", "executable", "attack", "family"]
BOOKKEEPING = {"record_every", "batch_size"}
"""Parameters that do not change an attack's outcome: left out of the family."""
_TOL = 1e-9


def strain_table(cells: pd.DataFrame) -> pd.DataFrame:
    """Strain per (model, executable, family, stress) on each family's slice.

    ``cells`` needs model, variant, executable, attack, norm, eps, eps_unit, eps_abs,
    iterations, params, seed, clean_accuracy and robust_accuracy. Columns: :data:`CURVE`,
    ``norm``, ``eps_unit``, ``stress_name``, ``stress``, ``clean_accuracy``,
    ``robust_accuracy`` (seed means), ``strain``, ``seeds``, ``slice``.
    """
    frame = cells.copy()
    frame["iterations"] = frame["iterations"].astype("Float64").astype(float)
    axes = {a: _axis(a, g) for a, g in frame.groupby("attack")}
    frame["_axis"] = frame["attack"].map(axes)
    frame["family"] = [_family(r) for _, r in frame.iterrows()]
    parts = []
    for (attack, _), g in frame.groupby(["attack", "family"], sort=True):
        g, desc = _slice(g)
        stress = g["eps"] if g["_axis"].iloc[0] == "eps" else g["iterations"]
        g = g.assign(stress=stress.astype(float), slice=desc)
        keys = [*CURVE, "norm", "eps_unit", "stress", "slice"]
        agg = g.groupby(keys, sort=True, dropna=False).agg(
            clean_accuracy=("clean_accuracy", "mean"),
            robust_accuracy=("robust_accuracy", "mean"),
            seeds=("seed", "nunique"),
        )
        agg = agg.reset_index()
        agg["stress_name"] = _stress_name(attack, g["_axis"].iloc[0], g["eps_unit"].iloc[0])
        parts.append(agg)
    cols = [*CURVE, "norm", "eps_unit", "stress_name", "stress", "clean_accuracy"]
    cols += ["robust_accuracy", "strain", "seeds", "slice"]
    if not parts:
        return pd.DataFrame(columns=cols)
    out = pd.concat(parts, ignore_index=True)
    clean = out["clean_accuracy"].to_numpy(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        strain = (clean - out["robust_accuracy"].to_numpy(float)) / clean
    out["strain"] = np.where(clean > 0, strain, np.nan)
    out = out[cols].sort_values([*CURVE, "stress"], kind="stable")
    return out.reset_index(drop=True)


def classify(strain_table: pd.DataFrame, threshold: float = 0.5) -> pd.DataFrame:
    """One row per (model, executable, family) curve: ``class`` (strong, ductile, brittle;
    missing when no strain is defined), ``breaking_stress``, ``threshold`` and ``rule`` (the
    reason in words). The rule is the module docstring's."""
    rows = []
    for key, g in strain_table.groupby(CURVE, sort=True):
        g = g[g["strain"].notna()].sort_values("stress")
        s, e = g["stress"].to_numpy(float), g["strain"].to_numpy(float)
        name = str(strain_table.loc[g.index, "stress_name"].iloc[0]) if len(g) else "stress"
        cls, at, why = _classify(s, e, threshold, name)
        rows.append(
            {
                **dict(zip(CURVE, key, strict=True)),
                "class": cls,
                "breaking_stress": at,
                "threshold": threshold,
                "stress_name": name,
                "stresses": len(s),
                "rule": why,
            }
        )
    cols = [*CURVE, "class", "breaking_stress", "threshold", "stress_name", "stresses", "rule"]
    return pd.DataFrame(rows, columns=cols)


def _classify(s, e, t, name):
    if not len(s):
        return None, None, "no defined strain (clean accuracy 0 or no cells)"
    broken = np.flatnonzero(e >= t - _TOL)
    if not len(broken):
        return "strong", None, f"strain < {t:g} up to {name} = {s[-1]:g} (max {e.max():.3g})"
    k = int(broken[0])
    if k == 0:
        return "brittle", float(s[0]), f"strain {e[0]:.3g} >= {t:g} at the weakest {s[0]:g}"
    at = min(s[k - 1] + (t - e[k - 1]) * (s[k] - s[k - 1]) / (e[k] - e[k - 1]), s[k])
    why = f"strain {e[k]:.3g} >= {t:g} first at {name} = {s[k]:g} (weakest {s[0]:g})"
    return "ductile", float(at), f"{why}; crosses at {at:.4g}"


def stress_strain_figure(strain_table: pd.DataFrame, classes: pd.DataFrame) -> Figure:
    """One panel per family: strain against stress per model (colour: variant, line style:
    executable), the threshold line, each curve's class in its legend label, the breaking
    stress marked; the slice in the title."""
    fig = Figure(layout="constrained")
    families = strain_table[["attack", "family"]].drop_duplicates()
    rank = {a: i for i, a in enumerate(ATTACKS)}
    families = sorted(families.itertuples(index=False), key=lambda f: (rank.get(f[0], 99), f))
    colors = variant_colors(strain_table["variant"].unique())
    styles = executable_styles(strain_table["executable"].unique())
    lookup = {tuple(r[CURVE]): r for _, r in classes.iterrows()}
    t = float(classes["threshold"].iloc[0]) if len(classes) else 0.5
    for ax, (attack, family) in zip(grid(fig, len(families)), families, strict=True):
        panel = strain_table[strain_table["attack"].eq(attack) & strain_table["family"].eq(family)]
        for key, g in panel.groupby(CURVE, sort=True):
            info = dict(zip(CURVE, key, strict=True))
            c = lookup.get(key)
            cls = c["class"] if c is not None else "unclassified"
            st = styles[info["executable"]]
            color = colors[info["variant"]]
            label = f"{info['model']} [{info['executable']}]: {cls}"
            ax.plot(
                g["stress"],
                g["strain"],
                color=color,
                linestyle=st["linestyle"],
                marker=st["marker"],
                label=label,
            )
            at = None if c is None else c["breaking_stress"]
            if at is not None and not pd.isna(at):
                ax.plot([at], [t], "X", color=color, markersize=9, markeredgecolor="black")
        ax.axhline(t, color="black", linestyle=":", linewidth=1.2, label=f"threshold {t:g}")
        first = panel.iloc[0]
        ax.set_xlabel(f"stress σ: {first['stress_name']}")
        ax.set_ylabel("strain (A − A*)/A [fraction of clean accuracy]")
        ax.set_title(f"{family}\nslice: {first['slice']}", fontsize="small")
        ax.legend(fontsize="x-small")
    if not families:
        fig.suptitle("no cells")
    return fig


def _axis(attack: str, g: pd.DataFrame) -> str:
    if attack in STUDY:
        return STUDY[attack][0]
    return "iterations" if g["iterations"].notna().any() else "eps"


def _fixed(attack: str) -> dict:
    return STUDY.get(attack, ("", {}))[1]


def _family(r: pd.Series) -> str:
    """Attack, norm, ε unit (when ε is stress or fixed) and the remaining parameters."""
    fixed = _fixed(r["attack"])
    parts = [f"{r['attack']} {_norm(r['norm'])}"]
    eps_used = r["_axis"] == "eps" or "eps" in fixed
    if eps_used:
        parts.append("ε in px" if r["eps_unit"] == "px" else "ε in [0, 1]")
    elif np.isfinite(r["eps_abs"]):
        parts.append(f"ε = {r['eps']:g}{'/255' if r['eps_unit'] == 'px' else ''}")
    if r["_axis"] != "iterations" and "iterations" not in fixed and not np.isnan(r["iterations"]):
        parts.append(f"i = {int(r['iterations'])}")
    rest = [p for p in str(r["params"]).split() if p.split("=", 1)[0] not in fixed]
    rest = [p for p in rest if p != "-" and p.split("=", 1)[0] not in BOOKKEEPING]
    return ", ".join(parts + rest)


def _slice(g: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """Narrow a family's cells to the study's slice (or the closest); describe it."""
    attack = g["attack"].iloc[0]
    said = []
    for name, study in _fixed(attack).items():
        if name == "eps":
            values, target = g["eps_abs"].to_numpy(float), study / 255
        elif name == "iterations":
            values, target = g["iterations"].to_numpy(float), float(study)
        else:
            values = np.array([_param(attack, p, name) for p in g["params"]], float)
            target = float(study)
        present = np.unique(values[np.isfinite(values)])
        if not len(present):
            said.append(f"{name} not recorded (study: {study:g})")
            continue
        exact = present[np.isclose(present, target, rtol=1e-9, atol=1e-12)]
        dist = np.abs(present - target)
        pick = (
            exact[0]
            if len(exact)
            else present[np.isclose(dist, dist.min(), rtol=1e-9, atol=1e-12)].max()
        )
        g = g[np.isclose(values, pick, rtol=1e-9, atol=1e-12)]
        shown, wanted = _show(name, pick, g), _show(name, target, g).split(" = ")[1]
        said.append(shown if len(exact) else f"{shown} (study's {wanted} absent; closest)")
    return g, "; ".join(said) or "no fixed parameter"


def _show(name: str, value: float, g: pd.DataFrame) -> str:
    if name == "eps":
        px = g["eps_unit"].iloc[0] == "px"
        return f"ε = {value * 255:g}/255" if px else f"ε = {value:g}"
    return f"{name} = {value:g}"


def _param(attack: str, params: str, name: str) -> float:
    """A parameter from a cell's ``k=v`` string, else the attack's constructor default."""
    for pair in str(params).split():
        key, _, value = pair.partition("=")
        if key == name:
            return _float(value)
    return _float(_default(attack, name))


def _default(attack: str, name: str):
    try:
        from hwbed.attacks.registry import attack_class

        p = inspect.signature(attack_class(attack).__init__).parameters.get(name)
    except (ImportError, ValueError):
        return None
    return None if p is None or p.default is inspect.Parameter.empty else p.default


def _float(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _norm(norm) -> str:
    return {"linf": "Linf", "l2": "L2", "l0": "L0"}.get(norm, str(norm or "-"))


def _stress_name(attack: str, axis: str, unit) -> str:
    if axis == "eps":
        return f"ε [{'px' if unit == 'px' else 'abs'}]"
    return "generations" if attack == "genattack" else "iterations"
