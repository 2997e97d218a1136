"""Trained digits networks shared by the attack tests (trained once per session, seconds)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hwbed.attacks.twin import Twin
from hwbed.models.data.registry import load_dataset
from hwbed.models.training import TrainConfig, train


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


@pytest.fixture(scope="session")
def float_twin(float_ckpt) -> Twin:
    return Twin.from_checkpoint(float_ckpt)


@pytest.fixture(scope="session")
def correct_digits(float_twin, digits_test):
    """32 test digits the float twin classifies correctly (uint8) and their labels."""
    import torch

    x, y = digits_test
    pred = float_twin.predict(torch.from_numpy(x).float() / 255).numpy()
    keep = np.flatnonzero(pred == y)[:32]
    return x[keep], y[keep]
