"""The command-line tools: python -m hwbed.cost and python -m hwbed.train."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from hwbed import cost as cost_cli
from hwbed import train as train_cli


def _run(*args, cwd=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, "-m", *args], capture_output=True, text=True, timeout=300, env=env, cwd=cwd
    )


def test_cost_json_schema():
    proc = _run("hwbed.cost", "resnet20", "resnet20-xnor", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert isinstance(rows, list) and [r["model"] for r in rows] == ["resnet20", "resnet20-xnor"]
    for row in rows:
        assert {"model", "memory_mb", "ncc_m", "params", "macs", "layers"} <= row.keys()
        assert isinstance(row["params"], int) and isinstance(row["macs"], int)
        assert row["memory_mb"] > 0 and row["ncc_m"] > 0
        for layer in row["layers"]:
            assert {
                "name",
                "kind",
                "precision",
                "params",
                "memory_mb",
                "macs",
                "ncc_m",
            } <= layer.keys()
        assert sum(layer["macs"] for layer in row["layers"]) == row["macs"]
    # CIFAR-10 shape by default: resnet20 on 3x32x32
    stem, s1 = 3 * 16 * 9 * 1024, 6 * 2304 * 1024
    s2, s3 = (4608 + 5 * 9216) * 256, (18432 + 5 * 36864) * 64
    assert rows[0]["macs"] == stem + s1 + s2 + s3 + 640 == 40_551_040
    assert rows[1]["macs"] == rows[0]["macs"] and rows[1]["ncc_m"] < rows[0]["ncc_m"]


def test_cost_table_is_readable(capsys):
    assert cost_cli.main(["resnet20-prune-filter", "--data", "digits"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("== resnet20-prune-filter50")
    for word in ("layer", "precision", "memory MB", "NCC 1e6", "stem_conv", "fc", "total"):
        assert word in out
    total = [line for line in out.splitlines() if line.startswith("total")]
    assert len(total) == 1


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("resnet21", "unknown architecture"),
        ("resnet20-w1a1", "-xnor"),
        ("cnv-xnor", "not defined for cnv"),
    ],
)
def test_cost_bad_spec_exits_nonzero(spec, message, capsys):
    assert cost_cli.main([spec]) != 0
    captured = capsys.readouterr()
    assert message in captured.err and captured.out == ""


def test_cost_bad_spec_subprocess():
    proc = _run("hwbed.cost", "resnet20-abc9x9")
    assert proc.returncode != 0
    assert "error:" in proc.stderr and "ABC bases" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cost_of_a_checkpoint(tmp_path, capsys):
    assert (
        train_cli.main(
            [
                "--model",
                "tfc-w1a1",
                "--data",
                "digits",
                "--limit",
                "32",
                "--epochs",
                "1",
                "--out",
                str(tmp_path),
                "--no-progress",
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert cost_cli.main(["ignored", "--checkpoint", str(tmp_path / "model.pt"), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["model"] == "tfc-w1a1" and rows[0]["macs"] == 64 * 64 * 3 + 640


def test_train_tiny_run_writes_checkpoint_and_card(tmp_path):
    out = tmp_path / "run"
    proc = _run(
        "hwbed.train",
        "--model",
        "tfc-w1a1",
        "--data",
        "synthetic",
        "--limit",
        "64",
        "--epochs",
        "1",
        "--batch-size",
        "32",
        "--out",
        str(out),
        "--no-progress",
    )
    assert proc.returncode == 0, proc.stderr
    assert (out / "model.pt").is_file() and (out / "model.json").is_file()
    assert "checkpoint:" in proc.stdout
    card = json.loads((out / "model.json").read_text())
    assert card["spec"] == "tfc-w1a1" and card["data"] == "synthetic"
    assert card["input_shape"] == [3, 32, 32] and card["complete"] is True
    assert card["settings"]["limit"] == 64 and card["settings"]["batch_size"] == 32


def test_train_errors_exit_nonzero(tmp_path, capsys):
    assert train_cli.main(["--model", "resnet20-kd", "--out", str(tmp_path)]) == 2
    assert "--teacher" in capsys.readouterr().err
    assert train_cli.main(["--model", "resnet20-bogus", "--out", str(tmp_path)]) == 2
    assert "unknown variant" in capsys.readouterr().err
    assert (
        train_cli.main(
            [
                "--model",
                "tfc",
                "--init",
                str(tmp_path / "none.pt"),
                "--limit",
                "8",
                "--out",
                str(tmp_path / "x"),
            ]
        )
        == 2
    )
    assert "does not exist" in capsys.readouterr().err


def test_train_requires_a_model():
    with pytest.raises(SystemExit):
        train_cli.build_parser().parse_args([])
