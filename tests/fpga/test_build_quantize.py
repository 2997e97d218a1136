"""``python -m hwbed.build --checkpoint FLOAT.pt --quantize w8a8``: the deployed 8-bit version
of a float network, its card, and the float vs deployed accuracy in the summary."""

from __future__ import annotations

import io
import json

import pytest
import torch

from hwbed.cli import show_progress
from hwbed.fpga.build.flow import BuildConfig, BuildError, build, format_summary, unbuildable
from hwbed.models.training import TrainConfig, train

torch.set_num_threads(1)
pytestmark = pytest.mark.filterwarnings("ignore:Keyword arguments are being passed")


@pytest.fixture(scope="module")
def float_ckpt(tmp_path_factory):
    out = tmp_path_factory.mktemp("float") / "resnet20"
    cfg = TrainConfig(
        model="resnet20", epochs=1, limit=64, batch_size=32, out=str(out), progress=False
    )
    return train(cfg)


def _build(**kw) -> str:
    buf = io.StringIO()
    with show_progress(buf):
        build(BuildConfig(progress=False, **kw))
    return buf.getvalue()


def _check_summary(folder, printed: str, float_ckpt, epochs: int) -> dict:
    s = json.loads((folder / "summary.json").read_text())
    card = json.loads((folder / "model.json").read_text())
    assert s["model"] == card["spec"] == "resnet20-w8a8"
    origin = card["quantized_from"]
    assert origin["checkpoint"] == str(float_ckpt) and origin["spec"] == "resnet20"
    assert s["test_accuracy"] == card["test_accuracy"]
    assert s["float_test_accuracy"] == origin["test_accuracy"]
    assert s["accuracy_change"] == pytest.approx(s["test_accuracy"] - s["float_test_accuracy"])
    assert s["quantized_from"]["finetune_epochs"] == epochs
    assert s["quantized_from"]["calibration_images"] == 64
    line = next(x for x in printed.splitlines() if "test accuracy:" in x)
    assert f"deployed {s['test_accuracy']:.4f} vs float {s['float_test_accuracy']:.4f}" in line
    assert format_summary(s).count("test accuracy:") == 1
    return s


def test_quantize_build_reports_float_vs_deployed(float_ckpt, tmp_path):
    out = tmp_path / "b"
    kw = dict(checkpoint=str(float_ckpt), quantize="w8a8", calibration_images=64, out=str(out))
    printed = _build(**kw, stop_step="model")
    assert "deployed resnet20-w8a8: test accuracy" in printed
    assert (out / "quantize" / "model.pt").is_file()
    printed = _build(**kw, start_step="lower", stop_step="estimate")
    s = _check_summary(out, printed, float_ckpt, 0)
    assert "notes" not in s and 0 <= s["mvau_zero_weight_fraction"] < 0.2


@pytest.mark.slow
def test_quantize_build_with_fine_tune_verifies(float_ckpt, tmp_path):
    out = tmp_path / "b"
    printed = _build(
        checkpoint=str(float_ckpt), quantize="w8a8", calibration_images=64, finetune_epochs=1,
        verify_n=8, out=str(out),
    )  # fmt: skip
    _check_summary(out, printed, float_ckpt, 1)
    verify = json.loads((out / "verify.json").read_text())
    assert verify["ok"] and all(row["exact"] for row in verify["rows"])
    assert {row["path"] for row in verify["rows"]} >= {"fast", "slice", "twin"}
    assert (out / "finn" / "model.onnx").is_file()


def test_float_refusal_points_to_quantize(tmp_path):
    why = unbuildable("resnet20-prune-kernel50")
    assert "--quantize w8a8" in why and "pruned in full precision" in why
    assert "--quantize" not in unbuildable("cnv")  # BNN-PYNQ: train cnv-w1a1 instead
    with pytest.raises(BuildError, match="already quantized"):
        build(BuildConfig(model="resnet20-w4a4", quantize="w8a8", out=str(tmp_path / "b")))
    assert not (tmp_path / "b").exists()
