"""What one optimizer step of each exit training mode optimises and which parameters it lets train."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ExitStepPlan:
    """The loss of one step and the parameters it may change.

    Attributes:
        loss: ``"joint"`` (weighted CE over every exit), ``"final"`` (the final head's CE), ``"exits"`` (weighted CE
            over the intermediate exits only) or ``"distill"`` (exit KL to the final head, plus the final CE when
            the batch has labels).
        train_exit_heads: the intermediate exit heads receive gradients.
        train_rest: the backbone and the final head receive gradients (else they are frozen: no graph is built
            through the backbone and no backward runs through it).
        detach_exit_inputs: the exit heads read detached hidden states (their loss cannot reach the backbone).
    """

    loss: str
    train_exit_heads: bool
    train_rest: bool
    detach_exit_inputs: bool = False

    @property
    def needs_labels(self) -> bool:
        return self.loss != "distill"


def step_plan(
    mode: str, step: int, first_stage_end: int, has_labels: bool, distillation_trains_backbone: bool
) -> ExitStepPlan:
    """The plan of the optimizer step with 0-based index ``step`` (the Trainer's ``global_step`` while it runs).

    two_stage runs stage 1 for steps ``0 .. first_stage_end - 1``; alternating counts steps from 1, so the first
    step (odd) trains the final loss and the second (even) the joint loss.
    """
    if mode == "joint":
        return ExitStepPlan("joint", train_exit_heads=True, train_rest=True)
    if mode == "two_stage":
        if step < first_stage_end:
            return ExitStepPlan("final", train_exit_heads=False, train_rest=True)
        return ExitStepPlan("exits", train_exit_heads=True, train_rest=False)
    if mode == "alternating":
        if (step + 1) % 2 == 1:
            return ExitStepPlan("final", train_exit_heads=False, train_rest=True)
        return ExitStepPlan("joint", train_exit_heads=True, train_rest=True)
    if mode == "self_distillation":
        detach = not distillation_trains_backbone
        # Without labels and with detached exits nothing reaches the backbone: freeze it so no graph is built.
        return ExitStepPlan(
            "distill", train_exit_heads=True, train_rest=has_labels or not detach, detach_exit_inputs=detach
        )
    raise ValueError(f"exit_training_mode={mode!r}; expected one of joint, two_stage, alternating, self_distillation")
