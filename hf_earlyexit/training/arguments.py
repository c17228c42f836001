"""`EarlyExitTrainingArguments`: `TrainingArguments` plus the choice of exit training mode and its knobs."""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import TrainingArguments

from ..run_outputs import OutputDirArguments

EXIT_TRAINING_MODES = ("joint", "two_stage", "alternating", "self_distillation")


@dataclass
class EarlyExitTrainingArguments(TrainingArguments, OutputDirArguments):
    """Arguments of `EarlyExitTrainer`; see docs/training_modes.md for what each mode trains and when to use it."""

    exit_training_mode: str = field(
        default="joint",
        metadata={
            "help": "How the exits are trained: 'joint' (weighted CE over all exits, deeper weigh more), 'two_stage' "
            "(backbone + final head first, then the exit heads alone on a frozen backbone), 'alternating' (BERxiT: odd "
            "steps the final loss, even steps the joint loss) or 'self_distillation' (exit heads learn the final "
            "head's soft predictions; batches without labels allowed).",
            "choices": list(EXIT_TRAINING_MODES),
        },
    )
    first_stage_fraction: float = field(
        default=0.5,
        metadata={
            "help": "two_stage: share of the optimizer steps (of max_steps, or of the steps the epochs make) spent in "
            "stage 1, in (0, 1). Ignored when first_stage_steps is set."
        },
    )
    first_stage_steps: int | None = field(
        default=None,
        metadata={"help": "two_stage: optimizer steps of stage 1 (>= 0); overrides first_stage_fraction."},
    )
    distillation_temperature: float = field(
        default=2.0,
        metadata={
            "help": "self_distillation: softmax temperature of teacher and exits (> 0); the KL is scaled by T^2."
        },
    )
    distillation_weight: float = field(
        default=1.0,
        metadata={"help": "self_distillation: weight (> 0) of the mean exit KL relative to the final head's CE."},
    )
    distillation_trains_backbone: bool = field(
        default=False,
        metadata={
            "help": "self_distillation: let the KL terms also train the backbone layers beneath each exit. Off (the "
            "default), the exit heads see detached hidden states, so the backbone learns from the final CE only and "
            "batches without labels change the exit heads alone."
        },
    )

    def __post_init__(self):
        # Checked before TrainingArguments' own set-up so a bad value fails first, with nothing else done.
        if self.exit_training_mode not in EXIT_TRAINING_MODES:
            raise ValueError(f"exit_training_mode={self.exit_training_mode!r}; expected one of {EXIT_TRAINING_MODES}")
        if not 0.0 < self.first_stage_fraction < 1.0:
            raise ValueError(f"first_stage_fraction={self.first_stage_fraction!r}; expected a float in (0, 1)")
        steps = self.first_stage_steps
        if steps is not None and (not isinstance(steps, int) or isinstance(steps, bool) or steps < 0):
            raise ValueError(f"first_stage_steps={steps!r}; expected None or an int >= 0")
        if not self.distillation_temperature > 0:
            raise ValueError(f"distillation_temperature={self.distillation_temperature!r}; expected a float > 0")
        if not self.distillation_weight > 0:
            raise ValueError(f"distillation_weight={self.distillation_weight!r}; expected a float > 0")
        super().__post_init__()

    def first_stage_end(self, max_steps: int) -> int:
        """The optimizer step at which two_stage switches to stage 2 (stage 1 runs steps ``0 .. end - 1``)."""
        if self.first_stage_steps is not None:
            return self.first_stage_steps
        return round(self.first_stage_fraction * max_steps)
