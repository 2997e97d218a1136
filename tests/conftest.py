"""Shared helpers of the model tests, offered as fixtures (small shapes, calibration)."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

# One intra-op thread: the tensors here are tiny, and on a shared 2-core machine torch's
# thread pool contending with other processes makes every step up to 100x slower.
torch.set_num_threads(1)

# brevitas warns about unused keyword arguments on every quant layer it builds
warnings.filterwarnings("ignore", message="Keyword arguments are being passed")


def small_shape(arch: str) -> tuple[int, int, int]:
    """The small input each architecture is tested on."""
    if arch in ("cnv", "resnet18", "resnet50"):
        return (3, 32, 32)
    return (1, 8, 8)


def calibrate(model: torch.nn.Module, x: torch.Tensor) -> None:
    """End Brevitas' statistics phase: one training pass, then mark collection as done.

    Runtime-stats scales collect for ``collect_stats_steps`` (300) training calls before
    their learned value takes over; the next training call initialises it from the stats.
    """
    was = model.training
    model.train()
    with torch.no_grad():
        model(x)
    for module in model.modules():
        if hasattr(module, "collect_stats_steps") and hasattr(module, "counter"):
            module.counter = max(module.counter, module.collect_stats_steps)
    with torch.no_grad():
        model(x)
    model.train(was)


@pytest.fixture
def shape_of():
    return small_shape


@pytest.fixture
def calibrated():
    return calibrate


@pytest.fixture(scope="session")
def finn_examples_dir() -> Path:
    """finn-examples' folding configs (cnv/tfc w1a1/w2a2), vendored in tests/fixtures."""
    return Path(__file__).parent / "fixtures" / "finn-examples"
