"""Sweep cells: a grid expanded over models × executables, and the job that runs one attack.

A *cell* is one row of the study: model × executable × attack × parameters × ε × iterations ×
seed. Its key is derived from that content (:func:`hwbed.store.cell_key`), so a re-run skips
finished cells and a changed parameter is a new cell. A *job* is one attack run that fills
several cells at once:

- white-box attacks run once per (model, attack entry, seed) on the twin and are scored on
  every executable: ``twin-float`` (the twin in float space, what the literature reports) and
  each executable asked for (after the uint8 boundary);
- black-box attacks run once per executable (they query it);
- cells that differ only in their iteration count share the run at the largest count
  (white-box snapshots, black-box ``first_success``; :meth:`AttackResult.at`).

Images are the first N of the data set's test split, in order, correctly classified or not
(RobustBench's convention); robust accuracy counts them all.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hwbed import __version__
from hwbed.attacks.backends import KINDS
from hwbed.engine import Job
from hwbed.grid import ITERATION_PARAM, AttackEntry, Grid
from hwbed.models.data.registry import available_datasets
from hwbed.store import cell_key

FLOAT_SIDE = "twin-float"
"""The executable name of a white-box result judged where it was crafted (float space)."""
JOB_FUNC = "hwbed.cells:run_job"


class PlanError(ValueError):
    """A model or executable a sweep cannot run; the message names it."""


@dataclass(frozen=True)
class ModelSource:
    """A network to attack: a build folder (twin, graph, deploy token) or a checkpoint."""

    name: str
    source: str
    checkpoint: str
    hash: str
    card: dict

    @classmethod
    def from_build(cls, folder: str | Path) -> ModelSource:
        folder = Path(folder)
        if not folder.is_dir():
            raise PlanError(f"{folder}: no such build folder")
        if not (folder / "model.pt").is_file():
            raise PlanError(f"{folder}: not a build folder (no model.pt)")
        return cls._make(
            folder,
            folder / "model.pt",
            [folder / n for n in ("model.pt", "graph.json", "graph.npz")],
        )

    @classmethod
    def from_checkpoint(cls, path: str | Path, spec: str | None = None) -> ModelSource:
        path = Path(path)
        if not path.is_file():
            raise PlanError(f"{path}: no such checkpoint")
        source = cls._make(path, path, [path])
        if spec is not None:
            from hwbed.models.spec import SpecError, parse_spec

            try:
                wanted = parse_spec(spec).name
            except SpecError as err:
                raise PlanError(f"--model {spec!r}: {err}") from None
            if wanted != source.name:
                raise PlanError(f"{path} holds a {source.name} network, not {spec}")
        return source

    @classmethod
    def _make(cls, source: Path, ckpt: Path, files: list[Path]) -> ModelSource:
        digest = hashlib.sha256()
        for f in files:
            if f.is_file():
                digest.update(f.name.encode())
                digest.update(f.read_bytes())
        card_file = ckpt.with_suffix(".json")
        card = json.loads(card_file.read_text()) if card_file.is_file() else {}
        if "spec" not in card:
            from hwbed.models.checkpoint import CheckpointError, read_checkpoint

            try:
                card = {"spec": read_checkpoint(ckpt)["spec"], **card}
            except CheckpointError as err:
                raise PlanError(str(err)) from None
        keep = ("spec", "data", "input_shape", "classes", "test_accuracy", "epoch", "seed")
        return cls(
            card["spec"],
            str(source),
            str(ckpt),
            digest.hexdigest()[:16],
            {k: card[k] for k in keep if k in card},
        )


def check_executables(kinds: list[str]) -> list[str]:
    """The executable kinds of a sweep, each known; ``remote=URL`` stays as given."""
    if not kinds:
        raise PlanError("no executable given (e.g. --executable twin,sim)")
    for kind in kinds:
        if kind == "remote":
            raise PlanError("executable 'remote' needs its address: remote=http://HOST:PORT")
        if kind.split("=", 1)[0] not in KINDS:
            raise PlanError(
                f"unknown executable {kind!r}; choose from {', '.join(KINDS)} "
                "(remote=URL for a query server)"
            )
    if len(set(kinds)) != len(kinds):
        raise PlanError(f"executable listed twice in {','.join(kinds)}")
    return kinds


def executables_for(model: ModelSource, kinds: list[str]) -> list[str]:
    """The executables ``model`` runs on: a float network has no hardware path, only its twin."""
    from hwbed.models.spec import parse_spec

    if parse_spec(model.name).quantized:
        return kinds
    kept = [k for k in kinds if k == "twin"]
    if not kept:
        raise PlanError(
            f"{model.name} is a float network: {','.join(kinds)} need a quantized model "
            "(attack it with --executable twin)"
        )
    return kept


def plan(
    grid: Grid,
    models: list[ModelSource],
    executables: list[str],
    data: str | None,
    data_dir: str | None = None,
) -> list[Job]:
    """The jobs (and their cells) of ``grid`` on every model and executable."""
    from hwbed.attacks.registry import attack_class

    executables = check_executables(executables)
    jobs = []
    for model in models:
        dataset = data or model.card.get("data", "digits")
        if dataset not in available_datasets():
            raise PlanError(
                f"unknown data set {dataset!r}; choose one of {', '.join(available_datasets())}"
            )
        kinds_here = executables_for(model, executables)
        for entry in grid.entries:
            white = issubclass(attack_class(entry.attack), _white_box())
            for seed in grid.seeds:
                runs = [kinds_here] if white else [[kind] for kind in kinds_here]
                for kinds in runs:
                    sides = [FLOAT_SIDE, *kinds] if white else kinds
                    payload = {
                        "model": asdict(model),
                        "entry": _entry_dict(entry),
                        "seed": seed,
                        "executables": kinds,
                        "white_box": white,
                        "data": {"name": dataset, "dir": data_dir, "images": grid.images},
                        "cells": [],
                    }
                    for side in sides:
                        for e, _ in enumerate(entry.epsilons):
                            for it in entry.iterations or [None]:
                                content = cell_content(
                                    model, side, entry, e, it, seed, dataset, grid.images
                                )
                                payload["cells"].append(
                                    {
                                        "key": cell_key(content),
                                        "side": side,
                                        "eps_index": e,
                                        "iterations": it,
                                        "content": content,
                                    }
                                )
                    keys = [c["key"] for c in payload["cells"]]
                    jobs.append(
                        Job(key=cell_key({"job": keys}), cells=keys, payload=payload, func=JOB_FUNC)
                    )
    return jobs


def cell_content(
    model: ModelSource,
    side: str,
    entry: AttackEntry,
    e: int,
    it: int | None,
    seed: int,
    data: str,
    images: int,
) -> dict[str, Any]:
    """What identifies a cell (and nothing that does not change its rows)."""
    eps = entry.epsilons[e]
    return {
        "model": model.name,
        "model_hash": model.hash,
        "executable": side,
        "attack": entry.attack,
        "norm": entry.norm,
        "eps": eps,
        "eps_unit": entry.eps_unit,
        "params": entry.constructor(it),
        "iterations": it,
        "seed": seed,
        "data": data,
        "images": images,
        "selection": f"first {images} of the test split",
    }


def _entry_dict(entry: AttackEntry) -> dict[str, Any]:
    return {
        "attack": entry.attack,
        "norm": entry.norm,
        "eps_unit": entry.eps_unit,
        "epsilons": list(entry.epsilons),
        "iterations": None if entry.iterations is None else list(entry.iterations),
        "params": entry.params,
    }


def _white_box():
    from hwbed.attacks.base import WhiteBoxAttack

    return WhiteBoxAttack


def run_job(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """Run one job's attack and return its cells ({key, manifest, examples} each)."""
    from hwbed.cli import quiet_known_warnings

    quiet_known_warnings()  # a spawned worker: the CLI's filters are not inherited
    from hwbed.attacks.backends import make_executable
    from hwbed.attacks.registry import make_attack
    from hwbed.attacks.scoring import score_on
    from hwbed.attacks.twin import Twin
    from hwbed.models.data.registry import load_dataset

    t0 = time.perf_counter()
    model, data = payload["model"], payload["data"]
    entry = AttackEntry(
        **{
            **payload["entry"],
            "epsilons": tuple(payload["entry"]["epsilons"]),
            "iterations": None
            if payload["entry"]["iterations"] is None
            else tuple(payload["entry"]["iterations"]),
        }
    )
    shape = model["card"].get("input_shape")
    size = None if shape is None or data["name"] == "digits" else int(shape[-1])
    x, y, _ = load_dataset(data["name"], "test", data_dir=data["dir"], size=size)
    x, y = x[: data["images"]], y[: data["images"]]
    attack = make_attack(entry.attack, **entry.constructor())
    iterations = list(entry.iterations or [None])
    radii = entry.radii
    if payload["white_box"]:
        twin = Twin.from_checkpoint(model["checkpoint"])
        snaps = [i for i in iterations[:-1] if i is not None]
        crafted = attack(twin, x, y, radii, seed=payload["seed"], snapshots=snaps)
        exes = {kind: make_executable(kind, model["source"]) for kind in payload["executables"]}
    else:
        kind = payload["executables"][0]
        exe = make_executable(kind, model["source"])
        crafted = attack(exe, x, y, radii, seed=payload["seed"])
        exes = {}
    by_iteration = {}
    param = ITERATION_PARAM.get(entry.attack)
    for it in iterations:
        at = crafted if it is None or it == iterations[-1] else crafted.at(it, param)
        by_iteration[it] = {FLOAT_SIDE if payload["white_box"] else payload["executables"][0]: at}
        for kind, exe in exes.items():
            by_iteration[it][kind] = score_on(at, exe)
    wall = time.perf_counter() - t0
    cells = []
    for cell in payload["cells"]:
        result = by_iteration[cell["iterations"]][cell["side"]]
        e = cell["eps_index"]
        n = result.n
        rows = result.records()[e * n : (e + 1) * n]  # records() is ε-major
        examples = {k: [r[k] for r in rows] for k in rows[0]} if rows else {}
        examples.pop("eps", None)
        summary = result.summary()[e]
        manifest = {
            **cell["content"],
            "hwbed": __version__,
            "model_card": model["card"],
            "build": model["source"],
            "eps_abs": None if radii[e] is None else float(radii[e]),
            "eps_px": None if radii[e] is None else float(radii[e] * 255),
            "targeted": result.targeted,
            "crafted_on": result.crafted_on,
            "scored_on": result.scored_on,
            "bit_exact": None
            if cell["side"] not in exes and payload["white_box"]
            else bool((exes.get(cell["side"]) or exe).bit_exact),
            "summary": {
                k: summary[k]
                for k in summary
                if k
                not in ("attack", "norm", "eps", "eps_px", "crafted_on", "scored_on", "targeted")
            },
            "job_seconds": round(wall, 3),
            **_restart_trace(crafted, e, cell["iterations"]),
        }
        cells.append(
            {"key": cell["key"], "manifest": _plain(manifest), "examples": _plain(examples)}
        )
    return cells


def _restart_trace(result, e: int, iterations: int | None) -> dict[str, Any]:
    """PGD's per-restart mean loss and accuracy at this cell's iteration (for the curves)."""
    if result.attack != "pgd" or "loss" not in result.traces:
        return {}
    steps, every = result.params["steps"], result.params["record_every"]
    recorded = sorted(set(range(0, steps + 1, every)) | {steps})
    it = steps if iterations is None else iterations
    if it not in recorded:
        return {}
    t = recorded.index(it)
    return {
        "restarts": {
            "loss": result.traces["loss"][e][:, t].mean(axis=1).tolist(),
            "accuracy": result.traces["correct"][e][:, t].mean(axis=1).tolist(),
        }
    }


def _plain(value: Any) -> Any:
    """JSON-able copy: numpy scalars and arrays to Python, NaN kept as None."""
    import numpy as np

    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value != value:
        return None
    return value
