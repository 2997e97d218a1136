"""Knowledge distillation (Hinton et al., 2015): KL between softened teacher and student."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor | None = None,
    temperature: float = 30.0,
    alpha: float = 1.0,
) -> torch.Tensor:
    """alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(s, labels).

    The study trains with the KL term alone (alpha = 1) at T = 30 and evaluates at T = 1.
    The T^2 factor keeps the gradient scale independent of T.
    """
    t = temperature
    kl = F.kl_div(
        F.log_softmax(student_logits / t, dim=1),
        F.log_softmax(teacher_logits / t, dim=1),
        reduction="batchmean",
        log_target=True,
    )
    loss = alpha * t * t * kl
    if alpha < 1.0:
        if labels is None:
            raise ValueError("kd_loss with alpha < 1 needs labels for the cross-entropy term")
        loss = loss + (1.0 - alpha) * F.cross_entropy(student_logits, labels)
    return loss
