"""The oracle: rounding at the boundary, per-image counts, budget, cache, batching, timing."""

from __future__ import annotations

import numpy as np
import pytest

from hwbed.attacks.inputs import AttackError
from hwbed.attacks.oracle import Oracle
from hwbed.ir.executable import BaseExecutable


class Scorer(BaseExecutable):
    """Scores = per-class sums of pixel blocks; records every batch it is sent."""

    def __init__(self, returns: str = "scores"):
        super().__init__("scorer", (1, 4, 4), 4)
        self.returns = returns
        self.batches: list[int] = []

    def forward(self, pixels):
        self.batches.append(len(pixels))
        flat = pixels.reshape(len(pixels), 4, 4).astype(np.float32)
        return flat.sum(axis=2)


def _images(n, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 1, 4, 4), dtype=np.uint8)


def test_scores_equal_the_executable_and_count_per_image():
    exe = Scorer()
    oracle = Oracle(exe, 3, cache=False)
    px = _images(5)
    owner = np.array([0, 0, 2, 1, 0])
    scores, ok = oracle.scores(owner, px)
    assert ok.all()
    np.testing.assert_array_equal(scores, exe(px))
    assert oracle.queries.tolist() == [3, 1, 1]
    assert oracle.requests.tolist() == [3, 1, 1]


def test_cache_answers_repeats_without_a_query():
    exe = Scorer()
    oracle = Oracle(exe, 2)
    px = _images(3)
    oracle.scores(np.array([0, 0, 1]), px)
    before = exe.queries
    batch = np.concatenate([px, px[:1], px[:1]])  # 3 cached + the same new image twice
    batch[-2:] = 7
    scores, ok = oracle.scores(np.array([0, 0, 1, 1, 1]), batch)
    assert ok.all()
    assert exe.queries - before == 1  # only the new image, once
    np.testing.assert_array_equal(scores[3], scores[4])
    assert oracle.queries.tolist() == [2, 2]
    assert oracle.requests.tolist() == [4, 4]


def test_budget_is_never_exceeded_and_marks_the_image():
    exe = Scorer()
    oracle = Oracle(exe, 2, budget=3, cache=False)
    scores, ok = oracle.scores(np.array([0] * 5 + [1]), _images(6))
    assert ok.tolist() == [True, True, True, False, False, True]
    assert np.isnan(scores[3:5]).all() and not np.isnan(scores[[0, 1, 2, 5]]).any()
    assert oracle.queries.tolist() == [3, 1]
    assert oracle.exhausted.tolist() == [True, False]
    assert oracle.remaining().tolist() == [0, 2]
    _, ok = oracle.scores(np.array([0]), _images(1, 1))
    assert not ok.any() and oracle.queries[0] == 3
    labels, ok = oracle.labels(np.array([0, 1]), _images(2, 2))
    assert labels[0] == -1 and ok.tolist() == [False, True]


def test_batching_one_call_split_by_batch_size():
    exe = Scorer()
    oracle = Oracle(exe, 10, batch_size=4, cache=False)
    oracle.scores(np.arange(10), _images(10))
    assert exe.batches == [4, 4, 2]
    assert oracle.calls == 3
    assert oracle.time_inside > 0


def test_label_only_is_refused_for_score_attacks_and_served_labels():
    exe = Scorer(returns="labels")
    oracle = Oracle(exe, 1)
    with pytest.raises(AttackError, match="returns labels only.*hopskipjump"):
        oracle.require_scores("genattack")
    labels, ok = oracle.labels(np.array([0]), _images(1))
    assert ok.all() and labels[0] == np.argmax(exe(_images(1)))


@pytest.mark.parametrize("budget", [0, -1, 2.5, True])
def test_bad_budget(budget):
    with pytest.raises(AttackError, match="budget"):
        Oracle(Scorer(), 1, budget=budget)


def test_candidates_must_be_uint8():
    oracle = Oracle(Scorer(), 1)
    with pytest.raises(AttackError, match="uint8"):
        oracle.scores(np.array([0]), _images(1).astype(np.float32))
    with pytest.raises(AttackError, match="owner"):
        oracle.scores(np.array([3]), _images(1))


def test_each_image_pays_for_its_own_queries_and_the_cache_is_bounded():
    exe = Scorer()
    oracle = Oracle(exe, 2, cache_size=2)
    same = np.repeat(_images(1), 2, axis=0)
    oracle.scores(np.array([0, 1]), same)  # one image, two owners: two queries
    assert oracle.queries.tolist() == [1, 1] and exe.queries == 2
    oracle.scores(np.array([1]), same[:1])  # a hit: owner 1's answer is now the newest
    oracle.scores(np.array([0]), _images(1, 5))  # a third entry evicts the least recent
    oracle.scores(np.array([0, 1]), same)
    assert oracle.queries.tolist() == [3, 1]  # owner 0's first answer was evicted, 1's kept
