"""Loss terms of the exit training modes as pure functions returning SUMS over items.

Sums, not means: the trainer divides by the item count of the whole accumulated (and, across processes, global)
batch, which is what makes 2 x 4 gradient accumulation equal one batch of 8. The CE terms are the model's own
(``modeling/early_exit.py``), so the joint loss is written once.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from ..modeling.early_exit import cross_entropy_sum, joint_cross_entropy_sum

__all__ = ["cross_entropy_sum", "distillation_kl_sum", "joint_cross_entropy_sum"]


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
