"""LocalSearch, LocSearchAdv (Narodytska & Kasiviswanathan, CVPR-W 2017, arXiv:1612.06299,
Algorithm 3): a greedy, score-only search over a few perturbed pixels, untargeted.

In the paper's image space [LB, UB] = [-0.5, 0.5] (a [0, 1] image minus 0.5, as foolbox 2 and
advertorch map it), with Î₀ = I and P₀ a random ``seed_ratio`` of the pixel locations (at
most ``max_seeds``), each round i = 1..``rounds``:

1. for every location (x, y) in P_{i-1} (a random subset of at most ``max_candidates``, the
   foolbox 2 cap), query PERT(Î_{i-1}, p, x, y): every channel b of that pixel set to
   p·sign(Î_{i-1}(b, x, y)); score it by o_c, the softmax probability of the true class c;
2. take the ``t`` locations with the lowest scores (``select="min"``, the paper's prose and
   advertorch; ``"max"``: the highest, the paper's pseudocode and foolbox ≥ 2.1.0);
3. Î_i = Î_{i-1} with CYCLIC(r·v) on every channel of those pixels (v·r wrapped back into
   [LB, UB] by ±(UB − LB)); perturbations accumulate across rounds (advertorch instead
   resets to the clean image each round, a deviation from the paper);
4. query Î_i: success when c is not among its top ``k`` labels (k-misclassification; k = 1:
   misclassified). With k > 1 the search stops (and ``first_success`` counts) on
   k-misclassification, while the result's ``success`` stays top-1 misclassification, so
   ``success_at`` then understates ``success`` (an image out of the top 1 but in the top k);
5. P_i = the (2d+1)×(2d+1) squares around the chosen pixels, clipped to the image.

Defaults are the paper's (R 150, t 5, d 5, r 1.5, k 1, and ``exclude`` 30: a pixel CYCLIC
changed sits out the candidates of the next 30 rounds; when that leaves an image no
candidate, the exclusion is lifted for that image and round) and foolbox 2's p = 10
(advertorch: 1); on the uint8 grid every p ≥ 0.5 saturates PERT to 0/255, so the two give
the same queries. The paper's adaptive p is left out, as in foolbox and advertorch; foolbox
≥ 2.1's attack is ``LocalSearch(select="max", exclude=0)`` (on the trained 8×8 digits model
the exclusion is what lets the search leave the few pixels it would otherwise re-pick).

hwbed specifics: every candidate is a uint8 image (round half to even of 255·x, saturated),
and Î_i is kept on that grid, so the image checked in step 4 is the one returned. ε is an
L∞ bound on the accumulated perturbation (the study's ε 8, 16, 32 px): PERT candidates and
Î_i are projected onto the ε-ball around the clean image and [0, 1], i.e. clipped to
clean ± floor(255 ε) pixel values; ε = 1 is the unbounded paper attack. Queries: at most
``max_candidates`` + 1 per round and image (≤ 150·129 = 19,350 with the defaults); the clean
image is queried once first. All still-active images' candidates of a round go to the oracle
in one call, then all their Î_i in a second. Records ``first_success`` (the round, 1-based)
and traces ``label``, ``prob`` and ``queries`` [rounds, N]: the label and true-class
probability of Î_i and the image's cumulative queries after each round (carried forward once
an image stops).

Input: uint8 [N, C, H, W] images (or float on the [0, 1] 8-bit grid) on any score-returning
executable; ε in [0, 1] units, L∞.

Example::

    from hwbed.attacks import px
    from hwbed.attacks.local_search import LocalSearch
    result = LocalSearch(rounds=200)(executable, images, labels,
                                     epsilons=[px(8), px(16), px(32)])
    result.success_at(50)  # [3, N]: success had it stopped after 50 rounds
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import BlackBoxAttack
from .inputs import AttackError, check_positive

LB, UB = -0.5, 0.5
"""The paper's image bounds: [0, 1] images are shifted by -0.5."""

SELECT = ("min", "max")


def pert(v: np.ndarray, p: float) -> np.ndarray:
    """PERT on values ``v`` in [LB, UB]: p·sign(v) (unbounded: it may leave [LB, UB])."""
    return p * np.sign(v)


def cyclic(r: float, v: np.ndarray, lb: float = LB, ub: float = UB) -> np.ndarray:
    """CYCLIC(r·v) for v in [lb, ub] and r in [0, 2]: r·v, plus (ub - lb) below lb, minus it
    above ub; the result lies in [lb, ub]."""
    out = r * np.asarray(v, dtype=np.float64)
    width = ub - lb
    out = np.where(out < lb, out + width, out)
    return np.where(out > ub, out - width, out)


def neighbourhood(chosen: np.ndarray, d: int) -> np.ndarray:
    """The union of (2d+1)×(2d+1) squares centred on the True pixels of ``chosen`` [B, H, W],
    clipped to the image (a square dilation, separable over rows and columns)."""
    out = chosen.astype(bool)
    for axis in (1, 2):
        size = out.shape[axis]
        grown = out.copy()
        for shift in range(1, min(d, size - 1) + 1):
            lo = [slice(None)] * 3
            hi = [slice(None)] * 3
            lo[axis], hi[axis] = slice(0, size - shift), slice(shift, size)
            grown[tuple(hi)] |= out[tuple(lo)]
            grown[tuple(lo)] |= out[tuple(hi)]
        out = grown
    return out


def softmax(scores: np.ndarray) -> np.ndarray:
    """Row softmax in float64 (NaN rows stay NaN)."""
    z = scores.astype(np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def in_top_k(scores: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Whether ``labels`` [M] is among the top ``k`` of ``scores`` [M, K] (ties to the lower
    index, as argmax breaks them, so k = 1 means argmax == label)."""
    if k == 1:
        return np.argmax(scores, axis=1) == labels
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return (top == labels[:, None]).any(axis=1)


class LocalSearch(BlackBoxAttack):
    """LocSearchAdv: greedy pixel search on the true-class score, L∞-bounded by ε."""

    name = "localsearch"
    norm = "linf"
    targeted = False
    max_request_bytes = 1 << 28
    """Candidates of one oracle call at most (uint8 bytes); more go in groups of images."""

    def __init__(
        self,
        rounds: int = 150,
        *,
        t: int = 5,
        d: int = 5,
        r: float = 1.5,
        p: float = 10.0,
        k: int = 1,
        select: str = "min",
        seed_ratio: float = 0.1,
        max_seeds: int = 128,
        max_candidates: int = 128,
        exclude: int = 30,
        budget: int | None = None,
        batch_size: int = 1024,
    ):
        self.rounds = check_positive(rounds, "rounds", self.name)
        self.t = check_positive(t, "t", self.name)
        self.d = check_positive(d, "d", self.name)
        self.k = check_positive(k, "k", self.name)
        self.max_seeds = check_positive(max_seeds, "max_seeds", self.name)
        self.max_candidates = check_positive(max_candidates, "max_candidates", self.name)
        if isinstance(exclude, bool) or not isinstance(exclude, (int, np.integer)) or exclude < 0:
            raise AttackError(f"{self.name}: exclude must be an integer >= 0, got {exclude!r}")
        self.exclude = int(exclude)
        self.p = float(check_positive(p, "p", self.name, integer=False))
        r_ok = isinstance(r, (int, float)) and not isinstance(r, bool) and 0 <= r <= 2
        if not r_ok:
            raise AttackError(f"{self.name}: r must be a number in [0, 2] (CYCLIC), got {r!r}")
        self.r = float(r)
        ratio_ok = isinstance(seed_ratio, (int, float)) and not isinstance(seed_ratio, bool)
        if not ratio_ok or not 0 < seed_ratio <= 1:
            raise AttackError(f"{self.name}: seed_ratio must lie in (0, 1], got {seed_ratio!r}")
        self.seed_ratio = float(seed_ratio)
        if select not in SELECT:
            raise AttackError(f"{self.name}: select must be 'min' or 'max', got {select!r}")
        self.select = select
        super().__init__(budget, batch_size)

    @property
    def params(self) -> dict[str, Any]:
        return {
            "norm": self.norm,
            "rounds": self.rounds,
            "t": self.t,
            "d": self.d,
            "r": self.r,
            "p": self.p,
            "k": self.k,
            "select": self.select,
            "seed_ratio": self.seed_ratio,
            "max_seeds": self.max_seeds,
            "max_candidates": self.max_candidates,
            "exclude": self.exclude,
            "space": [LB, UB],
            "budget": self.budget,
            "batch_size": self.batch_size,
        }

    def _run(self, oracle, pixels, y, t, eps, rng, clean_pred) -> dict[str, Any]:
        n, c, h, w = pixels.shape
        hw = h * w
        if self.k >= oracle.num_classes:
            raise AttackError(
                f"{self.name}: k = {self.k} must be below the number of classes "
                f"({oracle.num_classes})"
            )
        radius = int(np.floor(eps * 255.0 + 1e-9))
        clean = pixels.reshape(n, c, hw).astype(np.int16)
        lo = np.maximum(clean - radius, 0)
        hi = np.minimum(clean + radius, 255)

        if self.k == 1:
            done = clean_pred != y
        else:  # the clean scores are cached: no query
            scores, _ = oracle.scores(np.arange(n), pixels)
            done = ~in_top_k(scores, y, self.k)
        first = np.where(done, 0, -1).astype(np.int64)
        pred = clean_pred.astype(np.int64).copy()
        prob = np.full(n, np.nan, dtype=np.float32)
        labels = np.empty((self.rounds, n), dtype=np.int32)
        spent = np.empty((self.rounds, n), dtype=np.int32)  # cumulative queries after each round
        probs = np.empty((self.rounds, n), dtype=np.float32)
        state = pixels.reshape(n, c, hw).copy()  # Î, on the uint8 grid
        adv = state.copy()  # the last Î the oracle answered for
        active = np.flatnonzero(~done) if radius > 0 else np.zeros(0, dtype=np.int64)

        # P₀: a random seed_ratio of the locations, at most max_seeds
        seeds = min(self.max_seeds, max(1, int(self.seed_ratio * hw)))
        order = np.argsort(rng.random((n, hw)), axis=1)[:, :seeds]
        where = np.zeros((n, hw), dtype=bool)
        np.put_along_axis(where, order, True, axis=1)
        changed = np.full((n, hw), -(1 << 40), dtype=np.int64)  # round a pixel last changed

        last = 0
        for i in range(1, self.rounds + 1):
            if active.size == 0:
                break
            last = i
            a = len(active)
            # 1. candidates: PERT(Î, p, x, y) at (a random subset of) P, all images at once
            keys = rng.random((a, hw))
            allowed = where[active]
            if self.exclude:  # the paper: a perturbed pixel sits out the next rounds
                free = allowed & (i - changed[active] > self.exclude)
                allowed = np.where(free.any(axis=1, keepdims=True), free, allowed)
            keys[~allowed] = 2.0
            cap = min(self.max_candidates, hw)
            slots = np.argsort(keys, axis=1)[:, :cap]
            valid = np.take_along_axis(keys, slots, axis=1) < 2.0
            row, col = np.nonzero(valid)
            loc = slots[row, col]
            p_true, answered = self._candidates(oracle, state, active[row], loc, lo, hi, y, h, w)
            refused = np.bincount(row[~answered], minlength=a) > 0  # budget spent
            # 2. the t best locations by the true-class probability
            key = np.full((a, cap), np.inf)
            key[row, col] = p_true if self.select == "min" else -p_true
            key[np.isnan(key)] = np.inf
            best = np.argsort(key, axis=1, kind="stable")[:, : self.t]
            chosen = np.take_along_axis(key, best, axis=1) < np.inf
            chosen &= ~refused[:, None]
            # 3. CYCLIC on every channel of the chosen pixels of Î (accumulating)
            crow, ccol = np.nonzero(chosen)
            cimg = active[crow]
            cloc = slots[crow, best[crow, ccol]]
            values = cyclic(self.r, state[cimg, :, cloc].astype(np.float64) / 255.0 + LB) - LB
            state[cimg, :, cloc] = self._to_grid(values, lo[cimg, :, cloc], hi[cimg, :, cloc])
            changed[cimg, cloc] = i
            # 4. query Î_i of the images that are still going
            go = active[~refused]
            if go.size:
                scores, answered = oracle.scores(go, state[go].reshape(len(go), c, h, w))
                ok = go[answered]
                adv[ok] = state[ok]
                pred[ok] = np.argmax(scores[answered], axis=1)
                prob[ok] = softmax(scores[answered])[np.arange(len(ok)), y[ok]]
                hit = ~in_top_k(scores[answered], y[ok], self.k)
                first[ok[hit]] = i
                keep = np.zeros(n, dtype=bool)
                keep[ok[~hit]] = True
            else:
                keep = np.zeros(n, dtype=bool)
            # 5. P_i: the (2d+1)² squares around the chosen pixels, clipped to the image
            mark = np.zeros((a, hw), dtype=bool)
            mark[crow, cloc] = True
            where[active] = neighbourhood(mark.reshape(a, h, w), self.d).reshape(a, hw)
            labels[i - 1], probs[i - 1] = pred, prob
            spent[i - 1] = oracle.queries
            active = active[keep[active]]
        labels[last:], probs[last:] = pred, prob
        spent[last:] = oracle.queries
        # adv is the last image the oracle answered for: Î_i, or Î_{i-1} when the budget ran
        # out before Î_i could be checked
        return {
            "adv": adv.reshape(n, c, h, w),
            "pred": pred,
            "first_success": first,
            "traces": {"label": labels, "prob": probs, "queries": spent},
        }

    def _candidates(self, oracle, state, img, loc, lo, hi, y, h, w):
        """True-class probabilities (NaN: unanswered) and ``answered`` of the PERT candidates
        (image ``img``, location ``loc``); in one oracle call unless the candidates would
        exceed ``max_request_bytes``, then in groups of whole images."""
        c, hw = state.shape[1:]
        m = len(img)
        p_true = np.full(m, np.nan)
        answered = np.zeros(m, dtype=bool)
        step = max(1, self.max_request_bytes // (c * hw))
        start = 0
        while start < m:
            stop = min(m, start + step)
            if stop < m:  # never split one image's candidates over two calls
                stop = int(np.searchsorted(img, img[stop], side="left"))
                if stop <= start:
                    stop = int(np.searchsorted(img, img[start], side="right"))
            sl = slice(start, stop)
            ii, ll = img[sl], loc[sl]
            cand = state[ii]  # [M, C, HW] copy
            values = pert(state[ii, :, ll].astype(np.float64) / 255.0 + LB, self.p) - LB
            cand[np.arange(len(ii)), :, ll] = self._to_grid(values, lo[ii, :, ll], hi[ii, :, ll])
            scores, ok = oracle.scores(ii, cand.reshape(len(ii), c, h, w))
            answered[sl] = ok
            if ok.any():
                p_true[np.flatnonzero(ok) + start] = softmax(scores[ok])[
                    np.arange(ok.sum()), y[ii[ok]]
                ]
            start = stop
        return p_true, answered

    @staticmethod
    def _to_grid(values: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """[0, 1] values onto the uint8 grid, inside [lo, hi] (the ε-ball and the box)."""
        q = np.rint(np.clip(values, 0.0, 1.0) * 255.0)
        return np.clip(q, lo, hi).astype(np.uint8)
