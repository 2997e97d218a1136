"""The build flow end to end (``python -m hwbed.build``) on small, fast networks.

Every build uses ``--weights random`` (a calibrated fresh network: structure and estimates
are those of a trained one) and a small verify step. Module-scoped fixtures build once:

* ``cli_tfc``: tfc-w1a1 on digits (1x8x8) through the CLI, default folding (fastest that fits);
* ``tfc_examples``: tfc-w1a1 on fashion-mnist (28x28, FINN's TFC) with finn-examples' folding;
* ``cnv_examples``: cnv-w1a1 on synthetic 3x32x32 with finn-examples' folding;
* ``lowered``: tfc-w1a1 on digits stopped after ``lower``; copies of it resume at ``fold``.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import io
import json
import logging
import math
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hwbed.cli import show_progress
from hwbed.fpga.build.flow import (
    PRESETS,
    BuildConfig,
    BuildError,
    DoesNotFitError,
    build,
    format_summary,
)
from hwbed.fpga.finn.boards import BOARDS, RESOURCE_KEYS, get_board
from hwbed.fpga.finn.estimates import layer_cycles
from hwbed.fpga.finn.folding import InfeasibleTargetError, apply_folding_config
from hwbed.fpga.finn.memory import device_memory_mb
from hwbed.fpga.finn.nodes import finn_nodes
from hwbed.fpga.finn.op_specs import OP_SPECS, attr
from hwbed.ir.graph import Graph

REPO = Path(__file__).resolve().parents[2]
VERIFY_N = 8
ESTIMATE_ONLY = PRESETS["estimate_only"]

pytestmark = pytest.mark.filterwarnings("ignore:fast_hadamard_transform")


def _run(cfg: BuildConfig) -> tuple[Path, str]:
    """Build and return the folder and what the build reported (what the CLI prints)."""
    buf = io.StringIO()
    with show_progress(buf):
        out = build(cfg)
    return out, buf.getvalue()


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, "-m", "hwbed.build", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=600,
    )


def _load(folder: Path, name: str):
    return json.loads((folder / name).read_text())


def _graph_names(folder: Path) -> list[str]:
    """The graph's hardware nodes (a ``Flatten`` has none: its consumer reads the stream)."""
    from hwbed.ir.opdef import load_ops

    ops = load_ops()
    return [n["name"] for n in _load(folder, "graph.json")["nodes"] if ops[n["op"]].finn]


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def cli_tfc(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("cli") / "tfc"
    proc = _cli(
        "--target", "pynq-z2", "--model", "tfc-w1a1", "--weights", "random",
        "--verify-n", str(VERIFY_N), "--no-progress", "--out", str(out),
    )  # fmt: skip
    return out, proc


@pytest.fixture(scope="module")
def tfc_examples(tmp_path_factory, finn_examples_dir) -> tuple[Path, str]:
    from hwbed.models.data import load_dataset

    try:
        load_dataset("fashion-mnist", "test", limit=1)
    except (OSError, ValueError) as err:
        pytest.skip(f"fashion-mnist (28x28, FINN's TFC input) unavailable: {err}")
    cfg = BuildConfig(
        target="pynq-z2",
        model="tfc-w1a1",
        data="fashion-mnist",
        weights="random",
        folding=str(finn_examples_dir / "tfc-w1a1_folding_config.json"),
        verify_n=VERIFY_N,
        progress=False,
        out=str(tmp_path_factory.mktemp("tfc") / "b"),
    )
    return _run(cfg)


@pytest.fixture(scope="module")
def cnv_examples(tmp_path_factory, finn_examples_dir) -> tuple[Path, str]:
    cfg = BuildConfig(
        target="pynq-z2",
        model="cnv-w1a1",
        weights="random",
        folding=str(finn_examples_dir / "cnv-w1a1_folding_config.json"),
        verify_n=VERIFY_N,
        progress=False,
        out=str(tmp_path_factory.mktemp("cnv") / "b"),
    )
    return _run(cfg)


@pytest.fixture(scope="module")
def lowered(tmp_path_factory) -> tuple[Path, str]:
    cfg = BuildConfig(
        model="tfc-w1a1",
        weights="random",
        stop_step="lower",
        progress=False,
        out=str(tmp_path_factory.mktemp("lowered") / "b"),
    )
    return _run(cfg)


@pytest.fixture
def resumable(lowered, tmp_path) -> Path:
    """A private copy of the lowered tfc build, to resume at ``fold``."""
    dst = tmp_path / "b"
    shutil.copytree(lowered[0], dst)
    return dst


@pytest.fixture(params=["cli_tfc", "tfc_examples", "cnv_examples"])
def full_build(request) -> Path:
    """Each complete (estimate_only preset) build's folder."""
    return request.getfixturevalue(request.param)[0]


def _resume(folder: Path, **kw) -> tuple[Path, str]:
    cfg = BuildConfig(
        model="tfc-w1a1", weights="random", progress=False, out=str(folder),
        start_step="fold", stop_step="estimate", **kw,
    )  # fmt: skip
    return _run(cfg)


# --------------------------------------------------------------------------- the CLI


def test_cli_builds_and_prints_the_summary(cli_tfc):
    out, proc = cli_tfc
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = _load(out, "summary.json")
    assert format_summary(summary) in proc.stdout
    assert "== tfc-w1a1 on pynq-z2 (xc7z020clg400-1, 100 MHz), weights random" in proc.stdout
    assert "fits: yes" in proc.stdout
    assert f"build folder: {out}" in proc.stdout
    for i, step in enumerate(ESTIMATE_ONLY):
        assert f"[{i + 1}/{len(ESTIMATE_ONLY)}] {step}:" in proc.stdout
    # default folding: the fastest one that fits the board
    assert summary["folding"] == "fastest folding that fits pynq-z2"


def test_cli_unknown_target_exits_2_listing_known_targets(tmp_path):
    proc = _cli("--target", "pynq-z9", "--weights", "random", "--out", str(tmp_path / "b"))
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: unknown target 'pynq-z9'")
    assert all(name in proc.stderr for name in BOARDS)
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "b").exists()  # nothing written before the target is known


def test_api_unknown_target_raises_build_error(tmp_path):
    with pytest.raises(BuildError, match=r"known targets: pynq-z1, pynq-z2, ultra96"):
        build(BuildConfig(target="zedboard", out=str(tmp_path / "b")))
    assert get_board("Pynq-Z2").name == "pynq-z2"  # FINN's board strings work too


def test_unknown_step_lists_the_preset_steps(tmp_path):
    with pytest.raises(BuildError, match="'run_finn' is not a step of estimate_only: model, "):
        build(BuildConfig(start_step="run_finn", out=str(tmp_path / "b")))


# ------------------------------------------------------------------ FINN report files


def test_report_files_keys_and_types(full_build):
    names = _graph_names(full_build)
    report = full_build / "report"
    cycles = _load(report, "estimate_layer_cycles.json")
    assert list(cycles) == names
    assert all(type(c) is int and c > 0 for c in cycles.values())

    res = _load(report, "estimate_layer_resources.json")
    assert list(res) == [*names, "total"]
    per_node = {"BRAM_18K", "BRAM_efficiency", "LUT", "URAM", "URAM_efficiency", "DSP"}
    for name in names:
        assert set(res[name]) == per_node, name
        for k in RESOURCE_KEYS:
            assert type(res[name][k]) is int and res[name][k] >= 0, (name, k)
        for k in ("BRAM_efficiency", "URAM_efficiency"):
            assert isinstance(res[name][k], (int, float)), (name, k)
    total = res["total"]
    assert set(total) == set(RESOURCE_KEYS)
    for k in RESOURCE_KEYS:
        assert type(total[k]) is float
        assert total[k] == sum(res[n][k] for n in names)

    perf = _load(report, "estimate_network_performance.json")
    types = {
        "critical_path_cycles": int,
        "max_cycles": int,
        "max_cycles_node_name": str,
        "estimated_throughput_fps": float,
        "estimated_latency_ns": float,
    }
    assert {k: type(v) for k, v in perf.items()} == types
    clk_ns = _load(full_build, "finn/dataflow_build_config.json")["synth_clk_period_ns"]
    assert perf["max_cycles"] == max(cycles.values())
    assert cycles[perf["max_cycles_node_name"]] == perf["max_cycles"]
    assert perf["critical_path_cycles"] >= perf["max_cycles"]
    # the graphs here are chains: the critical path is the sum
    assert perf["critical_path_cycles"] == sum(cycles.values())
    assert perf["estimated_throughput_fps"] == pytest.approx(1e9 / clk_ns / perf["max_cycles"])
    assert perf["estimated_latency_ns"] == pytest.approx(perf["critical_path_cycles"] * clk_ns)

    counts = _load(report, "op_and_param_counts.json")
    assert list(counts) == [*names, "total"]
    key = re.compile(r"(op_mac_\d+bx\d+b|param_weight_\d+b|param_threshold_\d+b)$")
    for name in names:
        assert all(key.match(k) and type(v) is int for k, v in counts[name].items()), name
    mvaus = [n for n in names if n.startswith("MVAU")]
    assert mvaus and all(any(k.startswith("op_mac_") for k in counts[n]) for n in mvaus)
    for k, v in counts["total"].items():
        assert v == float(sum(counts[n].get(k, 0) for n in names))

    alternatives = _load(report, "estimate_layer_config_alternatives.json")
    assert list(alternatives) == names
    assert all(len(alternatives[n]) == 2 for n in mvaus)  # resType dsp, lut


def test_summary_keys_types_and_consistency(full_build):
    s = _load(full_build, "summary.json")
    types = {
        "model": str, "target": str, "board": str, "clock_mhz": float,
        "fps_compute_bound": float, "fps_dma_bound": float, "fps": float,
        "latency_ms": float, "resources": dict, "fits": bool, "ncc_m": float,
        "memory_mb": float, "device_memory_mb": float, "dsp_slice_ops": dict, "bottleneck": str,
        "bottleneck_cycles": int, "part": str, "weights": str, "folding": str,
        "dsp_slice_model": str,
    }  # fmt: skip
    for key, typ in types.items():
        assert type(s[key]) is typ, (key, s.get(key))
    board = get_board(s["target"])
    assert (s["board"], s["part"], s["clock_mhz"]) == (board.finn_board, board.part, 100.0)
    assert s["weights"] == "random"
    perf = _load(full_build, "report/estimate_network_performance.json")
    total = _load(full_build, "report/estimate_layer_resources.json")["total"]
    assert s["fps_compute_bound"] == perf["estimated_throughput_fps"]
    assert s["fps"] == min(s["fps_compute_bound"], s["fps_dma_bound"])
    assert s["latency_ms"] == pytest.approx(perf["estimated_latency_ns"] / 1e6)
    assert (s["bottleneck"], s["bottleneck_cycles"]) == (
        perf["max_cycles_node_name"],
        perf["max_cycles"],
    )
    assert list(s["resources"]) == list(RESOURCE_KEYS)
    for k, r in s["resources"].items():
        assert set(r) == {"used", "budget", "percent"}
        assert r["used"] == total[k] and r["budget"] == board.budget()[k]
        assert r["percent"] == (
            pytest.approx(100 * r["used"] / r["budget"]) if r["budget"] else None
        )
    assert s["fits"] is all(r["used"] <= r["budget"] for r in s["resources"].values())
    assert s["fits"]
    assert s["ncc_m"] > 0 and s["memory_mb"] > 0
    assert s["device_memory_mb"] == device_memory_mb(Graph.load(full_build / "graph")) > 0
    assert s["dsp_slice_model"] == board.dsp_type == "DSP48E1"  # the Pynq-Z2's XC7Z020
    ops = s["dsp_slice_ops"]["ops"]
    assert ops["total"] == sum(v for k, v in ops.items() if k != "total") > 0


def test_dma_bound_by_hand(cli_tfc, cnv_examples):
    # Pynq-Z2 IODMA: 64 bits per 10 ns cycle; input frames are UINT8 pixels
    tfc = _load(cli_tfc[0], "summary.json")
    assert tfc["fps_dma_bound"] == pytest.approx(1e8 / math.ceil(8 * 8 * 8 / 64))  # 8 words
    cnv = _load(cnv_examples[0], "summary.json")
    assert cnv["fps_dma_bound"] == pytest.approx(1e8 / (32 * 32 * 3 * 8 / 64))  # 384 words
    assert cnv["fps"] == cnv["fps_compute_bound"]  # CNV is compute-bound on Pynq


# -------------------------------------------------------- finn-examples folding configs


@pytest.mark.parametrize("net", ["tfc-w1a1", "cnv-w1a1"])
def test_finn_examples_folding_applied_unchanged(net, request, finn_example, finn_examples_dir):
    out, printed = request.getfixturevalue(f"{net[:3]}_examples")
    config = json.loads((finn_examples_dir / f"{net}_folding_config.json").read_text())
    nodes = {n["name"]: n for n in _load(out, "hw_nodes.json")["nodes"]}
    for name, values in config.items():
        if name != "Defaults":
            assert {k: nodes[name][k] for k in values} == values, name
    # hwbed's graph has FINN's nodes (plus its float Affine head): same cycles as FINN's
    # own cnv/tfc dataflow graphs under the same config
    fixture_nodes, _ = finn_example(net)
    finn_cycles = layer_cycles(apply_folding_config(fixture_nodes, config))
    ours = _load(out, "report/estimate_layer_cycles.json")
    assert {k: v for k, v in ours.items() if not k.startswith("Affine")} == finn_cycles
    assert f"folding: applied {finn_examples_dir / f'{net}_folding_config.json'}" in printed


def test_tfc_examples_matches_finn_report(tfc_examples):
    # FINN's own estimate run of tfc-w1a1 with this folding (docs/reference/finn.md §6)
    perf = _load(tfc_examples[0], "report/estimate_network_performance.json")
    assert perf["max_cycles"] == 64
    assert perf["max_cycles_node_name"] == "MVAU_hls_0"
    assert perf["estimated_throughput_fps"] == pytest.approx(1e8 / 64)


def test_cnv_examples_summary_printed(cnv_examples):
    out, printed = cnv_examples
    s = _load(out, "summary.json")
    assert (s["model"], s["data"]) == ("cnv-w1a1", "synthetic")
    assert format_summary(s) in printed
    # MVAU_hls_6, 256 -> 512 at PE 1, SIMD 4: 512 * 256 / 4 cycles (MVAU_hls_7 ties, 512/8)
    assert (s["bottleneck"], s["bottleneck_cycles"]) == ("MVAU_hls_6", 32768)
    assert s["fps_compute_bound"] == pytest.approx(1e8 / 32768)


# ----------------------------------------------------------------------- finn/ folder


def test_finn_folder(full_build):
    import onnx

    folder = full_build / "finn"
    model = onnx.load(str(folder / "model.onnx"))
    ops = {n.op_type for n in model.graph.node}
    assert ops & {"Quant", "BipolarQuant"}, ops  # QONNX, what FINN's step_qonnx_to_finn takes
    quant_domains = {n.domain for n in model.graph.node if n.op_type.endswith("Quant")}
    assert quant_domains <= {"qonnx.custom_op.general", "onnx.brevitas"}
    graph = _load(full_build, "graph.json")
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims][1:] == graph["meta"]["input_chw"]

    cfg = _load(folder, "dataflow_build_config.json")
    board = get_board(_load(full_build, "summary.json")["target"])
    for key in ("output_dir", "synth_clk_period_ns", "generate_outputs"):
        assert key in cfg, key  # DataflowBuildConfig's fields without defaults
    assert cfg["board"] == board.finn_board and cfg["fpga_part"] == board.part
    assert cfg["synth_clk_period_ns"] == board.clk_ns
    assert cfg["shell_flow_type"] == board.shell_flow_type
    finn_outputs = {
        "estimate_reports", "stitched_ip", "out_of_context_synth", "rtlsim_performance",
        "bitfile", "pynq_driver", "deployment_package",
    }  # fmt: skip
    assert cfg["generate_outputs"] and set(cfg["generate_outputs"]) <= finn_outputs
    for key in ("folding_config_file", "verify_input_npy", "verify_expected_output_npy"):
        assert (folder / cfg[key]).is_file(), key
    x = np.load(folder / cfg["verify_input_npy"])
    y = np.load(folder / cfg["verify_expected_output_npy"])
    assert x.shape[1:] == tuple(graph["meta"]["input_chw"]) and y.shape == (len(x), 10)

    folding = _load(folder, cfg["folding_config_file"])
    assert folding == _load(full_build, "folding_config.json")
    names = set(_graph_names(full_build))
    assert set(folding) - {"Defaults"} <= names
    # it applies to the build's graph as FINN's ApplyConfig would: no unknown names
    apply_folding_config(finn_nodes(Graph.load(full_build / "graph")), folding)

    source = (folder / "build.py").read_text()
    compile(source, str(folder / "build.py"), "exec")
    assert "build_dataflow_cfg" in source
    readme = (folder / "README.md").read_text()
    assert "run-docker.sh build_custom" in readme


# ----------------------------------------------------------------------- deploy/, verify


def test_deploy_package(full_build):
    folder = full_build / "deploy"
    deployed, built = Graph.load(folder / "graph"), Graph.load(full_build / "graph")
    # the same graph, without the twin's checkpoint (the package travels alone)
    assert "checkpoint" in built.meta and "checkpoint" not in deployed.meta
    assert deployed.meta == {k: v for k, v in built.meta.items() if k != "checkpoint"}
    assert [n.name for n in deployed.nodes] == [n.name for n in built.nodes]
    for a, b in zip(deployed.nodes, built.nodes, strict=True):
        assert a.attrs == b.attrs and a.params.keys() == b.params.keys()
        assert all(np.array_equal(a.params[k], b.params[k]) for k in a.params)
    token = folder / "token"
    assert stat.S_IMODE(token.stat().st_mode) == 0o600
    assert len(token.read_text().strip()) >= 32
    for name in ("serve.sh", "serve_board.sh"):
        script = folder / name
        assert script.stat().st_mode & stat.S_IXUSR, name
        assert script.read_text().startswith("#!/usr/bin/env bash")
        assert "--token-file" in script.read_text()
    assert "hwbed.fpga.deploy.server" in (folder / "serve.sh").read_text()


def test_verify_step_agrees(full_build):
    report = _load(full_build, "verify.json")
    assert report["ok"] is True and report["status"] == 0
    paths = {row["path"] for row in report["rows"]}
    assert {"fast", "twin"} <= paths
    assert all(row["same_scores"] == 100.0 for row in report["rows"])
    assert all(0 < row["images"] <= VERIFY_N for row in report["rows"])


# ------------------------------------------------------------- resume, target fps, fit


def test_stop_after_lower_then_resume(lowered, resumable):
    out, printed = lowered
    assert {"model.pt", "model.qonnx.onnx", "graph.json", "graph.npz"} <= {
        p.name for p in out.iterdir()
    }
    for later in ("hw_nodes.json", "report", "summary.json", "finn", "deploy"):
        assert not (out / later).exists(), later
    assert "[3/8] lower" in printed and "[4/8]" not in printed

    before = (resumable / "graph.npz").read_bytes(), (resumable / "model.pt").stat().st_mtime
    _, printed = _resume(resumable)
    assert "[1/8]" not in printed and "[3/8]" not in printed
    assert "[4/8] fold" in printed and "[5/8] estimate" in printed and "[6/8]" not in printed
    after = (resumable / "graph.npz").read_bytes(), (resumable / "model.pt").stat().st_mtime
    assert before == after  # earlier artifacts were read, not rebuilt
    assert (resumable / "summary.json").is_file() and not (resumable / "finn").exists()
    assert _load(resumable, "build_config.json")["start_step"] == "fold"


def test_estimate_step_estimates_once_and_reads_the_folding_once(resumable, monkeypatch):
    """The summary takes its numbers from the reports written, not from a second estimate."""
    from hwbed.fpga.finn import estimates

    real, estimated = estimates.estimate_reports, []
    monkeypatch.setattr(estimates, "estimate_reports", lambda *a: estimated.append(a) or real(*a))
    read_text, reads = Path.read_text, []

    def counted(path: Path, *args, **kwargs) -> str:
        reads.extend([path.name] if path.name == "hw_nodes.json" else [])
        return read_text(path, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", counted)
    _resume(resumable)
    assert (len(estimated), len(reads)) == (1, 1)
    perf = _load(resumable, "report/estimate_network_performance.json")
    assert _load(resumable, "summary.json")["bottleneck_cycles"] == perf["max_cycles"]


def test_versal_part_says_its_slice_ops_are_counted_as_dsp48e2(resumable, monkeypatch, caplog):
    """The simulator has no DSP58 model: the build warns, the summary notes it and names the
    slice it counted on (the resource estimates stay FINN's DSP58 ones)."""
    from hwbed.fpga.build import flow

    versal = dataclasses.replace(
        get_board("zcu104"), name="vck190", finn_board="VCK190", part="xcvc1902-vsva2197-2MP-e-S"
    )
    monkeypatch.setattr(flow, "get_board", lambda name: versal)
    _, printed = _resume(resumable)
    s = _load(resumable, "summary.json")
    note = flow.DSP58_NOTE.format(part=versal.part)
    assert versal.dsp_type == "DSP58" and s["dsp_slice_model"] == "DSP48E2"
    assert s["notes"] == [note] and f"   note: {note}" in printed
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == [note]
    assert s["part"] == versal.part and s["dsp_slice_ops"]["ops"]["total"] > 0


def test_the_library_logs_its_progress_and_prints_nothing(resumable, capsys, caplog):
    """build() reports on the hwbed.progress logger; only the command lines print it."""
    caplog.set_level(logging.INFO, logger="hwbed.progress")
    cfg = BuildConfig(
        model="tfc-w1a1", weights="random", progress=False, out=str(resumable),
        start_step="fold", stop_step="estimate",
    )  # fmt: skip
    build(cfg)
    assert capsys.readouterr().out == ""
    lines = [r.getMessage() for r in caplog.records if r.name == "hwbed.progress"]
    assert lines[0].startswith("[4/8] fold: ") and lines[-1].startswith("== tfc-w1a1 on pynq-z2")


def test_steps_do_not_need_docstrings(resumable, monkeypatch):
    """A step's line comes from the step table, not from ``__doc__`` (gone under python -OO)."""
    from hwbed.fpga.build import flow

    for name in ESTIMATE_ONLY:
        monkeypatch.setattr(getattr(flow, f"step_{name}"), "__doc__", None)
    _, printed = _resume(resumable)
    assert f"[4/8] fold: {flow.STEPS['fold'].description}" in printed


@pytest.mark.parametrize("target_fps", [5000.0, 200_000.0])
def test_target_fps_met_with_legal_folding(resumable, target_fps):
    _, printed = _resume(resumable, target_fps=target_fps)
    s = _load(resumable, "summary.json")
    assert s["folding"] == f"target {target_fps:g} fps at 100 MHz"
    assert s["fps_compute_bound"] >= target_fps
    assert s["fits"]
    nodes = _load(resumable, "hw_nodes.json")["nodes"]
    for n in nodes:
        for par, bound in OP_SPECS[n["op_type"]].fold.items():
            assert attr(n, bound) % attr(n, par) == 0, (n["name"], par, bound)
    par = [attr(n, "PE") * attr(n, "SIMD") for n in nodes if n["op_type"] == "MVAU_hls"]
    if target_fps == 200_000:
        # 500 cycles per frame: the 64x64 MVAUs (4096 cycles at PE=SIMD=1) need >= 9x
        assert min(par[:3]) >= 9
    else:  # 20,000 cycles: fully folded already meets it (SetFolding stops at once)
        assert set(par) == {1}
    assert f"folding: target {target_fps:g} fps" in printed


def test_target_fps_accepts_what_the_default_folding_reaches(resumable):
    _resume(resumable)
    fastest = _load(resumable, "summary.json")["fps_compute_bound"]
    for target in (fastest, 0.9 * fastest):
        _resume(resumable, target_fps=target)
        s = _load(resumable, "summary.json")
        assert s["fits"] and s["fps_compute_bound"] >= target * (1 - 1e-12)


def test_impossible_target_fps_fails_with_the_numbers(resumable):
    # 1e8 fps at 100 MHz = 1 cycle/frame; the 64x64 MVAUs reach 2 at best (SIMD <= 36 bits
    # of 1-bit weights -> 32, so 64/32 = 2 cycles with PE = MH)
    with pytest.raises(BuildError) as info:
        _resume(resumable, target_fps=1e8)
    msg = str(info.value)
    assert msg.startswith("step fold failed: target 1e+08 fps at 10 ns needs <= 1 cycles")
    assert "the fastest folding that fits pynq-z2 reaches 2 cycles (50000000.0 fps)" in msg
    cause = info.value.__cause__
    assert isinstance(cause, InfeasibleTargetError)
    assert (cause.required_cycles, cause.achievable_cycles) == (1, 2)
    assert not (resumable / "summary.json").exists()


def test_unfolded_network_does_not_fit_pynq_z1(resumable):
    # tfc-w1a1 with every MVAU fully parallel (PE = MH, SIMD = MW): each 64x64 binary MVAU
    # alone is ~28k LUTs, more than half of the XC7Z020's 53,200, and 114 BRAM18
    graph = Graph.load(resumable / "graph")
    config = {
        n["name"]: {"PE": n["MH"], "SIMD": n["MW"]}
        for n in finn_nodes(graph)
        if n["op_type"] == "MVAU_hls"
    }
    path = resumable / "unfolded.json"
    path.write_text(json.dumps(config))
    with pytest.raises(BuildError) as info:
        _resume(resumable, target="pynq-z1", folding=str(path))
    s = _load(resumable, "summary.json")  # written (and printed) before failing
    assert s["fits"] is False and s["target"] == "pynq-z1"
    # by hand (FINN's MVAU_hls LUT model): binary 1x1-bit MACs, 8-bit accumulators, so per
    # PE 64 x (2 - 1) x 2 multiplier + 2 x (2 x 64 - 1) adder + 8 = 390 LUTs
    res = _load(resumable, "report/estimate_layer_resources.json")
    assert res["MVAU_hls_0"]["LUT"] == int(300 + 1.1 * 64 * 390) == 27756
    assert res["MVAU_hls_3"]["LUT"] == int(300 + 1.1 * 10 * 390)  # 64 -> 10, PE 10
    lut, bram = s["resources"]["LUT"], s["resources"]["BRAM_18K"]
    assert lut["used"] > 3 * 27756 > lut["budget"] == 53200
    # weights 64 x 64 bits wide, 1 deep: 4096 / 36 -> 114 BRAM18 per 64x64 MVAU
    # (MVAU_hls_3: 640 bits -> 18)
    assert bram["used"] == 3 * 114 + 18 > bram["budget"] == 280
    assert isinstance(info.value, DoesNotFitError)
    over_b, over_l = bram["used"] - 280, lut["used"] - 53200
    assert str(info.value) == (
        f"tfc-w1a1 does not fit pynq-z1: BRAM_18K {bram['used']:.0f} > 280 (+{over_b:.0f}), "
        f"LUT {lut['used']:.0f} > 53200 (+{over_l:.0f}), with the folding in {path}; no FINN "
        f"folder; estimates, verification and the simulator's deploy package are in {resumable}"
    )
    assert s["shortfall"] == {"BRAM_18K": over_b, "LUT": over_l}
    assert info.value.shortfall == s["shortfall"]
    assert not (resumable / "finn").exists()


@pytest.fixture
def tiny(monkeypatch):
    """A board too small for tfc-w1a1 even fully folded (registered as ``tiny``)."""
    board = dataclasses.replace(get_board("pynq-z2"), name="tiny", finn_board="Tiny", lut=500)
    monkeypatch.setitem(BOARDS, "tiny", board)
    return board


def test_design_that_does_not_fit_still_builds_what_it_can(resumable, tiny):
    (resumable / "finn").mkdir()  # a FINN folder left by an earlier build that did fit
    cfg = BuildConfig(
        model="tfc-w1a1", weights="random", target="tiny", start_step="fold",
        verify_n=VERIFY_N, progress=False, out=str(resumable),
    )  # fmt: skip
    with pytest.raises(DoesNotFitError) as info:
        _run(cfg)
    s = _load(resumable, "summary.json")
    lut = s["resources"]["LUT"]["used"]
    assert s["fits"] is False and s["shortfall"] == {"LUT": lut - 500}
    assert s["folding"] == "cheapest folding (nothing fits tiny)"
    assert s["finn_folder"] == "not written: the design does not fit tiny"
    assert str(info.value) == (
        f"tfc-w1a1 does not fit tiny: LUT {lut:.0f} > 500 (+{lut - 500:.0f}), even with the "
        "cheapest folding of every layer; no FINN folder; estimates, verification and the "
        f"simulator's deploy package are in {resumable}"
    )
    # every node at its cheapest setting: PE = SIMD = 1
    nodes = _load(resumable, "hw_nodes.json")["nodes"]
    assert {attr(n, "PE") for n in nodes if n["op_type"] == "MVAU_hls"} == {1}
    assert (resumable / "report" / "estimate_layer_resources.json").is_file()
    assert _load(resumable, "verify.json")["ok"] is True
    assert (resumable / "deploy" / "serve.sh").is_file()
    assert not (resumable / "finn").exists()
    # the FINN run has no folder to run either: skipped, and the build still says why
    cfg = dataclasses.replace(cfg, finn=True, start_step="run_finn")
    with pytest.raises(DoesNotFitError):
        _run(cfg)


def test_cli_exits_1_with_one_line_when_the_design_does_not_fit(resumable, tiny, capsys):
    from hwbed.build import main

    rc = main([
        "--model", "tfc-w1a1", "--weights", "random", "--target", "tiny", "--out",
        str(resumable), "--start-step", "fold", "--stop-step", "estimate",
    ])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 1
    (line,) = err.splitlines()
    assert re.fullmatch(r"error: tfc-w1a1 does not fit tiny: LUT \d+ > 500 \(\+\d+\), .*", line)


def test_summary_copies_the_training_fields_of_the_model_card(resumable):
    card = _load(resumable, "model.json")
    card.update(best_test_accuracy=0.97, best_epoch=12)
    (resumable / "model.json").write_text(json.dumps(card))
    _resume(resumable)
    s = _load(resumable, "summary.json")
    assert (s["best_test_accuracy"], s["best_epoch"]) == (0.97, 12)
    assert s["fits"] is True and s["shortfall"] == {} and s["finn_folder"] == "finn"


def test_folding_notes_are_logged_not_printed(resumable):
    partial = resumable / "partial.json"
    partial.write_text(json.dumps({"MVAU_hls_0": {"PE": 2}}))
    args = [
        sys.executable, "-m", "hwbed.build", "--model", "tfc-w1a1", "--weights", "random",
        "--out", str(resumable), "--folding", str(partial), "--start-step", "fold",
        "--stop-step", "fold",
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONWARNINGS", "HWBED_DEBUG")}

    def run(*extra: str) -> str:
        proc = subprocess.run([*args, *extra], capture_output=True, text=True, cwd=REPO, env=env)
        assert proc.returncode == 0, proc.stderr
        return proc.stderr

    assert run() == ""
    note = "No HW configuration for nodes: Thresholding_rtl_0, MVAU_hls_1"
    assert f"info: {note}" in run("-v").splitlines()[0]
    assert note in run("--debug")


# ------------------------------------------------------------- inputs checked up front


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, r"folding config .*folding\.json does not exist$"),
        ('{"MVAU_hls_0": {"PE": 2}', r"folding config .*folding\.json is not valid JSON: "),
        ('{"MVAU_hls_0": {"PEE": 2}}', r"node 'MVAU_hls_0' has no folding attribute 'PEE'"),
        ('{"MVA_hls_3": {"PE": 2}}', r"node name 'MVA_hls_3' is not <op type>_<index>"),
    ],
)
def test_bad_folding_file_refused_before_the_model_step(tmp_path, content, message):
    path = tmp_path / "folding.json"
    if content is not None:
        path.write_text(content)
    out = tmp_path / "b"
    cfg = BuildConfig(model="resnet20-xnor", folding=str(path), out=str(out))  # would train
    with pytest.raises(BuildError, match=message) as info:
        build(cfg)
    assert "\n" not in str(info.value) and str(path) in str(info.value)
    assert not out.exists()


@pytest.mark.parametrize(
    ("spec", "why"),
    [
        ("cnv", "it is a float network (full precision, no quantizers), and only quantized "
         "variants lower to integer hardware; use e.g. cnv-w1a1"),
        ("cnv-kd", "it is a float network (distilled in full precision, no quantizers)"),
        ("resnet20-kd", "use e.g. resnet20-xnor, resnet20-w4a4"),
        ("resnet20-prune-filter50", "it is a float network (pruned in full precision"),
    ],
)  # fmt: skip
def test_specs_that_do_not_lower_refused_up_front(tmp_path, spec, why):
    out = tmp_path / "b"
    with pytest.raises(BuildError) as info:
        build(BuildConfig(model=spec, weights="random", out=str(out)))
    assert str(info.value).startswith(f"{spec} cannot be built for an FPGA: ")
    assert why in str(info.value)
    assert not out.exists()


def test_cli_refuses_float_cnv_in_one_line(tmp_path):
    proc = _cli("--model", "cnv", "--weights", "random", "--out", str(tmp_path / "b"))
    assert proc.returncode == 2
    assert proc.stderr == (
        "error: cnv cannot be built for an FPGA: it is a float network (full precision, no "
        "quantizers), and only quantized variants lower to integer hardware; use e.g. cnv-w1a1\n"
    )


def test_missing_export_extra_refused_before_training(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "qonnx", None)  # import qonnx now fails
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    out = tmp_path / "b"
    with pytest.raises(BuildError) as info:
        build(BuildConfig(model="resnet20-xnor", out=str(out)))
    assert str(info.value) == (
        "the export and verify steps need the export extra (qonnx, onnxruntime are not "
        "installed): pip install 'hwbed[export]'"
    )
    assert not out.exists()
    with pytest.raises(BuildError, match=r"^the verify step needs the export extra \(qonnx"):
        build(BuildConfig(model="resnet20-xnor", start_step="verify", out=str(out)))


def test_steps_that_do_not_export_run_without_the_export_extra(resumable, monkeypatch):
    monkeypatch.setitem(sys.modules, "qonnx", None)
    _resume(resumable)
    assert _load(resumable, "summary.json")["fits"]


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"folding": "f.json", "target_fps": 100.0}, "--folding and --target-fps exclude"),
        ({"target_fps": -5.0}, "--target-fps must be a positive number, got -5"),
        ({"weights": "pretrained"}, "--weights must be trained or random, got 'pretrained'"),
        ({"verify_n": 0}, "--verify-n must be at least 1, got 0"),
        ({"checkpoint": "nope.pt"}, "checkpoint nope.pt does not exist"),
        ({"model": "resnet20-xnnor"}, "unknown variant 'xnnor'"),
    ],
)
def test_bad_options_refused_before_any_step(tmp_path, kw, message):
    out = tmp_path / "b"
    with pytest.raises(BuildError, match=message):
        build(BuildConfig(**{"model": "tfc-w1a1", **kw}, out=str(out)))
    assert not out.exists()


def test_run_finn_without_finn_says_where_to_run_it(cnv_examples, tmp_path):
    pytest.importorskip("hwbed.fpga.finn.folder")
    if importlib.util.find_spec("finn") is not None:
        pytest.skip("FINN is importable here")
    out = tmp_path / "b"
    shutil.copytree(cnv_examples[0], out)
    cfg = BuildConfig(model="cnv-w1a1", finn=True, start_step="run_finn", out=str(out))
    with pytest.raises(BuildError, match="FINN is not importable.*inside FINN's Docker"):
        _run(cfg)


# ------------------------------------------------------------------------ heavier runs


@pytest.mark.slow
def test_default_build_trains_and_builds(tmp_path):
    """The issue's command: ``python -m hwbed.build --target pynq-z2`` (trains the default)."""
    proc = _cli("--target", "pynq-z2", "--no-progress", "--out", str(tmp_path / "b"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    s = _load(tmp_path / "b", "summary.json")
    assert s["model"] == "resnet20-xnor" and s["weights"] == "trained" and s["fits"]
    assert format_summary(s) in proc.stdout
    assert _load(tmp_path / "b", "verify.json")["ok"] is True


@pytest.mark.slow
def test_cnv_target_fps(tmp_path):
    cfg = BuildConfig(
        model="cnv-w1a1", weights="random", target_fps=1000.0, stop_step="estimate",
        progress=False, out=str(tmp_path / "b"),
    )  # fmt: skip
    out, _ = _run(cfg)
    s = _load(out, "summary.json")
    assert s["fps_compute_bound"] >= 1000.0 and s["fits"]
