"""Intermediate-layer knowledge distillation across widths and head counts (see docs/distillation.md)."""

from .arguments import DistillationArguments
from .layer_maps import LAYER_MAP_PRESETS, resolve_layer_map
from .losses import ATTENTION_LOSSES, HIDDEN_LOSSES, LOGIT_LOSSES
from .student_init import compact_student, student_from_teacher_layers
from .trainer import DistillationTrainer

__all__ = [
    "ATTENTION_LOSSES",
    "DistillationArguments",
    "DistillationTrainer",
    "HIDDEN_LOSSES",
    "LAYER_MAP_PRESETS",
    "LOGIT_LOSSES",
    "compact_student",
    "resolve_layer_map",
    "student_from_teacher_layers",
]
