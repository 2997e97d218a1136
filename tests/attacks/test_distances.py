"""Projection, distortion and the step onto the uint8 grid inside the ε-ball."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hwbed.attacks.distances import distortion, norms, project, random_in_ball, to_grid
from hwbed.attacks.inputs import AttackError, check_epsilons, check_images, check_norm, px


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_projection_and_random_start_stay_in_the_ball(norm):
    g = torch.Generator().manual_seed(0)
    d = torch.randn(16, 3, 5, 5, generator=g)
    p = project(d, norm, 0.3)
    assert (norms(p, norm) <= 0.3 * (1 + 1e-6)).all()
    inside = project(p * 0.5, norm, 0.3)
    torch.testing.assert_close(inside, p * 0.5)
    r = random_in_ball((64, 3, 5, 5), norm, 0.3, g)
    assert (norms(r, norm) <= 0.3 * (1 + 1e-6)).all()


@pytest.mark.parametrize(
    "norm,eps",
    [("linf", px(2)), ("linf", px(2.5)), ("linf", px(0.4)), ("l2", 0.1), ("l2", 0.02), ("l2", 0.5)],
)
def test_to_grid_is_uint8_nearest_and_inside_the_ball(norm, eps):
    rng = np.random.default_rng(1)
    clean = rng.integers(0, 256, (32, 3, 6, 6), dtype=np.uint8)
    x = clean / 255.0
    d = torch.from_numpy(rng.normal(size=clean.shape))
    d = project(d, norm, eps).numpy()
    adv = np.clip(x + d, 0, 1)
    q = to_grid(clean, adv, norm, eps)
    assert q.dtype == np.uint8
    dist = distortion(clean, q)[norm]
    assert (dist <= eps * (1 + 1e-6)).all()
    # never farther than one grid step from the float adversarial
    assert np.abs(q / 255.0 - adv).max() <= 1 / 255 + 1e-12


def test_to_grid_rounds_to_nearest_when_that_stays_inside():
    clean = np.full((1, 1, 1, 4), 100, np.uint8)
    adv = (clean + np.array([0.4, 0.6, -1.6, 2.0]).reshape(1, 1, 1, 4)) / 255.0
    np.testing.assert_array_equal(to_grid(clean, adv, "linf", px(2)).ravel(), [100, 101, 98, 102])
    np.testing.assert_array_equal(to_grid(clean, adv, "linf", px(1.5)).ravel(), [100, 101, 99, 101])
    np.testing.assert_array_equal(to_grid(clean, adv, "linf", 0.0).ravel(), [100] * 4)


def test_distortion_units():
    clean = np.zeros((2, 1, 2, 2), np.uint8)
    adv = clean.copy()
    adv[1, 0, 0, 0], adv[1, 0, 1, 1] = 3, 4
    d = distortion(clean, adv)
    assert d["l0"].tolist() == [0, 2]
    np.testing.assert_allclose(d["l2"], [0, 5 / 255])
    np.testing.assert_allclose(d["linf"], [0, 4 / 255])


def test_input_checks_name_the_culprit():
    with pytest.raises(AttackError, match="needs a norm"):
        check_norm(None, "pgd")
    with pytest.raises(AttackError, match="unknown norm 'l3'"):
        check_norm("l3", "pgd")
    assert check_norm("Linf", "pgd") == "linf" and check_norm("L2", "pgd") == "l2"
    with pytest.raises(AttackError, match="give epsilons"):
        check_epsilons(None, "fgsm")
    with pytest.raises(AttackError, match="'a' is not a number"):
        check_epsilons(["a"], "fgsm")
    with pytest.raises(AttackError, match=">= 0"):
        check_epsilons([-0.1], "fgsm")
    assert np.isinf(check_epsilons([None], "deepfool", bounded=False)[0])
    x = np.zeros((2, 1, 4, 4), np.float32)
    with pytest.raises(AttackError, match=r"do not fit the model input \(1, 8, 8\)"):
        check_images(x, (1, 8, 8), "fgsm")
    with pytest.raises(AttackError, match="0..255 floats"):
        check_images(x + 200, (1, 4, 4), "fgsm")
    with pytest.raises(AttackError, match="image 1 is not on the 8-bit grid"):
        check_images(x + np.array([0, 0.5 / 255])[:, None, None, None], (1, 4, 4), "fgsm")
    with pytest.raises(AttackError, match="NaN"):
        check_images(x * np.nan, (1, 4, 4), "fgsm")
    assert check_images((x + 3 / 255).astype(np.float32), (1, 4, 4), "fgsm").max() == 3
