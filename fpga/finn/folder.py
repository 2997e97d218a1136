"""The FINN hand-off: a ``build_custom`` folder FINN's Docker runs, and the FINN run itself."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np

from hwbed.fpga.finn.boards import Board

progress = logging.getLogger("hwbed.progress")
"""The FINN comparison, row by row, as the build reports it (the CLIs print it on stdout)."""

GENERATE_OUTPUTS = [
    "estimate_reports",
    "stitched_ip",
    "bitfile",
    "pynq_driver",
    "deployment_package",
]

BUILD_PY = '''"""FINN build_custom entry point written by hwbed: run inside FINN's Docker."""

from pathlib import Path

import finn.builder.build_dataflow as build
import finn.builder.build_dataflow_config as build_cfg

here = Path(__file__).resolve().parent
cfg = build_cfg.DataflowBuildConfig.from_json((here / "dataflow_build_config.json").read_text())
cfg.output_dir = str(here / cfg.output_dir)
cfg.folding_config_file = str(here / cfg.folding_config_file)
cfg.verify_input_npy = str(here / cfg.verify_input_npy)
cfg.verify_expected_output_npy = str(here / cfg.verify_expected_output_npy)
build.build_dataflow_cfg(str(here / "model.onnx"), cfg)
'''


def dataflow_build_config(board: Board) -> dict:
    """FINN ``DataflowBuildConfig`` fields (JSON form) for a full bitstream build."""
    return {
        "output_dir": "output",
        "synth_clk_period_ns": board.clk_ns,
        "board": board.finn_board,
        "shell_flow_type": board.shell_flow_type,
        "fpga_part": board.part,
        "folding_config_file": "folding_config.json",
        "generate_outputs": GENERATE_OUTPUTS,
        "auto_fifo_depths": True,
        "save_intermediate_models": True,
        "enable_build_pdb_debug": False,
        "verify_steps": ["initial_python", "streamlined_python", "folded_hls_cppsim"],
        "verify_input_npy": "input.npy",
        "verify_expected_output_npy": "expected_output.npy",
    }


def write_finn_folder(build_dir: Path, board: Board, n_verify: int = 1) -> Path:
    """Write ``<build_dir>/finn/`` from the build's QONNX model and folding config."""
    from hwbed.models.checkpoint import load_checkpoint
    from hwbed.models.data import load_dataset, to_float

    folder = build_dir / "finn"
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(build_dir / "model.qonnx.onnx", folder / "model.onnx")
    shutil.copyfile(build_dir / "folding_config.json", folder / "folding_config.json")
    (folder / "dataflow_build_config.json").write_text(
        json.dumps(dataflow_build_config(board), indent=2) + "\n"
    )
    (folder / "build.py").write_text(BUILD_PY)
    model, meta = load_checkpoint(build_dir / "model.pt")
    c, h, _ = meta.input_shape
    x, _, _ = load_dataset(meta.data, "test", size=h, limit=n_verify)
    xf = to_float(x)
    np.save(folder / "input.npy", xf.numpy())
    import torch

    with torch.no_grad():
        np.save(folder / "expected_output.npy", model(xf).numpy())
    (folder / "README.md").write_text(_readme(board, meta.spec.name))
    return folder


def _readme(board: Board, model: str) -> str:
    return f"""# FINN build folder for {model} on {board.name} ({board.part})

Written by hwbed. `model.onnx` is the Brevitas twin exported to QONNX; `folding_config.json`
is the folding hwbed chose (its node names follow FINN's `<Op>_<impl>_<i>` numbering of
hwbed's integer graph; FINN's own streamlining numbers nodes the same way for the BNN-PYNQ
networks, and warns about names it does not find otherwise).

Full bitstream flow (needs Vivado/Vitis HLS, inside FINN's Docker):

    cd <finn checkout>
    ./run-docker.sh build_custom {"<this folder>"}

This runs `build.py`, i.e. `build_dataflow_cfg(model.onnx, dataflow_build_config.json)`
with outputs {", ".join(GENERATE_OUTPUTS)}, clock {board.clk_ns} ns, board {board.finn_board},
verifying against `input.npy` / `expected_output.npy` (the twin's logits). The deployment
package lands in `output/deploy/` (bitfile + PYNQ driver); hwbed's `deploy/` folder serves it.

Estimates only, with FINN installed: `python -m hwbed.build ... --finn` runs FINN here and
compares FINN's `report/estimate_layer_cycles.json` with hwbed's, layer by layer.
"""


def run_finn(build_dir: Path) -> dict:
    """Run FINN's estimate flow on ``finn/`` and compare per-layer cycles with hwbed's."""
    try:
        import finn.builder.build_dataflow as build
        import finn.builder.build_dataflow_config as build_cfg
    except ImportError as err:
        raise RuntimeError(
            "FINN is not importable here (it is not on any package registry); run the "
            f"command in {build_dir / 'finn' / 'README.md'} inside FINN's Docker instead"
        ) from err
    folder = build_dir / "finn"
    cfg = build_cfg.DataflowBuildConfig.from_json(
        (folder / "dataflow_build_config.json").read_text()
    )
    cfg.output_dir = str(folder / "output")
    cfg.folding_config_file = str(folder / "folding_config.json")
    cfg.generate_outputs = [build_cfg.DataflowOutputType.ESTIMATE_REPORTS]
    cfg.steps = build_cfg.estimate_only_dataflow_steps
    cfg.verify_steps = []
    build.build_dataflow_cfg(str(folder / "model.onnx"), cfg)
    theirs = json.loads((folder / "output" / "report" / "estimate_layer_cycles.json").read_text())
    ours = json.loads((build_dir / "report" / "estimate_layer_cycles.json").read_text())
    rows = {
        name: {"hwbed": ours.get(name), "finn": theirs.get(name)}
        for name in sorted(set(ours) | set(theirs))
    }
    (build_dir / "finn_comparison.json").write_text(json.dumps(rows, indent=2) + "\n")
    for name, r in rows.items():
        progress.info(f"   {name:<36} hwbed {r['hwbed']!s:>10}  finn {r['finn']!s:>10}")
    return rows
