"""FGSM, the fast gradient sign method (Goodfellow, Shlens & Szegedy, ICLR 2015, arXiv:1412.6572).

One signed-gradient step of size ε under L∞: ``x' = clip(x + ε·sign(∇ₓ L(x, y)), 0, 1)``
(targeted: a step down the loss to the target). Input: float NCHW images in [0, 1] on the
8-bit grid (or uint8); ε absolute in [0, 1] units, printed as ε·255 pixel units. Default loss
cross-entropy on logits; ``loss="margin"`` takes the C&W logit margin instead. Cost: one
forward and one backward pass per image.

Example::

    from hwbed.attacks import FGSM, Twin, px
    result = FGSM()(Twin.from_checkpoint("model.pt"), images, labels,
                    epsilons=[px(2), px(4), px(8), px(16)])
    result.robust_accuracy  # [4]
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .base import LOSSES, WhiteBoxAttack, attack_loss
from .inputs import AttackError


class FGSM(WhiteBoxAttack):
    """Fast gradient sign method, L∞, one step of size ε."""

    name = "fgsm"
    norm = "linf"

    def __init__(self, loss: str = "ce", targeted: bool = False):
        if loss not in LOSSES:
            raise AttackError(f"fgsm: unknown loss {loss!r}; choose one of {', '.join(LOSSES)}")
        self.loss = loss
        self.targeted = bool(targeted)

    @property
    def params(self) -> dict[str, Any]:
        return {"norm": self.norm, "loss": self.loss, "targeted": self.targeted}

    def _run(self, twin, x, y, t, eps, gen) -> dict[str, Any]:
        x = x.clone().requires_grad_(True)
        loss = attack_loss(twin(x), y, self.loss, self.targeted, t).sum()
        (grad,) = torch.autograd.grad(loss, x)
        adv = (x.detach() + eps * grad.sign()).clamp_(0, 1)
        return {"adv": adv, "queries": np.ones(len(x), dtype=np.int64)}
