"""Distillation losses: pure functions `(student, teacher, mask) -> scalar`, looked up by name.

Every loss is a mean over the valid items of one batch (tokens, attention rows or logit rows, as marked by
`mask`), computed in float32 whatever the input dtype, so padding never changes the value and bf16 inputs with
extreme values stay finite. The trainer rescales these means to honour gradient accumulation.

Attention losses take log-probabilities of shape (batch, heads, seq, seq); the head counts of student and teacher
may differ because the head-mean losses compare maps averaged over heads. The relation loss takes the query, key
and value projections (batch, seq, width) and splits any width into `relation_heads` heads (MiniLMv2), so the
widths may differ too. The trainer computes these values from captured projections in blocks of query rows
(`attention_loss`), equal to these functions; they remain the definition and serve maps that a model returns.
"""

import math

import torch
import torch.nn.functional as F


def masked_mean(per_item: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of `per_item` over the positions where `mask` is true (all positions when `mask` is None)."""
    if mask is None:
        return per_item.mean()
    mask = mask.to(per_item.dtype)
    return (per_item * mask).sum() / mask.sum().clamp_min(1)


def _key_mask(mask: torch.Tensor | None) -> torch.Tensor | None:
    return None if mask is None else mask.bool()[:, None, None, :]


def _row_kl(teacher_log_probs: torch.Tensor, student_log_probs: torch.Tensor, mask: torch.Tensor | None):
    """KL(teacher || student) of each attention row, averaged over heads and valid query rows."""
    keys = _key_mask(mask)
    if keys is not None:
        # Masked keys carry zero probability in both; filling their log-probs keeps -inf out of the arithmetic.
        teacher_log_probs = teacher_log_probs.masked_fill(~keys, 0.0)
        student_log_probs = student_log_probs.masked_fill(~keys, 0.0)
    # Masked keys then contribute exp(0) * (0 - 0) = 0, so the probabilities need no mask of their own.
    per_row = (teacher_log_probs.exp() * (teacher_log_probs - student_log_probs)).sum(-1).mean(1)
    return masked_mean(per_row, mask)


def log_head_mean(log_probs: torch.Tensor) -> torch.Tensor:
    """log of the head-averaged attention distribution, (batch, heads, q, k) -> (batch, 1, q, k)."""
    log_probs = log_probs.float()
    if log_probs.shape[1] == 1:
        # Already head-averaged (the trainer reduces maps with `capture.head_mean_log_probs`): logsumexp over one
        # head is the identity, so skip its passes over the (seq, seq) maps in forward and backward.
        return log_probs
    return torch.logsumexp(log_probs, dim=1, keepdim=True) - math.log(log_probs.shape[1])


# ---- hidden states: (batch, seq, width), the student already projected to the teacher width ----


def hidden_mse(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    per_token = (student.float() - teacher.float()).pow(2).mean(-1)
    return masked_mean(per_token, mask)


def hidden_cosine(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    per_token = 1.0 - F.cosine_similarity(student.float(), teacher.float(), dim=-1, eps=1e-8)
    return masked_mean(per_token, mask)


# ---- attention: log-probabilities (batch, heads, seq, seq), head counts may differ ----


def attention_kl_head_mean(
    student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """KL(teacher || student) between the head-averaged attention distributions of each query row."""
    return _row_kl(log_head_mean(teacher), log_head_mean(student), mask)


def attention_mse_head_mean(
    student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Squared distance between head-averaged attention rows (summed over keys), averaged over valid rows."""
    difference = log_head_mean(student).exp() - log_head_mean(teacher).exp()
    keys = _key_mask(mask)
    if keys is not None:
        difference = difference.masked_fill(~keys, 0.0)
    return masked_mean(difference.pow(2).sum(-1)[:, 0], mask)


def relation_log_probs(states: torch.Tensor, relation_heads: int, mask: torch.Tensor | None = None) -> torch.Tensor:
    """MiniLMv2 self-relation of one projection: softmax(x_h x_h^T / sqrt(d_r)) per relation head."""
    batch, seq, width = states.shape
    if width % relation_heads:
        raise ValueError(f"relation_heads={relation_heads} does not divide the width {width}")
    head_dim = width // relation_heads
    split = states.float().view(batch, seq, relation_heads, head_dim).transpose(1, 2)
    scores = split @ split.transpose(-1, -2) / math.sqrt(head_dim)
    keys = _key_mask(mask)
    if keys is not None:
        scores = scores.masked_fill(~keys, torch.finfo(scores.dtype).min)
    return scores.log_softmax(-1)


def attention_relation(
    student: tuple[torch.Tensor, ...],
    teacher: tuple[torch.Tensor, ...],
    mask: torch.Tensor | None = None,
    relation_heads: int = 64,
) -> torch.Tensor:
    """MiniLMv2 loss: KL between teacher and student Q-Q, K-K and V-V relations, averaged over the three."""
    if len(student) != len(teacher):
        raise ValueError(f"relation loss got {len(student)} student and {len(teacher)} teacher projections")
    total = sum(
        _row_kl(relation_log_probs(t, relation_heads, mask), relation_log_probs(s, relation_heads, mask), mask)
        for s, t in zip(student, teacher)
    )
    return total / len(student)


# ---- outputs: logits (..., classes); mask marks the leading positions to average over ----


def logits_kl(
    student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor | None = None, temperature: float = 1.0
) -> torch.Tensor:
    """Hinton's soft-target loss, KL(teacher || student) at `temperature`, scaled by temperature^2."""
    student_log_probs = (student.float() / temperature).log_softmax(-1)
    teacher_log_probs = (teacher.float() / temperature).log_softmax(-1)
    per_item = (teacher_log_probs.exp() * (teacher_log_probs - student_log_probs)).sum(-1)
    return masked_mean(per_item, mask) * temperature**2


def logits_mse(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    per_item = (student.float() - teacher.float()).pow(2).mean(-1)
    return masked_mean(per_item, mask)


HIDDEN_LOSSES = {"mse": hidden_mse, "cosine": hidden_cosine}
ATTENTION_LOSSES = {
    "kl_head_mean": attention_kl_head_mean,
    "mse_head_mean": attention_mse_head_mean,
    "relation": attention_relation,
}
LOGIT_LOSSES = {"kl": logits_kl, "mse": logits_mse}
