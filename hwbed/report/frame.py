"""The report's one input: a store's per-example rows collapsed to one row per cell.

:func:`cells` takes :func:`hwbed.store.load`'s DataFrame (or a store folder) and returns one
row per cell with the fields every view uses, per-example outcomes kept as arrays so that
views can pair executables image by image (McNemar, worst case) instead of comparing means.
"""

from __future__ import annotations

import json
import os
from functools import cache

import numpy as np
import pandas as pd

FLOAT_SIDE = "twin-float"
"""The white-box result judged where it was crafted (float space)."""
BOUNDARY_SIDE = "twin"
"""The twin behind the uint8 boundary: what every hardware executable must equal."""
CELL = ["model", "data", "images", "attack", "norm", "eps", "eps_unit", "params", "iterations"]
"""What identifies an attack cell across executables (with ``seed``)."""
_EXAMPLES = (
    "image",
    "label",
    "target",
    "clean_pred",
    "pred",
    "success",
    "first_success",
    "queries",
    "exhausted",
    "l0",
    "l2",
    "linf",
)
"""The per-image columns of a store's cells."""


class ReportError(ValueError):
    """A store or build a report cannot use; the message names it."""


def cells(data: pd.DataFrame | str | os.PathLike) -> pd.DataFrame:
    """One row per ``ok`` cell of a store (or of :func:`hwbed.store.load`'s frame).

    Columns: ``key``, ``model``, ``arch``, ``variant`` (``vanilla``, ``kd``, ``xnor``,
    ``prune-filter50``, ``abc3x3``, ``w4a4``, ...), ``data``, ``classes``, ``images``,
    ``executable``, ``attack``, ``white_box``, ``targeted``, ``norm``, ``eps``, ``eps_unit``,
    ``eps_abs``, ``threat`` (e.g. ``Linf 8/255``), ``iterations``, ``params`` (the cell's
    parameters other than its iteration count, ``k=v`` joined; ``-`` when none), ``seed``,
    ``n``, ``clean_accuracy``, ``robust_accuracy``, ``target_accuracy``, ``bit_exact``,
    ``crafted_on`` / ``scored_on`` (``backend:model``), ``attack_source`` (the model the
    adversarials were crafted on), ``build``, ``restarts_loss`` / ``restarts_accuracy`` (PGD,
    one value per restart, else None) and per-example arrays ``image``, ``label``,
    ``target``, ``pred``, ``clean_pred``, ``first_success`` and ``robust`` (clean and attacked
    prediction both the label: RobustBench's and AutoAttack's robust accuracy is its mean).
    """
    rows = _from_store(data) if not isinstance(data, pd.DataFrame) else _from_frame(data)
    if not rows:
        raise ReportError("the store holds no finished cell")
    out = pd.DataFrame(rows)
    out["iterations"] = out["iterations"].astype("Int64")
    order = ["model", "attack", "norm", "eps_abs", "params", "iterations", "seed", "executable"]
    return out.sort_values(order, na_position="first", kind="stable").reset_index(drop=True)


def _from_store(path) -> list[dict]:
    """Rows straight from the cell files (no per-image DataFrame: seconds less per 1000 cells)."""
    from hwbed.store import Store, StoreError

    try:
        store = Store(path, create=False)
    except (StoreError, FileNotFoundError) as err:
        raise ReportError(str(err)) from None
    return [
        _row(key, manifest, {k: np.asarray(v) for k, v in examples.items()})
        for key, manifest, examples in store.finished()
    ]


def _from_frame(data: pd.DataFrame) -> list[dict]:
    """Rows from :func:`hwbed.store.load`'s per-image frame."""
    rows = []
    for key, g in data.groupby("key", sort=True):
        first = {k: v for k, v in g.iloc[0].items() if k not in _EXAMPLES}
        examples = {k: g[k].to_numpy() for k in _EXAMPLES if k in g}
        rows.append(_row(key, first, examples))
    return rows


def _row(key: str, first: dict, ex: dict[str, np.ndarray]) -> dict:
    order = np.argsort(ex["image"], kind="stable")
    ex = {k: v[order] for k, v in ex.items()}
    model = str(first["model"])
    arch, variant = split_model(model)
    label = ex["label"].astype(np.int64)
    pred = ex["pred"].astype(np.int64)
    clean = ex["clean_pred"].astype(np.int64)
    target = ex["target"] if "target" in ex else np.full(len(label), None)
    attack = str(first["attack"])
    eps_abs = _num(first.get("eps_abs"))
    iterations = _num(first.get("iterations"))
    targeted = bool(first.get("targeted"))
    robust = (clean == label) & (pred == label)
    return {
        "key": key,
        "model": model,
        "arch": arch,
        "variant": variant,
        "data": first["data"],
        "classes": int(_num(first.get("model_card.classes")) or 10),
        "images": int(first["images"]),
        "executable": str(first["executable"]),
        "attack": attack,
        "white_box": is_white_box(attack),
        "targeted": targeted,
        "norm": first["norm"] if isinstance(first.get("norm"), str) else None,
        "eps": _num(first.get("eps")),
        "eps_unit": first.get("eps_unit") if isinstance(first.get("eps_unit"), str) else None,
        "eps_abs": np.inf if eps_abs is None else eps_abs,
        "threat": threat(first.get("norm"), _num(first.get("eps")), first.get("eps_unit")),
        "iterations": None if iterations is None else int(iterations),
        "params": _params(first),
        "seed": int(first["seed"]),
        "n": len(label),
        "clean_accuracy": float(np.mean(clean == label)),
        "robust_accuracy": float(np.mean(robust)),
        "target_accuracy": float(np.mean(pred == target.astype(np.int64))) if targeted else None,
        "bit_exact": None if _missing(first.get("bit_exact")) else bool(first["bit_exact"]),
        "crafted_on": first.get("crafted_on"),
        "scored_on": first.get("scored_on"),
        "attack_source": str(first.get("crafted_on") or "").split(":", 1)[-1] or model,
        "build": first.get("build"),
        "restarts_loss": _list(first.get("restarts.loss")),
        "restarts_accuracy": _list(first.get("restarts.accuracy")),
        "image": ex["image"].astype(np.int64),
        "label": label,
        "target": target,
        "pred": pred,
        "clean_pred": clean,
        "first_success": ex.get("first_success"),
        "robust": robust,
    }


def split_model(name: str) -> tuple[str, str]:
    """(architecture, compression variant) of a model spec; ``vanilla`` when uncompressed."""
    from hwbed.models.spec import SpecError, parse_spec

    try:
        spec = parse_spec(name)
    except SpecError:
        return name, "vanilla"
    rest = spec.name[len(spec.arch) :].lstrip("-")
    return spec.arch, rest or "vanilla"


@cache
def is_white_box(attack: str) -> bool:
    """True for attacks that need gradients (crafted on the twin, scored everywhere)."""
    from hwbed.attacks.base import WhiteBoxAttack
    from hwbed.attacks.registry import attack_class

    return issubclass(attack_class(attack), WhiteBoxAttack)


def eps_text(eps, unit) -> str:
    """ε as RobustBench writes it: ``8/255`` in pixel units, the number otherwise."""
    if eps is None or pd.isna(eps) or not np.isfinite(eps):
        return "unbounded"
    return f"{eps:g}/255" if unit == "px" else f"{eps:g}"


def threat(norm, eps, unit) -> str:
    """The threat model in words: ``Linf 8/255``, ``L2 0.5``, ``L2 unbounded``."""
    name = {"linf": "Linf", "l2": "L2", "l0": "L0"}.get(norm, str(norm or "-"))
    return f"{name} {eps_text(eps, unit)}"


def _params(row: dict) -> str:
    """The cell's attack parameters other than the iteration count, as ``k=v`` pairs."""
    from hwbed.grid import ITERATION_PARAM

    skip = {"norm", ITERATION_PARAM.get(str(row["attack"]))}
    pairs = []
    for col in sorted(c for c in row if c.startswith("params.")):
        name, value = col.split(".", 1)[1], row[col]
        if name in skip or _missing(value):
            continue
        pairs.append(f"{name}={value:g}" if isinstance(value, float) else f"{name}={value}")
    return " ".join(pairs) or "-"


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def _num(value):
    return None if _missing(value) else float(value)


def _list(value):
    if not isinstance(value, str):
        return None
    return json.loads(value)
