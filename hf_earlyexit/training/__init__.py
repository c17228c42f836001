"""Exit training modes: `EarlyExitTrainingArguments` chooses one, `EarlyExitTrainer` runs it."""

from .arguments import EXIT_TRAINING_MODES, EarlyExitTrainingArguments
from .losses import cross_entropy_sum, distillation_kl_sum, joint_cross_entropy_sum
from .modes import ExitStepPlan, step_plan
from .trainer import EarlyExitTrainer

__all__ = [
    "EXIT_TRAINING_MODES",
    "EarlyExitTrainer",
    "EarlyExitTrainingArguments",
    "ExitStepPlan",
    "cross_entropy_sum",
    "distillation_kl_sum",
    "joint_cross_entropy_sum",
    "step_plan",
]
