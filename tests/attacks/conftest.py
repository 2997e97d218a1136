"""Digits, twins and images shared by the attack tests (the trained networks: tests/conftest.py)."""

from __future__ import annotations

import numpy as np
import pytest

from hwbed.attacks.twin import Twin


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
