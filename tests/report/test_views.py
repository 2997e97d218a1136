"""The report's views: hand-computed tables on small frames, figure structure, one real store."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from hwbed.report import boxplots, curves, pareto, stress, style

BASE = {
    "model": "resnet20",
    "arch": "resnet20",
    "variant": "vanilla",
    "classes": 10,
    "executable": "twin",
    "attack": "fgsm",
    "norm": "linf",
    "eps": 8.0,
    "eps_unit": "px",
    "iterations": None,
    "params": "-",
    "seed": 0,
    "clean_accuracy": 0.8,
    "robust_accuracy": 0.4,
    "restarts_accuracy": None,
    "restarts_loss": None,
}


def frame(*rows: dict) -> pd.DataFrame:
    """A cells-like frame: BASE overridden per row, eps_abs derived as frame.cells does."""
    df = pd.DataFrame([{**BASE, **r} for r in rows])
    scale = np.where(df["eps_unit"].eq("px"), 1 / 255, 1.0)
    df["eps_abs"] = np.where(df["eps"].isna(), np.inf, df["eps"].astype(float) * scale)
    df["iterations"] = df["iterations"].astype("Int64")
    return df


# --- style -----------------------------------------------------------------------------------


def test_variant_colours_are_fixed_and_unknown_ones_follow_in_sorted_order():
    a = style.variant_colors(["xnor", "vanilla"])
    b = style.variant_colors(["zeta", "vanilla", "alpha", "xnor"])
    assert a["vanilla"] == b["vanilla"] == style.PALETTE[0]
    assert a["xnor"] == b["xnor"] == style.PALETTE[style.VARIANTS.index("xnor")]
    assert b["alpha"] == style.PALETTE[10] and b["zeta"] == style.PALETTE[11]
    assert list(b) == ["vanilla", "xnor", "alpha", "zeta"]
    s = style.executable_styles(["sim", "twin", "twin-float", "zz"])
    assert list(s) == ["twin-float", "twin", "sim", "zz"]
    assert len({v["linestyle"] for v in s.values()}) == 4


def test_eps_label_states_norm_and_unit():
    assert style.eps_label(8.0, "px", "linf") == "ε = 8/255 (L∞)"
    assert style.eps_label(0.5, "abs", "l2") == "ε = 0.5 (L2)"
    assert style.eps_label(math.inf, "abs", "l2") == "ε = ∞ (L2)"


def test_save_writes_png(tmp_path):
    from matplotlib.figure import Figure

    fig = Figure()
    fig.add_subplot().plot([0, 1])
    path = style.save(fig, tmp_path / "sub" / "f.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not fig.axes  # freed


# --- PGD curves -------------------------------------------------------------------------------


def pgd(it, acc, loss, **kw):
    row = {"attack": "pgd", "eps": 2.0, "eps_unit": "abs", "norm": "l2", "iterations": it}
    row |= {"executable": "twin-float", "params": "restarts=2", "restarts_accuracy": acc}
    return {**row, "restarts_loss": loss, "robust_accuracy": min(acc), **kw}


CURVE = [
    pgd(5, [0.5, 0.3], [1.0, 2.0]),
    pgd(10, [0.2, 0.1], [2.0, 3.0]),
    pgd(15, [0.1, 0.1], [3.0, 3.5]),
    pgd(20, [0.05, 0.0], [4.0, 5.0]),
    # the xnor never goes below chance; its twin row carries a copy of the crafting trace
    pgd(5, [0.6, 0.4], [1.0, 1.0], model="resnet20-xnor", variant="xnor"),
    pgd(20, [0.3, 0.2], [1.0, 1.0], model="resnet20-xnor", variant="xnor"),
    pgd(20, [0.3, 0.2], [1.0, 1.0], model="resnet20-xnor", variant="xnor", executable="twin"),
    {"attack": "fgsm"},
]


def test_pgd_curves_mean_min_max_over_restarts():
    c = curves.pgd_curves(frame(*CURVE))
    assert set(c["executable"]) == {"twin-float"}  # traces belong where they were crafted
    v = c[c["model"].eq("resnet20")]
    assert v["iteration"].tolist() == [5, 10, 15, 20]
    assert v["accuracy_mean"].tolist() == pytest.approx([0.4, 0.15, 0.1, 0.025], abs=1e-15)
    assert v["accuracy_min"].tolist() == [0.3, 0.1, 0.1, 0.0]
    assert v["accuracy_max"].tolist() == [0.5, 0.2, 0.1, 0.05]
    assert v["loss_mean"].tolist() == [1.5, 2.5, 3.25, 4.5]
    assert v["loss_min"].tolist() == [1.0, 2.0, 3.0, 4.0]
    assert v["robust_accuracy"].tolist() == [0.3, 0.1, 0.1, 0.0]
    assert len(curves.pgd_curves(frame(*CURVE), executables=None)) == 7


def test_breaking_iteration_first_at_or_below_chance():
    b = curves.breaking_iteration(curves.pgd_curves(frame(*CURVE))).set_index("model")
    assert b.loc["resnet20", "breaking_iteration"] == 15  # 0.1 <= 1/10
    assert b.loc["resnet20", "chance"] == 0.1
    assert pd.isna(b.loc["resnet20-xnor", "breaking_iteration"])
    assert b.loc["resnet20-xnor", "note"] == "not broken within 20 iterations"
    looser = curves.breaking_iteration(curves.pgd_curves(frame(*CURVE)), chance=0.25)
    assert looser.set_index("model")["breaking_iteration"].tolist() == [10, 20]


def test_pgd_curve_figure_panels_axes_and_legend():
    rows = [*CURVE, pgd(5, [0.4, 0.2], [1.0, 2.0], eps=8.0, eps_unit="px", norm="linf")]
    fig = curves.pgd_curve_figure(curves.pgd_curves(frame(*rows)))
    assert len(fig.axes) == 4  # two threat models, accuracy axis + loss twin each
    acc = [ax for ax in fig.axes if ax.get_ylabel() == "accuracy [fraction of images]"]
    loss = [ax for ax in fig.axes if ax.get_ylabel() == "cross-entropy loss"]
    assert len(acc) == 2 and len(loss) == 2
    assert all(ax.get_xlabel() == "PGD iterations" for ax in acc)
    assert {ax.get_title() for ax in acc} == {"PGD ε = 2 (L2)", "PGD ε = 8/255 (L∞)"}
    texts = [t.get_text() for t in acc[0].get_legend().get_texts()]
    assert "breaking line: chance = 10%" in texts
    assert "  resnet20: breaks at i = 15" in texts
    assert "  resnet20-xnor: not broken within 20 iterations" in texts


# --- stress-strain ----------------------------------------------------------------------------


def test_strain_is_relative_accuracy_loss_averaged_over_seeds():
    cells = frame(
        {"eps": 2.0, "clean_accuracy": 0.8, "robust_accuracy": 0.8},
        {"eps": 4.0, "clean_accuracy": 0.8, "robust_accuracy": 0.6},
        {"eps": 8.0, "clean_accuracy": 0.8, "robust_accuracy": 0.1, "seed": 0},
        {"eps": 8.0, "clean_accuracy": 0.8, "robust_accuracy": 0.3, "seed": 1},
        {"model": "dead", "clean_accuracy": 0.0, "robust_accuracy": 0.0},
    )
    t = stress.strain_table(cells).set_index(["model", "stress"])
    assert t.loc[("resnet20", 2.0), "strain"] == 0.0
    assert t.loc[("resnet20", 4.0), "strain"] == pytest.approx(0.2 / 0.8, abs=1e-15)
    assert t.loc[("resnet20", 8.0), "robust_accuracy"] == pytest.approx(0.2, abs=1e-15)
    assert t.loc[("resnet20", 8.0), "strain"] == pytest.approx(0.75, abs=1e-15)
    assert t.loc[("resnet20", 8.0), "seeds"] == 2
    assert math.isnan(t.loc[("dead", 8.0), "strain"])
    assert set(t["stress_name"]) == {"ε [px]"} and set(t["slice"]) == {"no fixed parameter"}


def curve(model, stresses, strains, attack="fgsm"):
    """Strain-table rows of one curve (what classify reads)."""
    return [
        {"model": model, "variant": "vanilla", "executable": "twin", "attack": attack}
        | {"family": attack, "stress_name": "ε [px]", "stress": s, "strain": e}
        for s, e in zip(stresses, strains, strict=True)
    ]


def test_classify_one_curve_of_each_class_and_threshold_edges():
    rows = curve("strong", [2, 4, 8, 16], [0.1, 0.2, 0.3, 0.4])
    rows += curve("brittle", [2, 4, 8, 16], [0.6, 0.8, 0.9, 1.0])
    rows += curve("ductile", [2, 4, 8, 16], [0.1, 0.3, 0.7, 0.9])
    rows += curve("at-edge-first", [2, 4], [0.5, 0.9])
    rows += curve("at-edge-later", [2, 4, 8], [0.2, 0.5, 0.9])
    rows += curve("just-below", [2, 4], [0.2, 0.4999])
    rows += curve("nan-dropped", [2, 4, 8], [float("nan"), 0.2, 0.6])
    rows += curve("undefined", [2], [float("nan")])
    k = stress.classify(pd.DataFrame(rows)).set_index("model")
    assert pd.isna(k.loc["undefined", "class"])
    assert k["class"].drop("undefined").to_dict() == {
        "at-edge-first": "brittle",
        "at-edge-later": "ductile",
        "brittle": "brittle",
        "ductile": "ductile",
        "just-below": "strong",
        "nan-dropped": "ductile",
        "strong": "strong",
    }
    assert k.loc["brittle", "breaking_stress"] == 2.0
    assert k.loc["ductile", "breaking_stress"] == pytest.approx(6.0)  # 4 + 0.2 / 0.4 * 4
    assert k.loc["at-edge-later", "breaking_stress"] == 4.0
    assert k.loc["nan-dropped", "breaking_stress"] == pytest.approx(7.0)  # 4 + 0.3 / 0.4 * 4
    assert pd.isna(k.loc["strong", "breaking_stress"])
    assert set(k["threshold"]) == {0.5} and k["rule"].str.len().min() > 10
    # another threshold moves the classes
    lower = stress.classify(pd.DataFrame(rows), threshold=0.25).set_index("model")["class"]
    assert lower[["strong", "just-below", "brittle"]].tolist() == ["ductile"] * 2 + ["brittle"]
    lowest = stress.classify(pd.DataFrame(rows), threshold=0.1).set_index("model")["class"]
    assert lowest["strong"] == "brittle"  # 0.1 >= 0.1 at the weakest stress


def test_exact_half_from_image_counts_breaks():
    cells = frame({"eps": 2.0, "clean_accuracy": 20 / 24, "robust_accuracy": 10 / 24})
    k = stress.classify(stress.strain_table(cells))
    assert k["class"].tolist() == ["brittle"]


def test_stress_slice_study_value_else_closest_ties_larger():
    def pgd_cells(its):
        return frame(*({"attack": "pgd", "eps": e, "iterations": i} for i in its for e in (8, 16)))

    present = stress.strain_table(pgd_cells([2, 3, 5]))
    assert set(present["slice"]) == {"iterations = 3"}
    tie = stress.strain_table(pgd_cells([2, 4]))
    assert set(tie["slice"]) == {"iterations = 4 (study's 3 absent; closest)"}
    assert tie["stress"].tolist() == [8.0, 16.0]
    # GenAttack: ε closest to 8/255 first, then population closest to 16 within that ε
    gen = frame(
        *(
            {"attack": "genattack", "eps": e, "iterations": i, "params": f"population={p}"}
            for e in (12, 32)
            for p in (6, 10)
            for i in (50, 100)
        )
    )
    t = stress.strain_table(gen)
    assert set(t["slice"]) == {
        "ε = 12/255 (study's 8/255 absent; closest); population = 10 (study's 16 absent; closest)"
    }
    assert t["stress_name"].tolist() == ["generations", "generations"]
    assert t["stress"].tolist() == [50.0, 100.0]
    # LocalSearch: 8/255 and 24/255 are equally far from 16/255: the larger wins
    ls = frame(*({"attack": "localsearch", "eps": e, "iterations": 10} for e in (8, 24)))
    assert set(stress.strain_table(ls)["slice"]) == {"ε = 24/255 (study's 16/255 absent; closest)"}
    # C&W: a cell without initial_const ran at the constructor's default 1e-3, nearer 1 than 10
    cw = frame(
        {"attack": "cw", "norm": "l2", "eps": None, "iterations": 10, "params": "-"},
        {"attack": "cw", "norm": "l2", "eps": None, "iterations": 10, "params": "initial_const=10"},
    )
    t = stress.strain_table(cw)
    assert t["slice"].tolist() == ["initial_const = 0.001 (study's 1 absent; closest)"]


def test_stress_strain_figure_panels_labels_and_classes():
    cells = frame(
        *({"eps": e, "robust_accuracy": r} for e, r in ((2, 0.7), (4, 0.5), (8, 0.2))),
        *({"attack": "deepfool", "norm": "l2", "eps": None, "iterations": i} for i in (1, 5)),
    )
    t = stress.strain_table(cells)
    fig = stress.stress_strain_figure(t, stress.classify(t))
    assert len(fig.axes) == 2
    xlabels = sorted(ax.get_xlabel() for ax in fig.axes)
    assert xlabels == ["stress σ: iterations", "stress σ: ε [px]"]
    assert all(ax.get_ylabel().startswith("strain") for ax in fig.axes)
    texts = {t.get_text() for ax in fig.axes for t in ax.get_legend().get_texts()}
    assert {"resnet20 [twin]: ductile", "resnet20 [twin]: brittle", "threshold 0.5"} <= texts
    assert "slice: no fixed parameter" in fig.axes[0].get_title()


# --- box-plots --------------------------------------------------------------------------------


def test_boxplot_quartiles_pool_architectures_and_equal_numpy():
    values = [0.1, 0.4, 0.2, 0.9, 0.5, 0.35]
    rows = [
        {"model": m, "arch": m, "eps": e, "robust_accuracy": v}
        for (m, e), v in zip(
            [(m, e) for m in ("resnet20", "resnet56") for e in (2, 4, 8)], values, strict=True
        )
    ]
    rows += [{"variant": "xnor", "robust_accuracy": 0.3}, {"attack": "pgd", "robust_accuracy": 0}]
    t = boxplots.boxplot_table(frame(*rows)).set_index(["attack", "variant"])
    row = t.loc[("fgsm", "vanilla")]
    assert row["n_cells"] == 6
    q = np.percentile(values, [0, 25, 50, 75, 100])
    assert [row[k] for k in ("min", "q1", "median", "q3", "max")] == q.tolist()
    assert t.loc[("fgsm", "xnor"), "median"] == 0.3
    fig = boxplots.boxplot_figure(frame(*rows, {"executable": "sim", "robust_accuracy": 0.2}))
    assert len(fig.axes) == 2
    assert {ax.get_title() for ax in fig.axes} == {"fgsm", "pgd"}
    assert all(ax.get_ylabel() == "attacked accuracy [fraction]" for ax in fig.axes)
    legend = {t.get_text() for t in fig.axes[0].get_legend().get_texts()}
    assert legend == {"vanilla", "xnor", "twin", "sim"}


# --- Pareto -----------------------------------------------------------------------------------


def test_pareto_mask_dominated_tie_and_nan():
    costs = np.array([1.0, 2.0, 1.0, 0.5, np.nan, 3.0, 1.0])
    acc = np.array([0.5, 0.4, 0.5, 0.3, 0.9, 0.9, 0.45])
    # 1 dominated by 0; 2 duplicates 0 (both stay); 4 NaN; 6 same cost as 0, lower accuracy
    expect = [True, False, True, True, False, True, False]
    assert pareto.pareto_mask(costs[:, None], acc).tolist() == expect
    two = np.array([[1, 2], [2, 1], [2, 2], [2, 2]], dtype=float)
    assert pareto.pareto_mask(two, np.array([0.5, 0.5, 0.5, 0.6])).tolist() == [
        True,
        True,
        False,
        True,
    ]
    assert pareto.pareto_mask(np.zeros((0, 2)), np.zeros(0)).tolist() == []


def test_robustness_vs_cost_figure_skips_empty_costs_and_draws_the_front():
    points = pd.DataFrame(
        {
            "model": ["a", "b", "c", "d"],
            "variant": ["vanilla", "xnor", "kd", "abc3x3"],
            "executable": ["twin", "sim", "twin", "twin"],
            "robust_accuracy": [0.6, 0.3, 0.5, 0.7],
            "memory_mb": [1.0, 0.1, 2.0, np.nan],
            "ncc_m": [40.0, 2.0, 40.0, 10.0],
            "lut": [np.nan] * 4,
        }
    )
    fig = pareto.robustness_vs_cost_figure(points, cell_label="FGSM ε = 8/255 (L∞)")
    assert len(fig.axes) == 2
    assert [ax.get_xlabel() for ax in fig.axes] == ["memory [MB]", "NCC [10^6]"]
    assert "FGSM ε = 8/255 (L∞)" in fig.get_suptitle() and "LUT" in fig.get_suptitle()
    front = [ln for ln in fig.axes[0].get_lines() if ln.get_label() == "Pareto front"][0]
    assert front.get_xdata().tolist() == [0.1, 1.0]  # c is dominated by a, d has no memory
    assert front.get_ydata().tolist() == [0.3, 0.6]
    assert fig.axes[1].get_legend() is not None


# --- the real store ---------------------------------------------------------------------------


def test_every_view_builds_on_a_real_store(report_store, tmp_path):
    from hwbed.report.frame import cells

    c = cells(report_store)
    models = {"resnet20", "resnet20-xnor"}
    curve_df = curves.pgd_curves(c)
    broke = curves.breaking_iteration(curve_df)
    strain = stress.strain_table(c)
    classes = stress.classify(strain)
    box = boxplots.boxplot_table(c)
    for table in (curve_df, broke, strain, classes):
        assert set(table["model"]) == models
    assert set(box["variant"]) == {"vanilla", "xnor"}
    assert set(classes["class"]) <= {"strong", "ductile", "brittle"}
    assert set(strain["attack"]) == {"fgsm", "pgd", "deepfool", "localsearch", "genattack"}
    points = c[c["attack"].eq("fgsm") & c["eps"].eq(8)].copy()
    points["memory_mb"] = points["variant"].map({"vanilla": 1.1, "xnor": 0.05})
    points["ncc_m"], points["lut"] = 40.0, np.nan
    figures = {
        "curves": curves.pgd_curve_figure(curve_df),
        "stress": stress.stress_strain_figure(strain, classes),
        "box": boxplots.boxplot_figure(c),
        "pareto": pareto.robustness_vs_cost_figure(points, cell_label="fgsm 8/255"),
    }
    for name, fig in figures.items():
        assert fig.axes, name
        assert style.save(fig, tmp_path / f"{name}.png").stat().st_size > 1000
