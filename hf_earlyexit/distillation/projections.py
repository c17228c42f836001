"""Trainable projections from the student's hidden width to the teacher's, one per mapped layer or shared.

They are ordinary modules inside `DistillationModule`, so the optimizer, DDP/FSDP/DeepSpeed and checkpoints see
them like any other parameter; the exported student never contains them.
"""

import torch
from torch import nn

SHARED_KEY = "shared"


def projection_key(student_layer: int, teacher_layer: int) -> str:
    return f"student{student_layer}_teacher{teacher_layer}"


def _new_projection(student_width: int, teacher_width: int) -> nn.Linear:
    projection = nn.Linear(student_width, teacher_width)
    if student_width == teacher_width:
        # Equal widths start as the identity, so the loss first measures the plain difference of hidden states.
        with torch.no_grad():
            projection.weight.copy_(torch.eye(student_width))
            projection.bias.zero_()
    return projection


def build_hidden_projections(
    pairs: list[tuple[int, int]], student_width: int, teacher_width: int, kind: str
) -> nn.ModuleDict:
    """`kind` is "linear" (one per pair), "shared" (one for all pairs) or "none" (no parameters; widths equal)."""
    if kind == "none":
        if pairs and student_width != teacher_width:
            raise ValueError(
                f"hidden loss between student width {student_width} and teacher width {teacher_width} needs a "
                "projection; set hidden_projection to linear or shared"
            )
        return nn.ModuleDict()
    if kind == "shared":
        return nn.ModuleDict({SHARED_KEY: _new_projection(student_width, teacher_width)}) if pairs else nn.ModuleDict()
    if kind != "linear":
        raise ValueError(f"hidden_projection={kind!r} is not supported; expected linear, shared or none")
    return nn.ModuleDict({projection_key(s, t): _new_projection(student_width, teacher_width) for s, t in pairs})


def project(projections: nn.ModuleDict, student_layer: int, teacher_layer: int, hidden: torch.Tensor) -> torch.Tensor:
    if SHARED_KEY in projections:
        return projections[SHARED_KEY](hidden)
    key = projection_key(student_layer, teacher_layer)
    return projections[key](hidden) if key in projections else hidden
