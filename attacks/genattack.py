"""GenAttack (Alzantot et al., GECCO 2019, arXiv:1805.11090): a score-only genetic algorithm
over L∞ perturbations, targeted; after the reference ``nesl/adversarial_genattack``
(``genattack_tf2.py``).

Per image, a population of ``population`` noise vectors (the reference code's sparse start:
each coordinate U(−ε, ε) with probability ``mutation_rate``, else 0; the paper's text says
uniform). Each generation:

1. query every member: clip(x + noise, max(x − ε, 0), min(x + ε, 1)) on the uint8 grid
   (the stored noise is never clipped);
2. fitness f = log p_t − log Σ_{j≠t} p_j, p the softmax of the executable's scores, a 1e-30
   guard inside each log (:func:`fitness`);
3. success when a member's label is the target: stop that image and return that member
   (an image that never succeeds returns its last elite);
4. the elite: the best-fitness member;
5. adaptive schedule (``adaptive``, :func:`schedule`): the win margin max_i(p_t − max_j p_j)
   counts plateaus (no improvement for more than 100 generations when the margin is above
   −0.4, else 300); α = max(α_min, 0.4·0.9^plateaus); ρ = 1 for the first 10 generations,
   then max(ρ_min, 0.5·0.9^plateaus). Off: α = α_min (``alpha``), ρ = ρ_min
   (``mutation_rate``);
6. selection π = softmax(f/τ); 2(N−1) parents drawn from π;
7. crossover: each coordinate from parent a with probability π_a/(π_a+π_b), else from b;
8. mutation: each child coordinate gets + U(−α·ε, α·ε) with probability ρ;
9. the next population is the N−1 children and the unmodified elite.

Defaults are the reference's own command line (``main.py`` flags): population 6,
``mutation_rate`` (ρ_min) 0.005, ``alpha`` (α_min) 0.20, ``temperature`` (τ) 0.1, adaptive on
(the study's method names the adaptive mutation rate and range), ``generations`` 10,000 (the
study runs 50…200: one run of 200 gives every i through ``success_at``/``accuracy_at``).
The reference's CIFAR-10 README run is ``GenAttack(population=4, mutation_rate=0.05,
alpha=0.25, adaptive=False)``; its class defaults are ρ_min 0.001, τ 0.3, adaptive off.
There is no ``resize_dim`` (the reference uses it for ImageNet only).

Queries: the elite's image is answered from the oracle's cache, so an image costs N queries
in its first generation and at most N−1 in each later one (the reference's count
``steps·(N−1) + 1``), plus the clean query; ``oracle.requests`` counts the cache hits too
(N per generation). Children that round to an image already answered are free as well. One
generation of all still-running images is one oracle request; a succeeded image stops
querying; an image whose budget runs out mid-generation stops with the best answered member.
Memory: two float32 populations and one uint8 candidate batch, about 9·N·C·H·W bytes per
image (the genetic step itself runs in cache-sized blocks of ``chunk_elements``).

``targeted=False`` is an hwbed extension (the paper, the reference and foolbox are targeted
only): the fitness is the targeted one negated with the label in the target's place,
f = log Σ_{j≠y} p_j − log p_y, the margin max_{j≠y} p_j − max_j p_j, and success is any
label other than y.

Records ``first_success`` (the generation, 1-based) and traces ``label``, ``fitness`` and
``queries`` [generations, N]: the elite's label and fitness and the image's cumulative
queries after each generation, carried forward
once the image stops (a succeeded image keeps the target's label), so that accuracy to the
original label by generation is ``result.accuracy_at(g)``.

Input: uint8 [N, C, H, W] images (or float on the [0, 1] 8-bit grid) on any score-returning
executable; ε in [0, 1] units, L∞ (the study: 8 and 12 px, ``px(8)``, ``px(12)``); targets
random ≠ label from the seed unless given.

Example::

    from hwbed.attacks import px
    from hwbed.attacks.genattack import GenAttack
    result = GenAttack(generations=200, population=16)(executable, images, labels,
                                                       epsilons=[px(8), px(12)])
    result.accuracy_at(50), result.target_accuracy
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import BlackBoxAttack
from .inputs import AttackError, check_positive

GUARD = 1e-30
"""Added inside each log of the fitness (the reference's guard)."""


def softmax(scores: np.ndarray, axis: int = -1) -> np.ndarray:
    """Softmax in float64 along ``axis`` (NaN rows stay NaN)."""
    z = np.asarray(scores, dtype=np.float64)
    z = z - z.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def fitness(probs: np.ndarray, cls: np.ndarray, targeted: bool = True) -> np.ndarray:
    """GenAttack's fitness of probabilities ``probs`` [..., K] for class ``cls`` [...]:
    log(p_t + 1e-30) − log(Σ_{j≠t} p_j + 1e-30) (targeted), or its negation with the label
    in the target's place (untargeted)."""
    onehot = np.arange(probs.shape[-1]) == np.asarray(cls)[..., None]
    own = np.where(onehot, probs, 0.0).sum(axis=-1)
    rest = np.where(onehot, 0.0, probs).sum(axis=-1)
    f = np.log(own + GUARD) - np.log(rest + GUARD)
    return f if targeted else -f


def margin(probs: np.ndarray, cls: np.ndarray, targeted: bool = True) -> np.ndarray:
    """The win margin per member: p_t − max_j p_j (targeted) or max_{j≠y} p_j − max_j p_j;
    ≤ 0 until success."""
    onehot = np.arange(probs.shape[-1]) == np.asarray(cls)[..., None]
    top = probs.max(axis=-1)
    if targeted:
        return np.where(onehot, probs, 0.0).sum(axis=-1) - top
    return np.where(onehot, -np.inf, probs).max(axis=-1) - top


def schedule(
    generation: int,
    plateaus: np.ndarray,
    mutation_rate: float,
    alpha: float,
    adaptive: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """(ρ, α) [B] after ``generation`` (1-based) for images with ``plateaus`` [B]; the
    children they breed form the next generation's population."""
    plateaus = np.asarray(plateaus)
    if not adaptive:
        return np.full(plateaus.shape, mutation_rate), np.full(plateaus.shape, alpha)
    decay = 0.9 ** plateaus.astype(np.float64)
    a = np.maximum(alpha, 0.4 * decay)
    rho = np.ones(plateaus.shape) if generation <= 10 else np.maximum(mutation_rate, 0.5 * decay)
    return rho, a


def plateau_step(
    win: np.ndarray, best: np.ndarray, count: np.ndarray, plateaus: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The reference's plateau bookkeeping for one generation with win margins ``win`` [B]:
    a better margin is kept and resets the counter, else the counter grows; a counter above
    100 (margin > −0.4) or 300 (otherwise) is one more plateau and starts again at 0."""
    better = win > best
    best = np.where(better, win, best)
    count = np.where(better, 0, count + 1)
    over = count > np.where(win > -0.4, 100, 300)
    return best, np.where(over, 0, count), plateaus + over


def sample_parents(pi: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` member indices per row of ``pi`` [B, N], drawn independently from it."""
    cdf = np.cumsum(pi, axis=1)
    cdf[:, -1] = 1.0
    u = rng.random((len(pi), count))
    idx = (u[:, :, None] >= cdf[:, None, :]).sum(axis=2)
    return np.minimum(idx, pi.shape[1] - 1)


class Scratch:
    """Reusable work buffers (the genetic step runs in chunks over them: a fresh array per
    step would cost a page fault per few kilobytes, more than the arithmetic)."""

    def __init__(self) -> None:
        self._bufs: dict[str, np.ndarray] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype: Any = np.float32) -> np.ndarray:
        size = int(np.prod(shape))
        buf = self._bufs.get(name)
        if buf is None or buf.size < size or buf.dtype != np.dtype(dtype):
            buf = self._bufs[name] = np.empty(size, dtype=dtype)
        return buf[:size].reshape(shape)


def crossover(
    noise: np.ndarray,
    pi: np.ndarray,
    pa: np.ndarray,
    pb: np.ndarray,
    rng: np.random.Generator,
    scratch: Scratch | None = None,
) -> np.ndarray:
    """Children [B, M, D] of parents ``pa``, ``pb`` [B, M] (indices into ``noise`` [B, N, D]):
    each coordinate from parent a with probability π_a/(π_a+π_b), else from b."""
    scratch = scratch or Scratch()
    b, m = pa.shape
    n, d = noise.shape[1:]
    rows = np.arange(b)[:, None]
    wa, wb = pi[rows, pa], pi[rows, pb]
    total = wa + wb
    prob_a = np.divide(wa, total, out=np.full_like(wa, 0.5), where=total > 0)
    flat = noise.reshape(b * n, d)
    children = scratch.get("a", (b, m, d))
    other = scratch.get("b", (b, m, d))
    np.take(flat, (rows * n + pa).ravel(), axis=0, out=children.reshape(b * m, d))
    np.take(flat, (rows * n + pb).ravel(), axis=0, out=other.reshape(b * m, d))
    u = rng.random((b, m, d), dtype=np.float32, out=scratch.get("u", (b, m, d)))
    # select without a masked (branchy, slow) copy: bits = b ^ ((a ^ b) & mask)
    take_a = scratch.get("bits", (b, m, d), np.uint32)
    np.less(u, prob_a.astype(np.float32)[..., None], out=take_a, casting="unsafe")
    np.negative(take_a, out=take_a)  # 1 -> 0xFFFFFFFF
    bits, other_bits = children.view(np.uint32), other.view(np.uint32)
    np.bitwise_xor(bits, other_bits, out=bits)
    np.bitwise_and(bits, take_a, out=bits)
    np.bitwise_xor(bits, other_bits, out=bits)
    return children


def mutate(
    children: np.ndarray,
    rho: np.ndarray,
    step: np.ndarray,
    rng: np.random.Generator,
    scratch: Scratch | None = None,
) -> np.ndarray:
    """``children`` [B, M, D] with + U(−step, step) on each coordinate with probability ρ
    (``rho``, ``step`` [B]); in place. One uniform u per coordinate: u < ρ mutates, and then
    u/ρ is again uniform on [0, 1) and gives the offset."""
    scratch = scratch or Scratch()
    shape = children.shape
    rho = np.asarray(rho, dtype=np.float32)[:, None, None]
    step = np.asarray(step, dtype=np.float32)[:, None, None]
    u = rng.random(shape, dtype=np.float32, out=scratch.get("u", shape))
    hit = np.less(u, rho, out=scratch.get("mask", shape, bool))
    u *= 2.0 * step / rho
    u -= step
    u *= hit  # exact zeros elsewhere: x + 0 == x (a masked add would be slower)
    children += u
    return children


def breed(
    noise: np.ndarray,
    fit: np.ndarray,
    elite: np.ndarray,
    rho: np.ndarray,
    step: np.ndarray,
    temperature: float,
    rng: np.random.Generator,
    out: np.ndarray | None = None,
    scratch: Scratch | None = None,
) -> np.ndarray:
    """The next population [B, N, D] (into ``out``): N−1 mutated children of parents drawn
    from π = softmax(f/τ), then the unmodified elite (last)."""
    b, n = fit.shape
    out = np.empty(noise.shape, dtype=np.float32) if out is None else out
    pi = softmax(fit / temperature, axis=1)
    parents = sample_parents(pi, 2 * (n - 1), rng)
    children = crossover(noise, pi, parents[:, : n - 1], parents[:, n - 1 :], rng, scratch)
    out[:, : n - 1] = mutate(children, rho, step, rng, scratch)
    out[:, n - 1] = noise[np.arange(b), elite]
    return out


class GenAttack(BlackBoxAttack):
    """GenAttack: a genetic algorithm in the L∞ ε-ball, scores only, targeted by default."""

    name = "genattack"
    norm = "linf"
    targeted = True
    chunk_elements = 1 << 20
    """Noise coordinates per block of the genetic step (its work buffers; cache-sized)."""

    def __init__(
        self,
        generations: int = 10_000,
        *,
        population: int = 6,
        mutation_rate: float = 0.005,
        alpha: float = 0.20,
        temperature: float = 0.1,
        adaptive: bool = True,
        targeted: bool = True,
        budget: int | None = None,
        batch_size: int = 1024,
    ):
        self.generations = check_positive(generations, "generations", self.name)
        self.population = check_positive(population, "population", self.name)
        if self.population < 2:
            raise AttackError(f"{self.name}: population must be at least 2, got {population!r}")
        for key, value in (("mutation_rate", mutation_rate), ("alpha", alpha)):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not ok or not 0 < value <= 1:
                raise AttackError(f"{self.name}: {key} must lie in (0, 1], got {value!r}")
        self.mutation_rate = float(mutation_rate)
        self.alpha = float(alpha)
        self.temperature = float(
            check_positive(temperature, "temperature", self.name, integer=False)
        )
        self.adaptive = bool(adaptive)
        self.targeted = bool(targeted)
        super().__init__(budget, batch_size)

    @property
    def params(self) -> dict[str, Any]:
        return {
            "norm": self.norm,
            "generations": self.generations,
            "population": self.population,
            "mutation_rate": self.mutation_rate,
            "alpha": self.alpha,
            "temperature": self.temperature,
            "adaptive": self.adaptive,
            "targeted": self.targeted,
            "budget": self.budget,
            "batch_size": self.batch_size,
        }

    def _run(self, oracle, pixels, y, t, eps, rng, clean_pred) -> dict[str, Any]:
        n, c, h, w = pixels.shape
        d, pop, gens = c * h * w, self.population, self.generations
        cls = t if self.targeted else y
        radius = int(np.floor(eps * 255.0 + 1e-9))  # the grid's ε-ball: clean ± radius
        done = clean_pred == t if self.targeted else clean_pred != y
        first = np.where(done, 0, -1).astype(np.int64)
        adv = pixels.reshape(n, d).copy()
        pred = clean_pred.astype(np.int64).copy()
        fit_now = np.full(n, np.nan, dtype=np.float32)
        labels = np.empty((gens, n), dtype=np.int32)
        spent = np.empty((gens, n), dtype=np.int32)  # cumulative queries after each generation
        fits = np.empty((gens, n), dtype=np.float32)
        active = np.flatnonzero(~done) if radius > 0 else np.zeros(0, dtype=np.int64)

        a = len(active)
        eps_px = 255.0 * eps  # noise is kept in pixel units
        scratch = Scratch()
        pool = [np.empty(a * pop * d, dtype=np.float32) for _ in range(2)]  # ping-pong
        # sparse start: U(-ε, ε) on each coordinate with probability ρ_min
        noise = pool[0].reshape(a, pop, d)
        noise[:] = 0.0
        for k in self._blocks(a, pop * d):
            rows = np.arange(k.start, k.stop)
            mutate(
                noise[k],
                np.full(len(rows), self.mutation_rate),
                np.full(len(rows), eps_px),
                rng,
                scratch,
            )
        clean = pixels[active].reshape(a, 1, d).astype(np.float32)
        lo, hi = np.maximum(clean - radius, 0.0), np.minimum(clean + radius, 255.0)
        best = np.full(a, -1.0)  # the reference starts the best margin at -1
        count = np.zeros(a, dtype=np.int64)
        plateaus = np.zeros(a, dtype=np.int64)

        last = 0
        for g in range(1, gens + 1):
            if active.size == 0:
                break
            last, a = g, len(active)
            rows = np.arange(a)
            cand = np.empty((a, pop, d), dtype=np.uint8)
            for k in self._blocks(a, pop * d):  # clip(x + noise, x - ε, x + ε) on the grid
                tmp = np.add(clean[k], noise[k], out=scratch.get("q", noise[k].shape))
                np.rint(tmp, out=tmp)
                np.clip(tmp, lo[k], hi[k], out=tmp)
                cand[k] = tmp
            scores, answered = oracle.scores(np.repeat(active, pop), cand.reshape(a * pop, c, h, w))
            answered = answered.reshape(a, pop)
            probs = softmax(scores.reshape(a, pop, -1))
            member = np.where(answered, np.argmax(np.nan_to_num(probs, nan=-1.0), axis=2), -1)
            f = np.where(answered, fitness(probs, cls[active, None], self.targeted), -np.inf)
            if self.targeted:
                hit = member == cls[active, None]
            else:
                hit = answered & (member != y[active, None])
            success = hit.any(axis=1)
            elite = np.where(success, np.argmax(hit, axis=1), np.argmax(f, axis=1))
            seen = answered.any(axis=1)  # else keep the previous answer (budget spent)
            adv[active[seen]] = cand[rows[seen], elite[seen]]
            pred[active[seen]] = member[rows[seen], elite[seen]]
            fit_now[active[seen]] = f[rows[seen], elite[seen]]
            first[active[success]] = g
            labels[g - 1], fits[g - 1] = pred, fit_now
            spent[g - 1] = oracle.queries

            go = ~success & answered.all(axis=1)  # an unanswered member: budget spent
            if g == gens or not go.any():
                active = active[go]
                continue
            win = np.where(answered, margin(probs, cls[active, None], self.targeted), -np.inf)
            best, count, plateaus = plateau_step(win.max(axis=1), best, count, plateaus)
            rho, alpha = schedule(g, plateaus, self.mutation_rate, self.alpha, self.adaptive)
            keep = np.flatnonzero(go)
            old, noise = noise, pool[g % 2][: len(keep) * pop * d].reshape(len(keep), pop, d)
            step = alpha * eps_px
            for k in self._blocks(len(keep), pop * d):
                src = keep[k]
                breed(
                    old[src],
                    f[src],
                    elite[src],
                    rho[src],
                    step[src],
                    self.temperature,
                    rng,
                    out=noise[k],
                    scratch=scratch,
                )
            active, best, count, plateaus = active[keep], best[keep], count[keep], plateaus[keep]
            clean, lo, hi = clean[keep], lo[keep], hi[keep]
        labels[last:], fits[last:] = pred, fit_now
        spent[last:] = oracle.queries
        return {
            "adv": adv.reshape(n, c, h, w),
            "pred": pred,
            "first_success": first,
            "traces": {"label": labels, "fitness": fits, "queries": spent},
        }

    def _blocks(self, rows: int, per_row: int) -> list[slice]:
        """Consecutive slices of ``rows`` rows of ``per_row`` values each, at most
        ``chunk_elements`` values a block (whole images; the oracle call is never split)."""
        size = max(1, self.chunk_elements // per_row)
        return [slice(lo, min(rows, lo + size)) for lo in range(0, rows, size)]
