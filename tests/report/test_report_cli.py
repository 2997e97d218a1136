"""``python -m hwbed.report`` end to end on a real store, its page in Chromium, bad input."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from hwbed.report.browser import find_chromium, render
from hwbed.report.cli import main

ROOT = Path(__file__).resolve().parents[2]
VIEWS = [
    "tables/device_vs_float.csv",
    "tables/device_vs_float.md",
    "tables/device_vs_float_long.csv",
    "tables/cost.csv",
    "tables/study_fgsm.csv",
    "tables/study_genattack.md",
    "tables/stress_classes.csv",
    "tables/boxplots.csv",
    "tables/robustness_vs_cost.csv",
    "plots/pgd_curves_digits.png",
    "plots/stress_strain.png",
    "plots/boxplots.png",
    "plots/cam_resnet20.png",
    "plots/cam_resnet20-xnor.png",
    "plots/robustness_vs_cost.png",
    "index.html",
]


@pytest.fixture(scope="module")
def report_out(report_store, tmp_path_factory):
    out = tmp_path_factory.mktemp("report-out") / "report"
    assert main([str(report_store), "--out", str(out), "--cam-images", "2", "--no-progress"]) == 0
    return out


def test_every_view_is_written(report_out, capsys):
    for name in VIEWS:
        assert (report_out / name).stat().st_size > 0, name
    wide = pd.read_csv(report_out / "tables" / "device_vs_float.csv")
    assert {"float net", "twin-float", "twin", "sim", "Δ sim−ref", "p sim"} <= set(wide.columns)
    xnor = wide[wide.model == "resnet20-xnor"]
    assert (xnor["Δ sim−ref"].dropna() == 0).all()  # the simulator is bit-exact with the twin
    assert xnor["float net"].notna().all()
    long = pd.read_csv(report_out / "tables" / "device_vs_float_long.csv")
    for col in ("dataset", "threat_model", "eps", "clean_acc", "robust_acc", "n_eval"):
        assert col in long.columns
    assert {"executable", "bit_exact", "attack_source", "gradient_masking"} <= set(long.columns)


def test_the_page_renders_in_chromium_with_every_image(report_out):
    if find_chromium() is None:
        pytest.skip("chromium is not installed (.ci/run installs Debian's chromium)")
    shot = report_out / "page.png"
    r = render(report_out / "index.html", screenshot=shot)
    print(f"screenshot: {shot}")
    assert r.console_errors == []
    assert r.images == r.images_loaded >= 6
    assert "On-device vs float" in r.dom and "Robustness vs cost" in r.dom
    assert shot.stat().st_size > 10_000


@pytest.mark.parametrize(
    "argv, message",
    [
        (["{tmp}/nowhere"], "nowhere"),
        (["{store}", "--builds", "{tmp}"], "not a build folder"),
        (["{store}", "--cell", "fgsm:x"], "EPS is a number"),
        (["{store}", "--cell", "cw:1", "--no-cam"], "no such cell"),
        (["{store}", "--strain-threshold", "0"], "--strain-threshold"),
    ],
)
def test_bad_input_is_one_line(report_store, tmp_path, capsys, argv, message):
    argv = [a.format(tmp=tmp_path, store=report_store) for a in argv]
    code = main([*argv, "--out", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and message in err[0]


@pytest.mark.integration
def test_the_notebook_runs_build_attack_report_at_a_small_size(tmp_path):
    env = {**os.environ, "HWBED_SMALL": "1", "PYTHONWARNINGS": "ignore"}
    script = ROOT / "notebooks" / "build_attack_report.py"
    run = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert (tmp_path / "runs" / "report" / "notebook" / "index.html").is_file()
    assert "open runs/report/notebook/index.html" in run.stdout


def test_a_store_of_one_minimum_norm_attack_still_reports(report_store, tmp_path):
    import json
    import shutil

    part = tmp_path / "deepfool-only"
    (part / "cells").mkdir(parents=True)
    shutil.copy(report_store / "store.json", part / "store.json")
    for f in (report_store / "cells").glob("*.json"):
        if json.loads(f.read_text())["manifest"]["attack"] == "deepfool":
            shutil.copy(f, part / "cells" / f.name)
    out = tmp_path / "out"
    assert main([str(part), "--out", str(out), "--no-cam", "--no-progress"]) == 0
    page = (out / "index.html").read_text()
    assert "no attack at a bounded threat model" in page and "no PGD cell" in page
    assert (out / "tables" / "study_deepfool.csv").is_file()
