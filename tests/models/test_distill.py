"""The distillation loss against a hand computation in numpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hwbed.models.distill import kd_loss


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def _hand_kd(s, t, labels, temperature, alpha):
    ls, lt = _log_softmax(s / temperature), _log_softmax(t / temperature)
    kl = (np.exp(lt) * (lt - ls)).sum() / len(s)  # KL(teacher || student), mean over the batch
    loss = alpha * temperature**2 * kl
    if alpha < 1:
        ce = -_log_softmax(s)[np.arange(len(s)), labels].mean()
        loss += (1 - alpha) * ce
    return loss


@pytest.mark.parametrize(
    ("temperature", "alpha"), [(30.0, 1.0), (1.0, 1.0), (4.0, 0.7), (2.5, 0.0)]
)
def test_kd_loss_matches_hand_computation(temperature, alpha):
    rng = np.random.default_rng(0)
    s = rng.normal(0, 3, (5, 10))
    t = rng.normal(0, 3, (5, 10))
    labels = rng.integers(0, 10, 5)
    got = kd_loss(torch.tensor(s), torch.tensor(t), torch.tensor(labels), temperature, alpha)
    assert got.item() == pytest.approx(_hand_kd(s, t, labels, temperature, alpha), rel=1e-10)


def test_kd_loss_small_example_by_hand():
    # two classes, T = 1: p_t = (0.5, 0.5), p_s = softmax(0, ln 3) = (0.25, 0.75)
    s = torch.tensor([[0.0, float(np.log(3.0))]], dtype=torch.float64)
    t = torch.zeros(1, 2, dtype=torch.float64)
    expected = 0.5 * np.log(0.5 / 0.25) + 0.5 * np.log(0.5 / 0.75)
    assert kd_loss(s, t, temperature=1.0).item() == pytest.approx(expected, rel=1e-12)


def test_kd_loss_is_zero_for_identical_logits_and_positive_otherwise():
    z = torch.randn(4, 10)
    assert kd_loss(z, z.clone()).item() == pytest.approx(0.0, abs=1e-6)
    assert kd_loss(z, torch.randn(4, 10)).item() > 0


def test_kd_loss_direction_is_teacher_to_student():
    s = torch.tensor([[2.0, 0.0, -1.0]], dtype=torch.float64)
    t = torch.tensor([[0.0, 1.0, 0.5]], dtype=torch.float64)
    forward = _hand_kd(s.numpy(), t.numpy(), None, 1.0, 1.0)
    backward = _hand_kd(t.numpy(), s.numpy(), None, 1.0, 1.0)
    assert forward != pytest.approx(backward)
    assert kd_loss(s, t, temperature=1.0).item() == pytest.approx(forward, rel=1e-12)


def test_kd_loss_gradient_scale_is_independent_of_temperature():
    """With T^2, the gradient magnitude stays of the same order as T grows (Hinton et al.)."""
    torch.manual_seed(0)
    s0, t = torch.randn(16, 10) * 0.5, torch.randn(16, 10) * 0.5
    norms = []
    for temperature in (10.0, 30.0, 100.0):
        s = s0.clone().requires_grad_(True)
        kd_loss(s, t, temperature=temperature).backward()
        norms.append(s.grad.norm().item())
    assert max(norms) / min(norms) < 1.1


def test_kd_loss_with_cross_entropy_needs_labels():
    with pytest.raises(ValueError, match="needs labels"):
        kd_loss(torch.randn(2, 3), torch.randn(2, 3), None, 4.0, 0.5)
