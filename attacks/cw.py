"""Carlini & Wagner L2 (Carlini & Wagner, IEEE S&P 2017, arXiv:1608.04644).

A minimum-norm attack, following the reference ``carlini/nn_robust_attacks`` ``l2_attack.py``:

- tanh space over the [0, 1] box: x' = (tanh(w₀ + w) + 1)/2, w₀ = atanh((2x − 1)·0.999999)
  (the factor keeps atanh finite at 0 and 1), w initialised to 0;
- objective, summed over the batch: ‖x' − x̃‖²₂ + c·max(0, Z_y − max_{i≠y} Z_i + κ)
  (targeted: c·max(0, max_{i≠t} Z_i − Z_t + κ)), x̃ = (tanh(w₀) + 1)/2, Z the *logits*;
- Adam, lr ``stepsize`` 0.01, β 0.9/0.999, ε 1e-8, state and w reset at every binary-search
  step, ``steps`` (10,000) iterations per step; ``abort_early``: every
  ``max(1, steps // 10)`` iterations stop the step when the batch loss is above 0.9999× its
  value at the previous check;
- per-example binary search over c, ``binary_search_steps`` (9) steps from ``initial_const``
  (1e-3), lower 0, upper 1e10: an adversarial found in the step → upper = min(upper, c),
  none → lower = max(lower, c); then c = (lower + upper)/2 while upper < 1e9, else c ×= 10
  on failure (and c is held on success); with ≥ 10 steps the last reruns at c = upper;
- each iterate is judged at the evaluation its gradient is taken at, before the Adam update
  (confidence-adjusted argmax: κ added to the label's logit, or taken from the target's);
  the smallest-L2 successful iterate over all steps is kept per example.

``adam="tf"`` (default) is TensorFlow 1's AdamOptimizer, which the reference ran: ε is added
to √v and the bias correction folded into the rate, an effective ε/√(1 − β2ᵗ) on √v̂ (3e-7 at
t = 1). ``adam="torch"`` is Kingma & Ba's Algorithm 1 (torch, foolbox 3: ε on √v̂). They
differ only where gradients are tiny, e.g. on pixels saturated at 0 or 1, whose tanh-space
gradient carries the factor 1 − tanh²(w₀) ≈ 2e-6.

Deviations from the reference, each as foolbox 3 ``L2CarliniWagnerAttack`` does it: a
failure returns the clean image (the reference returns zeros; foolbox too, and then counts
the zeros image as a success wherever the model misclassifies it) and is unsuccessful; the
abort-early loss starts at inf (the reference starts at 1e6, which aborts the whole batch at
iteration 0 once the summed c·margin exceeds 1e6, for batches of hundreds already at
c ≈ 10²–10³: an artefact of its batch size 1); untargeted confidence is *added* to the label
logit (the reference subtracts κ in both modes, harmless at κ = 0); the kept best is the
smallest L2 to the clean x (the reference measures to x̃, within 1e-6). Where foolbox 3
differs from the reference and this follows the reference: its Adam (``adam="torch"``);
its binary search starts upper at inf and never holds c (the same until c reaches 1e9); it
checks abort-early every ⌈steps/10⌉ iterations (the same when 10 divides ``steps``; the
reference's ``steps // 10`` fails below 10 steps, hence the max(1, ·)).

Batched: one Adam over the batch (``batch_size`` images, per-example c). Abort-early looks
at the batch's summed loss, as in the reference, so a result depends on its batch.

Presets (``params["preset"]``): the defaults are the reference's (``reference``, up to
9 × 10,000 forward and backward passes); :meth:`CarliniWagnerL2.reduced` (``reduced``) is
9 × 1000, the same binary search with a tenth of the inner budget (abort-early usually ends a
step well before); :meth:`CarliniWagnerL2.fixed_const` (``fixed-const``) is one step at a
fixed c without abort-early, the study's grid cell (c ∈ 0.01…10, i ∈ 1…50).

Input: float NCHW images in [0, 1] on the 8-bit grid (or uint8). ``epsilons`` are thresholds
on the found L2 distortion (foolbox 3 ``MinimizationAttack``): at a finite ε the adversarial
is ``x + Π_ε(δ)`` (δ projected onto the L2 ball), judged again; ``None``/inf is unbounded.
The attack runs once per batch and call; each ε only projects its result.

Records ``first_success``: the 1-based index of the gradient evaluation (counted over all
binary-search steps) at which an adversarial within ε was first seen (where only the
projection of a farther one succeeds, the evaluation that found it), 0 if the clean image is
already adversarial, -1 if none. For ``fixed_const`` runs one run of i gives every i' ≤ i
(``result.accuracy_at``; snapshots give the adversarials), since without abort-early the
first i' evaluations do not depend on ``steps``. ``queries``: gradient evaluations of the
batch. Traces, each [binary_search_steps, N]: ``const`` (c of the step), ``found`` (an
adversarial was found in it), ``iterations`` (Adam steps it ran), ``best_l2`` (after it, inf
while none).

Example::

    from hwbed.attacks import CarliniWagnerL2, Twin
    twin = Twin.from_checkpoint("model.pt")
    result = CarliniWagnerL2.reduced()(twin, images, labels, epsilons=[None, 0.5, 1.0])
    result.summary()  # success rate and median L2 per threshold
    cell = CarliniWagnerL2.fixed_const(1.0, steps=50)(twin, images, labels)
    [cell.accuracy_at(i) for i in (1, 10, 20, 50)]
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .base import WhiteBoxAttack
from .distances import SLACK, project
from .inputs import AttackError, check_epsilons, check_positive
from .result import outcome

SQUASH = 0.999999
"""The atanh factor of the reference (tanh space reaches [0, 1] up to 5e-7)."""
UPPER = 1e10
"""The binary search's initial upper bound on c (also the reference's "no success yet" L2)."""
EXPONENTIAL = 1e9
"""While upper ≥ this, a failed step multiplies c by 10 instead of bisecting."""
BETA1, BETA2, ADAM_EPS = 0.9, 0.999, 1e-8
ADAM = ("tf", "torch")
"""Adam's ε placement: ``tf`` (TensorFlow 1's AdamOptimizer, which the reference ran: ε on
√v) or ``torch`` (Kingma & Ba's Algorithm 1, torch.optim.Adam and foolbox 3: ε on √v̂)."""
REFERENCE = {
    "binary_search_steps": 9,
    "steps": 10_000,
    "stepsize": 1e-2,
    "confidence": 0.0,
    "initial_const": 1e-3,
    "abort_early": True,
    "adam": "tf",
}
REDUCED = {**REFERENCE, "steps": 1000}


class CarliniWagnerL2(WhiteBoxAttack):
    """Carlini & Wagner L2 with the reference's binary search over c; untargeted or targeted."""

    name = "cw-l2"
    norm = "l2"
    bounded = False

    def __init__(
        self,
        binary_search_steps: int = 9,
        steps: int = 10_000,
        *,
        stepsize: float = 1e-2,
        confidence: float = 0.0,
        initial_const: float = 1e-3,
        abort_early: bool = True,
        targeted: bool = False,
        adam: str = "tf",
        batch_size: int = 256,
    ):
        name = "cw-l2"
        self.binary_search_steps = check_positive(binary_search_steps, "binary_search_steps", name)
        self.steps = check_positive(steps, "steps", name)
        self.stepsize = float(check_positive(stepsize, "stepsize", name, integer=False))
        self.initial_const = float(
            check_positive(initial_const, "initial_const", name, integer=False)
        )
        if (
            isinstance(confidence, bool)
            or not isinstance(confidence, (int, float))
            or not np.isfinite(confidence)
            or confidence < 0
        ):
            raise AttackError(f"{name}: confidence must be a number >= 0, got {confidence!r}")
        if not isinstance(abort_early, (bool, np.bool_)):
            raise AttackError(f"{name}: abort_early must be True or False, got {abort_early!r}")
        if adam not in ADAM:
            raise AttackError(f"{name}: unknown adam {adam!r}; choose one of {', '.join(ADAM)}")
        self.adam = adam
        self.confidence = float(confidence)
        self.abort_early = bool(abort_early)
        self.targeted = bool(targeted)
        self.batch_size = check_positive(batch_size, "batch_size", name)
        self._cache: dict[str, dict[str, Any]] | None = None
        self._radii: tuple[float, ...] = ()

    @classmethod
    def reduced(cls, **options) -> CarliniWagnerL2:
        """The labelled cheaper preset: 9 binary-search steps × 1000 Adam steps."""
        return cls(**{**REDUCED, **options})

    @classmethod
    def fixed_const(cls, const: float, steps: int, **options) -> CarliniWagnerL2:
        """The study's grid cell: one optimisation at c = ``const`` for ``steps`` steps
        (no binary search, no abort-early)."""
        options = {"abort_early": False, **options}
        return cls(1, steps, initial_const=const, **options)

    @property
    def preset(self) -> str:
        """``reference``, ``reduced``, ``fixed-const`` (one step, no abort) or ``custom``."""
        now = {k: getattr(self, k) for k in REFERENCE}
        if now == REFERENCE:
            return "reference"
        if now == REDUCED:
            return "reduced"
        if self.binary_search_steps == 1 and not self.abort_early:
            return "fixed-const"
        return "custom"

    @property
    def params(self) -> dict[str, Any]:
        return {
            "preset": self.preset,
            "binary_search_steps": self.binary_search_steps,
            "steps": self.steps,
            "stepsize": self.stepsize,
            "confidence": self.confidence,
            "initial_const": self.initial_const,
            "abort_early": self.abort_early,
            "targeted": self.targeted,
            "adam": self.adam,
            "loss": "logit margin",
            "batch_size": self.batch_size,
        }

    def __call__(self, model, images, labels, epsilons=None, **kwargs):
        """As :meth:`WhiteBoxAttack.__call__`; the attack runs once per batch for all ε."""
        self._cache = {}
        self._radii = tuple(check_epsilons(epsilons, self.name, bounded=False).tolist())
        try:
            return super().__call__(model, images, labels, epsilons, **kwargs)
        finally:
            self._cache, self._radii = None, ()

    def _run(self, twin, x, y, t, eps, gen) -> dict[str, Any]:
        parts = [x.numpy().tobytes(), y.numpy().tobytes()]
        if t is not None:
            parts.append(t.numpy().tobytes())
        key = hashlib.sha1(b"".join(parts)).hexdigest()
        cache = self._cache if self._cache is not None else {}
        radii = self._radii if eps in self._radii else (eps,)
        if key not in cache:
            cache[key] = self.attack(twin, x, y, t, radii)
        run = cache[key]
        adv, snaps = run["adv"], run["snapshots"]
        y_np, t_np = y.numpy(), None if t is None else t.numpy()
        if np.isfinite(eps):
            adv = (x + project(adv - x, "l2", eps)).clamp_(0, 1)
            snaps = {i: (x + project(s - x, "l2", eps)).clamp_(0, 1) for i, s in snaps.items()}
        hit = outcome(twin.predict(adv).cpu().numpy(), y_np, t_np)  # as the base will judge
        # the first evaluation that saw an adversarial within ε; where only the projection
        # of a farther one succeeds, the evaluation that found the kept best
        first = run["first_within"][radii.index(eps)]
        first = np.where(hit, np.where(first > 0, first, run["best_at"]), -1)
        first[run["clean_hit"] & hit] = 0
        return {
            "adv": adv,
            "first_success": first,
            "queries": run["queries"],
            "traces": run["traces"],
            "snapshots": snaps,
        }

    def _asked(self) -> tuple[int, ...]:
        """The snapshot evaluation counts asked for (none with a base without them)."""
        pick = getattr(self, "snapshot_steps", None)
        return tuple(pick(self.binary_search_steps * self.steps)) if pick is not None else ()

    def attack(
        self,
        twin,
        x: torch.Tensor,
        y: torch.Tensor,
        t: torch.Tensor | None,
        radii: tuple[float, ...] = (np.inf,),
    ) -> dict[str, Any]:
        """The unbounded run on one batch of float images x in [0, 1] (labels y, targets t):
        ``adv`` (the clean image where it failed), ``best_l2`` (inf where it failed),
        ``best_at`` (the evaluation that found it), ``first_within`` [R, N] (the first
        evaluation that saw an adversarial within each of ``radii``, -1 if none),
        ``clean_hit``, ``queries``, ``traces`` and ``snapshots``."""
        n = len(x)
        asked = set(self._asked())
        snapshots: dict[int, torch.Tensor] = {}
        cls = y if t is None else t
        y_np, t_np = y.numpy(), None if t is None else t.numpy()
        clean_hit = outcome(twin.predict(x).cpu().numpy(), y_np, t_np)
        onehot = F.one_hot(cls, twin.num_classes).bool()
        w0 = torch.atanh((x * 2 - 1) * SQUASH)
        x_rec = (torch.tanh(w0) + 1) / 2
        const = np.full(n, self.initial_const)
        lower, upper = np.zeros(n), np.full(n, UPPER)
        best_adv, best_l2 = x.clone(), torch.full((n,), torch.inf)
        limits = torch.tensor(radii, dtype=torch.float64)[:, None] * (1 + SLACK)
        first_within = torch.full((len(radii), n), -1, dtype=torch.int64)
        best_at = torch.full((n,), -1, dtype=torch.int64)
        total = 0
        period = max(1, self.steps // 10)
        b_steps = self.binary_search_steps
        trace = {
            "const": np.zeros((b_steps, n)),
            "found": np.zeros((b_steps, n), dtype=bool),
            "iterations": np.zeros((b_steps, n), dtype=np.int64),
            "best_l2": np.zeros((b_steps, n)),
        }
        for b in range(b_steps):
            if b_steps >= 10 and b == b_steps - 1:
                const = upper.copy()  # the reference's final repeat at the upper bound
            trace["const"][b] = const
            c = torch.from_numpy(const).float()
            w = torch.zeros_like(x)
            m, v = torch.zeros_like(x), torch.zeros_like(x)
            found = np.zeros(n, dtype=bool)
            prev = np.inf
            for s in range(self.steps):
                w.requires_grad_(True)
                xp = (torch.tanh(w0 + w) + 1) / 2
                logits = twin(xp).cpu()
                own = logits[onehot]
                other = logits.masked_fill(onehot, -torch.inf).amax(1)
                margin = (other - own) if t is not None else (own - other)
                dist = (xp - x_rec).flatten(1).square().sum(1)
                loss = (c * (margin + self.confidence).clamp_min(0)).sum() + dist.sum()
                (grad,) = torch.autograd.grad(loss, w)
                total += 1
                with torch.no_grad():
                    w = self._adam(w.detach(), grad, m, v, s + 1)
                value = float(loss.detach())
                check = self.abort_early and s % period == 0
                stop = check and not value <= 0.9999 * prev  # no progress: abort this step
                if check and not stop:
                    prev = value
                if not stop:  # judge the iterate the gradient was taken at
                    with torch.no_grad():
                        hit = self._adversarial(logits.detach(), onehot, t is not None)
                        found |= hit.numpy()
                        l2 = (xp.detach() - x).flatten(1).norm(dim=1)
                        new = hit & (l2 < best_l2)
                        best_adv[new] = xp.detach()[new]
                        best_l2[new] = l2[new]
                        best_at[new] = total
                        seen = hit & (l2.double() <= limits) & (first_within < 0)
                        first_within[seen] = total
                if total in asked:  # what the run returns had it stopped here
                    snapshots[total] = best_adv.clone()
                if stop:
                    break
            trace["found"][b] = found
            trace["iterations"][b] = s + 1
            trace["best_l2"][b] = best_l2.double().numpy()
            upper = np.where(found, np.minimum(upper, const), upper)
            lower = np.where(found, lower, np.maximum(lower, const))
            const = np.where(
                upper < EXPONENTIAL, (lower + upper) / 2, np.where(found, const, const * 10)
            )
        for i in asked - set(snapshots):  # the run stopped before i evaluations
            snapshots[i] = best_adv.clone()
        return {
            "adv": best_adv,
            "best_l2": best_l2.double().numpy(),
            "clean_hit": clean_hit,
            "queries": np.full(n, total, dtype=np.int64),
            "best_at": best_at.numpy(),
            "first_within": first_within.numpy(),
            "traces": trace,
            "snapshots": snapshots,
        }

    def _adam(self, w, grad, m, v, step: int) -> torch.Tensor:
        """One Adam step: TensorFlow 1's form (ε on √v, bias correction in the rate) or
        torch's/foolbox 3's (``adam="torch"``)."""
        m.mul_(BETA1).add_(grad, alpha=1 - BETA1)
        v.mul_(BETA2).addcmul_(grad, grad, value=1 - BETA2)
        if self.adam == "torch":  # Kingma & Ba's Algorithm 1: ε on the corrected √v̂
            m_hat, v_hat = m / (1 - BETA1**step), v / (1 - BETA2**step)
            return w - self.stepsize * m_hat / (v_hat.sqrt() + ADAM_EPS)
        rate = self.stepsize * np.sqrt(1 - BETA2**step) / (1 - BETA1**step)
        return w - rate * m / (v.sqrt() + ADAM_EPS)

    def _adversarial(self, logits: torch.Tensor, onehot: torch.Tensor, targeted: bool):
        """The reference's confidence-adjusted success test of each iterate."""
        if self.confidence:
            shift = -self.confidence if targeted else self.confidence
            logits = logits + onehot * shift
        pred = logits.argmax(1)
        cls = onehot.float().argmax(1)
        return pred == cls if targeted else pred != cls
