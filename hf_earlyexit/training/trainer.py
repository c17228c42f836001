"""`EarlyExitTrainer`: trains an early-exit model's exits in the mode `EarlyExitTrainingArguments` chooses.

Loss normalisation: every term is a sum over items divided by the item count of the whole accumulated batch across
all processes (labelled items for CE terms; rows, or real tokens for token classification, for KL terms), times the
number of processes because DDP averages gradients. The trainer counts those items itself in `get_batch_samples`,
because batches without labels (self-distillation) get no `num_items_in_batch` from the Trainer, and sets
`loss_is_scaled_for_ga` so the Trainer does not divide by the accumulation steps again.
"""

from __future__ import annotations

import contextlib

import torch
from transformers import Trainer

from ..modeling.configuration_early_exit import exit_loss_weights
from .arguments import EarlyExitTrainingArguments
from .component_log import ComponentAverager, accumulated_counts, process_denominators
from .losses import cross_entropy_sum, distillation_kl_sum, joint_cross_entropy_sum
from .modes import ExitStepPlan, step_plan

# Index of each item count in the tensor `_item_counts` returns, and which count normalises each component.
LABELLED, DISTILLED = 0, 1
COUNT_OF = {"final": LABELLED, "exits": LABELLED, "distill": DISTILLED}
# Evaluation measures one fixed quantity whatever step the schedule is at: the joint loss over every exit (what the
# model's own training loss is), with its components (and, in self_distillation, the exit KL) as separate metrics.
EVALUATION_PLAN = ExitStepPlan("joint", train_exit_heads=True, train_rest=True)


def _detach_inputs(module, args):
    return tuple(arg.detach() if torch.is_tensor(arg) else arg for arg in args)


def _let_ddp_skip_frozen_parameters(args: EarlyExitTrainingArguments) -> None:
    """Modes other than joint switch ``requires_grad`` per step after DDP was built, so DDP must look for the
    parameters a step leaves out; the Trainer would not for a checkpointing ``PreTrainedModel`` (then DDP fails at
    step 2, "Expected to have finished reduction in the prior iteration")."""
    if args.exit_training_mode == "joint":
        return
    if args.ddp_find_unused_parameters is False:
        raise ValueError(
            f"ddp_find_unused_parameters=False with exit_training_mode={args.exit_training_mode!r}; expected None or "
            "True (the mode freezes parameters per step, which DDP must be allowed to skip)"
        )
    checkpointing = dict(args.activation_checkpointing_kwargs or {})
    if args.activation_checkpointing and checkpointing.get("use_reentrant"):
        raise ValueError(
            f"activation_checkpointing_kwargs={checkpointing} with exit_training_mode={args.exit_training_mode!r}; "
            "expected use_reentrant=False (reentrant checkpointing cannot run under DDP's unused-parameter search)"
        )
    args.ddp_find_unused_parameters = True


class EarlyExitTrainer(Trainer):
    """`transformers.Trainer` for `XLMRobertaForEarlyExit` and its twins; see docs/training_modes.md.

    Logs, averaged over items of each logging interval and only for steps whose loss includes them:
    ``loss/final`` (final head CE), ``loss/exits`` (weighted mean CE of the intermediate exits, joint weights from
    ``config.exit_loss_weights``) and ``loss/distill`` (mean over intermediate exits of the T²-scaled KL).
    """

    loss_is_scaled_for_ga = True

    def __init__(self, model=None, args: EarlyExitTrainingArguments | None = None, **kwargs):
        if model is None:
            raise ValueError("EarlyExitTrainer needs a model (model_init is not supported)")
        if args is None:
            args = EarlyExitTrainingArguments(output_dir="trainer_output")
        if not isinstance(args, EarlyExitTrainingArguments):
            raise ValueError(f"args must be EarlyExitTrainingArguments, got {type(args).__name__}")
        if kwargs.get("compute_loss_func") is not None:
            raise ValueError("EarlyExitTrainer computes the exit losses itself; compute_loss_func is not supported")
        config = getattr(model, "config", None)
        if not hasattr(model, "exit_heads") or getattr(config, "exit_layers", None) is None:
            raise ValueError(f"{type(model).__name__} is not an early-exit model (no exit_heads / config.exit_layers)")
        weights = exit_loss_weights(config)
        if args.exit_training_mode != "joint" and len(model.exit_heads) == 0:
            raise ValueError(
                f"exit_training_mode={args.exit_training_mode!r} trains intermediate exits, but exit_layers="
                f"{config.exit_layers} has none"
            )
        if len(model.exit_heads) and not sum(weights[:-1]) > 0:
            raise ValueError(
                f"exit_loss_weights={config.exit_loss_weights!r} gives the intermediate exits zero total weight; "
                "nothing would train them"
            )
        _let_ddp_skip_frozen_parameters(args)
        super().__init__(model=model, args=args, **kwargs)
        self._exit_weights = weights
        self._per_token = bool(getattr(model, "per_token", False))
        # The parameters a step may switch on: whatever was trainable when the trainer was built (the optimizer is
        # created from these before the first step freezes anything). Exit heads are told apart by identity, not by
        # name: PEFT (``base_model.model.``, ``modules_to_save`` copies), DDP and FSDP rename parameters.
        exit_head_ids = {id(p) for p in model.exit_heads.parameters()}
        self._trainable = [(p, id(p) in exit_head_ids) for p in model.parameters() if p.requires_grad]
        self._accumulated_counts: torch.Tensor | None = None
        self._components = ComponentAverager()
        self._eval_components = ComponentAverager()

    # ---- which loss, which parameters ----

    def current_plan(self, has_labels: bool) -> ExitStepPlan:
        args = self.args
        return step_plan(
            args.exit_training_mode,
            self.state.global_step,
            args.first_stage_end(self.state.max_steps or 0),
            has_labels,
            args.distillation_trains_backbone,
        )

    def _apply_plan(self, plan: ExitStepPlan) -> None:
        for parameter, is_exit_head in self._trainable:
            parameter.requires_grad_(plan.train_exit_heads if is_exit_head else plan.train_rest)

    def training_step(self, model, inputs, num_items_in_batch=None):
        # Frozen parameters get no .grad at all (not a zero one), so optimizers skip them entirely: no weight decay,
        # no momentum step, bit-identical.
        self._apply_plan(self.current_plan(inputs.get("labels") is not None))
        return super().training_step(model, inputs, num_items_in_batch)

    def train(self, *args, **kwargs):
        try:
            return super().train(*args, **kwargs)
        finally:
            # A stage may have frozen parts of the model; hand it back as trainable as it came.
            for parameter, _ in self._trainable:
                parameter.requires_grad_(True)

    @contextlib.contextmanager
    def _exit_inputs_detached(self, active: bool):
        if not active:
            yield
            return
        exit_heads = self.accelerator.unwrap_model(self.model).exit_heads
        handles = [head.register_forward_pre_hook(_detach_inputs) for head in exit_heads]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    # ---- item counts for the normalisation ----

    def _item_counts(self, inputs) -> torch.Tensor:
        """(labelled items, distilled items) of one batch: rows for sequences, real tokens for token classification."""
        reference = inputs.get("input_ids", inputs.get("inputs_embeds"))
        device = reference.device
        labels, mask = inputs.get("labels"), inputs.get("attention_mask")
        labelled = labels.ne(-100).sum().to(device) if labels is not None else torch.zeros((), device=device)
        if self._per_token and mask is not None:
            distilled = mask.sum().to(device)
        else:
            rows_or_tokens = reference.shape[0] * (reference.shape[1] if self._per_token else 1)
            distilled = torch.tensor(rows_or_tokens, device=device)
        return torch.stack([labelled.float(), distilled.float()])

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        batch_samples, num_items_in_batch = super().get_batch_samples(epoch_iterator, num_batches, device)
        if batch_samples:
            per_batch = [self._item_counts(batch) for batch in batch_samples]
            self._accumulated_counts = accumulated_counts(self.accelerator, per_batch, device)
        return batch_samples, num_items_in_batch

    def _denominators(self, local_counts: torch.Tensor, training: bool) -> torch.Tensor:
        if training and self._accumulated_counts is not None:
            return process_denominators(self._accumulated_counts, self.accelerator.num_processes)
        return local_counts.clamp_min(1.0)

    # ---- loss ----

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """Training: the loss of the current step's plan; evaluation: `EVALUATION_PLAN`'s. ``num_items_in_batch`` (the
        Trainer's label count) is accepted and not used: KL terms need their own count, and unlabelled batches get
        none (see the module docstring)."""
        inputs = dict(inputs)
        labels = inputs.pop("labels", None)
        training = model.training
        plan = self.current_plan(labels is not None) if training else EVALUATION_PLAN
        if plan.needs_labels and labels is None:
            raise ValueError(
                f"exit_training_mode={self.args.exit_training_mode!r} (loss {plan.loss!r}) needs labels; only "
                "'self_distillation' trains on batches without labels"
            )
        with self._exit_inputs_detached(plan.detach_exit_inputs):
            outputs = model(**inputs, output_exit_logits=True, return_dict=True)
        local_counts = self._item_counts({**inputs, "labels": labels})
        denominators = self._denominators(local_counts, training)
        sums = self._component_sums(plan, outputs.exit_logits, labels, inputs.get("attention_mask"))
        if not training and self.args.exit_training_mode == "self_distillation":
            sums["distill"] = self._distill_sum(outputs.exit_logits, inputs.get("attention_mask"))
        means = {name: value / denominators[COUNT_OF[name]].to(value.device) for name, value in sums.items()}
        if plan.loss == "joint":  # the model's own joint loss, the one implementation of it
            joint = joint_cross_entropy_sum(
                outputs.exit_logits, self._exit_weights, labels, self.args.label_smoothing_factor
            )
            loss = joint / denominators[LABELLED].to(joint.device)
        else:
            loss = self._combine(plan, means)
        components = self._components if training else self._eval_components
        for name, value in sums.items():
            components.add(name, value, local_counts[COUNT_OF[name]])
        if not return_outputs:
            return loss
        # Per-exit logits stay out of what prediction_step gathers: the same fields a plain evaluation returns.
        return loss, type(outputs)(loss=loss, logits=outputs.logits, exit_layer=outputs.exit_layer)

    def _component_sums(self, plan: ExitStepPlan, exit_logits, labels, attention_mask) -> dict[str, torch.Tensor]:
        """Each loss component of the plan, summed over its items."""
        smoothing = self.args.label_smoothing_factor
        sums = {}
        if plan.loss in ("joint", "final") or (plan.loss == "distill" and labels is not None):
            sums["final"] = cross_entropy_sum(exit_logits[-1], labels, smoothing)
        if plan.loss == "exits" or (plan.loss == "joint" and len(exit_logits) > 1):
            sums["exits"] = joint_cross_entropy_sum(exit_logits[:-1], self._exit_weights[:-1], labels, smoothing)
        if plan.loss == "distill":
            sums["distill"] = self._distill_sum(exit_logits, attention_mask)
        return sums

    def _distill_sum(self, exit_logits, attention_mask) -> torch.Tensor:
        """Mean over intermediate exits of their T²-scaled KL to the final head, summed over items."""
        mask = attention_mask if self._per_token else None
        teacher = exit_logits[-1].detach()
        temperature = self.args.distillation_temperature
        return torch.stack(
            [distillation_kl_sum(logits, teacher, temperature, mask) for logits in exit_logits[:-1]]
        ).mean()

    def _combine(self, plan: ExitStepPlan, means: dict[str, torch.Tensor]) -> torch.Tensor:
        """The loss of the non-joint plans from their components' means."""
        if plan.loss == "distill":
            return means.get("final", 0.0) + self.args.distillation_weight * means["distill"]
        return means[plan.loss]

    def evaluation_loop(
        self, dataloader, description, prediction_loss_only=None, ignore_keys=None, metric_key_prefix="eval"
    ):
        self._eval_components = ComponentAverager()
        output = super().evaluation_loop(dataloader, description, prediction_loss_only, ignore_keys, metric_key_prefix)
        # Every process runs the loop, so the reduce inside is safe; the metrics then go out with the Trainer's own.
        components = self._eval_components.pop_means(self.accelerator, self.args.device)
        output.metrics.update({f"{metric_key_prefix}_{name}": value for name, value in components.items()})
        return output

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:
            # Training logs only (they carry `loss`); every process reaches them, so the reduce inside is safe.
            logs.update(self._components.pop_means(self.accelerator, self.args.device))
        super().log(logs, start_time)
