"""Sweep grids as data: presets shipped with hwbed and custom TOML/JSON files, checked.

A grid is a table of attacks; each entry names an attack of :mod:`hwbed.attacks.registry`, its
ε values with their norm and unit, an optional iteration axis, and parameters (a list value
is one more grid axis, e.g. GenAttack's population [6, 16])::

    name = "my-grid"
    images = 100            # first N images of the test split
    seeds = [0]

    [[attacks]]
    attack = "pgd"
    norm = "l2"             # linf | l2; fixed by fgsm (linf)
    eps_unit = "abs"        # abs: [0, 1] units; px: pixel units k/255
    epsilons = [0.1, 0.5, 1.0, 2.0]
    iterations = [2, 3, 4, 5]   # cells sharing one run at the largest count
    params = { restarts = 1 }

Minimum-norm attacks (cw, deepfool, hopskipjump) may omit ``epsilons``: unbounded. Every
misspelt key or bad value is one :class:`GridError` naming the key and the allowed values.
"""

from __future__ import annotations

import inspect
import itertools
import json
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from hwbed.attacks.inputs import AttackError, check_norm
from hwbed.attacks.registry import ATTACKS, attack_class, make_attack

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

GRID_KEYS = ("name", "description", "images", "seeds", "attacks")
ATTACK_KEYS = ("attack", "norm", "eps_unit", "epsilons", "iterations", "params")
EPS_UNITS = ("abs", "px")
ITERATION_PARAM = {
    "pgd": "steps",
    "cw": "steps",
    "deepfool": "steps",
    "localsearch": "rounds",
    "genattack": "generations",
    "hopskipjump": "steps",
}
"""The constructor parameter each attack's iteration axis sets."""
NORM_FIXED = {"fgsm": "linf", "localsearch": "linf", "genattack": "linf", "cw": "l2"}
"""Attacks whose norm is not a parameter."""


class GridError(ValueError):
    """A grid that cannot be run; the message names the key and the allowed values."""


@dataclass(frozen=True)
class AttackEntry:
    """One attack of a grid with one combination of its parameter axes."""

    attack: str
    norm: str | None
    eps_unit: str
    epsilons: tuple[float | None, ...]
    """In ``eps_unit``; None = unbounded."""
    iterations: tuple[int, ...] | None
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def radii(self) -> list[float | None]:
        """ε in [0, 1] units (None = unbounded)."""
        scale = 1 / 255 if self.eps_unit == "px" else 1.0
        return [None if e is None else e * scale for e in self.epsilons]

    def constructor(self, iterations: int | None = None) -> dict[str, Any]:
        """Keyword arguments of the attack class for ``iterations`` (default: the largest)."""
        kwargs = dict(self.params)
        if self.attack not in NORM_FIXED:
            kwargs["norm"] = self.norm
        if self.iterations:
            kwargs[ITERATION_PARAM[self.attack]] = iterations or max(self.iterations)
        return kwargs


@dataclass(frozen=True)
class Grid:
    name: str
    description: str
    images: int
    seeds: tuple[int, ...]
    entries: tuple[AttackEntry, ...]

    def describe(self) -> str:
        n = sum(len(e.epsilons) * len(e.iterations or [None]) for e in self.entries)
        return f"{self.name}: {len(self.entries)} attack runs, {n} cells per model × executable"


def presets() -> dict[str, Path]:
    """Preset name -> its TOML file (shipped in ``hwbed/presets``)."""
    folder = resources.files("hwbed") / "presets"
    return {Path(str(p)).stem: Path(str(p)) for p in folder.iterdir() if str(p).endswith(".toml")}


def load_grid(
    preset: str | None = None, path: str | Path | None = None, images: int | None = None
) -> Grid:
    """A preset by name or a TOML/JSON grid file, checked; ``images`` overrides its count."""
    if (preset is None) == (path is None):
        raise GridError("give exactly one of a preset name or a grid file")
    if preset is not None:
        known = presets()
        if preset not in known:
            raise GridError(f"unknown preset {preset!r}; choose one of {', '.join(sorted(known))}")
        path = known[preset]
    path = Path(path)
    if not path.is_file():
        raise GridError(f"{path}: no such grid file")
    try:
        text = path.read_text()
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as err:  # UnicodeDecodeError included
        raise GridError(
            f"{path}: not valid {path.suffix.lstrip('.').upper() or 'TOML'}: {err}"
        ) from None
    if isinstance(data, dict):
        data.setdefault("name", path.stem)
    grid = parse_grid(data, str(path))
    if images is not None:
        if images <= 0:
            raise GridError(f"--images must be positive, got {images}")
        grid = Grid(grid.name, grid.description, images, grid.seeds, grid.entries)
    return grid


def parse_grid(data: dict[str, Any], where: str = "grid") -> Grid:
    """Check a grid dict and expand its parameter axes into :class:`AttackEntry` rows."""
    if not isinstance(data, dict):
        raise GridError(f"{where}: a grid is a table of keys, got {type(data).__name__}")
    _keys(data, GRID_KEYS, where)
    attacks = data.get("attacks")
    if not isinstance(attacks, list) or not attacks:
        raise GridError(f"{where}: 'attacks' must be a non-empty list of attack tables")
    images = data.get("images", 100)
    if not isinstance(images, int) or isinstance(images, bool) or images <= 0:
        raise GridError(f"{where}: 'images' must be a positive integer, got {images!r}")
    seeds = data.get("seeds", [0])
    if (
        not isinstance(seeds, list)
        or not seeds
        or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)
    ):
        raise GridError(f"{where}: 'seeds' must be a list of integers, got {seeds!r}")
    entries = []
    for i, table in enumerate(attacks):
        entries.extend(_entries(table, f"{where}: attacks[{i}]"))
    return Grid(
        str(data["name"]), str(data.get("description", "")), images, tuple(seeds), tuple(entries)
    )


def _entries(table: Any, where: str) -> list[AttackEntry]:
    if not isinstance(table, dict):
        raise GridError(f"{where}: expected a table, got {type(table).__name__}")
    _keys(table, ATTACK_KEYS, where)
    name = table.get("attack")
    if name not in ATTACKS:
        raise GridError(f"{where}: unknown attack {name!r}; choose one of {', '.join(ATTACKS)}")
    where = f"{where} ({name})"
    cls = attack_class(name)
    signature = inspect.signature(cls.__init__).parameters
    default = signature["norm"].default if "norm" in signature else NORM_FIXED.get(name)
    norm = table.get("norm", None if default is inspect.Parameter.empty else default)
    if name in NORM_FIXED and norm != NORM_FIXED[name]:
        raise GridError(f"{where}: {name} is {NORM_FIXED[name]} only, got norm {norm!r}")
    try:
        norm = check_norm(norm, name)
    except AttackError as err:
        raise GridError(f"{where}: {err}") from None
    unit = table.get("eps_unit", "abs")
    if unit not in EPS_UNITS:
        raise GridError(f"{where}: eps_unit {unit!r}; choose one of {', '.join(EPS_UNITS)}")
    eps = table.get("epsilons")
    if eps is None:
        if cls.bounded:
            raise GridError(f"{where}: 'epsilons' is required ({name} is a bounded attack)")
        eps = [None]
    if (
        not isinstance(eps, list)
        or not eps
        or not all(
            (e is None and not cls.bounded)
            or (isinstance(e, (int, float)) and not isinstance(e, bool) and e >= 0)
            for e in eps
        )
    ):
        raise GridError(f"{where}: 'epsilons' must be a list of numbers >= 0, got {eps!r}")
    iterations = table.get("iterations")
    if iterations is not None:
        if name not in ITERATION_PARAM:
            raise GridError(f"{where}: {name} has no iteration axis; remove 'iterations'")
        if (
            not isinstance(iterations, list)
            or not iterations
            or not all(isinstance(i, int) and not isinstance(i, bool) and i > 0 for i in iterations)
        ):
            raise GridError(
                f"{where}: 'iterations' must be a list of positive integers, got {iterations!r}"
            )
        iterations = tuple(sorted(set(iterations)))
    params = table.get("params", {})
    if not isinstance(params, dict):
        raise GridError(f"{where}: 'params' must be a table")
    if len(set(eps)) != len(eps):
        raise GridError(f"{where}: 'epsilons' lists a value twice: {eps!r}")
    if "norm" in params:
        raise GridError(f"{where}: give 'norm' beside 'attack', not in 'params'")
    step_key = ITERATION_PARAM.get(name)
    if iterations is not None and step_key in params:
        raise GridError(f"{where}: params.{step_key} and 'iterations' both set {step_key}")
    axes = {k: v if isinstance(v, list) else [v] for k, v in params.items()}
    for k, values in axes.items():
        if len({json.dumps(v, sort_keys=True) for v in values}) != len(values):
            raise GridError(f"{where}: params.{k} lists a value twice: {values!r}")
    out = []
    for combo in itertools.product(*axes.values()):
        entry = AttackEntry(
            name, norm, unit, tuple(eps), iterations, dict(zip(axes, combo, strict=True))
        )
        try:  # build it once now: a bad parameter fails here, before any work
            make_attack(name, **entry.constructor())
        except (AttackError, TypeError) as err:
            raise GridError(f"{where}: {err}") from None
        out.append(entry)
    return out


def _keys(table: dict, allowed: tuple[str, ...], where: str) -> None:
    for key in table:
        if key not in allowed:
            raise GridError(f"{where}: unknown key {key!r}; allowed: {', '.join(allowed)}")
