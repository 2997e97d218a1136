"""DeepFool: agreement with foolbox 3, the analytic step on affine models, ε thresholds,
iteration accounting, determinism and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from hwbed.attacks import AttackError, Twin
from hwbed.attacks.base import WhiteBoxAttack
from hwbed.attacks.deepfool import DeepFool

EPS = {"l2": [None, 0.0, 0.25, 0.5, 1.0], "linf": [None, 0.0, 0.03, 0.06, 0.1]}


def _float(x):
    return torch.from_numpy(x).float() / 255.0


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_equals_foolbox(float_twin, correct_digits, norm):
    fb = pytest.importorskip("foolbox")
    x, y = correct_digits
    ours = DeepFool(norm, steps=50, candidates=10, overshoot=0.02)(
        float_twin, x, y, epsilons=EPS[norm]
    )
    cls = fb.attacks.L2DeepFoolAttack if norm == "l2" else fb.attacks.LinfDeepFoolAttack
    fmodel = fb.PyTorchModel(float_twin.model, bounds=(0, 1))
    attack = cls(steps=50, candidates=10, overshoot=0.02, loss="logits")
    _, clipped, success = attack(fmodel, _float(x), torch.from_numpy(y), epsilons=EPS[norm])
    # the same algorithm (foolbox clips every iterate as we do): float32 rounding only,
    # measured max |Δ| 1.2e-7 (L2) and 6e-8 (L∞)
    for e in range(len(EPS[norm])):
        np.testing.assert_allclose(ours.adversarial[e], clipped[e].numpy(), atol=1e-5, rtol=0)
        np.testing.assert_array_equal(ours.success[e], success[e].numpy())
    assert ours.success[0].all()  # unbounded DeepFool breaks every image of the float net


class Affine(nn.Module):
    def __init__(self, weight: torch.Tensor, bias: torch.Tensor):
        super().__init__()
        self.weight, self.bias = nn.Parameter(weight), nn.Parameter(bias)

    def forward(self, x):
        return x.flatten(1) @ self.weight.T + self.bias


def _affine_twin(classes: int, seed: int) -> Twin:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(classes, 16, generator=g, dtype=torch.float64).float()
    return Twin(Affine(w, torch.zeros(classes)), (1, 4, 4), classes, name="affine")


def _reference(model: Affine, x0: np.ndarray, norm: str, overshoot: float, steps: int):
    """The reference loop in float64 numpy on a two-class affine model, clipped iterates."""
    w = (model.weight[1] - model.weight[0]).detach().double().numpy()
    b = float(model.bias[1] - model.bias[0])
    label = int((x0 @ w + b) > 0)
    sign = 1.0 if label == 0 else -1.0  # Z_k − Z_k̂ = sign·(w·x + b), w' = sign·w
    x, total = x0.copy(), np.zeros_like(x0)
    for i in range(steps):
        f = sign * (x @ w + b)
        if int(x @ w + b > 0) != label:
            return x, i
        dual = np.linalg.norm(w) if norm == "l2" else np.abs(w).sum()
        d = abs(f) / (dual + 1e-8) + 1e-4
        step = d * sign * w / (np.linalg.norm(w) + 1e-8) if norm == "l2" else d * np.sign(sign * w)
        total = total + step
        x = np.clip(x0 + (1 + overshoot) * total, 0, 1)
    return x, (steps if int(x @ w + b > 0) != label else -1)


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_affine_single_step_is_the_overshot_projection(norm):
    # mid-grey image, small weights: the boundary is reached without touching the box, so one
    # step crosses: δ = (1 + η)·(|f|/‖w‖ + 1e-4)·w/‖w‖ (L∞: ·sign(w), with ‖w‖₁ as distance)
    twin = _affine_twin(2, seed=3)
    model = twin.model
    x = np.full((1, 1, 4, 4), 128, dtype=np.uint8)
    x0 = x.reshape(1, -1)[0] / 255.0
    w = (model.weight[1] - model.weight[0]).detach().double().numpy()
    b = float(model.bias[1] - model.bias[0])
    with torch.no_grad():
        label = int(twin(_float(x)).argmax(1))
    f = x0 @ w + b
    w_signed = w if label == 0 else -w
    if norm == "l2":
        expect = 1.02 * (abs(f) / np.linalg.norm(w) + 1e-4) * w_signed / np.linalg.norm(w)
    else:
        expect = 1.02 * (abs(f) / np.abs(w).sum() + 1e-4) * np.sign(w_signed)
    assert np.all(np.abs(x0 + expect - 0.5) < 0.5)  # the box does not bind
    r = DeepFool(norm, steps=5)(twin, x, np.array([label]))
    delta = r.adversarial[0, 0].reshape(-1) - x0
    np.testing.assert_allclose(delta, expect, atol=2e-6, rtol=1e-5)
    assert r.first_success[0, 0] == 1 and r.success[0, 0]
    assert r.queries[0, 0] == 1  # one iteration, one candidate gradient
    # without overshoot the step lands 1e-4 (in distance) beyond the hyperplane
    r0 = DeepFool(norm, steps=5, overshoot=0.0)(twin, x, np.array([label]))
    delta0 = r0.adversarial[0, 0].reshape(-1) - x0
    np.testing.assert_allclose(delta0, expect / 1.02, atol=2e-6, rtol=1e-5)


def _overshoot_after_loop(model, x0, norm, overshoot, steps):
    """The misreading of cleverhans#1008: iterate x₀ + r_tot, overshoot only the result."""
    w = (model.weight[1] - model.weight[0]).detach().double().numpy()
    b = float(model.bias[1] - model.bias[0])
    x, total = x0.copy(), np.zeros_like(x0)
    for _ in range(steps):
        f = x @ w + b
        if f > 0:
            break
        dual = np.linalg.norm(w) if norm == "l2" else np.abs(w).sum()
        d = abs(f) / dual + 1e-4
        total = total + (d * w / np.linalg.norm(w) if norm == "l2" else d * np.sign(w))
        x = np.clip(x0 + total, 0, 1)
    return np.clip(x0 + (1 + overshoot) * total, 0, 1)


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_affine_overshoot_applies_to_the_total_unclipped_perturbation(norm):
    # a bright image whose push runs into the box: the clipped iterate falls short, further
    # iterations follow, and x_i = clip(x₀ + (1 + η)·r_tot) with r_tot itself never clipped
    twin = _affine_twin(2, seed=0)
    model = twin.model
    with torch.no_grad():
        model.weight[1] = model.weight[0] + torch.linspace(1.0, 2.0, 16)
        model.bias[1] = model.bias[0] - 24 * 0.96  # the boundary is at 0.96 uniform
    x = np.where(np.arange(16) % 2 == 0, 250, 200).astype(np.uint8).reshape(1, 1, 4, 4)
    x0 = x.reshape(-1) / 255.0
    expect, iters = _reference(model, x0, norm, 0.02, 20)
    assert iters > 1  # the box made DeepFool iterate (11 for L2, 9 for L∞)
    r = DeepFool(norm, steps=20)(twin, x, np.array([0]))
    np.testing.assert_allclose(r.adversarial[0, 0].reshape(-1), expect, atol=1e-5)
    assert r.first_success[0, 0] == iters
    assert r.queries[0, 0] == iters  # one candidate gradient per iteration
    # overshooting only after the loop lands elsewhere (measured 3e-3 away)
    other = _overshoot_after_loop(model, x0, norm, 0.02, 20)
    assert np.abs(other - expect).max() > 1e-3


def test_thresholds_iterations_and_traces(float_twin, correct_digits):
    x, y = correct_digits
    eps = EPS["l2"]
    r = DeepFool("l2", steps=20)(float_twin, x, y, epsilons=eps)
    assert r.success[0].mean() >= 0.9  # measured 100 % within 20 iterations
    clean = x[None].astype(np.float64) / 255
    for e, radius in enumerate(eps):
        radius = np.inf if radius is None else radius
        dist = r.distortion["l2"][e]
        assert (dist[r.success[e]] <= radius * (1 + 1e-6) + 1e-7).all()
        assert r.adversarial[e].min() >= 0 and r.adversarial[e].max() <= 1
        # where the unbounded adversarial is inside ε it is returned unchanged
        inside = r.distortion["l2"][0] <= radius
        np.testing.assert_array_equal(r.adversarial[e][inside], r.adversarial[0][inside])
        # first_success agrees with success at every ε
        np.testing.assert_array_equal(r.first_success[e] >= 0, r.success[e])
    np.testing.assert_array_equal(r.adversarial[1], clean[0].astype(np.float32))  # ε = 0
    assert not r.success[1].any()
    # success rises with ε
    assert (np.diff(r.success[1:].sum(1)) >= 0).all()
    # iterations: one run of 20 gives the runs of 1 and 5 (DeepFool does not look ahead)
    for steps in (1, 5):
        short = DeepFool("l2", steps=steps)(float_twin, x, y)
        np.testing.assert_array_equal(short.success[0], r.success_at(steps)[0])
        assert short.accuracy_at(steps)[0] == r.accuracy_at(steps)[0]
        done = short.success[0]
        np.testing.assert_array_equal(short.adversarial[0][done], r.adversarial[0][done])
    acc = np.array([r.accuracy_at(i)[0] for i in (1, 5, 10, 20)])
    assert (np.diff(acc) <= 0).all() and acc[-1] == 1 - r.success_rate[0]
    # the norm trace: [E, steps, N], ending at the distortion
    trace = r.traces["norm"]
    assert trace.shape == (len(eps), 20, len(y))
    np.testing.assert_allclose(trace[0, -1], r.distortion["l2"][0], rtol=1e-5, atol=1e-6)
    # queries: candidates − 1 gradients per iteration run
    ran = np.where(r.first_success[0] >= 0, r.first_success[0], 20)
    np.testing.assert_array_equal(r.queries[0], 9 * ran)


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_snapshots_give_the_shorter_runs(float_twin, correct_digits, norm):
    if not hasattr(WhiteBoxAttack, "snapshot_steps"):
        pytest.skip("this base has no snapshots")
    x, y = correct_digits
    eps = [None, EPS[norm][3]]
    r = DeepFool(norm, steps=10)(float_twin, x, y, epsilons=eps, snapshots=[1, 5])
    for steps in (1, 5):
        short = DeepFool(norm, steps=steps)(float_twin, x, y, epsilons=eps)
        adv, pred, _ = r.snapshots[steps]
        np.testing.assert_array_equal(adv, short.adversarial)
        np.testing.assert_array_equal(pred, short.pred)
        np.testing.assert_array_equal(r.at(steps, "steps").success, short.success)
        np.testing.assert_array_equal(r.at(steps, "steps").queries, short.queries)
    with pytest.raises(AttackError, match="snapshot"):
        DeepFool(norm, steps=4)(float_twin, x, y, snapshots=[5])


def test_deterministic_and_already_misclassified(float_twin, digits_test, correct_digits):
    x, y = digits_test
    a = DeepFool("linf", steps=10)(float_twin, x[:16], y[:16], seed=0)
    b = DeepFool("linf", steps=10)(float_twin, x[:16], y[:16], seed=7)
    np.testing.assert_array_equal(a.adversarial, b.adversarial)
    np.testing.assert_array_equal(a.first_success, b.first_success)
    # a wrong label: the image counts as already adversarial and stays unchanged
    x, y = correct_digits
    wrong = (y[:4] + 1) % 10
    r = DeepFool("l2", steps=10)(float_twin, x[:4], wrong)
    clean_ok = r.clean_pred != wrong
    assert clean_ok.all()
    np.testing.assert_array_equal(r.first_success[0], 0)
    np.testing.assert_array_equal(r.adversarial[0], x[:4].astype(np.float32) / 255)
    assert (r.queries == 0).all()


def test_bad_input():
    with pytest.raises(AttackError, match="unknown norm"):
        DeepFool("l1")
    with pytest.raises(AttackError, match="steps"):
        DeepFool("l2", steps=0)
    with pytest.raises(AttackError, match="candidates"):
        DeepFool("l2", candidates=1)
    with pytest.raises(AttackError, match="overshoot"):
        DeepFool("l2", overshoot=-0.1)
    with pytest.raises(AttackError, match="overshoot"):
        DeepFool("l2", overshoot=float("nan"))
    with pytest.raises(AttackError, match="batch_size"):
        DeepFool("l2", batch_size=0)
    twin = _affine_twin(3, seed=1)
    x = np.full((2, 1, 4, 4), 100, dtype=np.uint8)
    with pytest.raises(AttackError, match="untargeted"):
        DeepFool()(twin, x, np.array([0, 1]), targets=np.array([1, 2]))
    with pytest.raises(AttackError, match="must be a finite number|>= 0"):
        DeepFool()(twin, x, np.array([0, 1]), epsilons=[-1.0])
    params = DeepFool("linf", steps=20).params
    assert params["norm"] == "linf" and params["steps"] == 20 and params["overshoot"] == 0.02
    assert params["candidates"] == 10
