"""HopSkipJump (Chen, Jordan & Wainwright, IEEE S&P 2020, arXiv:1904.02144), L2 and L∞.

A decision-based, minimum-norm attack: it sees only the top-1 label of each query, so it runs
on label-only executables (a FINN build ending in LabelSelect, :class:`LabelOnly`). Per image:

1. Start: uniform noise images until one is adversarial (misclassified, or the target class;
   at most ``init_tries`` draws), then a binary search on the blend ``(1-a)·x + a·noise`` to
   tolerance ``init_tolerance`` (the paper's initialisation; foolbox 3 blends linearly).
2. Binary search between x and the adversarial to the boundary: threshold θ = γ/(d·√d) on
   the blend (L2) or θ·dist with θ = γ/d² on the L∞ radius of ``clip(x', x - r, x + r)``.
3. For t = 1..``steps``: estimate the boundary normal from n_t = min(initial·√t, max) probes
   ``x' + δ_t·u`` (u uniform on the L2 sphere for L2, normalised uniform cube noise for L∞),
   ``δ_1 = 0.1`` and ``δ_t = γ·dist/d``: the mean of ``(φ - mean φ)·u`` with φ = ±1 the
   decisions; step along it (its sign for L∞) with ``geometric_progression`` (size
   dist/√t, halved until adversarial) or ``grid_search`` (20 sizes dist·logspace(-4, 0),
   each projected back to the boundary, the closest kept); then binary search back to the
   boundary.

Defaults are foolbox 3's ``HopSkipJumpAttack``: 64 steps, 100 initial and at most 10,000
gradient probes, geometric progression, γ = 1, L2. Input: uint8 [N, C, H, W] pixels or float
images in [0, 1] on the 8-bit grid; distances in [0, 1] units; d = C·H·W.

**The uint8 grid.** Every query is a uint8 image, as the board receives it. The algorithm runs
in float space and rounds each candidate (``rint(255 v)``, clipped to 0..255) just before it
is queried: binary-search midpoints, gradient probes and step-size proposals alike. The
binary search bisects the float blend (or radius) but keeps as its upper end the *rounded*
point that answered adversarial, so the current iterate is always a grid image the oracle
called adversarial, and distances are measured on it; near the boundary the search then
resolves the grid points crossed by the segment (repeats are cache hits, not queries). The
probes use their rounded displacement ``(round(x' + δu) - x')/δ`` in the estimate (as the
reference uses the clipped one), and δ is at least ``min_delta`` (default √d/255, about one
grid step per pixel): a smaller probe rounds back to x' in most pixels and estimates nothing.

**Budget.** With a per-image budget (``budget``) an image whose query is refused stops where
it is: its last adversarial iterate is kept; an image refused before it has a starting point
fails. Each phase (noise draws, probes, proposals, bisection) asks the oracle once for all
active images.

**Result.** ``epsilons`` are thresholds on the final distortion in ``norm`` (``None`` or inf:
unbounded). For each image the adversarial with the smallest distortion found is returned if
it lies within ε (the paper returns the last iterate; the two differ only where a step moved
away); otherwise the clean image (not a success). ``first_success`` is the step after which
that distortion first fell within ε (the starting point counts as step 1; 0: the clean image
is already adversarial; -1: never), so ``success_at(t)`` is what a run of t steps would give.
Traces [steps, N], row s-1 after step s (as the other black-box attacks keep them):
``distortion`` (the best so far; inf while there is no start, 0 for clean adversarials),
``queries`` (cumulative, per image) and ``label`` (the label of what the run would return at
this ε after step s: the best adversarial within ε, else the clean image's); and
``start_distortion``, ``start_queries`` [N] after the initialisation. ``early_stop`` ends an
image once it lies within a finite ε (fewer queries, no further shrinking; with it,
``result.at(s, "steps")`` is exact, without it that reports the final adversarials).

Example::

    from hwbed.attacks import TorchTwin
    from hwbed.attacks.hopskipjump import HopSkipJump
    from hwbed.attacks.label_only import LabelOnly
    board = LabelOnly(TorchTwin(model, "twin", (1, 8, 8), 10))
    hsj = HopSkipJump(norm="l2", steps=64, budget=20_000)
    result = hsj(board, pixels, labels)  # minimum-norm: epsilons=None
    result.distortion["l2"][0]  # per-image L2 of the adversarials (uint8, as queried)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .base import BlackBoxAttack
from .inputs import AttackError, check_norm, check_positive
from .oracle import Oracle

STEPSIZE_SEARCHES = ("geometric_progression", "grid_search")
PROBE_ELEMENTS = 1 << 22
"""At most this many probe values (images x pixels) are drawn at once; more go in chunks."""
MAX_BISECTIONS = 64
MAX_HALVINGS = 64
SLACK = 1e-9
"""Relative tolerance of the ε threshold on the distortion (float rounding of the norm)."""


def _grid(v: np.ndarray) -> np.ndarray:
    """Float [0, 1] values -> uint8 pixels (half to even, saturated), as executables do."""
    return np.clip(np.rint(v * 255.0), 0, 255).astype(np.uint8)


class HopSkipJump(BlackBoxAttack):
    """HopSkipJump, decision-based minimum-norm attack (L2 or L∞); label queries only."""

    name = "hopskipjump"
    norm: str
    scores_needed = False
    bounded = False

    def __init__(
        self,
        norm: str = "l2",
        steps: int = 64,
        *,
        initial_gradient_eval_steps: int = 100,
        max_gradient_eval_steps: int = 10_000,
        stepsize_search: str = "geometric_progression",
        gamma: float = 1.0,
        targeted: bool = False,
        init_tries: int = 1000,
        init_tolerance: float = 1e-3,
        min_delta: float | None = None,
        early_stop: bool = False,
        budget: int | None = None,
        batch_size: int = 1024,
    ):
        super().__init__(budget, batch_size)
        self.norm = check_norm(norm, self.name)
        self.steps = check_positive(steps, "steps", self.name)
        self.initial_gradient_eval_steps = check_positive(
            initial_gradient_eval_steps, "initial_gradient_eval_steps", self.name
        )
        self.max_gradient_eval_steps = check_positive(
            max_gradient_eval_steps, "max_gradient_eval_steps", self.name
        )
        if stepsize_search not in STEPSIZE_SEARCHES:
            raise AttackError(
                f"{self.name}: unknown stepsize_search {stepsize_search!r}; choose one of "
                f"{', '.join(STEPSIZE_SEARCHES)}"
            )
        self.stepsize_search = stepsize_search
        self.gamma = float(check_positive(gamma, "gamma", self.name, integer=False))
        self.targeted = bool(targeted)
        self.init_tries = check_positive(init_tries, "init_tries", self.name)
        self.init_tolerance = float(
            check_positive(init_tolerance, "init_tolerance", self.name, integer=False)
        )
        self.min_delta = check_positive(
            min_delta, "min_delta", self.name, integer=False, allow_none=True
        )
        self.early_stop = bool(early_stop)

    @property
    def params(self) -> dict[str, Any]:
        return {
            "norm": self.norm,
            "steps": self.steps,
            "initial_gradient_eval_steps": self.initial_gradient_eval_steps,
            "max_gradient_eval_steps": self.max_gradient_eval_steps,
            "stepsize_search": self.stepsize_search,
            "gamma": self.gamma,
            "targeted": self.targeted,
            "init_tries": self.init_tries,
            "init_tolerance": self.init_tolerance,
            "min_delta": self.min_delta,
            "early_stop": self.early_stop,
            "budget": self.budget,
            "batch_size": self.batch_size,
        }

    # -- the attack ------------------------------------------------------------------------

    def _run(self, oracle, pixels, y, t, eps, rng, clean_pred) -> dict[str, Any]:
        n, shape = len(pixels), pixels.shape[1:]
        d = int(np.prod(shape))
        run = _Run(self, oracle, pixels, y, t, rng)
        min_delta = self.min_delta if self.min_delta is not None else math.sqrt(d) / 255.0

        first = np.full(n, -1, dtype=np.int64)
        clean_adv = run.hit(clean_pred, np.arange(n))
        first[clean_adv] = 0
        dist_trace = np.zeros((self.steps, n))
        query_trace = np.zeros((self.steps, n), dtype=np.int64)
        label_trace = np.zeros((self.steps, n), dtype=np.int64)

        run.initialise(np.flatnonzero(~clean_adv))
        start_dist = np.where(clean_adv, 0.0, run.best_dist)
        start_queries = oracle.queries.copy()
        within = run.within(eps)
        for step in range(1, self.steps + 1):
            if self.early_stop and np.isfinite(eps):
                run.alive &= ~within
            if run.alive.any():
                run.step(step, min_delta)
            within = run.within(eps)
            first[within & (first < 0)] = step  # a start within ε counts as step 1
            dist_trace[step - 1] = np.where(clean_adv, 0.0, run.best_dist)
            query_trace[step - 1] = oracle.queries
            label_trace[step - 1] = np.where(within, run.best_label, clean_pred)

        take = within & ~clean_adv
        adv = pixels.copy()
        adv[take] = run.best[take].reshape(-1, *shape)
        pred = clean_pred.copy()
        pred[take] = run.best_label[take]
        return {
            "adv": adv,
            "pred": pred,
            "first_success": first,
            "traces": {
                "distortion": dist_trace,
                "queries": query_trace,
                "label": label_trace,
                "start_distortion": start_dist,
                "start_queries": start_queries,
            },
        }


class _Run:
    """One attack on one batch: per-image state as flat [N, d] arrays, phases vectorised.

    ``cur`` (uint8) is each image's current iterate, an adversarial the oracle answered;
    ``best`` the closest one so far. ``alive`` images still iterate: they have a starting
    point and no query of theirs was refused.
    """

    def __init__(self, attack: HopSkipJump, oracle: Oracle, pixels, y, t, rng):
        self.a, self.oracle, self.rng = attack, oracle, rng
        self.shape = pixels.shape[1:]
        self.n, self.d = len(pixels), int(np.prod(self.shape))
        self.x = pixels.reshape(self.n, -1).astype(np.float64) / 255.0
        self.y, self.t = y, t
        self.cur = np.zeros((self.n, self.d), dtype=np.uint8)
        self.cur_label = np.full(self.n, -1, dtype=np.int64)
        self.best = self.cur.copy()
        self.best_label = self.cur_label.copy()
        self.best_dist = np.full(self.n, np.inf)
        self.alive = np.zeros(self.n, dtype=bool)

    # -- helpers -----------------------------------------------------------------------------

    def hit(self, labels: np.ndarray, owner: np.ndarray) -> np.ndarray:
        """Adversarial answers (an unanswered -1 is never adversarial)."""
        if self.t is not None:
            return (labels >= 0) & (labels == self.t[owner])
        return (labels >= 0) & (labels != self.y[owner])

    def within(self, eps: float) -> np.ndarray:
        """Images whose best adversarial lies within ε (never those without one)."""
        return np.isfinite(self.best_dist) & (self.best_dist <= eps * (1 + SLACK))

    def ask(self, owner: np.ndarray, points: np.ndarray):
        """Label queries of uint8 points [M, d] of images ``owner``: labels (-1: refused),
        adversarial, answered."""
        labels, answered = self.oracle.labels(owner, points.reshape(len(points), *self.shape))
        return labels, self.hit(labels, owner), answered

    def distance(self, points: np.ndarray, owner: np.ndarray) -> np.ndarray:
        delta = points.astype(np.float64) / 255.0 - self.x[owner]
        if self.a.norm == "linf":
            return np.abs(delta).max(axis=1)
        return np.sqrt((delta * delta).sum(axis=1))

    def accept(self, idx: np.ndarray, points: np.ndarray, labels: np.ndarray) -> None:
        """New iterates of images ``idx`` (adversarial grid points); the best one is kept."""
        self.cur[idx], self.cur_label[idx] = points, labels
        dist = self.distance(points, idx)
        better = dist < self.best_dist[idx]
        b = idx[better]
        self.best[b], self.best_label[b] = points[better], labels[better]
        self.best_dist[b] = dist[better]

    # -- phases ------------------------------------------------------------------------------

    def initialise(self, todo: np.ndarray) -> None:
        """Uniform noise until adversarial, a blend search, then the boundary search."""
        noise = np.zeros((self.n, self.d), dtype=np.uint8)
        noise_label = np.full(self.n, -1, dtype=np.int64)
        searching = np.zeros(self.n, dtype=bool)
        searching[todo] = True
        found = np.zeros(self.n, dtype=bool)
        for _ in range(self.a.init_tries):
            idx = np.flatnonzero(searching)
            if not idx.size:
                break
            cand = _grid(self.rng.uniform(0.0, 1.0, size=(len(idx), self.d)))
            labels, adv, answered = self.ask(idx, cand)
            noise[idx[adv]], noise_label[idx[adv]] = cand[adv], labels[adv]
            found[idx[adv]] = True
            searching[idx[adv | ~answered]] = False
        idx = np.flatnonzero(found)
        if not idx.size:
            return
        pts, labels, ok = self.bisect(
            idx, noise[idx], noise_label[idx], mode="blend", tolerance=self.a.init_tolerance
        )
        self.accept(idx, pts, labels)
        self.alive[idx] = ok
        self.boundary(np.flatnonzero(self.alive))

    def boundary(self, idx: np.ndarray) -> None:
        """Binary search from each iterate ``cur`` of ``idx`` back toward x (the paper's θ)."""
        if not idx.size:
            return
        pts, labels, ok = self.bisect(idx, self.cur[idx], self.cur_label[idx], mode=self.a.norm)
        self.accept(idx, pts, labels)
        self.alive[idx[~ok]] = False

    def bisect(self, owner, far, far_label, mode: str, tolerance: float | None = None):
        """Binary search on the segments x[owner] -> ``far`` (uint8 adversarial points [M, d]).

        ``mode`` "l2" and "blend" bisect the blend factor a of ``(1-a)·x + a·far`` (threshold
        ``tolerance``, default γ/(d√d)); "linf" the radius r of ``clip(far, x - r, x + r)``
        (threshold θ·‖far - x‖∞, θ = γ/d²). Midpoints are rounded to the grid and queried;
        the upper end is always the rounded point last answered adversarial. Returns those
        points, their labels, and ``ok`` (False where a query was refused).
        """
        m, d, gamma = len(owner), self.d, self.a.gamma
        x = self.x[owner]
        far_f = far.astype(np.float64) / 255.0
        if mode == "linf":
            highs = np.abs(far_f - x).max(axis=1)
            thresholds = highs * gamma / (d * d)
        else:
            highs = np.ones(m)
            theta = gamma / (d * math.sqrt(d)) if tolerance is None else tolerance
            thresholds = np.full(m, theta)
        lows = np.zeros(m)
        points, labels = far.copy(), np.asarray(far_label, dtype=np.int64).copy()
        ok = np.ones(m, dtype=bool)
        for _ in range(MAX_BISECTIONS):
            act = np.flatnonzero(ok & (highs - lows > thresholds))
            if not act.size:
                break
            mids = (lows[act] + highs[act]) / 2.0
            if mode == "linf":
                r = mids[:, None]
                cand = np.minimum(np.maximum(far_f[act], x[act] - r), x[act] + r)
            else:
                cand = (1.0 - mids[:, None]) * x[act] + mids[:, None] * far_f[act]
            cand = _grid(cand)
            lab, adv, answered = self.ask(owner[act], cand)
            up, down = act[adv], act[~adv & answered]
            highs[up], points[up], labels[up] = mids[adv], cand[adv], lab[adv]
            lows[down] = mids[~adv & answered]
            ok[act[~answered]] = False
        return points, labels, ok

    def gradient(self, idx: np.ndarray, num_evals: int, delta: np.ndarray):
        """Monte Carlo estimate of the boundary normal at ``cur[idx]`` from ``num_evals``
        probes per image (one oracle call per chunk of probes, all images together)."""
        a, d = len(idx), self.d
        cur = self.cur[idx].astype(np.float64) / 255.0
        s_fu = np.zeros((a, d))
        s_u = np.zeros((a, d))
        s_f = np.zeros(a)
        count = np.zeros(a)
        ok = np.ones(a, dtype=bool)
        chunk = max(1, PROBE_ELEMENTS // (a * d))
        for start in range(0, num_evals, chunk):
            b = min(chunk, num_evals - start)
            if self.a.norm == "l2":
                u = self.rng.standard_normal((b, a, d))
            else:
                u = self.rng.uniform(-1.0, 1.0, size=(b, a, d))
            u /= np.sqrt((u * u).sum(axis=2, keepdims=True)) + 1e-12
            probes = _grid(np.clip(cur[None] + delta[None, :, None] * u, 0.0, 1.0))
            u = (probes.astype(np.float64) / 255.0 - cur[None]) / delta[None, :, None]
            _, adv, answered = self.ask(np.tile(idx, b), probes.reshape(b * a, d))
            adv, answered = adv.reshape(b, a), answered.reshape(b, a)
            f = np.where(adv, 1.0, -1.0) * answered
            s_fu += np.einsum("ba,bad->ad", f, u)
            s_u += np.einsum("ba,bad->ad", answered.astype(np.float64), u)
            s_f += f.sum(axis=0)
            count += answered.sum(axis=0)
            ok &= answered.all(axis=0)
        count = np.maximum(count, 1.0)
        mean_f = s_f / count
        # φ - mean φ as the baseline, except when all probes agree (then φ itself)
        centre = np.where(np.abs(mean_f) == 1.0, 0.0, mean_f)
        grad = (s_fu - centre[:, None] * s_u) / count[:, None]
        grad /= np.sqrt((grad * grad).sum(axis=1, keepdims=True)) + 1e-12
        return grad, ok

    def step(self, step: int, min_delta: float) -> None:
        """One HopSkipJump iteration for every alive image."""
        a, d = self.a, self.d
        idx = np.flatnonzero(self.alive)
        dist = self.distance(self.cur[idx], idx)
        if step == 1:
            delta = np.full(len(idx), 0.1)
        else:
            delta = a.gamma * dist / d  # √d·θ·dist (L2) and d·θ·dist (L∞) alike
        delta = np.maximum(delta, min_delta)
        num_evals = int(
            min(a.initial_gradient_eval_steps * math.sqrt(step), a.max_gradient_eval_steps)
        )
        grad, ok = self.gradient(idx, num_evals, delta)
        self.alive[idx[~ok]] = False
        keep = ok
        idx, dist, grad = idx[keep], dist[keep], grad[keep]
        if not idx.size:
            return
        update = np.sign(grad) if a.norm == "linf" else grad
        if a.stepsize_search == "geometric_progression":
            self.geometric(idx, dist / math.sqrt(step), update)
        else:
            self.grid_search(idx, dist, update)

    def geometric(self, idx: np.ndarray, size: np.ndarray, update: np.ndarray) -> None:
        """Halve the step size until the step is adversarial, then back to the boundary."""
        cur = self.cur[idx].astype(np.float64) / 255.0
        size = size.copy()
        far, far_label = self.cur[idx].copy(), self.cur_label[idx].copy()
        pending = np.ones(len(idx), dtype=bool)
        for _ in range(MAX_HALVINGS):
            p = np.flatnonzero(pending)
            if not p.size:
                break
            cand = _grid(np.clip(cur[p] + size[p, None] * update[p], 0.0, 1.0))
            lab, adv, answered = self.ask(idx[p], cand)
            far[p[adv]], far_label[p[adv]] = cand[adv], lab[adv]
            pending[p[adv | ~answered]] = False
            self.alive[idx[p[~answered]]] = False
            size[p[~adv]] /= 2.0
        live = self.alive[idx]  # a step still pending after MAX_HALVINGS keeps cur
        self.accept(idx[live], far[live], far_label[live])
        self.boundary(idx[live])

    def grid_search(self, idx: np.ndarray, dist: np.ndarray, update: np.ndarray) -> None:
        """Step sizes dist·logspace(-4, 0, 20), each projected to the boundary; the closest
        adversarial (or the current iterate) is kept."""
        a, g = len(idx), 20
        cur = self.cur[idx].astype(np.float64) / 255.0
        sizes = np.logspace(-4, 0, num=g)[:, None] * dist[None, :]  # [g, a]
        cand = _grid(np.clip(cur[None] + sizes[:, :, None] * update[None], 0.0, 1.0))
        cand = cand.reshape(g * a, self.d)
        owner = np.tile(idx, g)
        lab, adv, answered = self.ask(owner, cand)
        rows = np.flatnonzero(adv)
        pts, labels, ok = self.bisect(owner[rows], cand[rows], lab[rows], mode=self.a.norm)
        dists = np.full(g * a, np.inf)
        dists[rows] = self.distance(pts, owner[rows])
        bad = ~answered
        bad[rows[~ok]] = True
        refused = bad.reshape(g, a).any(axis=0)
        pick = np.argmin(dists.reshape(g, a), axis=0)
        best = dists.reshape(g, a)[pick, np.arange(a)]
        cur_dist = self.distance(self.cur[idx], idx)
        move = best < cur_dist
        at = pick * a + np.arange(a)
        full_pts = np.zeros((g * a, self.d), dtype=np.uint8)
        full_lab = np.full(g * a, -1, dtype=np.int64)
        full_pts[rows], full_lab[rows] = pts, labels
        m = np.flatnonzero(move)
        self.accept(idx[m], full_pts[at[m]], full_lab[at[m]])
        self.alive[idx[refused]] = False
