"""Loss terms of the exit training modes as pure functions returning SUMS over items.

Sums, not means: the trainer divides by the item count of the whole accumulated (and, across processes, global)
batch, which is what makes 2 x 4 gradient accumulation equal one batch of 8.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.nn import functional as F


def cross_entropy_sum(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """CE summed over labelled items (label -100 ignored); ``logits`` ``(..., C)``, ``labels`` ``(...)``."""
    return F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(),
        labels.to(logits.device).reshape(-1),
        ignore_index=-100,
        reduction="sum",
        label_smoothing=label_smoothing,
    )


def weighted_exits_cross_entropy_sum(
    exit_logits: Sequence[torch.Tensor], weights: Sequence[float], labels: torch.Tensor, label_smoothing: float = 0.0
) -> torch.Tensor:
    """Per labelled item, the weighted mean over the given exits of their CE, summed over items."""
    total = sum(weights)
    terms = [
        cross_entropy_sum(logits, labels, label_smoothing) * (w / total) for logits, w in zip(exit_logits, weights)
    ]
    return torch.stack(terms).sum()


def distillation_kl_sum(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """``T² · KL(softmax(teacher / T) ‖ softmax(student / T))`` summed over items (rows, or the tokens where ``mask``
    is true). The T² keeps gradient magnitudes comparable across temperatures (Hinton et al.). The teacher is
    detached here, so no gradient can reach the final head through it."""
    student = torch.log_softmax(student_logits.float() / temperature, dim=-1)
    teacher = torch.log_softmax(teacher_logits.detach().float() / temperature, dim=-1)
    per_item = F.kl_div(student, teacher, log_target=True, reduction="none").sum(dim=-1)
    if mask is not None:
        per_item = per_item * mask.to(per_item.dtype)
    return per_item.sum() * temperature**2
