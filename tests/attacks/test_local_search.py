"""LocalSearch (LocSearchAdv): PERT and CYCLIC in [LB, UB], the clipped neighbourhood, pixel
selection both ways, accumulation across rounds and the exclusion, queries per round, one
oracle call per step for all images, stopping, budget, ε-ball and grid, determinism, and
success on a trained model."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import scorers

from hwbed.attacks.inputs import AttackError, px
from hwbed.attacks.local_search import LB, UB, LocalSearch, cyclic, in_top_k, neighbourhood, pert
from hwbed.ir.executable import TorchTwin

SHAPE = (1, 10, 10)


Scorer = functools.partial(scorers.Scorer, shape=SHAPE)


def unbreakable(x):
    """Class 0 ahead by at least 4 whatever the pixels (|s| ≤ 2); its probability still
    moves with them."""
    s = x @ (np.linspace(-1.0, 1.0, x.shape[1]) * 4.0 / x.shape[1])
    return np.stack([8.0 + s, np.zeros(len(x)), -s], axis=1)


def contrasted(n, seed=0, shape=SHAPE):
    """Pixels away from mid-grey (where CYCLIC by 1.5 would barely move them) and from 0
    and 255 (where PERT could not move them)."""
    rng = np.random.default_rng(seed)
    dark = rng.integers(1, 60, (n, *shape))
    bright = rng.integers(196, 255, (n, *shape))
    return np.where(rng.random((n, *shape)) < 0.5, dark, bright).astype(np.uint8)


def changed_pixels(adv, clean):
    """[N] number of pixel locations (any channel) where ``adv`` differs from ``clean``."""
    return (adv != clean).any(axis=1).reshape(len(adv), -1).sum(axis=1)


# --- PERT, CYCLIC, the neighbourhood ---------------------------------------------------


def test_cyclic_stays_in_bounds_and_wraps():
    rng = np.random.default_rng(0)
    v = rng.uniform(LB, UB, 10_000)
    for r in (0.0, 0.5, 1.0, 1.5, 2.0, *rng.uniform(0, 2, 5)):
        out = cyclic(r, v)
        assert (out >= LB).all() and (out <= UB).all()
    np.testing.assert_allclose(
        cyclic(1.5, np.array([0.4, -0.4, 0.2, 0.5])), [-0.4, 0.4, 0.3, -0.25]
    )
    np.testing.assert_allclose(cyclic(0.5, np.array([0.4])), [0.2])
    np.testing.assert_allclose(cyclic(2.0, np.array([UB, LB])), [0.0, 0.0])


def test_pert_is_p_times_the_sign():
    v = np.array([-0.3, 0.2, -0.001, 0.5])
    np.testing.assert_array_equal(pert(v, 10.0), [-10.0, 10.0, -10.0, 10.0])


def test_neighbourhood_is_a_square_clipped_to_the_image():
    d = 2
    one = np.zeros((3, 12, 12), dtype=bool)
    one[0, 6, 6] = True  # centre: (2d+1)²
    one[1, 0, 0] = True  # corner: (d+1)²
    one[2, 0, 6] = True  # edge: (d+1)(2d+1)
    out = neighbourhood(one, d)
    assert out.reshape(3, -1).sum(axis=1).tolist() == [25, 9, 15]
    rows, cols = np.nonzero(out[0])
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (4, 8, 4, 8)
    two = np.zeros((1, 12, 12), dtype=bool)
    two[0, 3, 3] = two[0, 5, 5] = True  # overlapping squares: the union
    assert neighbourhood(two, d).sum() == 2 * 25 - 9
    assert neighbourhood(one[:1], 20).all()  # larger than the image: all of it


def test_in_top_k():
    s = np.array([[3.0, 2.0, 1.0, 0.0], [0.0, 1.0, 1.0, 2.0]])
    assert in_top_k(s, np.array([1, 1]), 1).tolist() == [False, False]
    assert in_top_k(s, np.array([1, 1]), 2).tolist() == [True, True]  # tie: lower index
    assert in_top_k(s, np.array([2, 2]), 2).tolist() == [False, False]


# --- the attack ------------------------------------------------------------------------


def test_select_min_and_max_pick_the_lowest_and_highest_scores():
    """All 100 pixels are candidates; PERT raises a bright pixel to 255, which lowers the
    true-class logit by w_j, so "min" must change the t pixels of largest w, "max" the
    t of smallest."""
    hw = SHAPE[1] * SHAPE[2]
    w = np.random.default_rng(1).permutation(np.linspace(0.1, 2.0, hw))

    def fn(x):  # class 0 ahead by about 8
        return np.stack([90.0 - x @ w, np.zeros(len(x)), np.zeros(len(x))], axis=1)

    x = np.full((1, *SHAPE), 200, dtype=np.uint8)
    kw = {"rounds": 1, "t": 4, "seed_ratio": 1.0, "max_seeds": hw, "max_candidates": hw}
    for select, expect in (("min", np.argsort(w)[-4:]), ("max", np.argsort(w)[:4])):
        attack = LocalSearch(select=select, **kw)
        r = attack(Scorer(fn), x, [0], epsilons=[1.0])
        changed = np.flatnonzero(r.adversarial[0, 0, 0] != 200)
        assert sorted(changed) == sorted(expect), select
        assert r.params["select"] == select
        # CYCLIC: 1.5 · (200/255 - 0.5) = 0.4265, inside [LB, UB]: 0.9265 · 255 -> 236
        assert (r.adversarial[0, 0, 0].reshape(-1)[changed] == 236).all()
    with pytest.raises(AttackError, match="select"):
        LocalSearch(select="mid")


def test_perturbations_accumulate_across_rounds():
    exe = Scorer(unbreakable)
    x = contrasted(2)
    run = lambda rounds: LocalSearch(rounds=rounds, t=3, d=2)(  # noqa: E731
        exe, x, [0, 0], epsilons=[1.0], seed=5
    )
    one, four = run(1), run(4)
    assert (changed_pixels(one.adversarial[0], x) == 3).all()
    # four rounds of 3 pixels each, none picked twice (they sit out 30 rounds)
    assert (changed_pixels(four.adversarial[0], x) == 12).all()
    # round 1 is the same in both runs, and its pixels stay as round 1 left them
    moved = one.adversarial[0] != x
    np.testing.assert_array_equal(four.adversarial[0][moved], one.adversarial[0][moved])


def test_without_exclusion_pixels_may_be_picked_again():
    hw = SHAPE[1] * SHAPE[2]
    w = np.full(hw, 0.01)
    w[0] = 10.0

    def fn(x):  # pixel 0 dominates: darkening it stays the best move while it is dark
        return np.stack([3.0 + x @ w, np.zeros(len(x)), np.zeros(len(x))], axis=1)

    x = np.full((1, *SHAPE), 60, dtype=np.uint8)  # CYCLIC: 60 -> 26 -> 230 (wrapped)
    kw = {"rounds": 6, "t": 1, "seed_ratio": 1.0, "max_seeds": hw, "max_candidates": hw}
    again = LocalSearch(exclude=0, **kw)(Scorer(fn), x, [0], epsilons=[1.0])
    apart = LocalSearch(exclude=30, **kw)(Scorer(fn), x, [0], epsilons=[1.0])
    assert again.adversarial[0, 0, 0, 0, 0] == 230  # pixel 0 in rounds 1 and 2
    assert changed_pixels(again.adversarial[0], x)[0] == 5
    assert changed_pixels(apart.adversarial[0], x)[0] == 6
    assert apart.adversarial[0, 0, 0, 0, 0] == 26
    assert apart.params["exclude"] == 30 and LocalSearch().params["exclude"] == 30


def test_queries_per_round_at_most_cap_plus_one_and_two_calls_per_round():
    exe = Scorer(unbreakable)
    n, rounds, cap = 3, 5, 7
    r = LocalSearch(rounds=rounds, max_candidates=cap, d=5)(
        exe, contrasted(n), [0] * n, epsilons=[px(32)]
    )
    assert (r.first_success[0] == -1).all()
    q = r.queries[0]
    assert (q <= 1 + rounds * (cap + 1)).all() and (q > 1 + rounds).all()
    # the clean images, then per round one call with every image's candidates and one with
    # every image's new Î
    assert len(exe.batches) == 1 + 2 * rounds
    assert all(b <= n * cap for b in exe.batches[1::2])
    assert exe.batches[1] == n * cap  # round 1: the cap of the 10 % seed set (10 pixels)
    assert all(b <= n for b in exe.batches[2::2])


def test_large_requests_go_in_groups_of_whole_images_with_the_same_result():
    x = contrasted(4)
    plain = LocalSearch(rounds=3)(Scorer(unbreakable), x, [0] * 4, epsilons=[px(16)], seed=2)
    split = LocalSearch(rounds=3)
    split.max_request_bytes = 1500  # 15 candidates of 100 bytes: one image per call
    exe = Scorer(unbreakable)
    grouped = split(exe, x, [0] * 4, epsilons=[px(16)], seed=2)
    np.testing.assert_array_equal(grouped.adversarial, plain.adversarial)
    np.testing.assert_array_equal(grouped.queries, plain.queries)
    assert exe.batches[1:5] == [10, 10, 10, 10]  # round 1: one call per image's 10 seeds


def test_uncapped_round_queries_the_whole_neighbourhood():
    exe = Scorer(unbreakable)
    r = LocalSearch(rounds=2, t=1, d=1, max_candidates=1000)(
        exe, contrasted(1), [0], epsilons=[1.0]
    )
    # round 2 scores the 3x3 square around the one pixel of round 1 (or its clipped part),
    # less that pixel itself (it sits out the next rounds)
    assert exe.batches[3] in (3, 5, 8)
    assert r.queries[0, 0] <= 1 + 10 + 1 + exe.batches[3] + 1


def test_a_succeeded_image_stops_querying():
    x = contrasted(2)
    ref = x[0].reshape(-1) / 255.0

    def fn(z):  # image 0 flips on any change; image 1 (bright) never does
        easy = 50.0 * np.abs(z - ref).sum(axis=1)
        robust = z.mean(axis=1) > 0.8
        return np.stack([1.0 + 1000.0 * robust, easy * ~robust, np.zeros(len(z))], axis=1)

    x[1] = 250

    exe = Scorer(fn)
    r = LocalSearch(rounds=4)(exe, x, [0, 0], epsilons=[px(16)])
    assert r.first_success[0].tolist() == [1, -1]
    assert r.success[0].tolist() == [True, False]
    assert r.queries[0, 0] == 1 + 10 + 1
    assert exe.batches[:3] == [2, 20, 2]  # the clean images, then round 1: candidates, Î
    assert all(b == 1 for b in exe.batches[4::2])  # later rounds check image 1 only
    labels = r.traces["label"][0]
    assert r.traces["prob"].shape == (1, 4, 2)
    assert labels.shape == (4, 2) and (labels[:, 0] == 1).all() and (labels[:, 1] == 0).all()


def test_k_misclassification():
    x = contrasted(1)
    ref = x.reshape(1, -1) / 255.0

    def fn(z):  # the more the image changes, the more classes 1 then 2 pass label 0
        c = np.abs(z - ref).sum(axis=1)
        return np.stack([np.ones(len(z)), 0.2 * c, 0.2 * c - 2.0], axis=1)

    first = {}
    for k in (1, 2):
        r = LocalSearch(rounds=50, k=k)(Scorer(fn), x, [0], epsilons=[1.0])
        first[k] = r.first_success[0, 0]
        assert first[k] > 0, k
        s = Scorer(fn)(r.adversarial[0])
        assert not in_top_k(s, np.array([0]), k)[0]
        assert r.params["k"] == k
    assert first[2] > first[1]  # two classes must pass the label, not one
    with pytest.raises(AttackError, match="k"):
        LocalSearch(k=3)(Scorer(fn), x, [0], epsilons=[1.0])


def test_budget_is_respected_and_the_image_flagged():
    exe = Scorer(unbreakable)
    x = contrasted(3)
    r = LocalSearch(rounds=100, budget=40)(exe, x, [0] * 3, epsilons=[px(16)])
    assert (r.queries[0] <= 40).all() and r.exhausted[0].all()
    assert (r.first_success[0] == -1).all()
    # the returned image is one the oracle answered for, with the label it answered
    np.testing.assert_array_equal(np.argmax(exe(r.adversarial[0]), axis=1), r.pred[0])
    assert (changed_pixels(r.adversarial[0], x) > 0).all()


def test_eps_zero_changes_nothing():
    exe = Scorer(unbreakable)
    x = contrasted(2)
    r = LocalSearch(rounds=10)(exe, x, [0, 0], epsilons=[0.0, px(0.4)])
    np.testing.assert_array_equal(r.adversarial, np.stack([x, x]))
    np.testing.assert_array_equal(r.queries, 1)


def test_within_eps_on_the_grid_and_in_range():
    x = np.random.default_rng(3).integers(0, 256, (3, 3, 10, 10), dtype=np.uint8)
    exe = Scorer(unbreakable, shape=(3, 10, 10))
    eps = [px(8), px(16.5), px(32)]
    r = LocalSearch(rounds=8)(exe, x, [0] * 3, epsilons=eps)
    assert r.adversarial.dtype == np.uint8
    delta = np.abs(r.adversarial.astype(int) - x.astype(int)[None]).reshape(3, -1).max(axis=1)
    assert delta.tolist() == [8, 16, 32]
    assert (r.distortion["linf"] <= np.array(eps)[:, None] + 1e-12).all()


def test_same_seed_same_adversarials_other_seed_differs():
    exe = Scorer(unbreakable)
    x = contrasted(3)
    run = lambda seed: LocalSearch(rounds=6)(  # noqa: E731
        exe, x, [0] * 3, epsilons=[px(32)], seed=seed
    )
    a, b, c = run(1), run(1), run(2)
    np.testing.assert_array_equal(a.adversarial, b.adversarial)
    np.testing.assert_array_equal(a.queries, b.queries)
    assert not np.array_equal(a.adversarial, c.adversarial)


def test_parameters_are_recorded_and_checked():
    p = LocalSearch().params
    assert (p["rounds"], p["t"], p["d"], p["r"], p["k"]) == (150, 5, 5, 1.5, 1)
    assert p["p"] == 10.0 and p["select"] == "min" and p["space"] == [LB, UB]
    assert (p["seed_ratio"], p["max_seeds"], p["max_candidates"]) == (0.1, 128, 128)
    for bad in ({"r": 2.5}, {"t": 0}, {"seed_ratio": 0.0}, {"exclude": -1}, {"p": 0}):
        with pytest.raises(AttackError):
            LocalSearch(**bad)


def test_succeeds_on_the_trained_digits_model(float_twin, correct_digits):
    x, y = correct_digits
    x, y = x[:16], y[:16]
    exe = TorchTwin(float_twin.model, "twin", (1, 8, 8), 10)
    r = LocalSearch(rounds=50)(exe, x, y, epsilons=[px(32), px(64)], seed=0)
    rate = r.success_rate
    assert rate[0] >= 0.4 and rate[1] >= 0.75, rate
    assert (r.distortion["linf"] <= np.array([px(32), px(64)])[:, None] + 1e-12).all()
    assert (r.queries <= 1 + 50 * (64 + 1)).all()  # 8x8: at most 64 candidates a round
    assert r.success_at(50).mean(axis=1).tolist() == r.success.mean(axis=1).tolist()
