"""GenAttack: the reference's operators (fitness, selection, crossover, mutation, elitism,
adaptive schedule), query accounting with the oracle's cache, one oracle call per
generation, stopping, budget, ε-ball and grid, determinism, and success on a trained model."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import scorers

from hwbed.attacks.genattack import (
    GenAttack,
    Scratch,
    breed,
    crossover,
    fitness,
    margin,
    mutate,
    plateau_step,
    sample_parents,
    schedule,
    softmax,
)
from hwbed.attacks.inputs import AttackError, px
from hwbed.attacks.oracle import Oracle
from hwbed.ir.executable import TorchTwin

SHAPE = (1, 6, 6)


Scorer = functools.partial(scorers.Scorer, shape=SHAPE)


def unbreakable(x):
    """Class 0 far ahead whatever the pixels (|x·w| < 10); the others move with them, and
    p_t stays above the fitness's 1e-30 guard (no success ever, but a useful fitness)."""
    w = np.linspace(-1.0, 1.0, x.shape[1])
    return np.stack([np.full(len(x), 30.0), x @ w, -(x @ w)], axis=1)


def grey(n, seed=0, shape=SHAPE):
    """Mid-range pixels, so ±ε noise is never clipped away by the box."""
    return np.random.default_rng(seed).integers(96, 160, (n, *shape), dtype=np.uint8)


# --- the operators ---------------------------------------------------------------------


def test_fitness_is_log_target_minus_log_sum_of_others():
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.0, 1.0, 0.0]])
    t = np.array([0, 2, 0])
    f = fitness(probs, t)
    expect = [np.log(0.7) - np.log(0.3), np.log(0.8) - np.log(0.2), np.log(1e-30) - np.log(1.0)]
    np.testing.assert_allclose(f, expect, rtol=1e-12)
    # the 1e-30 guard keeps p_t = 0 finite; untargeted is the negation with the label
    assert np.isfinite(f).all()
    np.testing.assert_allclose(fitness(probs, t, targeted=False), -f)
    # probabilities are the softmax of the executable's scores
    z = np.array([[2.0, 1.0, -1.0]])
    np.testing.assert_allclose(softmax(z)[0], np.exp(z[0]) / np.exp(z[0]).sum())


def test_win_margin():
    probs = np.array([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3]])
    np.testing.assert_allclose(margin(probs, np.array([1, 1])), [-0.3, 0.0])
    # untargeted (label 0): best other minus the top
    np.testing.assert_allclose(margin(probs, np.array([0, 0]), targeted=False), [-0.3, 0.0])


def test_parents_are_drawn_from_pi():
    rng = np.random.default_rng(0)
    pi = np.array([[0.5, 0.3, 0.15, 0.05], [0.0, 0.0, 1.0, 0.0]])
    draws = sample_parents(pi, 40_000, rng)
    freq = np.stack([np.bincount(row, minlength=4) / row.size for row in draws])
    np.testing.assert_allclose(freq[0], pi[0], atol=0.01)
    np.testing.assert_array_equal(freq[1], pi[1])


def test_selection_is_softmax_of_fitness_over_temperature():
    f = np.array([[1.0, 0.5, 0.0]])
    pi = softmax(f / 0.1, axis=1)
    np.testing.assert_allclose(pi[0], np.exp(f[0] / 0.1) / np.exp(f[0] / 0.1).sum())


@pytest.mark.parametrize("pa_pi, pb_pi", [(0.8, 0.2), (0.3, 0.6)])
def test_crossover_takes_parent_a_with_probability_pi_a_over_pi_a_plus_pi_b(pa_pi, pb_pi):
    rng = np.random.default_rng(1)
    d = 200_000
    noise = np.stack([np.zeros(d), np.ones(d), np.full(d, 2.0)]).astype(np.float32)[None]
    pi = np.array([[pa_pi, pb_pi, 1.0 - pa_pi - pb_pi]])
    child = crossover(noise, pi, np.array([[0]]), np.array([[1]]), rng)[0, 0]
    assert set(np.unique(child)) <= {0.0, 1.0}  # coordinates are copied, not blended
    np.testing.assert_allclose(np.mean(child == 0.0), pa_pi / (pa_pi + pb_pi), atol=0.005)


def test_mutation_rate_and_range():
    rng = np.random.default_rng(2)
    children = np.zeros((2, 5, 20_000), dtype=np.float32)
    mutate(children, np.array([0.1, 0.6]), np.array([3.0, 0.5]), rng)
    changed = children != 0
    np.testing.assert_allclose(changed[0].mean(), 0.1, atol=0.01)
    np.testing.assert_allclose(changed[1].mean(), 0.6, atol=0.01)
    assert np.abs(children[0]).max() <= 3.0 + 1e-5 and np.abs(children[1]).max() <= 0.5 + 1e-6
    # uniform on (-step, step): mean |δ| = step / 2, symmetric
    np.testing.assert_allclose(np.abs(children[0][changed[0]]).mean(), 1.5, rtol=0.03)
    assert abs(children[0][changed[0]].mean()) < 0.05


def test_breed_keeps_the_elite_unmodified_and_makes_n_minus_1_children():
    rng = np.random.default_rng(3)
    noise = rng.normal(size=(3, 5, 40)).astype(np.float32)
    fit = rng.normal(size=(3, 5))
    elite = np.array([4, 0, 2])
    out = breed(noise, fit, elite, np.full(3, 1.0), np.full(3, 0.5), 0.1, rng, scratch=Scratch())
    assert out.shape == noise.shape
    np.testing.assert_array_equal(out[:, -1], noise[np.arange(3), elite])
    # ρ = 1: every child coordinate moved off its parents' values
    parents = noise[:, None, :, :]
    assert not np.isclose(out[:, :-1, None, :], parents).any(axis=2).any()


def test_adaptive_schedule_values():
    k = np.arange(6)
    for g in (1, 5, 10):
        rho, alpha = schedule(g, k, 0.005, 0.2)
        np.testing.assert_array_equal(rho, 1.0)  # the first 10 generations
        np.testing.assert_allclose(alpha, np.maximum(0.2, 0.4 * 0.9**k))
    rho, alpha = schedule(11, k, 0.005, 0.2)
    np.testing.assert_allclose(rho, np.maximum(0.005, 0.5 * 0.9**k))
    np.testing.assert_allclose(alpha, np.maximum(0.2, 0.4 * 0.9**k))
    np.testing.assert_allclose(alpha[:2], [0.4, 0.36])
    rho, alpha = schedule(11, np.array([30]), 0.005, 0.2)
    np.testing.assert_allclose([rho[0], alpha[0]], [0.5 * 0.9**30, 0.2])  # the floors
    rho, alpha = schedule(3, k, 0.05, 0.25, adaptive=False)
    np.testing.assert_array_equal(rho, 0.05)
    np.testing.assert_array_equal(alpha, 0.25)


def test_plateaus_after_100_or_300_generations_without_a_better_margin():
    for level, wait in ((-0.1, 100), (-0.5, 300)):
        best, count, plateaus = np.array([-1.0]), np.array([0]), np.array([0])
        best, count, plateaus = plateau_step(np.array([level]), best, count, plateaus)
        assert count[0] == 0 and best[0] == level  # an improvement resets the counter
        for _ in range(wait):
            best, count, plateaus = plateau_step(np.array([level]), best, count, plateaus)
        assert plateaus[0] == 0 and count[0] == wait
        best, count, plateaus = plateau_step(np.array([level]), best, count, plateaus)
        assert plateaus[0] == 1 and count[0] == 0


# --- the attack ------------------------------------------------------------------------


def dense(**kw):
    """Every coordinate mutates (ρ = 1), so no two members round to the same image."""
    kw = {"population": 4, "mutation_rate": 1.0, "alpha": 1.0, "adaptive": False, **kw}
    return GenAttack(**kw)


def test_queries_n_then_n_minus_1_per_generation_and_one_call_per_generation():
    exe = Scorer(unbreakable)
    x, g, n, pop = grey(3), 6, 3, 4
    r = dense(generations=g)(exe, x, np.zeros(n, int), epsilons=[px(32)], targets=[1, 2, 1])
    assert (r.first_success == -1).all()
    # the clean query, N in the first generation, N - 1 after (the elite is a cache hit)
    np.testing.assert_array_equal(r.queries[0], 1 + pop + (g - 1) * (pop - 1))
    # one executable call per generation for all images (plus the clean images first)
    assert exe.batches == [n, n * pop] + [n * (pop - 1)] * (g - 1)


def test_the_genetic_step_in_small_blocks_keeps_the_accounting():
    exe = Scorer(unbreakable)
    attack = dense(generations=5)
    attack.chunk_elements = 100  # one image (4 x 36 values) per block
    x = grey(3)
    r = attack(exe, x, [0] * 3, epsilons=[px(8)], targets=[1, 2, 1])
    np.testing.assert_array_equal(r.queries[0], 1 + 4 + 4 * 3)
    assert exe.batches == [3, 12, 9, 9, 9, 9]
    assert np.abs(r.adversarial[0].astype(int) - x).max() == 8


def test_requests_count_the_cached_elite():
    exe = Scorer(unbreakable)
    x, y, t = grey(2), np.zeros(2, int), np.array([1, 2])
    oracle = Oracle(exe, 2)
    clean_pred, _ = oracle.labels(np.arange(2), x)
    dense(generations=5)._run(oracle, x, y, t, px(16), np.random.default_rng(0), clean_pred)
    np.testing.assert_array_equal(oracle.requests, 1 + 5 * 4)
    np.testing.assert_array_equal(oracle.queries, 1 + 4 + 4 * 3)


def test_a_succeeded_image_stops_querying():
    x = grey(2)
    ref = x[0].reshape(-1) / 255.0

    def fn(z):  # image 0 flips to class 1 on any change; image 1 (brighter) never does
        easy = 50.0 * np.abs(z - ref).sum(axis=1)
        robust = (z.mean(axis=1) > 0.6) * 1000.0
        return np.stack([1.0 + robust, easy * (1 - (robust > 0)), np.zeros(len(z))], axis=1)

    x[1] = 250
    exe = Scorer(fn)
    r = dense(generations=8)(exe, x, [0, 0], epsilons=[px(16)], targets=[1, 2])
    assert r.first_success[0].tolist() == [1, -1]
    assert r.success[0].tolist() == [True, False] and r.pred[0, 0] == 1
    assert r.queries[0].tolist() == [1 + 4, 1 + 4 + 7 * 3]
    assert exe.batches == [2, 8] + [3] * 7  # image 0 sent nothing after generation 1
    # the label trace: the target from the success on, the label for the other
    labels = r.traces["label"][0]
    assert labels.shape == (8, 2)
    assert (labels[:, 0] == 1).all() and (labels[:, 1] == 0).all()
    np.testing.assert_array_equal(r.accuracy_at(1), [0.5])


def test_random_targets_differ_from_labels_and_equal_targets_are_refused():
    exe = Scorer(lambda z: np.pad(unbreakable(z), ((0, 0), (0, 2))), classes=5)
    x = grey(40)
    y = np.random.default_rng(0).integers(0, 5, 40)
    r = dense(generations=1)(exe, x, y, epsilons=[px(8)], seed=3)
    assert r.targeted and r.targets is not None
    assert (r.targets != y).all() and ((r.targets >= 0) & (r.targets < 5)).all()
    assert len(set(r.targets.tolist())) > 1
    with pytest.raises(AttackError, match="equals its label"):
        dense(generations=1)(exe, x, y, epsilons=[px(8)], targets=y)


def test_budget_is_respected_and_the_image_flagged():
    exe = Scorer(unbreakable)
    x = grey(3)
    r = dense(generations=50, budget=12)(exe, x, [0, 0, 0], epsilons=[px(16)], targets=[1, 1, 2])
    assert (r.queries[0] <= 12).all() and r.exhausted[0].all()
    assert (r.first_success[0] == -1).all()
    # the returned adversarial is one the oracle answered, with the label it answered
    np.testing.assert_array_equal(np.argmax(exe(r.adversarial[0]), axis=1), r.pred[0])
    assert np.isfinite(r.traces["fitness"][0][-1]).all()


def test_eps_zero_changes_nothing_and_costs_only_the_clean_query():
    exe = Scorer(unbreakable)
    x = grey(3)
    r = GenAttack(generations=20)(exe, x, [0, 0, 0], epsilons=[0.0, px(0.5)], targets=[1, 2, 1])
    np.testing.assert_array_equal(r.adversarial[0], x)
    np.testing.assert_array_equal(r.adversarial[1], x)  # below one grey level: the same
    np.testing.assert_array_equal(r.queries, 1)
    assert (r.first_success == -1).all()


def test_within_eps_on_the_grid_and_in_range():
    exe = Scorer(unbreakable)
    x = np.random.default_rng(4).integers(0, 256, (4, *SHAPE), dtype=np.uint8)
    eps = [px(8), px(8.7), px(12)]
    r = dense(generations=6)(exe, x, [0] * 4, epsilons=eps, targets=[1, 2, 1, 2])
    assert r.adversarial.dtype == np.uint8
    delta = np.abs(r.adversarial.astype(int) - x.astype(int)[None])
    assert (delta.reshape(3, -1).max(axis=1) == [8, 8, 12]).all()  # 8.7 px rounds down to 8
    assert (r.distortion["linf"] <= np.array(eps)[:, None] + 1e-12).all()


def test_same_seed_same_adversarials_other_seed_differs():
    exe = Scorer(unbreakable)
    x = grey(3)
    run = lambda seed: GenAttack(generations=15, population=5)(  # noqa: E731
        exe, x, [0, 0, 0], epsilons=[px(16)], targets=[1, 2, 1], seed=seed
    )
    a, b, c = run(7), run(7), run(8)
    np.testing.assert_array_equal(a.adversarial, b.adversarial)
    np.testing.assert_array_equal(a.traces["fitness"], b.traces["fitness"])
    assert not np.array_equal(a.adversarial, c.adversarial)


def test_elite_fitness_never_drops():
    """The elite survives unmodified (and its score comes from the cache), so the best
    fitness of an image can only grow from one generation to the next."""
    exe = Scorer(unbreakable)
    r = GenAttack(generations=40)(exe, grey(4), [0] * 4, epsilons=[px(16)], targets=[1, 2, 1, 2])
    fit = r.traces["fitness"][0]
    assert fit.shape == (40, 4)
    assert (np.diff(fit, axis=0) >= 0).all()
    assert (fit[-1] > fit[0]).all()


def test_untargeted_extension():
    def fn(z):  # class 0 loses to class 2 once the pixels brighten enough
        m = z.mean(axis=1)
        return np.stack([np.full(len(z), 0.5), np.zeros(len(z)), 20.0 * (m - 0.45)], axis=1)

    x = np.full((2, *SHAPE), 115, dtype=np.uint8)  # mean 0.451: class 0
    attack = GenAttack(generations=60, targeted=False, mutation_rate=0.5, adaptive=False)
    r = attack(Scorer(fn), x, [0, 0], epsilons=[px(16)])
    assert not r.targeted and r.targets is None and r.params["targeted"] is False
    assert r.success[0].all() and (r.pred[0] != 0).all() and (r.first_success[0] > 0).all()
    with pytest.raises(AttackError, match="untargeted"):
        attack(Scorer(fn), x, [0, 0], epsilons=[px(16)], targets=[1, 1])


def test_clean_already_at_the_target_is_first_success_zero():
    exe = Scorer(lambda z: np.stack([np.zeros(len(z)), np.ones(len(z)), np.zeros(len(z))], 1))
    r = GenAttack(generations=5)(exe, grey(2), [0, 2], epsilons=[px(8)], targets=[1, 0])
    assert r.first_success[0].tolist() == [0, -1]
    np.testing.assert_array_equal(r.adversarial[0, 0], grey(2)[0])


def test_parameters_are_recorded_and_checked():
    p = GenAttack().params
    assert p["population"] == 6 and p["adaptive"] is True and p["norm"] == "linf"
    assert p["mutation_rate"] == 0.005 and p["alpha"] == 0.2 and p["temperature"] == 0.1
    for bad in ({"population": 1}, {"mutation_rate": 0.0}, {"alpha": 2.0}, {"generations": 0}):
        with pytest.raises(AttackError):
            GenAttack(**bad)


def test_succeeds_on_the_trained_digits_model(float_twin, correct_digits):
    x, y = correct_digits
    x, y = x[:16], y[:16]
    exe = TorchTwin(float_twin.model, "twin", (1, 8, 8), 10)
    r = GenAttack(generations=100)(exe, x, y, epsilons=[px(32), px(48)], seed=0)
    rate = r.success_rate
    assert rate[0] >= 0.4 and rate[1] >= 0.6, rate
    assert (r.pred[r.success] == np.broadcast_to(r.targets, r.pred.shape)[r.success]).all()
    assert (r.distortion["linf"] <= np.array([px(32), px(48)])[:, None] + 1e-12).all()
    # accuracy to the original label falls with the generations
    acc = [r.accuracy_at(g)[1] for g in (1, 50, 100)]
    assert acc[0] >= 0.8 and acc[2] <= 0.4
