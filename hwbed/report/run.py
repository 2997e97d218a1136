"""One report run: every view of a store written to a folder, then the page that holds them.

:func:`write_report` is what ``python -m hwbed.report`` runs; each view is a function of the
cells frame (:mod:`hwbed.report.frame`) in its own module, so a notebook can draw any one of
them alone.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from hwbed.report.frame import FLOAT_SIDE, ReportError, cells
from hwbed.report.tables import WORST


@dataclass
class ReportConfig:
    """What to report and where; :meth:`check` refuses bad input before any work."""

    store: Path
    out: Path
    builds: list[Path] = field(default_factory=list)
    cell: str | None = None
    strain_threshold: float = 0.5
    cam_images: int = 4
    data_dir: str | None = None
    screenshot: bool = False
    progress: bool = True

    def check(self) -> None:
        from hwbed.store import Store, StoreError

        try:
            Store(self.store, create=False)
        except (StoreError, FileNotFoundError) as err:
            raise ReportError(str(err)) from None
        for b in self.builds:
            if not (Path(b) / "summary.json").is_file():
                raise ReportError(f"--builds {b}: not a build folder (no summary.json)")
        if not 0.0 < self.strain_threshold <= 1.0:
            raise ReportError(f"--strain-threshold must be in (0, 1], got {self.strain_threshold}")
        if self.cam_images < 0:
            raise ReportError(f"--cam-images must be >= 0, got {self.cam_images}")
        if self.cell is not None:
            parse_cell(self.cell)
        if self.screenshot:
            from hwbed.report.browser import find_chromium

            if find_chromium() is None:
                raise ReportError("--screenshot needs Chromium (Debian: apt install chromium)")
        if self.out.exists() and not self.out.is_dir():
            raise ReportError(f"--out {self.out}: exists and is not a folder")


@dataclass
class Report:
    """What a run wrote: the files, the page and the table it prints."""

    files: list[Path]
    page: Path
    printed: str


def parse_cell(text: str) -> tuple[str, float | None, int | None]:
    """``ATTACK[:EPS[:ITERATIONS]]`` → (attack, eps, iterations)."""
    parts = text.split(":")
    if not parts[0] or len(parts) > 3:
        raise ReportError(f"--cell {text!r}: expected ATTACK[:EPS[:ITERATIONS]], e.g. fgsm:8")
    try:
        eps = float(parts[1]) if len(parts) > 1 and parts[1] else None
        it = int(parts[2]) if len(parts) > 2 else None
    except ValueError:
        raise ReportError(f"--cell {text!r}: EPS is a number, ITERATIONS an integer") from None
    return parts[0], eps, it


class _Steps:
    """Numbered progress lines on stderr, each with its time."""

    def __init__(self, total: int, show: bool) -> None:
        self.total, self.show, self.n = total, show, 0

    def __call__(self, title: str):
        self.n += 1
        if self.show:
            print(f"[{self.n}/{self.total}] {title} ...", file=sys.stderr, end="", flush=True)
        self.t0 = time.perf_counter()
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        if self.show:
            print(f" {time.perf_counter() - self.t0:.1f} s", file=sys.stderr, flush=True)


def write_report(config: ReportConfig) -> Report:
    """Write every view of ``config.store`` under ``config.out``; return what was written."""
    from hwbed import __version__
    from hwbed.report import boxplots, curves, pareto, stress
    from hwbed.report.cost import cost_table
    from hwbed.report.page import Figure, Section, Table, write_page, write_tables
    from hwbed.report.study import study_tables
    from hwbed.report.style import save
    from hwbed.report.tables import full_table, side_by_side

    out = config.out
    files: list[Path] = []
    steps = _Steps(9 + bool(config.screenshot), config.progress)

    def table(name: str, title: str, frame: pd.DataFrame, caption: str = "") -> Table:
        csv, md = write_tables(frame, out / "tables" / name)
        files.extend([csv, md])
        return Table(title, frame, csv=csv, markdown=md, caption=caption)

    def figure(name: str, title: str, fig, caption: str = "") -> Figure:
        path = out / "plots" / f"{name}.png"
        save(fig, path)
        files.append(path)
        return Figure(title, path, caption)

    sections = []
    with steps("reading the store"):
        c = cells(config.store)
    with steps("on-device vs float table"):
        full = full_table(c)
        chosen = pick_cell(full, config.cell)  # a bad --cell is refused before any file
        (out / "tables").mkdir(parents=True, exist_ok=True)
        (out / "plots").mkdir(parents=True, exist_ok=True)
        wide = side_by_side(full)
        sections.append(
            Section(
                "On-device vs float",
                _DEVICE_INTRO,
                tables=[
                    table("device_vs_float", "Every cell on every executable", wide),
                    table(
                        "device_vs_float_long",
                        "Long form (RobustBench fields, references, McNemar)",
                        _long_view(full),
                    ),
                ],
            )
        )
    if chosen is None:
        print("note: no bounded threat model: no robustness-vs-cost plot", file=sys.stderr)
    with steps("cost table"):
        cost = cost_table(c, config.builds)
        sections.append(
            Section("Cost", _COST_INTRO, tables=[table("cost", "Cost per model", cost)])
        )
    for src in cost.source[cost.source.astype(str).str.endswith("(missing)")]:
        print(f"warning: {src}: costs left empty", file=sys.stderr)
    with steps("study tables"):
        sections.append(
            Section(
                "The study's tables",
                _STUDY_INTRO,
                tables=[
                    table(f"study_{name}", name, frame) for name, frame in study_tables(c).items()
                ],
            )
        )
    with steps("PGD curves"):
        sections.append(_pgd_section(c, table, figure, curves))
    with steps("stress–strain"):
        strain = stress.strain_table(c)
        classes = stress.classify(strain, config.strain_threshold)
        sections.append(
            Section(
                "Stress–strain",
                _STRESS_INTRO.format(threshold=config.strain_threshold),
                tables=[table("stress_classes", "Class per model", classes)],
                figures=[
                    figure(
                        "stress_strain",
                        "Strain against stress",
                        stress.stress_strain_figure(strain, classes),
                    )
                ],
            )
        )
        files.append(_write_csv(strain, out / "tables" / "stress_strain.csv"))
    with steps("box-plots"):
        sections.append(
            Section(
                "Box-plots",
                "Attacked accuracy over all of an attack's grid cells, per compression "
                "variant, architectures pooled.",
                tables=[table("boxplots", "Quartiles", boxplots.boxplot_table(c))],
                figures=[figure("boxplots", "Per attack and variant", boxplots.boxplot_figure(c))],
            )
        )
    with steps("CAM heat maps"):
        sections.append(_cam_section(c, config, table, figure))
    with steps("robustness vs cost"):
        sections.append(_pareto_section(chosen, cost, table, figure, pareto))
    page = out / "index.html"
    meta = {
        "store": str(config.store),
        "hwbed": __version__,
        "cells": str(len(c)),
        "models": ", ".join(sorted(set(c.model))),
        "executables": ", ".join(sorted(set(c.executable))),
        "written": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    write_page(page, f"hwbed report: {config.store.name}", sections, meta)
    files.append(page)
    if config.screenshot:
        with steps("screenshot (headless Chromium)"):
            from hwbed.report.browser import render

            shot = render(page, screenshot=out / "index.png")
            if shot.console_errors or shot.images_loaded != shot.images:
                raise ReportError(
                    f"{page}: {shot.images_loaded}/{shot.images} images loaded, "
                    f"console: {'; '.join(shot.console_errors) or 'clean'}"
                )
            files.append(out / "index.png")
    return Report(files, page, _printed(wide))


def _write_csv(frame: pd.DataFrame, path: Path) -> Path:
    frame.to_csv(path, index=False)
    return path


def _long_view(full: pd.DataFrame) -> pd.DataFrame:
    """The long table without the per-image arrays (CSV-able)."""
    return full.drop(columns=[c for c in full.columns if c.startswith("eps_abs")])


def _pgd_section(c, table, figure, curves):
    from hwbed.report.page import Section

    figures, tables = [], []
    for data, cells_of in c.groupby("data", sort=True):
        part = curves.pgd_curves(cells_of)
        if part.empty:
            continue
        chance = 1.0 / int(cells_of.classes.iloc[0])
        breaks = curves.breaking_iteration(part, chance)
        tables.append(table(f"pgd_breaking_{data}", f"Breaking iteration ({data})", breaks))
        figures.append(
            figure(
                f"pgd_curves_{data}",
                f"PGD accuracy and loss over iterations ({data})",
                curves.pgd_curve_figure(part, chance),
            )
        )
    if not figures:
        return Section("PGD curves", "The store holds no PGD cell with restart traces.")
    return Section("PGD curves", _PGD_INTRO, tables=tables, figures=figures)


def _cam_section(c, config: ReportConfig, table, figure):
    from hwbed.report.page import Section

    if config.cam_images == 0:
        return Section("CAM", "Skipped (--no-cam).")
    from hwbed.models.data.registry import load_dataset
    from hwbed.report.cam import cam_study

    tables, figures, notes = [], [], []
    for model, g in c.groupby("model", sort=True):
        ckpt = _checkpoint(g.build.iloc[0])
        if ckpt is None or not g.arch.iloc[0].startswith("resnet"):
            notes.append(f"{model}: no checkpoint or no global-pooling head, no CAM")
            continue
        x, y, _ = load_dataset(g.data.iloc[0], "test", data_dir=config.data_dir)
        n = min(config.cam_images, len(y))
        frame, fig = cam_study(ckpt, x[:n], y[:n])
        tables.append(table(f"cam_{model}", f"{model}: third quartile of the CAM", frame))
        figures.append(figure(f"cam_{model}", f"{model}: clean and DeepFool after 1 and 5", fig))
    intro = _CAM_INTRO + (" " + "; ".join(notes) if notes else "")
    return Section("CAM", intro, tables=tables, figures=figures)


def _checkpoint(source) -> Path | None:
    if not isinstance(source, str):
        return None
    path = Path(source)
    path = path / "model.pt" if path.is_dir() else path
    return path if path.is_file() else None


def pick_cell(full: pd.DataFrame, spec: str | None) -> pd.DataFrame | None:
    """The rows of one attack cell (every model and executable) for robustness vs cost.

    Without ``spec``, None when the store has no bounded threat model."""
    if spec is None:
        worst = full[(full.attack == WORST) & np.isfinite(full.eps_abs.astype(float))]
        if worst.empty:
            return None
        shared = worst.groupby(["threat_model", "eps_abs"]).model.nunique()
        top = shared[shared == shared.max()].sort_index(level="eps_abs").index[0]
        return worst[(worst.threat_model == top[0]) & (worst.eps_abs == top[1])]
    attack, eps, it = parse_cell(spec)
    rows = full[full.attack == attack]
    if eps is not None:
        rows = rows[rows.eps.astype(str).str.split("/").str[0] == f"{eps:g}"]
    if it is not None:
        rows = rows[rows.iterations == it]
    if rows.empty:
        raise ReportError(f"--cell {spec}: no such cell in the store")
    first = rows.iloc[0]
    same = (rows.threat_model == first.threat_model) & (rows.eps == first.eps)
    same &= (rows.params == first.params) & (rows.iterations.astype(str) == str(first.iterations))
    return rows[same]


def deployed(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per model: its first hardware executable, else the twin, else float space."""
    rank = {FLOAT_SIDE: 2, "twin": 1}
    rows = rows.assign(rank=[rank.get(e, 0) for e in rows.executable])
    return rows.sort_values(["model", "rank"]).groupby("model").head(1).drop(columns="rank")


def _pareto_section(chosen, cost, table, figure, pareto):
    from hwbed.report.page import Section

    if chosen is None:
        return Section(
            "Robustness vs cost",
            "The store holds no attack at a bounded threat model; choose a cell with --cell.",
        )
    rows = deployed(chosen)
    first = rows.iloc[0]
    label = f"{first.attack} {first.threat_model} {first.eps}" + (
        f", {first.iterations} iterations" if pd.notna(first.iterations) else ""
    )
    per_model = cost.groupby("model").first(numeric_only=False).reset_index()
    points = rows[["model", "variant", "executable", "robust_acc"]].merge(
        per_model[["model", "memory_mb", "ncc_m", "lut"]], on="model", how="left"
    )
    points = points.rename(columns={"robust_acc": "robust_accuracy"})
    for name in ("memory_mb", "ncc_m", "lut"):
        ok = points[name].notna()
        mask = np.zeros(len(points), dtype=bool)
        mask[ok.to_numpy()] = pareto.pareto_mask(
            points.loc[ok, [name]].to_numpy(float), points.loc[ok, "robust_accuracy"].to_numpy()
        )
        points[f"pareto_{name}"] = mask
    return Section(
        "Robustness vs cost",
        f"Attacked accuracy at {label} (each model on its deployed executable) against its "
        "cost; the Pareto front (no other model is cheaper and more robust) is marked.",
        tables=[table("robustness_vs_cost", label, points)],
        figures=[
            figure(
                "robustness_vs_cost",
                label,
                pareto.robustness_vs_cost_figure(points, cell_label=label),
            )
        ],
    )


def _printed(wide: pd.DataFrame) -> str:
    """The side-by-side table as aligned text."""
    shown = wide.copy()
    for col in shown.columns:
        if shown[col].dtype.kind == "f":
            shown[col] = shown[col].map(lambda v: "" if pd.isna(v) else f"{v:.3f}")
    shown["iterations"] = shown["iterations"].astype(object).where(shown.iterations.notna(), "-")
    return shown.to_string(index=False, na_rep="")


_DEVICE_INTRO = (
    "Robust accuracy (clean and attacked prediction both the label) per attack cell: the "
    "float baseline network (float net), the twin in float space (twin-float, what papers "
    "report), the twin behind the uint8 boundary (twin) and each hardware executable. Δ EXE−ref "
    "compares a hardware executable with what the attack itself saw (twin-float for white-box "
    "attacks, twin for black-box ones), p is the exact McNemar test on the paired per-image "
    "outcomes. Worst-case rows keep an image only if it survives every attack at that threat "
    "model. The masking flag marks a black-box or transfer attack beating every white-box one, "
    "or PGD at its largest ε not reaching chance accuracy."
)
_COST_INTRO = (
    "Memory [MB] and NCC [10^6] as METHOD.md defines them; DSP48 slice operations from the "
    "simulator's mapping; LUT, BRAM18 and DSP from the FINN estimates; fps at the target's "
    "clock. Models attacked from a checkpoint have no FPGA columns."
)
_STUDY_INTRO = (
    "BreakingBED's table shapes: robust accuracy by ε (FGSM) or by iterations per threat "
    "model (the others); GenAttack cells read accuracy to the original label / to the target."
)
_PGD_INTRO = (
    "Accuracy (solid) and cross-entropy loss (dashed) of the twin in float space over PGD "
    "iterations, mean over restarts with their spread; the breaking line is chance accuracy."
)
_CAM_INTRO = (
    "Class activation maps (last convolutional features weighted by the FC weights of the "
    "predicted class) on clean images and after 1 and 5 DeepFool iterations, with the third "
    "quartile of the heat-map intensity on a 0–255 scale."
)
_STRESS_INTRO = (
    "Strain (A − A*)/A, A the clean and A* the attacked accuracy, against each attack's "
    "stress as METHOD.md defines it (FGSM: ε; PGD: ε at 3 iterations; C&W: iterations at "
    "weight 1; DeepFool: iterations; LocalSearch: iterations at ε = 16/255; GenAttack: "
    "generations at ε = 8/255, population 16). Where the store lacks the study's slice, the "
    "closest value is used and named. Rule: with stresses ascending, a curve breaks at the "
    "first stress whose strain reaches {threshold:g}; never: strong; at the weakest stress of "
    "the grid: brittle; later: ductile (breaking stress interpolated)."
)
