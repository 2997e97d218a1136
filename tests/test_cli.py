"""The command-line tools: python -m hwbed.cost and python -m hwbed.train, and the plumbing
every CLI shares (hwbed.cli: one-line errors, --debug, quiet known warnings)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import hwbed
from hwbed import cli
from hwbed import cost as cost_cli
from hwbed import train as train_cli
from hwbed.grid import GridError
from hwbed.models.spec import SpecError


def _run(*args, cwd=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, "-m", *args], capture_output=True, text=True, timeout=300, env=env, cwd=cwd
    )


def test_cost_json_schema():
    proc = _run("hwbed.cost", "resnet20", "resnet20-xnor", "--json", "--device-memory", "no")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert isinstance(rows, list) and [r["model"] for r in rows] == ["resnet20", "resnet20-xnor"]
    for row in rows:
        keys = {"model", "memory_mb", "folded_mb", "device_memory_mb", "ncc_m", "params", "macs"}
        assert keys | {"layers", "device_memory"} <= row.keys()
        assert row["device_memory_mb"] is None and row["device_memory"]["note"]
        assert isinstance(row["params"], int) and isinstance(row["macs"], int)
        assert row["memory_mb"] > 0 and row["ncc_m"] > 0
        for layer in row["layers"]:
            assert {
                "name",
                "kind",
                "precision",
                "params",
                "memory_mb",
                "folded_mb",
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


def _cost_json(capsys, *argv) -> list[dict]:
    capsys.readouterr()
    assert cost_cli.main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_cost_imagenet_specs_need_no_imagenet_folder(tmp_path, monkeypatch, capsys):
    """Every ImageNet spec family, costed on ImageNet's declared shape with an empty data dir."""
    monkeypatch.setenv("HWBED_DATA_DIR", str(tmp_path))  # no imagenet/ below it
    specs = [
        "resnet18",
        "resnet18-xnor",
        "resnet18-abc3x3",
        "resnet18-prune-channel50",
        "resnet18-kd-prune-filter50-w4a4",
        "resnet50",
        "resnet50-xnor",
    ]
    rows = {r["model"]: r for r in _cost_json(capsys, *specs, "--data", "imagenet")}
    assert list(rows) == specs
    # 224x224, 1000 classes: 7x7 stem on 112x112 positions, stage 1 on 56x56; stages 2-4 each
    # (first conv + 3 convs + 1x1 shortcut) weights x positions = 2^19 x 784 = 2^21 x 196 = ...
    stem, stage1, stage, fc = 3 * 64 * 49 * 112**2, 4 * 64 * 64 * 9 * 56**2, 524_288 * 784, 512_000
    assert (64 * 128 * 9 + 3 * 128 * 128 * 9 + 64 * 128) * 784 == stage == 411_041_792
    assert rows["resnet18"]["macs"] == stem + stage1 + 3 * stage + fc == 1_814_073_344
    assert rows["resnet18-xnor"]["macs"] == rows["resnet18"]["macs"]
    # stored weights only (tests/models/test_cost.py writes ResNet18's out layer by layer);
    # ResNet50: torchvision's 25,557,032 parameters less BN's 2 x 26,560, at 32 bits
    assert rows["resnet18"]["memory_mb"] == pytest.approx(4 * 11_679_912 / 1e6, rel=1e-12)
    assert rows["resnet18-xnor"]["memory_mb"] == pytest.approx(4.166304, rel=1e-12)
    assert rows["resnet50"]["memory_mb"] == pytest.approx(4 * (25_557_032 - 53_120) / 1e6)
    assert rows["resnet18-prune-channel50"]["macs"] < rows["resnet18"]["macs"]
    for name, row in rows.items():
        assert row["device_memory_mb"] is None
        note = row["device_memory"]["note"]
        if "w4a4" in name or "xnor" in name or "abc" in name:
            assert "--device-memory yes" in note, note
        else:
            assert "--quantize w8a8" in note, note
    assert cost_cli.main(["resnet18", "--data", "imagenet"]) == 0
    assert "device memory (integer graph): - (resnet18 is full precision" in capsys.readouterr().out


def test_cost_device_memory_of_a_lowered_network(capsys):
    """tfc-w1a1 on digits (1x8x8): the hand count of tests/fpga/test_memory.py."""
    rows = _cost_json(capsys, "tfc-w1a1", "resnet20", "--data", "digits")
    tfc, float_net = rows
    assert tfc["device_memory_mb"] == pytest.approx(14_632 / 8e6, rel=1e-12)
    kinds = tfc["device_memory"]["by_kind_mb"]
    assert kinds == pytest.approx({"thresholds": 1544 / 8e6, "weights": 12_928 / 8e6,
                                   "constants": 160 / 8e6})  # fmt: skip
    assert sum(r["count"] * r["bits"] for r in tfc["device_memory"]["rows"]) == 14_632
    assert tfc["memory_mb"] == pytest.approx(159_808 / 8e6, rel=1e-12)  # the study's column
    assert float_net["device_memory_mb"] is None
    assert cost_cli.main(["tfc-w1a1", "--data", "digits"]) == 0
    out = capsys.readouterr().out
    assert "device memory (integer graph): 0.0018 MB (thresholds 0.0002, weights 0.0016" in out
    assert "not counted: BN and activation scales, 0.0031 MB" in out


def test_cost_says_in_one_line_when_the_lowering_refuses(monkeypatch, capsys):
    from hwbed.fpga.lowering import lower as lower_module
    from hwbed.ir.types import GraphError

    def refuse(model, spec, shape, *args, **kw):
        raise GraphError(f"{spec.name}: the ImageNet stem is not\n supported by the lowering yet")

    monkeypatch.setattr(lower_module, "lower", refuse)
    assert cost_cli.main(["tfc-w1a1", "--data", "digits", "--device-memory", "yes"]) == 0
    lines = [x for x in capsys.readouterr().out.splitlines() if x.startswith("device memory")]
    assert lines == [
        "device memory (integer graph): - (not lowered: tfc-w1a1: the ImageNet stem is not "
        "supported by the lowering yet)"
    ]


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


# ------------------------------------------------------------------------ hwbed.cli


@pytest.mark.parametrize(
    ("err", "line", "code"),
    [
        (SpecError("unknown architecture 'x'"), "unknown architecture 'x'", 2),
        (GridError("g.toml: bad key\n  allowed: a, b"), "g.toml: bad key; allowed: a, b", 2),
        (cli.InputError("must be at least 1", "--n 0"), "must be at least 1 (--n 0)", 2),
        (
            FileNotFoundError(2, "No such file or directory", "/x/y"),
            "no such file or directory (/x/y)",
            2,
        ),
        (PermissionError(13, "Permission denied", "/x"), "permission denied (/x)", 2),
        (IsADirectoryError(21, "Is a directory", "/d"), "is a directory (/d)", 2),
        (
            FileNotFoundError("CIFAR-10 not found: set HWBED_DATA_DIR"),
            "CIFAR-10 not found: set HWBED_DATA_DIR",
            2,
        ),
        (
            ModuleNotFoundError("No module named 'pandas'", name="pandas"),
            "the optional dependency pandas is not installed (pip install 'hwbed[report]')",
            2,
        ),
        (
            ModuleNotFoundError("No module named 'onnxruntime.capi'", name="onnxruntime.capi"),
            "the optional dependency onnxruntime is not installed (pip install 'hwbed[export]')",
            2,
        ),
        (
            ModuleNotFoundError("No module named 'pynq'", name="pynq"),
            "the Python module pynq is not installed (import pynq)",
            2,
        ),
        (KeyboardInterrupt(), "interrupted (Ctrl-C)", 130),
        (RuntimeError("boom"), "internal error: RuntimeError: boom", 1),
        (ValueError("bad\nvalue"), "internal error: ValueError: bad; value", 1),
        (
            ModuleNotFoundError("No module named 'hwbed.gone'", name="hwbed.gone"),
            "internal error: ModuleNotFoundError: No module named 'hwbed.gone'",
            1,
        ),
    ],
)
def test_describe(err, line, code):
    assert cli.describe(err) == (line, code)


def _exits(main, argv, capsys):
    code = cli.run(main, argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_run_prints_one_error_line(capsys):
    def main(argv):
        print("started")
        raise SpecError("unknown variant 'bogus' in spec 'resnet20-bogus'")

    code, out, err = _exits(main, [], capsys)
    assert (code, out) == (2, "started\n")
    assert err == "error: unknown variant 'bogus' in spec 'resnet20-bogus'\n"


def test_a_bug_is_an_internal_error_and_debug_shows_the_traceback(capsys):
    seen = []

    def main(argv):
        seen.append(argv)
        return {}["missing"]

    code, _, err = _exits(main, ["a", "--debug", "b", "--", "--debug"], capsys)
    assert seen == [["a", "b", "--", "--debug"]]  # --debug is taken out (before --)
    assert code == 1 and "Traceback" in err and "KeyError" in err
    assert err.splitlines()[-1] == "error: internal error: KeyError: 'missing'"
    code, _, err = _exits(main, ["a"], capsys)
    assert code == 1 and "Traceback" not in err
    assert (
        err == "error: internal error: KeyError: 'missing' (run with --debug for the traceback)\n"
    )


def test_interrupt_and_exit_statuses(capsys):
    def interrupted(argv):
        raise KeyboardInterrupt

    assert _exits(interrupted, [], capsys)[::2] == (130, "error: interrupted (Ctrl-C)\n")
    assert cli.run(lambda argv: None, []) == 0
    assert cli.run(lambda argv: 3, []) == 3
    assert cli.run(lambda argv: sys.exit(4), []) == 4


def test_argparse_errors_keep_their_status(capsys):
    import argparse

    def main(argv):
        parser = cli.add_debug(argparse.ArgumentParser(prog="x"))
        parser.add_argument("--n", type=int, required=True)
        return parser.parse_args(argv).n

    assert cli.run(main, ["--n", "5", "--debug"]) == 5
    assert cli.run(main, []) == 2
    assert "--n" in capsys.readouterr().err


def test_command_decorator_wraps_main(capsys):
    @cli.command
    def main(argv=None):
        """Doc."""
        raise cli.InputError("no such build folder, graph or checkpoint", "/x")

    assert main.__doc__ == "Doc." and main.__wrapped__ is not None
    assert main(["--debug"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err
    assert err.splitlines()[-1] == "error: no such build folder, graph or checkpoint (/x)"


def test_json_and_text_errors_name_the_file(tmp_path, capsys):
    (tmp_path / "grid.json").write_text('{"name": ')
    (tmp_path / "model.json").write_text("{not json")
    (tmp_path / "folding.json").write_bytes(b"\x80\x81 binary")

    def read(path: Path):
        return json.loads(path.read_text())

    def card(ckpt: Path):  # the JSON file is only a sibling of the path the frame holds
        return json.loads(ckpt.with_suffix(".json").read_text())

    for main, name in [
        (lambda argv: read(tmp_path / "grid.json"), "grid.json"),
        (lambda argv: card(tmp_path / "model.pt"), "model.json"),
    ]:
        code, _, err = _exits(main, [], capsys)
        assert code == 2 and err.startswith("error: not valid JSON: expecting ")
        assert err.rstrip().endswith(f"({tmp_path / name})") and len(err.splitlines()) == 1
    code, _, err = _exits(lambda argv: read(tmp_path / "folding.json"), [], capsys)
    assert code == 2
    assert err == f"error: not a text file: byte 0x80 at offset 0 ({tmp_path / 'folding.json'})\n"


def test_known_warnings_are_hidden_and_the_rest_logged_on_one_line(capsys, monkeypatch):
    monkeypatch.setattr(logging.getLogger(), "handlers", [])  # as in a fresh process
    hwbed_file = str(Path(hwbed.__file__).parent / "fake.py")

    def main(argv):
        registry: dict = {}
        warnings.warn_explicit(
            "Keyword arguments are being passed but they not being used.",
            UserWarning,
            "brevitas/nn/mixin/base.py",
            60,
            "brevitas.nn.mixin.base",
            registry,
        )
        warnings.warn_explicit(
            "No HW configuration for nodes: a", UserWarning, hwbed_file, 1, "hwbed.fake", registry
        )
        warnings.warn_explicit(
            "odd\nthing", DeprecationWarning, "/lib/other.py", 7, "other", registry
        )
        logging.getLogger("hwbed.fpga.deploy").debug("hidden unless --debug")

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        _, _, err = _exits(main, [], capsys)
        assert err.splitlines() == [
            "warning: No HW configuration for nodes: a",
            "warning: DeprecationWarning: odd; thing (other.py:7)",
        ]
        _, _, err = _exits(main, ["--debug"], capsys)
        assert "warning: UserWarning: Keyword arguments are being passed" in err
        assert "debug: hidden unless --debug" in err
    assert logging.getLogger("hwbed").level == logging.NOTSET  # restored


def test_quiet_known_warnings_is_idempotent():
    with warnings.catch_warnings():
        cli.quiet_known_warnings()
        n = len(warnings.filters)
        cli.quiet_known_warnings()
        assert len(warnings.filters) == n


def test_extras_are_those_of_pyproject():
    tomllib = pytest.importorskip("tomllib")
    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    extras = tomllib.loads(pyproject.read_text())["project"]["optional-dependencies"]
    assert set(cli.EXTRAS.values()) <= set(extras)
    for name in ("data", "export", "report", "sweep", "samples"):
        assert name in cli.EXTRAS.values(), name


def test_every_cli_error_is_one_line_without_traceback():
    proc = _run("hwbed.verify", "nonexistent_dir", "--n", "2")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == "error: no such build folder, graph or checkpoint (nonexistent_dir)\n"
    proc = _run("hwbed.verify", "nonexistent_dir", "--debug")
    assert proc.returncode == 2 and "Traceback" in proc.stderr and "InputError" in proc.stderr
    assert proc.stderr.splitlines()[-1].startswith("error: no such build folder")
