"""DeepFool (Moosavi-Dezfooli, Fawzi & Frossard, CVPR 2016, arXiv:1511.04599), L2 and L∞.

A minimum-norm attack: it linearises the network around the current iterate and steps to
the nearest linearised decision boundary, following the reference ``LTS4/DeepFool``
(``Python/deepfool.py``):

- the candidate classes are the top ``candidates`` (10) classes of the clean logits, k̂ the
  first of them (the *predicted* label);
- at iterate x_i, for every candidate k ≠ k̂: w_k = ∇(Z_k − Z_k̂)(x_i), f_k = Z_k − Z_k̂,
  d_k = |f_k| / ‖w_k‖_q (q = 2 for L2, the dual norm q = 1 for L∞); l = argmin_k d_k;
- the step is r_i = (d_l + 1e-4)·w_l/‖w_l‖₂ (L2) or (d_l + 1e-4)·sign(w_l) (L∞);
- r_tot += r_i and x_{i+1} = clip(x₀ + (1 + overshoot)·r_tot, 0, 1): the overshoot (0.02)
  scales the *total* perturbation, not each step;
- an image stops as soon as it is misclassified, at most ``steps`` (50) iterations.

Deviations from the reference, all as foolbox 3 (``L2DeepFoolAttack``/``LinfDeepFoolAttack``)
does them: every iterate is clipped to the [0, 1] box (the reference never clips; r_tot
itself is not clipped); the stop test is misclassification of the *label* y (the reference
stops when the prediction leaves k̂: the same for correctly classified images, and an image
already misclassified is returned unchanged); 1e-8 is added to the gradient norms (the
reference divides by them bare). Batched: per iteration one forward pass over the images
still running and one backward pass per candidate class (``candidates − 1``) over the batch.

Input: float NCHW images in [0, 1] on the 8-bit grid (or uint8). ``epsilons`` are thresholds
on the found distortion in ``norm`` (foolbox 3 ``MinimizationAttack``): at a finite ε the
adversarial is ``x + Π_ε(δ)`` (δ projected onto the ε-ball), judged again; ``None``/inf is
unbounded. The attack runs once per batch and call (cached for the call); each ε only
projects its result.

Records ``first_success`` (the iteration after which the image was first misclassified, 0
if already misclassified, -1 never; per ε, -1 where the projected adversarial fails), so the
study's iterations 1, 5, 10, 20 come from one run of 20 (``result.accuracy_at(i)``: DeepFool's
first iterates do not depend on ``steps``), and ``snapshots=[1, 5, ...]`` keeps the
adversarials DeepFool(steps=i) returns (e.g. for the CAM view after 1 and 5 iterations);
trace ``norm`` [steps, N], the perturbation norm ‖x_i − x₀‖ after each iteration (frozen
once the image stops). ``queries``: class-gradient backward passes charged to the image,
``candidates − 1`` per iteration it ran (plus one forward pass per iteration, not counted).

Example::

    from hwbed.attacks import DeepFool, Twin, px
    twin = Twin.from_checkpoint("model.pt")
    result = DeepFool(norm="l2", steps=20)(twin, images, labels)  # unbounded
    result.distortion["l2"][0]  # per-image L2 of the adversarial
    [result.accuracy_at(i) for i in (1, 5, 10, 20)]
    DeepFool("linf", steps=20)(twin, images, labels, epsilons=[px(2), px(8)], snapshots=[1, 5])
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import torch

from .base import WhiteBoxAttack
from .distances import norms, project
from .inputs import AttackError, check_norm, check_positive

STABILITY = 1e-4
"""Added to the boundary distance d_l of every step (the reference's numerical-stability term)."""
NORM_FLOOR = 1e-8
"""Added to gradient norms before dividing (foolbox 3; keeps zero gradients finite)."""


class DeepFool(WhiteBoxAttack):
    """DeepFool, untargeted minimum-norm attack, L2 (default) or L∞ (``norm="linf"``)."""

    name = "deepfool"
    norm: str
    bounded = False

    def __init__(
        self,
        norm: str = "l2",
        steps: int = 50,
        *,
        candidates: int = 10,
        overshoot: float = 0.02,
        batch_size: int = 256,
    ):
        self.norm = check_norm(norm, "deepfool")
        self.steps = check_positive(steps, "steps", "deepfool")
        self.candidates = check_positive(candidates, "candidates", "deepfool")
        if self.candidates < 2:
            raise AttackError(f"deepfool: candidates must be >= 2, got {candidates!r}")
        if (
            isinstance(overshoot, bool)
            or not isinstance(overshoot, (int, float))
            or not np.isfinite(overshoot)
            or overshoot < 0
        ):
            raise AttackError(f"deepfool: overshoot must be a number >= 0, got {overshoot!r}")
        self.overshoot = float(overshoot)
        self.batch_size = check_positive(batch_size, "batch_size", "deepfool")
        self._cache: dict[str, dict[str, Any]] | None = None

    @property
    def queries_per_iteration(self) -> int:
        return self.candidates - 1

    @property
    def params(self) -> dict[str, Any]:
        return {
            "norm": self.norm,
            "steps": self.steps,
            "candidates": self.candidates,
            "overshoot": self.overshoot,
            "stability": STABILITY,
            "clip": "every iterate (foolbox 3); the reference does not clip",
            "loss": "logits",
            "batch_size": self.batch_size,
        }

    def __call__(self, *args, **kwargs):
        """As :meth:`WhiteBoxAttack.__call__`; the attack runs once per batch for all ε."""
        self._cache = {}
        try:
            return super().__call__(*args, **kwargs)
        finally:
            self._cache = None

    def _run(self, twin, x, y, t, eps, gen) -> dict[str, Any]:
        key = hashlib.sha1(x.numpy().tobytes() + y.numpy().tobytes()).hexdigest()
        cache = self._cache if self._cache is not None else {}
        if key not in cache:
            cache[key] = self.attack(twin, x, y)
        run = cache[key]
        adv, first, snaps = run["adv"], run["first_success"], run["snapshots"]
        if np.isfinite(eps):
            adv = (x + project(adv - x, self.norm, eps)).clamp_(0, 1)
            snaps = {i: (x + project(s - x, self.norm, eps)).clamp_(0, 1) for i, s in snaps.items()}
        hit = twin.predict(adv).cpu().numpy() != y.numpy()  # as the base will judge
        first = np.where(hit, first, -1)
        return {
            "adv": adv,
            "first_success": first,
            "queries": run["queries"],
            "traces": {"norm": run["norm"]},
            "snapshots": snaps,
        }

    def _asked(self) -> tuple[int, ...]:
        """The snapshot iterations the caller asked for (none with a base without them)."""
        pick = getattr(self, "snapshot_steps", None)
        return tuple(pick(self.steps)) if pick is not None else ()

    def attack(self, twin, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
        """The unbounded run on one batch: ``adv`` [N, C, H, W], ``first_success`` [N],
        ``queries`` [N], ``norm`` [steps, N] and ``snapshots`` {i: the adversarials after
        i iterations} (float images x in [0, 1], labels y)."""
        n = len(x)
        asked = set(self._asked())
        snapshots: dict[int, torch.Tensor] = {}
        with torch.no_grad():
            clean = twin(x).cpu()
        k = min(self.candidates, clean.shape[1])
        if k < 2:
            raise AttackError(f"deepfool: the model has {clean.shape[1]} class; need >= 2")
        classes = clean.argsort(dim=1, descending=True)[:, :k]
        adv = x.clone()
        total = torch.zeros_like(x)
        first = np.full(n, -1, dtype=np.int64)
        queries = np.zeros(n, dtype=np.int64)
        trace = np.zeros((self.steps, n), dtype=np.float32)
        size = np.zeros(n, dtype=np.float32)  # ‖x_i − x₀‖ of the current iterates
        active = torch.arange(n)
        for i in range(self.steps + 1):
            if i in asked:  # what DeepFool(steps=i) returns
                snapshots[i] = adv.clone()
            xa = adv[active].clone().requires_grad_(True)
            logits = twin(xa).cpu()
            hit = (logits.argmax(1) != y[active]).numpy()
            first[active.numpy()[hit]] = i
            keep = torch.from_numpy(~hit)
            if i == self.steps or not keep.any():
                trace[i:] = size
                break
            step = self._step(logits, xa, classes[active])[keep]
            active = active[keep]
            total[active] += step
            adv[active] = (x[active] + (1.0 + self.overshoot) * total[active]).clamp(0, 1)
            queries[active.numpy()] += k - 1
            size[active.numpy()] = norms(adv[active] - x[active], self.norm).numpy()
            trace[i] = size
        for i in asked - set(snapshots):  # every image stopped before i
            snapshots[i] = adv.clone()
        return {
            "adv": adv,
            "first_success": first,
            "queries": queries,
            "norm": trace,
            "snapshots": snapshots,
        }

    def _step(self, logits: torch.Tensor, xa: torch.Tensor, classes: torch.Tensor):
        """The DeepFool step r_i of every image in ``xa`` (one backward pass per candidate)."""
        rows = torch.arange(len(xa))
        own = logits[rows, classes[:, 0]]
        k = classes.shape[1]
        best_d = torch.full((len(xa),), torch.inf)
        best_w = torch.zeros_like(xa)
        for j in range(1, k):
            f = logits[rows, classes[:, j]] - own
            (w,) = torch.autograd.grad(f.sum(), xa, retain_graph=j < k - 1)
            dual = w.flatten(1).norm(dim=1) if self.norm == "l2" else w.flatten(1).abs().sum(1)
            d = f.detach().abs() / (dual + NORM_FLOOR)
            better = d < best_d
            best_d = torch.where(better, d, best_d)
            best_w[better] = w[better]
        size = best_d + STABILITY
        if self.norm == "l2":
            scale = size / (best_w.flatten(1).norm(dim=1) + NORM_FLOOR)
            return scale.view(-1, 1, 1, 1) * best_w
        return size.view(-1, 1, 1, 1) * best_w.sign()
