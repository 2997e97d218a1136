"""What importing the board side costs: the deploy package and ``hwbed.ir`` run without torch.

The PYNQ image has no torch wheels (``docs/deploy.md``, *Torch on the board*). The import
direction itself is import-linter's (``[tool.importlinter]`` in pyproject.toml, run by .ci/run).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "brevitas", "onnx", "onnxruntime", "qonnx", "hwbed.sim", "hwbed.attacks")
"""Packages the board side must not load (their submodules neither)."""


@pytest.mark.parametrize(
    "module",
    [
        "hwbed.ir.executable",
        "hwbed.fpga.deploy.server",
        "hwbed.fpga.deploy.client",
        "hwbed.fpga.deploy.remote",
        "hwbed.fpga.deploy.board_backend",
    ],
)
def test_board_side_modules_import_nothing_heavy(module):
    code = f"import json, sys, {module}; print(json.dumps(sorted(sys.modules)))"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = json.loads(run.stdout)
    assert [m for m in loaded if any(m == p or m.startswith(f"{p}.") for p in HEAVY)] == []
