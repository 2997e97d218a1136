"""The on-device vs float table, worst case, masking flags, study shapes and costs."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from hwbed.report.cost import build_row, checkpoint_row, cost_table
from hwbed.report.frame import ReportError, cells, split_model
from hwbed.report.study import study_table
from hwbed.report.tables import (
    WORST,
    device_vs_float,
    full_table,
    masking_flags,
    mcnemar,
    side_by_side,
    worst_case,
)

LABELS = np.array([0, 1, 2, 3, 4, 5, 6, 7])


def cell(model, executable, attack, robust, eps=8.0, iterations=None, **over) -> dict:
    """A cells-frame row with per-image outcomes ``robust`` (clean all correct)."""
    robust = np.asarray(robust, bool)
    arch, variant = split_model(model)
    white = attack in ("fgsm", "pgd", "cw", "deepfool")
    pred = np.where(robust, LABELS, (LABELS + 1) % 10)
    row = {
        "key": f"{model}-{executable}-{attack}-{eps}-{iterations}",
        "model": model,
        "arch": arch,
        "variant": variant,
        "data": "digits",
        "classes": 10,
        "images": len(LABELS),
        "executable": executable,
        "attack": attack,
        "white_box": white,
        "targeted": False,
        "norm": "linf",
        "eps": eps,
        "eps_unit": "px",
        "eps_abs": eps / 255,
        "threat": f"Linf {eps:g}/255",
        "iterations": iterations,
        "params": "-",
        "seed": 0,
        "n": len(LABELS),
        "clean_accuracy": 1.0,
        "robust_accuracy": float(robust.mean()),
        "target_accuracy": None,
        "bit_exact": None if executable == "twin-float" else True,
        "crafted_on": f"twin:{model}",
        "scored_on": f"{executable}:{model}",
        "attack_source": model,
        "build": None,
        "image": np.arange(len(LABELS)),
        "label": LABELS,
        "target": np.full(len(LABELS), None),
        "pred": pred,
        "clean_pred": LABELS,
        "first_success": None,
        "robust": robust,
    }
    row.update(over)
    return row


def frame(rows) -> pd.DataFrame:
    out = pd.DataFrame(rows)
    out["iterations"] = out["iterations"].astype("Int64")
    return out


def test_mcnemar_is_the_exact_binomial_test_on_discordant_pairs():
    ref = np.array([1, 1, 1, 1, 1, 1, 0, 0], bool)
    assert mcnemar(ref, ref) == (0, 0, 1.0)
    # 3 images lost, none gained: p = 2 * 0.5**3
    worse, better, p = mcnemar(ref, np.array([1, 1, 1, 0, 0, 0, 0, 0], bool))
    assert (worse, better) == (3, 0) and p == pytest.approx(0.25, abs=1e-12)
    # 5 lost, 1 gained: p = 2 * P(X <= 1 | n=6) = 2 * 7 / 64
    a = np.array([1, 1, 1, 1, 1, 0, 0, 0, 0, 0], bool)
    b = np.array([0, 0, 0, 0, 0, 1, 0, 0, 0, 0], bool)
    assert mcnemar(a, b)[:2] == (5, 1) and mcnemar(a, b)[2] == pytest.approx(14 / 64, abs=1e-12)
    with pytest.raises(ValueError, match="paired"):
        mcnemar(ref, ref[:4])


def test_mcnemar_equals_scipy_binomtest():
    from scipy.stats import binomtest

    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(1, 400))
        a, b = rng.random(n) < rng.random(), rng.random(n) < rng.random()
        worse, better, p = mcnemar(a, b)
        if worse + better:
            expect = binomtest(worse, worse + better, 0.5).pvalue
            assert p == pytest.approx(expect, rel=1e-9, abs=1e-300)


def test_rows_pair_each_executable_with_float_twin_float_and_twin():
    r_float = [1, 1, 1, 1, 1, 1, 1, 0]  # resnet20 (the float baseline network): 7/8
    r_tf = [1, 1, 1, 1, 0, 0, 0, 0]  # xnor, float space: 4/8
    r_sim = [1, 1, 1, 0, 0, 0, 0, 1]  # xnor on the device: 4/8, other images
    c = frame(
        [
            cell("resnet20", "twin-float", "fgsm", r_float),
            cell("resnet20-xnor", "twin-float", "fgsm", r_tf),
            cell("resnet20-xnor", "twin", "fgsm", r_sim),
            cell("resnet20-xnor", "sim", "fgsm", r_sim),
        ]
    )
    t = device_vs_float(c).set_index(["model", "executable"])
    sim = t.loc[("resnet20-xnor", "sim")]
    assert sim.robust_acc == 0.5 and sim.float_acc == 7 / 8 and sim.twin_float_acc == 0.5
    assert sim.delta_float == 0.5 - 7 / 8 and sim.delta_twin_float == 0.0
    # vs float: lost 3, 4, 5, 6 and gained none... image 7: float 0, sim 1 → gained 1
    assert (sim.worse_float, sim.better_float) == (4, 1)
    assert sim.p_float == pytest.approx(2 * 6 / 32)
    assert (sim.worse_twin_float, sim.better_twin_float) == (1, 1) and sim.p_twin_float == 1.0
    assert (sim.worse_twin, sim.better_twin, sim.delta_twin) == (0, 0, 0.0)
    assert sim.threat_model == "Linf" and sim.eps == "8/255" and sim.n_eval == 8
    # the float network is its own baseline: no float reference
    assert np.isnan(t.loc[("resnet20", "twin-float")].float_acc)


def test_worst_case_keeps_an_image_only_if_it_survives_every_attack():
    c = frame(
        [
            cell("resnet20-xnor", "sim", "fgsm", [1, 1, 1, 1, 0, 0, 1, 1]),
            cell("resnet20-xnor", "sim", "pgd", [1, 1, 0, 1, 1, 0, 1, 1], iterations=5),
            cell("resnet20-xnor", "sim", "localsearch", [1, 0, 1, 1, 1, 1, 1, 1], iterations=9),
            cell("resnet20-xnor", "sim", "fgsm", [0] * 8, eps=16.0),  # another threat model
        ]
    )
    w = worst_case(c).set_index("eps")
    assert w.loc[8.0].robust_accuracy == 4 / 8  # images 0, 3, 6, 7
    assert w.loc[8.0].params == "fgsm+localsearch+pgd" and w.loc[8.0].n_cells == 3
    # the mean of per-image minima, not the minimum of the means (6/8 here)
    assert min(c.robust_accuracy[:3]) == 6 / 8
    assert w.loc[16.0].robust_accuracy == 0.0 and w.loc[16.0].attack == WORST


def test_masking_flags_a_black_box_win_and_pgd_short_of_chance():
    c = frame(
        [
            cell("resnet20-xnor", "sim", "pgd", [1, 1, 1, 1, 1, 1, 0, 0], iterations=10),
            cell("resnet20-xnor", "sim", "fgsm", [1, 1, 1, 1, 1, 1, 1, 0]),
            cell("resnet20-xnor", "sim", "localsearch", [1, 1, 0, 0, 0, 0, 0, 0], iterations=9),
            cell("resnet20", "twin", "pgd", [0] * 8, iterations=10),
            cell("resnet20", "twin", "localsearch", [1] * 8, iterations=9),
        ]
    )
    flags = masking_flags(c).set_index(["model", "executable"])
    xnor = flags.loc[("resnet20-xnor", "sim")]
    assert xnor.gradient_masking
    assert "black-box localsearch beats white-box pgd at Linf 8/255 (0.250 < 0.750)" in (
        xnor.masking_reason
    )
    assert "pgd at its largest eps (Linf 8/255) leaves 0.750 > chance 0.100" in xnor.masking_reason
    assert not flags.loc[("resnet20", "twin")].gradient_masking
    assert flags.loc[("resnet20", "twin")].masking_reason == ""


def test_a_transfer_attack_beating_white_box_is_flagged():
    c = frame(
        [
            cell("resnet20-xnor", "sim", "pgd", [0] * 7 + [1], iterations=10),
            cell("resnet20-xnor", "sim", "pgd", [0] * 8, iterations=10, attack_source="resnet20"),
        ]
    )
    reasons = masking_flags(c).masking_reason.iloc[0].split("; ")
    assert reasons[0] == "transfer pgd beats white-box pgd at Linf 8/255 (0.000 < 0.125)"


def test_side_by_side_puts_every_executable_in_one_row():
    c = frame(
        [
            cell("resnet20", "twin-float", "fgsm", [1] * 8),
            cell("resnet20-xnor", "twin-float", "fgsm", [1] * 4 + [0] * 4),
            cell("resnet20-xnor", "twin", "fgsm", [1] * 4 + [0] * 4),
            cell("resnet20-xnor", "sim", "fgsm", [1] * 3 + [0] * 5),
            cell("resnet20-xnor", "twin", "localsearch", [1] * 2 + [0] * 6, iterations=9),
            cell("resnet20-xnor", "sim", "localsearch", [1] * 2 + [0] * 6, iterations=9),
        ]
    )
    wide = side_by_side(full_table(c)).set_index(["model", "attack", "eps"])
    row = wide.loc[("resnet20-xnor", "fgsm", "8/255")]
    assert (row["float net"], row["twin-float"], row["twin"], row["sim"]) == (1, 0.5, 0.5, 3 / 8)
    assert row["Δ sim−ref"] == 3 / 8 - 0.5 and row["Δ sim−float net"] == 3 / 8 - 1
    assert row["p sim"] == 1.0  # one image lost: p = 2 * 0.5
    black = wide.loc[("resnet20-xnor", "localsearch", "8/255")]
    assert black["Δ sim−ref"] == 0.0 and np.isnan(black["twin-float"])  # ref: the twin
    worst = wide.loc[("resnet20-xnor", WORST, "8/255")]
    assert worst["sim"] == 2 / 8 and worst["params"] == "all attacks"


def test_study_tables_have_the_study_shapes():
    rows = [
        cell("resnet20-xnor", "sim", "fgsm", [1] * k + [0] * (8 - k), eps=e)
        for k, e in ((6, 2.0), (4, 8.0), (1, 16.0))
    ]
    t = study_table(frame(rows), "fgsm")
    assert list(t.columns[-3:]) == ["eps=2/255", "eps=8/255", "eps=16/255"]
    assert t.iloc[0][["eps=2/255", "eps=8/255", "eps=16/255"]].tolist() == [0.75, 0.5, 0.125]
    gen = [
        cell(
            "resnet20-xnor",
            "sim",
            "genattack",
            [1] * k + [0] * (8 - k),
            iterations=i,
            targeted=True,
            target_accuracy=t_acc,
        )
        for k, i, t_acc in ((6, 50, 0.125), (3, 100, 0.5))
    ]
    g = study_table(frame(gen), "genattack")
    assert g.iloc[0]["i=50"] == "0.750/0.125" and g.iloc[0]["i=100"] == "0.375/0.500"
    with pytest.raises(ValueError, match="no cw cell"):
        study_table(frame(rows), "cw")


def test_cost_rows_come_from_the_build_summary_and_the_checkpoint(tmp_path, float_ckpt):
    from hwbed.models.checkpoint import load_checkpoint
    from hwbed.models.cost import model_cost

    summary = {
        "model": "resnet20-xnor",
        "target": "pynq-z2",
        "test_accuracy": 0.94,
        "memory_mb": 0.05,
        "ncc_m": 0.062,
        "fps": 97656.25,
        "latency_ms": 0.64,
        "fits": True,
        "resources": {"LUT": {"used": 48534.0}, "BRAM_18K": {"used": 72.0}, "DSP": {"used": 0}},
        "dsp_slice_ops": {"ops": {"total": 58816}, "slices": 84},
    }
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "summary.json").write_text(json.dumps(summary))
    row = build_row(tmp_path / "b")
    assert (row["lut"], row["bram18"], row["dsp_slice_ops"], row["fps"]) == (
        48534,
        72,
        58816,
        97656.25,
    )
    assert row["variant"] == "xnor" and row["target"] == "pynq-z2"
    model, meta = load_checkpoint(float_ckpt)
    expect = model_cost(model, meta.spec, tuple(meta.input_shape))
    ck = checkpoint_row(float_ckpt)
    assert (ck["memory_mb"], ck["ncc_m"]) == (expect.memory_mb, expect.ncc_m)
    assert np.isnan(ck["lut"])
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "summary.json").write_text("{}")
    with pytest.raises(ReportError, match="not a build summary"):
        build_row(tmp_path / "bad")
    c = pd.DataFrame({"model": ["resnet56"], "build": [str(tmp_path / "gone.pt")]})
    gone = cost_table(c, [tmp_path / "b"])
    assert list(gone.model) == ["resnet20-xnor", "resnet56"]
    assert gone.source.iloc[1].endswith("(missing)") and np.isnan(gone.memory_mb.iloc[1])


def test_the_real_store_device_rows_equal_the_twin(report_store):
    c = cells(report_store)
    full = full_table(c)
    sim = full[(full.executable == "sim") & (full.attack != WORST)]
    assert len(sim) == (c.executable == "sim").sum() > 0
    assert sim.bit_exact.all()
    # bit-exact simulator: the same images break as on the twin
    assert (sim.worse_twin == 0).all() and (sim.better_twin == 0).all()
    assert (sim.delta_twin == 0).all()
    # the float baseline column is the float network's own result on the same cell
    fgsm = full[(full.model == "resnet20") & (full.attack == "fgsm")]
    base = fgsm[fgsm.executable == "twin-float"].set_index("eps").robust_acc
    xf = full[(full.model == "resnet20-xnor") & (full.attack == "fgsm")]
    for r in xf.itertuples():
        assert r.float_acc == base[r.eps]
    assert set(full.attack) >= {WORST, "fgsm", "pgd", "deepfool", "localsearch", "genattack"}


def test_cells_from_the_store_equal_cells_from_its_loaded_frame(report_store):
    from hwbed.store import load

    a, b = cells(report_store), cells(load(report_store))
    arrays = ["image", "label", "target", "pred", "clean_pred", "first_success", "robust"]
    lists = ["restarts_loss", "restarts_accuracy"]
    scalar = [c for c in a.columns if c not in arrays + lists]
    pd.testing.assert_frame_equal(a[scalar], b[scalar])
    for col in ["image", "label", "pred", "clean_pred", "robust"]:
        assert all(np.array_equal(x, y) for x, y in zip(a[col], b[col], strict=True))
    assert a[lists].equals(b[lists])
