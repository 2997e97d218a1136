"""``python -m hwbed.verify`` and its library (:mod:`hwbed.fpga.build.verify`): agreement table,
exit status and verify.json's fields."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from hwbed import verify
from hwbed.cli import InputError
from hwbed.fpga.build.verify import VerifyError, input_pixels
from hwbed.fpga.build.verify import verify as verify_paths
from hwbed.ir.graph import Graph
from hwbed.sim.fast import Plan

SPEC, SHAPE = "tfc-w1a1", (1, 8, 8)


@pytest.fixture(scope="module")
def build(tmp_path_factory, random_build):
    """A build folder: graph.json/.npz and the model.pt it was lowered from."""
    return random_build(tmp_path_factory.mktemp("build"), SPEC, SHAPE)


def test_build_folder_agrees(build, capsys):
    assert verify.main([str(build), "--n", "12", "--slice-n", "4", "--qonnx-n", "2"]) == 0
    out = capsys.readouterr().out
    assert "digits test split" in out
    for path in ("fast", "twin"):
        assert any(line.startswith(path) and line.endswith("ok") for line in out.splitlines())


def test_checkpoint_and_random_pixels(build, capsys):
    assert (
        verify.main(
            [
                str(build / "model.pt"),
                "--n",
                "4",
                "--data",
                "random",
                "--slice-n",
                "2",
                "--qonnx-n",
                "1",
            ]
        )
        == 0
    )
    assert "4 images (random uint8 pixels)" in capsys.readouterr().out


def test_a_data_set_that_does_not_fit(build):
    graph = Graph.load(build / "graph")
    graph.meta["data"] = "synthetic"  # 3 channels; the graph takes 1
    pixels, origin = input_pixels(graph, 3, None)
    assert pixels.shape == (3, 1, 8, 8) and pixels.dtype == np.uint8
    assert origin.startswith("random uint8 pixels: data set 'synthetic' has images (3, 8, 8)")
    with pytest.raises(VerifyError, match=r"graph takes \(1, 8, 8\) \(--data synthetic\)"):
        input_pixels(graph, 3, "synthetic", strict=True)
    with pytest.raises(InputError, match="--data nonsense"):
        verify.check_data("nonsense")


def test_tampered_path_fails(build, monkeypatch, capsys):
    real = Plan.run

    def off_by_one(self, pixels):  # a fast path that drifts on the second image
        out = real(self, pixels).copy()
        out[1, 0] = np.nextafter(out[1, 0], np.inf)
        return out

    monkeypatch.setattr(Plan, "run", off_by_one)
    assert (
        verify.main([str(build / "graph.json"), "--n", "6", "--slice-n", "2", "--qonnx-n", "1"])
        == 1
    )
    assert "MISMATCH" in capsys.readouterr().out


def test_twin_mismatch_is_reported_apart(build, monkeypatch, capsys):
    from hwbed.ir.executable import TorchTwin

    real = TorchTwin.forward
    monkeypatch.setattr(TorchTwin, "forward", lambda self, p: real(self, p) + 1.0)
    assert verify.main([str(build), "--n", "4", "--slice-n", "2", "--qonnx-n", "1"]) == 3
    assert "MISMATCH (twin)" in capsys.readouterr().out


def test_report_fields_say_what_they_mean(build):
    graph = Graph.load(build / "graph")
    pixels, source = input_pixels(graph, 4, None)
    doc = json.loads(json.dumps(verify_paths(graph, pixels, 2, 1).to_dict(source)))
    rows = {row["path"]: row for row in doc["rows"]}
    assert doc["ok"] is True and doc["status"] == 0
    assert rows["fast"]["exactness_required"] is True and rows["fast"]["exact"] is True
    assert rows["twin"]["exactness_required"] is False  # float twin: not required ...
    assert rows["twin"]["exact"] is True  # ... but measured identical on these images
    assert all(row["exact"] == (row["same_scores"] == 100.0) for row in rows.values())


def test_without_qonnx_the_rendering_is_skipped(build, monkeypatch):
    monkeypatch.setitem(sys.modules, "qonnx", None)  # import qonnx now fails
    graph = Graph.load(build / "graph")
    pixels, _ = input_pixels(graph, 2, None)
    report = verify_paths(graph, pixels, 1, 1)
    assert [r.path for r in report.rows] == ["fast", "slice", "twin"] and report.status == 0
    assert "qonnx-render skipped: qonnx is not installed (hwbed[export])" in report.notes
