"""Shared helpers of the tests, offered as fixtures: small shapes, calibration, seeded random
calibrated twins and their lowered graphs, build folders."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from hwbed.models.data.registry import load_dataset
from hwbed.models.training import TrainConfig, train

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
    from hwbed.models.quantize import end_stats_phase

    end_stats_phase(model, x)


def random_twin(
    spec: str,
    shape: tuple[int, int, int],
    *,
    passes: int = 3,
    batch: int = 8,
    images: torch.Tensor | None = None,
    end_stats: bool = False,
) -> torch.nn.Module:
    """A random-init twin of ``spec`` (10 classes, seed 0), calibrated, in eval mode.

    ``passes`` training-mode forwards set BN statistics and Brevitas' runtime scales, each on
    ``images`` or else on ``batch`` fresh uniform random images; with ``end_stats`` each pass
    is :func:`calibrate` (the statistics phase ended: the learned scales take over).
    """
    from hwbed.models.zoo import build_model

    torch.manual_seed(0)
    model = build_model(spec, *shape, 10).train()
    with torch.no_grad():
        for _ in range(passes):
            x = torch.rand(batch, *shape) if images is None else images
            if end_stats:
                calibrate(model, x)
            else:
                model(x)
    return model.eval()


def random_graph(spec: str, shape: tuple[int, int, int], **calibration):
    """:func:`random_twin` (with ``calibration``'s settings) lowered to its integer graph."""
    from hwbed.fpga.lowering.lower import lower

    return lower(random_twin(spec, shape, **calibration), spec, shape)


@pytest.fixture(name="random_twin", scope="session")
def random_twin_fixture():
    """:func:`random_twin`: the random-init -> calibrate set-up every lowering test shares."""
    return random_twin


@pytest.fixture(name="random_graph", scope="session")
def random_graph_fixture():
    """:func:`random_graph`: :func:`random_twin`, lowered."""
    return random_graph


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


def write_random_build(folder: Path, spec: str = "tfc-w1a1", shape=(1, 8, 8)) -> Path:
    """A build folder as the build writes it (graph.json/.npz, model.pt and its card) of a
    seeded random network after three calibration passes; seconds, no training."""
    from hwbed.fpga.lowering.lower import lower
    from hwbed.models.checkpoint import CheckpointMeta, save_checkpoint
    from hwbed.models.spec import parse_spec

    folder.mkdir(parents=True, exist_ok=True)
    model = random_twin(spec, shape)
    meta = CheckpointMeta(parse_spec(spec), "digits", shape, 10, complete=True)
    save_checkpoint(folder / "model.pt", model, meta)
    graph = lower(model, spec, shape)
    graph.meta.update(checkpoint=str(folder / "model.pt"), data="digits")
    graph.save(folder / "graph")
    return folder


@pytest.fixture(scope="session")
def random_build():
    """:func:`write_random_build`, for tests to make build folders where they need them."""
    return write_random_build


def _train(tmp: Path, spec: str, epochs: int) -> Path:
    cfg = TrainConfig(model=spec, epochs=epochs, out=str(tmp / spec), progress=False)
    return train(cfg)


@pytest.fixture(scope="session")
def digits_test():
    """The first 64 test digits (uint8 [64, 1, 8, 8]) and their labels."""
    x, y, _ = load_dataset("digits", "test")
    return x[:64], y[:64]


@pytest.fixture(scope="session")
def float_ckpt(tmp_path_factory) -> Path:
    """resnet20 (float) trained on digits for 8 epochs: about 95 % test accuracy."""
    return _train(tmp_path_factory.mktemp("float"), "resnet20", 8)


@pytest.fixture(scope="session")
def xnor_ckpt(tmp_path_factory) -> Path:
    """resnet20-xnor trained on digits for 8 epochs."""
    return _train(tmp_path_factory.mktemp("xnor"), "resnet20-xnor", 8)
