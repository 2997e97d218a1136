"""``python -m hwbed.attack``: the study's attack sweeps over models × executables.

With no arguments it runs the ``smoke`` preset on the default build (building it first when
it is missing) against the twin and the DSP48 simulator, and on its float baseline (resnet20
on digits, trained first when missing) on its twin, and prints the on-device vs float table.
Finished cells are written to the store at once; re-running the same command skips them, so a
killed sweep loses only the cells in flight.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hwbed.cli import add_debug, command

DEFAULT_BUILD = Path("build/resnet20-xnor-pynq-z2")
DEFAULT_BASELINE = "resnet20"
"""The float network of the default's architecture: the on-device vs float reference."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m hwbed.attack", description=__doc__.splitlines()[0])
    src = p.add_argument_group("what to attack")
    src.add_argument(
        "--build",
        action="append",
        default=[],
        metavar="DIR",
        help="build folder (repeatable); default build/resnet20-xnor-pynq-z2 and its float "
        "baseline runs/resnet20-digits-s0/model.pt",
    )
    src.add_argument("--model", help="model spec of --checkpoint (checked against it)")
    src.add_argument(
        "--checkpoint",
        action="append",
        default=[],
        metavar="PT",
        help="trained checkpoint (repeatable): attacked as twin, sim, ort, ...",
    )
    src.add_argument(
        "--executable",
        default="twin,sim",
        help="comma-separated: twin, sim, sim-reference, ort, qonnx, remote=URL "
        "(default twin,sim); white-box results are also kept in float space "
        "(twin-float)",
    )
    grid = p.add_argument_group("the grid")
    grid.add_argument("--preset", help="a preset grid (see --list-presets); default smoke")
    grid.add_argument("--grid", help="a TOML or JSON grid file")
    grid.add_argument("--images", type=int, help="first N test images (default: the grid's)")
    grid.add_argument("--data", help="data set (default: each model's training data)")
    grid.add_argument("--data-dir", help="folder or archive of cifar10/imagenet")
    run = p.add_argument_group("running it")
    run.add_argument("--store", help="result store folder (default runs/attack/<grid name>)")
    run.add_argument("--jobs", type=int, default=1, help="local worker processes (default 1)")
    run.add_argument("--cluster", help="Dask: tcp://HOST:PORT of a scheduler, or local:N")
    run.add_argument("--retries", type=int, default=2, help="retries of a cell whose worker died")
    run.add_argument("--list-presets", action="store_true", help="list the presets and exit")
    run.add_argument("--dry-run", action="store_true", help="print the cells and exit")
    run.add_argument("--no-progress", dest="progress", action="store_false")
    add_debug(run)
    return p


@command
def main(argv: list[str] | None = None) -> int:
    """Bad inputs (GridError, PlanError, StoreError, EngineError, AttackError, ...) end in one
    ``error:`` line and exit status 2 (:mod:`hwbed.cli`); failed cells in exit status 1."""
    args = build_parser().parse_args(argv)
    from hwbed.cells import ModelSource, PlanError, executables_for, plan
    from hwbed.engine import run_jobs, validate
    from hwbed.grid import GridError, load_grid, presets
    from hwbed.store import Store

    if args.list_presets:
        for name in sorted(presets()):
            g = load_grid(name)
            print(f"{name:22s} {g.describe().split(': ', 1)[1]:48s} {g.description}")
        return 0
    if args.preset and args.grid:
        raise GridError("give --preset or --grid, not both")
    grid = load_grid(None if args.grid else args.preset or "smoke", args.grid, images=args.images)
    if args.jobs < 1:
        raise PlanError(f"--jobs must be >= 1, got {args.jobs}")
    if args.model and not args.checkpoint:
        raise PlanError("--model names the spec of a --checkpoint; give --checkpoint PT")
    kinds = [k.strip() for k in args.executable.split(",") if k.strip()]
    models = [ModelSource.from_checkpoint(c, args.model) for c in args.checkpoint]
    builds = list(args.build)
    if not models and not builds:  # the embedded default and its float baseline
        if not DEFAULT_BUILD.is_dir():
            _build_default(args.progress)
        models = [ModelSource.from_checkpoint(_train_baseline(args.progress))]
        builds = [str(DEFAULT_BUILD)]
    models += [ModelSource.from_build(b) for b in builds]
    if any(k.startswith("sim") for k in kinds):
        _check_graphs(builds)
    jobs = plan(grid, models, kinds, args.data, args.data_dir)
    for m in models:
        if executables_for(m, kinds) != kinds:
            print(f"note: {m.name} is a float network: attacked on its twin only", file=sys.stderr)
    validate(jobs, args.jobs, args.cluster, args.retries)
    if args.dry_run:
        _print_cells(jobs)
        return 0
    store = Store(args.store or Path("runs/attack") / grid.name)
    report = run_jobs(
        jobs,
        store,
        workers=args.jobs,
        cluster=args.cluster,
        retries=args.retries,
        progress=args.progress,
    )
    print(table(store, jobs))
    print(f"\n{report}\nstore: {store.path}")
    return 1 if report.failed else 0


def _check_graphs(builds: list[str]) -> None:
    """Read each build's saved graph now: a corrupt one fails before the sweep, not per cell."""
    from hwbed.ir.graph import Graph

    for folder in builds:
        if (Path(folder) / "graph.json").is_file():
            Graph.load(Path(folder) / "graph")


def _build_default(progress: bool) -> None:
    from hwbed.fpga.build.flow import BuildConfig, build

    print(f"{DEFAULT_BUILD} is missing: building the default first", file=sys.stderr)
    build(BuildConfig(target="pynq-z2", progress=progress))


def _train_baseline(progress: bool) -> Path:
    """The default's float baseline (resnet20 on digits), trained when missing (~20 s)."""
    from hwbed.models.training import TrainConfig, train

    cfg = TrainConfig(model=DEFAULT_BASELINE, progress=progress)
    if not (cfg.output_dir() / "model.pt").is_file():
        print(f"training the float baseline {DEFAULT_BASELINE} first", file=sys.stderr)
    return train(cfg)


def _print_cells(jobs) -> None:
    n = 0
    for job in jobs:
        for cell in job.payload["cells"]:
            c = cell["content"]
            print(
                f"{cell['key']}  {c['model']:18s} {c['executable']:12s} {c['attack']:11s} "
                f"{c['norm'] or '-':4s} eps={_eps(c):8s} i={c['iterations'] or '-'!s:5s} "
                f"seed={c['seed']} {_short(c['params'])}"
            )
            n += 1
    print(f"{n} cells in {len(jobs)} runs")


def _eps(c: dict) -> str:
    if c["eps"] is None:
        return "inf"
    return f"{c['eps']:g}px" if c["eps_unit"] == "px" else f"{c['eps']:g}"


def _short(params: dict) -> str:
    skip = {"norm", "steps", "rounds", "generations"}
    return " ".join(f"{k}={v}" for k, v in params.items() if k not in skip)


def table(store, jobs) -> str:
    """Clean and attacked accuracy per cell, every executable side by side (+ Δ to float)."""
    groups: dict[tuple, dict[str, dict]] = {}
    sides: list[str] = []
    models = {job.payload["model"]["hash"]: job.payload["model"]["name"] for job in jobs}
    twice = {n for n in models.values() if list(models.values()).count(n) > 1}
    names = {h: f"{n}@{h[:6]}" if n in twice else n for h, n in models.items()}
    for job in jobs:
        for cell in job.payload["cells"]:
            if not store.has(cell["key"]):
                continue
            c = cell["content"]
            summary = store.read(cell["key"])["manifest"]["summary"]
            row = (
                names[c["model_hash"]],
                c["attack"],
                c["norm"] or "-",
                _eps(c),
                str(c["iterations"] or "-"),
                _short(c["params"]),
                str(c["seed"]),
            )
            groups.setdefault(row, {})[c["executable"]] = summary
            if c["executable"] not in sides:
                sides.append(c["executable"])
    head = ["model", "attack", "norm", "eps", "i", "params", "seed"] + [
        f"{s} clean/att" for s in sides
    ]
    has_float = "twin-float" in sides
    hw = [s for s in sides if s not in ("twin-float", "twin")]
    if has_float and hw:
        head += [f"Δ {s}-float" for s in hw]
    lines = [head]
    for row, by_side in groups.items():
        cols = [str(v) for v in row]
        for s in sides:
            r = by_side.get(s)
            cols.append(
                "" if r is None else f"{r['clean_accuracy']:.3f}/{r['robust_accuracy']:.3f}"
            )
        if has_float and hw:
            base = by_side.get("twin-float")
            for s in hw:
                r = by_side.get(s)
                cols.append(
                    ""
                    if r is None or base is None
                    else f"{r['robust_accuracy'] - base['robust_accuracy']:+.3f}"
                )
        lines.append(cols)
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    return "\n".join(
        "  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)) for line in lines
    )


if __name__ == "__main__":
    sys.exit(main())
