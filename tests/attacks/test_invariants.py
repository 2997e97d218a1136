"""Table-driven invariants over every attack of the suite, on one trained float network.

For each attack, at small settings: ‖δ‖ ≤ ε in the attack's norm, images in [0, 1] and, once
scored on an executable, on the uint8 grid inside the ball; ε = 0 changes nothing; the same
seed gives identical adversarials; a large ε really breaks the network (never a no-op).
"""

from __future__ import annotations

import numpy as np
import pytest

from hwbed.attacks import AttackError, make_attack, px, score_on
from hwbed.attacks.base import WhiteBoxAttack
from hwbed.attacks.label_only import LabelOnly
from hwbed.attacks.registry import attack_class
from hwbed.ir.executable import TorchTwin

# name, constructor parameters, a large ε, the success rate it must reach there
TABLE = [
    ("fgsm", {}, px(64), 0.6),
    ("pgd", {"norm": "linf", "steps": 10}, px(32), 0.8),
    ("pgd", {"norm": "l2", "steps": 10}, 2.0, 0.8),
    ("cw", {"binary_search_steps": 3, "steps": 100}, 2.0, 0.8),
    ("deepfool", {"norm": "l2", "steps": 20}, 2.0, 0.9),
    ("deepfool", {"norm": "linf", "steps": 20}, px(64), 0.9),
    ("localsearch", {"rounds": 40}, px(64), 0.7),
    ("genattack", {"generations": 100, "population": 6}, px(48), 0.5),
    ("hopskipjump", {"steps": 5, "initial_gradient_eval_steps": 50}, 2.0, 0.9),
]
IDS = [f"{name}-{params.get('norm', '')}" for name, params, _, _ in TABLE]


def _model(name, float_twin):
    if issubclass(attack_class(name), WhiteBoxAttack):
        return float_twin
    exe = TorchTwin(float_twin.model, "twin-u8", (1, 8, 8), 10)
    return LabelOnly(exe) if name == "hopskipjump" else exe


@pytest.fixture(scope="module")
def runs(float_twin, correct_digits):
    """Every attack of the table at ε = 0 and at its large ε, twice with one seed."""
    x, y = correct_digits
    x, y = x[:16], y[:16]
    out = {}
    for (name, params, eps, _), key in zip(TABLE, IDS, strict=True):
        attack = make_attack(name, **params)
        model = _model(name, float_twin)
        first = attack(model, x, y, [0.0, eps], seed=1)
        again = attack(model, x, y, [0.0, eps], seed=1)
        out[key] = (attack, model, first, again)
    return out, x


@pytest.mark.parametrize("key", IDS)
def test_within_the_ball_and_in_range(runs, key):
    attack, _, r, _ = runs[0][key]
    adv = r.adversarial.astype(np.float64) / (255.0 if r.adversarial.dtype == np.uint8 else 1)
    assert adv.min() >= 0 and adv.max() <= 1
    bound = np.asarray(r.epsilons)[:, None] * (1 + 1e-6) + 1e-9
    ok = r.success if not attack.bounded else np.ones_like(r.success)
    assert (r.distortion[r.norm][ok] <= np.broadcast_to(bound, ok.shape)[ok]).all()


@pytest.mark.parametrize("key", IDS)
def test_eps_zero_changes_nothing(runs, key):
    (_, _, r, _), x = runs[0][key], runs[1]
    adv = r.adversarial[0]
    expect = x if adv.dtype == np.uint8 else x / 255.0
    np.testing.assert_array_equal(adv, expect.astype(adv.dtype))
    assert not r.success[0].any()


@pytest.mark.parametrize("key", IDS)
def test_same_seed_same_adversarials(runs, key):
    _, _, a, b = runs[0][key]
    np.testing.assert_array_equal(a.adversarial, b.adversarial)
    np.testing.assert_array_equal(a.queries, b.queries)


@pytest.mark.parametrize("key,floor", [(k, row[3]) for k, row in zip(IDS, TABLE, strict=True)])
def test_really_breaks_the_network_at_a_large_eps(runs, key, floor):
    _, _, r, _ = runs[0][key]
    assert r.clean_accuracy == 1.0
    assert r.success_rate[1] >= floor, f"{key}: {r.success_rate[1]:.2f} < {floor}"


@pytest.mark.parametrize("key", IDS)
def test_on_the_grid_inside_the_ball_where_it_reaches_hardware(runs, float_twin, key):
    attack, _, r, _ = runs[0][key]
    hw = score_on(r, TorchTwin(float_twin.model, "hw", (1, 8, 8), 10))
    assert hw.adversarial.dtype == np.uint8
    bound = np.asarray(r.epsilons)[:, None] * (1 + 1e-6) + 1e-9
    ok = r.success if not attack.bounded else np.ones_like(r.success)
    assert (hw.distortion[r.norm][ok] <= np.broadcast_to(bound, ok.shape)[ok]).all()


@pytest.mark.parametrize(
    "name,params", [("localsearch", {}), ("genattack", {}), ("hopskipjump", {})]
)
@pytest.mark.parametrize("budget", [0, -5])
def test_a_budget_of_zero_is_refused(name, params, budget):
    with pytest.raises(AttackError, match="budget must be a positive integer"):
        make_attack(name, budget=budget, **params)


def test_unknown_attack_and_parameter_name_the_choices():
    with pytest.raises(AttackError, match="unknown attack 'pgdx'; choose one of fgsm, pgd"):
        make_attack("pgdx")
    with pytest.raises(AttackError, match="pgd: unknown parameter 'step'; choose from norm, steps"):
        make_attack("pgd", norm="linf", step=3)


def test_score_based_attacks_refuse_a_label_only_executable(float_twin, correct_digits):
    x, y = correct_digits
    board = LabelOnly(TorchTwin(float_twin.model, "twin", (1, 8, 8), 10))
    for name in ("localsearch", "genattack"):
        with pytest.raises(AttackError, match="returns labels only.*hopskipjump"):
            make_attack(name)(board, x, y, [px(8)])
