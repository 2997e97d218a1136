"""``python -m hwbed.attack`` end to end: grids, bad input, a real sweep, kill and resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hwbed.attack import main
from hwbed.grid import GridError, load_grid, parse_grid, presets
from hwbed.store import load, load_cells

GRID = """
name = "tiny"
images = 12
[[attacks]]
attack = "fgsm"
eps_unit = "px"
epsilons = [8, 32]
[[attacks]]
attack = "pgd"
norm = "linf"
eps_unit = "px"
epsilons = [16]
iterations = [2, 4]
[[attacks]]
attack = "genattack"
eps_unit = "px"
epsilons = [32]
iterations = [5, 10]
params = { population = 4 }
"""


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    from hwbed.models.training import TrainConfig, train

    out = tmp_path_factory.mktemp("cli") / "xnor"
    return train(TrainConfig(model="resnet20-xnor", epochs=2, out=str(out), progress=False))


@pytest.fixture
def grid_file(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(GRID)
    return path


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_presets_parse_and_hold_the_study_grid():
    assert {"breakingbed-cifar", "breakingbed-imagenet", "pgd-curve", "smoke"} <= set(presets())
    g = load_grid("breakingbed-cifar")
    fgsm = next(e for e in g.entries if e.attack == "fgsm")
    assert fgsm.norm == "linf" and fgsm.radii == [k / 255 for k in (2, 4, 8, 16)]
    pgd = [e for e in g.entries if e.attack == "pgd"]
    assert {e.norm for e in pgd} == {"l2", "linf"} and pgd[0].iterations == (2, 3, 4, 5)
    gen = [e for e in g.entries if e.attack == "genattack"]
    assert sorted(e.params["population"] for e in gen) == [6, 16]
    cw = [e for e in g.entries if e.attack == "cw"]
    assert sorted(e.params["initial_const"] for e in cw) == [0.01, 0.1, 1.0, 5.0, 10.0]
    curve = load_grid("pgd-curve").entries[0]
    assert curve.constructor() == {
        "norm": "l2",
        "steps": 100,
        "abs_stepsize": 0.5,
        "restarts": 5,
        "record_every": 5,
    }


@pytest.mark.parametrize(
    "data,match",
    [
        (
            {"attacks": [{"attack": "fgsm", "epsilon": [1]}]},
            "unknown key 'epsilon'; allowed: attack, norm, eps_unit, epsilons",
        ),
        ({"attack": []}, "unknown key 'attack'; allowed: name"),
        (
            {"attacks": [{"attack": "pgdd", "epsilons": [1]}]},
            "unknown attack 'pgdd'; choose one of",
        ),
        ({"attacks": [{"attack": "pgd", "epsilons": [1]}]}, "ε needs a norm"),
        ({"attacks": [{"attack": "pgd", "norm": "l3", "epsilons": [1]}]}, "unknown norm 'l3'"),
        ({"attacks": [{"attack": "fgsm", "norm": "l2", "epsilons": [1]}]}, "fgsm is linf only"),
        (
            {"attacks": [{"attack": "fgsm", "eps_unit": "pixels", "epsilons": [1]}]},
            "eps_unit 'pixels'; choose one of abs, px",
        ),
        ({"attacks": [{"attack": "fgsm"}]}, "'epsilons' is required"),
        (
            {"attacks": [{"attack": "fgsm", "epsilons": [1], "iterations": [2]}]},
            "no iteration axis",
        ),
        (
            {"attacks": [{"attack": "pgd", "norm": "l2", "epsilons": [1], "params": {"step": 3}}]},
            "unknown parameter 'step'",
        ),
        (
            {"attacks": [{"attack": "genattack", "epsilons": [1], "params": {"budget": 0}}]},
            "budget must be a positive integer",
        ),
    ],
)
def test_grid_errors_name_the_key_and_the_choices(data, match):
    with pytest.raises(GridError, match=match):
        parse_grid({"name": "g", **data})


def test_bad_input_is_one_line_and_touches_nothing(capsys, tmp_path, ckpt, grid_file):
    bad_bytes = tmp_path / "bytes.toml"
    bad_bytes.write_bytes(b"\xff\xfe name = 1")
    list_json = tmp_path / "list.json"
    list_json.write_text("[1, 2]")
    cases = [
        (["--preset", "nope"], "unknown preset 'nope'; choose one of breakingbed-cifar"),
        (["--build", tmp_path / "missing"], "no such build folder"),
        (["--checkpoint", ckpt, "--executable", "twin,fpga"], "unknown executable 'fpga'"),
        (["--checkpoint", ckpt, "--grid", tmp_path / "none.toml"], "no such grid file"),
        (["--model", "resnet20"], "give --checkpoint"),
        (["--checkpoint", ckpt, "--model", "resnet20"], "holds a resnet20-xnor network"),
        (["--checkpoint", ckpt, "--model", "foo"], "--model 'foo'"),
        (["--checkpoint", ckpt, "--data", "nosuch"], "unknown data set 'nosuch'"),
        (["--checkpoint", ckpt, "--executable", "remote"], "needs its address"),
        (["--checkpoint", ckpt, "--cluster", "nonsense", "--dry-run"], "cluster 'nonsense'"),
        (["--checkpoint", ckpt, "--retries", "-1", "--dry-run"], "retries must be"),
        (["--checkpoint", ckpt, "--grid", bad_bytes], "not valid TOML"),
        (["--checkpoint", ckpt, "--grid", list_json], "a grid is a table"),
    ]
    for argv, match in cases:
        code, out, err = _run(capsys, *argv, "--store", tmp_path / "s")
        assert code == 2 and err.startswith("error: ") and match in err, (argv, err)
        assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "s").exists()
    store = tmp_path / "old"
    store.mkdir()
    (store / "store.json").write_text(json.dumps({"schema": 99, "hwbed": "9.0"}))
    code, _, err = _run(capsys, "--checkpoint", ckpt, "--grid", grid_file, "--store", store)
    assert code == 2 and "schema" in err and str(store) in err
    assert sorted(p.name for p in store.iterdir()) == ["store.json"]
    blocked = tmp_path / "file"
    blocked.write_text("")
    code, _, err = _run(capsys, "--checkpoint", ckpt, "--grid", grid_file, "--store", blocked / "s")
    assert code == 2 and err.startswith("error: ") and "Traceback" not in err


def test_dry_run_lists_every_cell(capsys, ckpt, grid_file):
    code, out, _ = _run(capsys, "--checkpoint", ckpt, "--grid", grid_file, "--dry-run")
    # fgsm 2 ε × 3 sides, pgd 2 i × 3 sides, genattack 2 i × 2 executables
    assert code == 0 and out.strip().endswith("16 cells in 4 runs")


def test_a_sweep_writes_every_cell_then_skips_them(capsys, tmp_path, ckpt, grid_file):
    store = tmp_path / "store"
    argv = ["--checkpoint", ckpt, "--grid", grid_file, "--store", store, "--no-progress"]
    code, out, _ = _run(capsys, *argv)
    assert code == 0 and "16 ok, 0 failed" in out
    assert "twin-float clean/att" in out and "sim clean/att" in out and "Δ sim-float" in out
    cells = load_cells(store)
    assert len(cells) == 16 and (cells.status == "ok").all()
    rows = load(store)
    assert len(rows) == 16 * 12
    # the simulator is the twin bit for bit: the device verdict equals the twin's per image
    for attack in ("fgsm", "pgd", "genattack"):
        sub = rows[rows.attack == attack]
        by = {
            s: g.sort_values(["eps", "iterations", "image"]).pred.tolist()
            for s, g in sub.groupby("executable")
        }
        assert by["sim"] == by["twin"]
    # iterations share a run: the shorter cell is the longer run's prefix, not a rerun
    pgd = cells[cells.attack == "pgd"]
    assert set(pgd["iterations"]) == {2, 4} and pgd["job_seconds"].nunique() == 1
    code, out, _ = _run(capsys, *argv)
    assert code == 0 and "0 ok, 0 failed, 16 skipped" in out
    assert load(store).equals(rows)


@pytest.mark.slow
def test_sigkill_of_the_cli_then_rerun_equals_an_uninterrupted_sweep(tmp_path, ckpt, grid_file):
    def sweep(store):
        return [
            sys.executable,
            "-m",
            "hwbed.attack",
            "--checkpoint",
            str(ckpt),
            "--grid",
            str(grid_file),
            "--store",
            str(store),
            "--no-progress",
        ]

    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    subprocess.run(sweep(tmp_path / "whole"), check=True, env=env, capture_output=True)
    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        sweep(killed),
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    while time.time() < deadline and len(list((killed / "cells").glob("*.json"))) < 4:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = len(list((killed / "cells").glob("*.json")))
    assert 4 <= done < 16, f"{done} cells when killed: not mid-sweep"
    subprocess.run(sweep(killed), check=True, env=env, capture_output=True)
    whole, resumed = load(tmp_path / "whole"), load(killed)
    drop = ["job_seconds"]
    assert resumed.drop(columns=drop).equals(whole.drop(columns=drop))
    assert sorted(Path(killed, "cells").glob("*.json")) and len(load_cells(killed)) == 16
