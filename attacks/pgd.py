"""PGD, projected gradient descent (Madry et al., ICLR 2018, arXiv:1706.06083), L∞ and L2.

Each restart starts uniformly at random in the ε-ball (``random_start``), then takes
``steps`` steps ``x ← Π(x + α·d)``, d = sign(g) (L∞) or g/‖g‖₂ (L2), g the input gradient
of the loss, Π the projection onto the ε-ball and the [0, 1] box. α is ``abs_stepsize``, or
``rel_stepsize``·ε (default ε/4, the reference's α for L∞ 8/255 with α 2/255). Per image the
first successful iterate of the first successful restart is kept (``keep="first"``), else the
final iterate (``keep="last"``, what torchattacks and foolbox return; it records no
``first_success``). Input: float NCHW
images in [0, 1] on the 8-bit grid (or uint8); ε in [0, 1] units in the stated norm.

Records per image the first iteration at which any restart succeeded (``first_success``,
so accuracy at every i ≤ steps comes from one run), and per restart the loss and the
correctness of each iterate every ``record_every`` steps: traces ``loss`` and ``correct``
[R, T, N] with iterations ``trace_steps`` (0 is the start), for the study's PGD curves.

Example::

    from hwbed.attacks import PGD, Twin
    pgd = PGD(norm="l2", steps=100, abs_stepsize=0.5, restarts=5, record_every=5)
    result = pgd(Twin.from_checkpoint("model.pt"), images, labels, epsilons=[2.0])
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .base import LOSSES, WhiteBoxAttack, attack_loss
from .distances import normalize, project, random_in_ball
from .inputs import AttackError, check_norm, check_positive
from .result import outcome


class PGD(WhiteBoxAttack):
    """Projected gradient descent with random restarts; L∞ or L2 (``norm`` is required)."""

    name = "pgd"
    norm: str

    def __init__(
        self,
        norm: str | None = None,
        steps: int = 10,
        *,
        rel_stepsize: float = 0.25,
        abs_stepsize: float | None = None,
        restarts: int = 1,
        random_start: bool = True,
        loss: str = "ce",
        targeted: bool = False,
        keep: str = "first",
        record_every: int = 1,
    ):
        self.norm = check_norm(norm, "pgd")
        self.steps = check_positive(steps, "steps", "pgd")
        self.restarts = check_positive(restarts, "restarts", "pgd")
        self.record_every = check_positive(record_every, "record_every", "pgd")
        self.rel_stepsize = check_positive(rel_stepsize, "rel_stepsize", "pgd", integer=False)
        self.abs_stepsize = check_positive(
            abs_stepsize, "abs_stepsize", "pgd", integer=False, allow_none=True
        )
        if loss not in LOSSES:
            raise AttackError(f"pgd: unknown loss {loss!r}; choose one of {', '.join(LOSSES)}")
        if keep not in ("first", "last"):
            raise AttackError(f"pgd: keep must be 'first' or 'last', got {keep!r}")
        self.loss, self.targeted, self.keep = loss, bool(targeted), keep
        self.random_start = bool(random_start)

    @property
    def queries_per_iteration(self) -> int:
        return self.restarts

    @property
    def params(self) -> dict[str, Any]:
        return {
            "norm": self.norm,
            "steps": self.steps,
            "rel_stepsize": self.rel_stepsize,
            "abs_stepsize": self.abs_stepsize,
            "restarts": self.restarts,
            "random_start": self.random_start,
            "loss": self.loss,
            "targeted": self.targeted,
            "keep": self.keep,
            "record_every": self.record_every,
        }

    @property
    def trace_steps(self) -> np.ndarray:
        """The iterations the traces hold (0 = the start point; the last step always)."""
        steps = list(range(0, self.steps + 1, self.record_every))
        return np.asarray(steps if steps[-1] == self.steps else [*steps, self.steps])

    def _run(self, twin, x, y, t, eps, gen) -> dict[str, Any]:
        n = len(x)
        alpha = self.abs_stepsize if self.abs_stepsize is not None else self.rel_stepsize * eps
        record = set(self.trace_steps.tolist())
        marks = {k: Pick(x) for k in self.snapshot_steps(self.steps)} | {self.steps: Pick(x)}
        first = np.full(n, -1, dtype=np.int64)
        losses = np.zeros((self.restarts, len(record), n), dtype=np.float32)
        correct = np.zeros((self.restarts, len(record), n), dtype=bool)
        y_np, t_np = y.numpy(), None if t is None else t.numpy()
        for r in range(self.restarts):
            if self.random_start and eps > 0:
                adv = (x + random_in_ball(x.shape, self.norm, eps, gen)).clamp_(0, 1)
            else:
                adv = x.clone()
            found = np.zeros(n, dtype=bool)  # this restart already succeeded
            kept = x.clone()  # this restart's first successful iterate
            kept_pred = np.zeros(n, dtype=np.int64)
            slot = 0
            for k in range(self.steps + 1):
                adv.requires_grad_(True)
                logits = twin(adv)
                loss = attack_loss(logits, y, self.loss, self.targeted, t)
                pred = logits.argmax(1).detach().cpu().numpy()
                hit = outcome(pred, y_np, t_np)
                if k in record:
                    losses[r, slot] = loss.detach().cpu().numpy()
                    correct[r, slot] = pred == y_np
                    slot += 1
                new = hit & ~found
                kept[torch.from_numpy(new)] = adv.detach()[torch.from_numpy(new)]
                kept_pred[new] = pred[new]
                found |= hit
                first = np.where(new & ((first < 0) | (first > k)), k, first)
                if k in marks:  # the run had it stopped after k steps
                    if self.keep == "first":
                        marks[k].offer(
                            torch.where(_rows(found), kept, adv.detach()),
                            np.where(found, kept_pred, pred),
                            found,
                        )
                    else:
                        marks[k].offer(adv.detach(), pred, hit)
                if k == self.steps:
                    break
                (grad,) = torch.autograd.grad(loss.sum(), adv)
                with torch.no_grad():
                    step = adv + alpha * normalize(grad, self.norm)
                    adv = (x + project(step - x, self.norm, eps)).clamp_(0, 1)
        return {
            "adv": marks[self.steps].images,
            "pred": marks[self.steps].pred,
            # keep="last" returns the final iterate: an iterate that once succeeded says
            # nothing about it, so no per-iteration success is claimed
            "first_success": first if self.keep == "first" else None,
            "queries": np.full(n, self.steps * self.restarts, dtype=np.int64),
            "snapshots": {
                k: m.images for k, m in marks.items() if k != self.steps or k in self._snapshots
            },
            "traces": {"loss": losses, "correct": correct},
        }


class Pick:
    """The adversarial of each image over restarts: the first restart that succeeded, else
    the last restart's candidate."""

    def __init__(self, x: torch.Tensor):
        self.images = x.clone()
        self.pred = np.zeros(len(x), dtype=np.int64)
        self.done = np.zeros(len(x), dtype=bool)

    def offer(self, candidate: torch.Tensor, pred: np.ndarray, succeeded: np.ndarray) -> None:
        take = ~self.done
        self.images = torch.where(_rows(take), candidate, self.images)
        self.pred = np.where(take, pred, self.pred)
        self.done |= succeeded


def _rows(mask: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(mask).view(-1, 1, 1, 1)
