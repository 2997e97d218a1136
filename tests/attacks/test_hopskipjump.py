"""HopSkipJump (label queries only) and LabelOnly, the LabelSelect-board view of an executable."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from hwbed.attacks.base import BlackBoxAttack
from hwbed.attacks.hopskipjump import HopSkipJump
from hwbed.attacks.inputs import AttackError
from hwbed.attacks.label_only import LabelOnly
from hwbed.attacks.oracle import Oracle
from hwbed.ir.executable import BaseExecutable, TorchTwin


class Spy(BaseExecutable):
    """Passes batches to ``inner``; records the size and dtype of every batch it is sent."""

    def __init__(self, inner):
        super().__init__(inner.name, inner.input_shape, inner.num_classes)
        self.inner = inner
        self.returns = inner.returns
        self.batches: list[int] = []
        self.dtypes: set[str] = set()

    def __call__(self, images):
        self.dtypes.add(str(np.asarray(images).dtype))
        return super().__call__(images)

    def forward(self, pixels):
        self.batches.append(len(pixels))
        return self.inner(pixels)


class Constant(BaseExecutable):
    """The same scores for every image."""

    def __init__(self, scores):
        super().__init__("constant", (1, 8, 8), len(scores))
        self.scores = np.asarray(scores, dtype=np.float32)

    def forward(self, pixels):
        return np.tile(self.scores, (len(pixels), 1))


def _scores(twin, pixels):
    return TorchTwin(twin.model, "twin", (1, 8, 8), 10)(pixels)


@pytest.fixture(scope="module")
def board(float_twin):
    return LabelOnly(TorchTwin(float_twin.model, "twin", (1, 8, 8), 10))


@pytest.fixture(scope="module")
def l2_run(board, correct_digits):
    x, y = correct_digits
    return HopSkipJump("l2", steps=8, initial_gradient_eval_steps=50)(board, x[:8], y[:8], seed=0)


# -- LabelOnly ---------------------------------------------------------------------------------


def test_label_only_answers_rank_codes_of_the_top_k(float_twin, correct_digits):
    x, _ = correct_digits
    inner = TorchTwin(float_twin.model, "twin", (1, 8, 8), 10)
    inner.bit_exact = True
    scores = inner(x)
    top1, top3 = LabelOnly(inner), LabelOnly(inner, k=3)
    assert top1.returns == "labels" and top1.name == "labels:twin" and top1.bit_exact
    assert LabelOnly(TorchTwin(float_twin.model, "t", (1, 8, 8), 10)).bit_exact is False
    one = top1(x)
    assert one.dtype == np.float32 and one.shape == (len(x), 10)
    np.testing.assert_array_equal(one.argmax(1), scores.argmax(1))
    assert set(np.unique(one)) == {0.0, 1.0} and (one.sum(1) == 1).all()
    three = top3(x)
    order = np.argsort(-scores, axis=1)[:, :3]
    for rank, code in enumerate((3.0, 2.0, 1.0)):
        np.testing.assert_array_equal(three[np.arange(len(x)), order[:, rank]], code)
    assert ((three > 0).sum(1) == 3).all()
    # queries are counted per image, on the wrapper and (once each) on the inner executable
    assert top1.queries == len(x) and top3.queries == len(x)
    assert inner.queries == 3 * len(x)
    assert top1(x[0].astype(np.float32) / 255).shape == (1, 10)  # float k/255 images too


def test_label_only_ties_nesting_and_bad_k():
    tied = Constant([0.0, 5.0, 5.0, 1.0])
    np.testing.assert_array_equal(
        LabelOnly(tied, k=2)(np.zeros((2, 1, 8, 8), np.uint8))[0], [0, 2, 1, 0]
    )  # a tie goes to the lower index, as argmax
    nested = LabelOnly(LabelOnly(tied, k=1), k=3)
    np.testing.assert_array_equal(nested(np.zeros((1, 1, 8, 8), np.uint8))[0], [0, 3, 0, 0])
    assert nested.name == "labels:labels:constant"
    for k in (0, 5, 1.5, True):
        with pytest.raises(AttackError, match="k must be an integer"):
            LabelOnly(tied, k=k)
    with pytest.raises(AttackError, match="wraps an executable"):
        LabelOnly(object())


def test_score_based_attacks_refuse_label_only(board, correct_digits):
    with pytest.raises(AttackError, match="hopskipjump") as err:
        Oracle(board, 1).require_scores("genattack")
    assert "labels:twin" in str(err.value) and "genattack" in str(err.value)

    class NeedsScores(BlackBoxAttack):
        name = "needs-scores"

        @property
        def params(self):
            return {}

    x, y = correct_digits
    with pytest.raises(AttackError, match="hopskipjump"):
        NeedsScores()(board, x[:2], y[:2], epsilons=[0.1])
    assert HopSkipJump.scores_needed is False and HopSkipJump.bounded is False


# -- HopSkipJump on the digits network -----------------------------------------------------------


def test_l2_untargeted_succeeds_and_shrinks(l2_run, float_twin, correct_digits):
    r = l2_run
    x, y = correct_digits[0][:8], correct_digits[1][:8]
    assert r.attack == "hopskipjump" and r.norm == "l2" and np.isinf(r.epsilons).all()
    assert r.success.all() and r.success_rate[0] == 1.0
    adv = r.adversarial[0]
    assert adv.dtype == np.uint8 and adv.shape == x.shape
    # the labels it reports are the network's on the uint8 adversarials
    np.testing.assert_array_equal(_scores(float_twin, adv).argmax(1), r.pred[0])
    assert (r.pred[0] != y).all()
    dist = r.traces["distortion"][0]  # [steps, N], the best so far after each step
    start = r.traces["start_distortion"][0]
    assert dist.shape == (8, 8) and np.isfinite(dist).all() and (dist[0] <= start).all()
    assert (np.diff(dist, axis=0) <= 1e-12).all()
    assert np.median(dist[-1]) < 0.6 * np.median(start)
    np.testing.assert_allclose(r.distortion["l2"][0], dist[-1], rtol=1e-9)
    assert (r.first_success[0] == 1).all()  # unbounded: the starting point already counts
    np.testing.assert_array_equal(r.traces["queries"][0, -1], r.queries[0])
    assert (np.diff(r.traces["queries"][0], axis=0) > 0).all()
    assert (r.traces["start_queries"][0] < r.traces["queries"][0, 0]).all()
    np.testing.assert_array_equal(r.traces["label"][0, -1], r.pred[0])
    # the paper's schedule: Σ int(50·√t) probes plus the searches (some probes are repeats)
    probes = sum(int(50 * np.sqrt(t)) for t in range(1, 9))  # 815
    assert (0.8 * probes < r.queries[0]).all() and (r.queries[0] < probes + 30 * 9 + 100).all()


def test_queries_are_uint8_batches_over_all_images(board, correct_digits):
    x, y = correct_digits
    calls = {}
    for n in (1, 8):
        spy = Spy(board)
        r = HopSkipJump("l2", steps=3, initial_gradient_eval_steps=20)(spy, x[:n], y[:n])
        assert spy.dtypes == {"uint8"}
        assert sum(spy.batches) == r.queries.sum()
        calls[n] = len(spy.batches)
    # one oracle call per phase for all images: 8 images take barely more calls than one
    assert calls[8] <= calls[1] + 15


def test_linf_succeeds_and_shrinks(board, correct_digits):
    x, y = correct_digits[0][:6], correct_digits[1][:6]
    r = HopSkipJump("linf", steps=6, initial_gradient_eval_steps=50)(board, x, y, seed=1)
    assert r.norm == "linf" and r.params["norm"] == "linf"
    assert r.success.all()
    dist = r.traces["distortion"][0]
    assert np.median(dist[-1]) < 0.7 * np.median(r.traces["start_distortion"][0])
    np.testing.assert_allclose(r.distortion["linf"][0], dist[-1], rtol=1e-9)
    k = r.distortion["linf"][0] * 255  # L∞ distances on the grid are whole pixel steps
    np.testing.assert_allclose(k, np.rint(k), atol=1e-6)


def test_targeted_reaches_the_target(board, float_twin, correct_digits):
    x, y = correct_digits[0][:6], correct_digits[1][:6]
    # targets that uniform noise reaches often, so that the noise start can find them
    noise = np.random.default_rng(0).integers(0, 256, (300, 1, 8, 8), dtype=np.uint8)
    counts = np.bincount(_scores(float_twin, noise).argmax(1), minlength=10)
    common = np.argsort(-counts)[:2]
    t = np.where(y == common[0], common[1], common[0])
    r = HopSkipJump("l2", steps=3, targeted=True, initial_gradient_eval_steps=30)(
        board, x, y, targets=t
    )
    assert r.targeted and np.array_equal(r.targets, t)
    assert r.success.all()
    np.testing.assert_array_equal(r.pred[0], t)
    np.testing.assert_array_equal(_scores(float_twin, r.adversarial[0]).argmax(1), t)
    # a target noise never reaches: the start search gives up cleanly after init_tries
    never = np.flatnonzero(counts == 0)
    if never.size and (y[:2] != never[0]).all():
        bad = np.full(2, never[0])
        r = HopSkipJump("l2", steps=2, targeted=True, init_tries=5)(
            board, x[:2], y[:2], targets=bad
        )
        assert not r.success.any() and (r.first_success == -1).all()
        np.testing.assert_array_equal(r.adversarial[0], x[:2])
        assert (r.queries == 1 + 5).all()


def test_budget_is_respected_and_stops_cleanly(board, correct_digits):
    x, y = correct_digits[0][:6], correct_digits[1][:6]
    r = HopSkipJump("l2", steps=20, budget=400)(board, x, y)
    assert (r.queries == 400).all()  # spent to the last query, never beyond
    assert r.success.all()  # each image keeps the last adversarial it found
    assert not r.exhausted.any()  # (exhausted: the budget ran out before a success)
    assert (r.traces["queries"][0, -1] == 400).all() and (r.first_success == 1).all()
    assert np.isfinite(r.distortion["l2"]).all()
    r1 = HopSkipJump("l2", steps=3, budget=1)(board, x, y)  # only the clean query
    assert (r1.queries == 1).all() and r1.exhausted.all()
    assert not r1.success.any() and (r1.first_success == -1).all()
    np.testing.assert_array_equal(r1.adversarial[0], x)
    r3 = HopSkipJump("l2", steps=3, budget=3)(board, x, y)
    assert (r3.queries <= 3).all()
    ok = r3.success[0]  # a noise start (maybe one blend step): adversarial, but far
    assert (r3.pred[0][ok] != y[ok]).all()
    assert (r3.distortion["l2"][0][ok] > r.distortion["l2"][0][ok]).all()


def test_same_seed_same_result(board, correct_digits):
    x, y = correct_digits[0][:4], correct_digits[1][:4]
    hsj = HopSkipJump("l2", steps=2, initial_gradient_eval_steps=20)
    a, b, c = hsj(board, x, y, seed=3), hsj(board, x, y, seed=3), hsj(board, x, y, seed=4)
    np.testing.assert_array_equal(a.adversarial, b.adversarial)
    np.testing.assert_array_equal(a.queries, b.queries)
    np.testing.assert_array_equal(a.traces["distortion"], b.traces["distortion"])
    assert not np.array_equal(a.adversarial, c.adversarial)


def test_epsilons_threshold_the_distortion(board, correct_digits):
    x, y = correct_digits[0][:6].copy(), correct_digits[1][:6].copy()
    y[0] = (y[0] + 1) % 10  # the model already "misclassifies" image 0
    eps = [0.0, 0.3, None]
    r = HopSkipJump("l2", steps=3, initial_gradient_eval_steps=30)(board, x, y, epsilons=eps)
    assert r.epsilons[0] == 0 and np.isinf(r.epsilons[2])
    assert (r.first_success[:, 0] == 0).all() and r.success[:, 0].all()
    assert (r.queries[:, 0] == 1).all()  # nothing to do for it
    np.testing.assert_array_equal(r.adversarial[:, 0], np.repeat(x[None, 0], 3, 0))
    assert not r.success[0, 1:].any()
    assert r.success[2].all()
    for e, radius in enumerate(r.epsilons):
        ok = r.success[e, 1:]
        l2 = r.distortion["l2"][e, 1:]
        assert (l2[ok] <= radius + 1e-9).all()
        np.testing.assert_array_equal(r.adversarial[e, 1:][~ok], x[1:][~ok])  # failures: clean
        # first_success is the first step whose best distortion is within ε (start = step 1)
        inside = r.traces["distortion"][e][:, 1:] <= radius * (1 + 1e-9)
        first = np.where(inside.any(0), inside.argmax(0) + 1, -1)
        np.testing.assert_array_equal(r.first_success[e, 1:], first)
        np.testing.assert_array_equal(r.traces["label"][e, -1], r.pred[e])
    np.testing.assert_array_equal(r.success_at(3), r.success)
    at1 = r.at(1, "steps")  # what one step would have given (from first_success)
    np.testing.assert_array_equal(at1.success, (r.first_success >= 0) & (r.first_success <= 1))
    # the queries a one-step run would have spent, broken images included (HSJ goes on)
    np.testing.assert_array_equal(at1.queries, r.traces["queries"][:, 0])
    # early_stop: an image stops as soon as it is within ε
    early = HopSkipJump("l2", steps=3, initial_gradient_eval_steps=30, early_stop=True)(
        board, x, y, epsilons=[0.6]
    )
    done = early.first_success[0, 1:] == 1
    if done.any():
        assert (early.queries[0, 1:][done] < r.queries[2, 1:][done]).all()


def test_grid_search_stepsize(board, correct_digits):
    x, y = correct_digits[0][:4], correct_digits[1][:4]
    hsj = HopSkipJump("l2", steps=2, stepsize_search="grid_search", initial_gradient_eval_steps=30)
    r = hsj(board, x, y)
    assert r.success.all() and r.params["stepsize_search"] == "grid_search"
    assert (r.traces["distortion"][0, -1] < r.traces["start_distortion"][0]).all()


def test_parameters_are_checked():
    with pytest.raises(AttackError, match="unknown norm"):
        HopSkipJump("l1")
    with pytest.raises(AttackError, match="stepsize_search"):
        HopSkipJump(stepsize_search="line")
    for bad in (
        {"steps": 0},
        {"gamma": -1.0},
        {"init_tries": 0},
        {"budget": 0},
        {"min_delta": 0.0},
    ):
        with pytest.raises(AttackError):
            HopSkipJump(**bad)
    p = HopSkipJump().params  # foolbox 3's defaults
    assert p["steps"] == 64 and p["initial_gradient_eval_steps"] == 100
    assert p["max_gradient_eval_steps"] == 10_000 and p["gamma"] == 1.0
    assert p["stepsize_search"] == "geometric_progression" and p["norm"] == "l2"


# -- checks against known answers --------------------------------------------------------------


def _linear_problem(n=8):
    """A two-class linear model z1 - z0 = w·x + b and images at known distances from it."""
    g = np.random.default_rng(0)
    w = g.standard_normal(64)
    w /= np.linalg.norm(w)
    x = g.integers(90, 166, size=(n, 64)) / 255.0
    b = -float((x @ w).mean())
    margin = np.linspace(0.3, 0.8, n)  # L2 distance to the boundary, before rounding
    x = x - (margin + x @ w + b)[:, None] * w[None]
    pixels = np.clip(np.rint(x * 255), 0, 255).astype(np.uint8)
    x = pixels.reshape(n, -1) / 255.0
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 2))
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].bias.zero_()
        model[1].weight[1] = torch.tensor(w, dtype=torch.float32)
        model[1].bias[1] = b
    gap = -(x @ w + b)  # > 0: class 0; the boundary point x + gap·w lies inside [0, 1]
    assert (gap > 0.25).all()
    assert ((x + gap[:, None] * w) > 0).all() and ((x + gap[:, None] * w) < 1).all()
    exe = LabelOnly(TorchTwin(model, "linear", (1, 8, 8), 2))
    return exe, pixels.reshape(n, 1, 8, 8), gap, w


def test_distortion_approaches_the_linear_boundary():
    exe, pixels, gap, w = _linear_problem()
    y = np.zeros(len(pixels), dtype=np.int64)
    r = HopSkipJump("l2", steps=10)(exe, pixels, y)
    assert r.success.all()
    ratio = r.distortion["l2"][0] / gap  # the exact minimal L2 distance is gap (‖w‖ = 1)
    # no adversarial, on the grid or not, is closer than the boundary; rounding to the grid
    # costs ~1 %, and 10 steps reach it to a few percent (measured 1.02-1.04)
    assert (ratio >= 1 - 1e-5).all() and (ratio < 1.10).all()
    assert np.median(r.traces["start_distortion"][0] / gap) > 1.5
    assert np.median(r.traces["distortion"][0, 4] / gap) < 1.15  # after 5 steps
    r = HopSkipJump("linf", steps=20)(exe, pixels, y)
    ratio = r.distortion["linf"][0] / (gap / np.abs(w).sum())  # minimal L∞: gap / ‖w‖₁
    # L∞ HSJ converges more slowly (sign steps); 20 steps measured 1.06-1.13
    assert (ratio >= 1 - 1e-5).all() and np.median(ratio) < 1.2


def test_matches_foolbox_hopskipjump(float_twin, board, correct_digits):
    """Against foolbox 3's HopSkipJumpAttack on the float model (float queries, no grid).

    foolbox 3.3.4 normalises the estimated gradient by its norm over the whole batch, so its
    L2 steps shrink by √N with N images (per-image runs are too slow here): the reference run
    renormalises per image, as the paper and the authors' code do. The algorithms are
    stochastic and ours queries the uint8 grid, so we compare median L2 after the same
    numbers of steps (measured within ~10 % on 12-32 digits; allowed factor 1.5), their
    decrease with steps, success, and queries per image (same schedule: within 25 %).
    """
    fb = pytest.importorskip("foolbox")
    import eagerpy as ep
    from foolbox.devutils import atleast_kd, flatten

    class PerImage(fb.attacks.HopSkipJumpAttack):
        def approximate_gradients(self, *args):
            g = super().approximate_gradients(*args)
            return g / (atleast_kd(ep.norms.l2(flatten(g), -1), g.ndim) + 1e-12)

    class Counted(nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m, self.n = m, 0

        def forward(self, z):
            self.n += len(z)
            return self.m(z)

    x, y = correct_digits[0][:12], correct_digits[1][:12]
    steps = (1, 6)
    counted = Counted(float_twin.model).eval()
    fmodel = fb.PyTorchModel(counted, bounds=(0, 1))
    xt, yt = torch.from_numpy(x).float() / 255, torch.from_numpy(y)
    theirs, their_q = {}, {}
    for s in steps:
        torch.manual_seed(0)
        counted.n = 0
        adv = PerImage(steps=s, initial_gradient_eval_steps=50).run(
            fmodel, xt, fb.criteria.Misclassification(yt)
        )
        assert (float_twin.predict(adv).numpy() != y).all()
        theirs[s] = float((adv - xt).flatten(1).norm(dim=1).median())
        their_q[s] = counted.n / len(x)
    r = HopSkipJump("l2", steps=steps[-1], initial_gradient_eval_steps=50)(board, x, y)
    assert r.success.all()
    ours = {s: float(np.median(r.traces["distortion"][0, s - 1])) for s in steps}
    for s in steps:
        assert 1 / 1.5 < ours[s] / theirs[s] < 1.5, (ours, theirs)
    assert ours[6] < 0.8 * ours[1] and theirs[6] < 0.8 * theirs[1]
    assert 0.75 < np.median(r.queries[0]) / their_q[6] < 1.25, (r.queries, their_q)
