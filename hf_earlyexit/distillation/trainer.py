"""`DistillationTrainer`: intermediate-layer knowledge distillation in a `transformers.Trainer` subclass.

The Trainer trains a `DistillationModule` (student + projections); the frozen teacher runs beside it under
`no_grad`, never wrapped by DDP. Each loss component is a mean over its items (tokens, logit rows, labels); the
trainer weights every micro-batch by its share of the items of the whole accumulated (and, across processes,
global) batch, so 2 x 4 accumulation and 2 processes x 4 both equal one batch of 8.
"""

import inspect
import json
import os

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import Trainer
from transformers.trainer import TRAINING_ARGS_NAME
from transformers.utils import SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME

from ..training.component_log import ComponentAverager, accumulated_counts, process_denominators
from .arguments import DistillationArguments
from .attention_loss import BlockWorkspace, head_mean_attention_loss, relation_attention_loss
from .capture import EncoderCapture, attention_heads, encoder_layers, encoder_layout
from .layer_maps import resolve_layer_map
from .losses import HIDDEN_LOSSES, LOGIT_LOSSES
from .module import DistillationModule, ForwardPlan, model_task, run_model
from .projections import build_hidden_projections
from .stages import check_selectors_fit, parse_stages, selected, stage_index_at

PROJECTIONS_NAME = "distillation_projections.safetensors"
ENCODER_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "position_ids", "inputs_embeds")
_TEACHER_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# Which item count normalises each component over the accumulated batch.
_COUNT_OF = {"hidden": "tokens", "attention": "tokens", "logits": "rows", "ce": "labels"}


def _check_vocabularies(student, teacher, student_tokenizer, teacher_tokenizer) -> None:
    student_size, teacher_size = student.config.vocab_size, teacher.config.vocab_size
    if student_size != teacher_size:
        raise ValueError(
            f"student vocabulary size {student_size} differs from the teacher's {teacher_size}; both must read the "
            "same input_ids"
        )
    if student_tokenizer is None or teacher_tokenizer is None:
        return
    student_vocab, teacher_vocab = student_tokenizer.get_vocab(), teacher_tokenizer.get_vocab()
    if student_vocab != teacher_vocab:
        differing = sorted(set(student_vocab.items()) ^ set(teacher_vocab.items()), key=lambda item: item[1])[0]
        raise ValueError(
            f"student and teacher tokenizers differ (e.g. token {differing[0]!r} at id {differing[1]} is in only one "
            "of them); both must map text to the same input_ids"
        )


def _attention_pairs(args: DistillationArguments, hidden_pairs, student_layers: int, teacher_layers: int):
    if args.attention_layer_map is None:
        pairs = [(s, t) for s, t in hidden_pairs if s > 0 and t > 0]
    else:
        pairs = resolve_layer_map(args.attention_layer_map, student_layers, teacher_layers, "attention_layer_map")
        if any(s == 0 or t == 0 for s, t in pairs):
            raise ValueError(f"attention_layer_map {pairs} uses layer 0, the embedding output, which has no attention")
    if not pairs:
        raise ValueError("the attention loss has no layer pair above the embeddings; set attention_layer_map")
    return pairs


def real_tokens(inputs: dict) -> torch.Tensor:
    """The boolean attention mask of a batch; every position when the batch has none."""
    mask = inputs.get("attention_mask")
    if mask is not None:
        return mask.bool()
    reference = inputs.get("input_ids", inputs.get("inputs_embeds"))
    return torch.ones(reference.shape[:2], dtype=torch.bool, device=reference.device)


def _counts(mask: torch.Tensor, labels: torch.Tensor | None, rows: torch.Tensor | None) -> dict[str, torch.Tensor]:
    label_count = (labels != -100).sum() if labels is not None else torch.zeros((), device=mask.device)
    row_count = rows.sum() if rows is not None else torch.tensor(mask.shape[0], device=mask.device)
    return {"tokens": mask.sum(), "rows": row_count, "labels": label_count}


def item_counts(inputs: dict, task: str) -> dict[str, torch.Tensor]:
    """Items each loss component averages over in this batch (see `_COUNT_OF`)."""
    mask, labels = real_tokens(inputs), inputs.get("labels")
    return _counts(mask, labels, logit_rows(task, labels, mask))


def _forward_parameters(model: nn.Module) -> list[str]:
    return list(inspect.signature(model.forward).parameters)


def logit_rows(task: str, labels: torch.Tensor | None, mask: torch.Tensor) -> torch.Tensor | None:
    """Positions whose logits the output loss compares: labelled (or else real) tokens; None for sequence tasks."""
    if task == "sequence":
        return None
    return labels != -100 if labels is not None else mask


class DistillationTrainer(Trainer):
    """Distil `teacher_model` into `model` (the student) with the losses, layer maps and stages of `args`.

    Every configuration error is raised here, before anything is trained or written. `save_model` exports the
    plain student (no projections) that `AutoModel.from_pretrained` loads; checkpoints also hold the projections,
    so `train(resume_from_checkpoint=...)` continues exactly, stage position included."""

    loss_is_scaled_for_ga = True

    def __init__(
        self,
        model: nn.Module | None = None,
        teacher_model: nn.Module | None = None,
        args: DistillationArguments | None = None,
        data_collator=None,
        train_dataset=None,
        eval_dataset=None,
        processing_class=None,
        teacher_processing_class=None,
        **kwargs,
    ):
        if model is None or teacher_model is None:
            raise ValueError("DistillationTrainer needs both model (the student) and teacher_model")
        if not isinstance(args, DistillationArguments):
            raise ValueError(f"args must be DistillationArguments, got {type(args).__name__}")
        student, teacher = model, teacher_model
        student_layers, teacher_layers = student.config.num_hidden_layers, teacher.config.num_hidden_layers
        encoder_layout(student), encoder_layout(teacher)
        _check_vocabularies(student, teacher, processing_class, teacher_processing_class)
        enabled = args.enabled_losses()
        self.hidden_pairs = resolve_layer_map(args.layer_map, student_layers, teacher_layers)
        self.attention_pairs = (
            _attention_pairs(args, self.hidden_pairs, student_layers, teacher_layers) if "attention" in enabled else []
        )
        student_width, teacher_width = student.config.hidden_size, teacher.config.hidden_size
        if args.attention_loss == "relation" and (
            student_width % args.relation_heads or teacher_width % args.relation_heads
        ):
            raise ValueError(
                f"relation_heads={args.relation_heads} must divide both the student width {student_width} and the "
                f"teacher width {teacher_width}"
            )
        self.task, teacher_task = model_task(student), model_task(teacher)
        if "logits" in enabled:
            if self.task != teacher_task:
                raise ValueError(f"logit loss between a {self.task} student and a {teacher_task} teacher is undefined")
            if self.task != "masked_lm" and student.config.num_labels != teacher.config.num_labels:
                raise ValueError(
                    f"logit loss needs equal label counts; student has {student.config.num_labels}, teacher "
                    f"{teacher.config.num_labels}"
                )
        self.stages = parse_stages(args.stages, enabled)
        check_selectors_fit(self.stages, student_layers)
        projections = build_hidden_projections(
            self.hidden_pairs if "hidden" in enabled else [], student_width, teacher_width, args.hidden_projection
        )

        super().__init__(
            model=DistillationModule(student, projections),
            args=args,
            data_collator=data_collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            **kwargs,
        )
        teacher.eval().requires_grad_(False)
        dtype = _TEACHER_DTYPES.get(args.teacher_dtype) if args.teacher_dtype else None
        self.teacher = teacher.to(device=self.args.device, dtype=dtype)
        self._input_names = [name for name in ENCODER_INPUTS if name in _forward_parameters(student)]
        self._hidden_loss = HIDDEN_LOSSES.get(args.hidden_loss)
        self._logit_loss = LOGIT_LOSSES.get(args.logit_loss)
        # Parameters a stage may switch on: whatever was trainable when the trainer was built.
        self._trainable = [(name, p) for name, p in self.model.named_parameters() if p.requires_grad]
        self._stage_applied: int | None = None
        self._accumulated_counts: dict[str, torch.Tensor] | None = None
        self._components = ComponentAverager()

    @property
    def student(self) -> nn.Module:
        return self.accelerator.unwrap_model(self.model).student

    # ---- stages ----

    def current_stage_index(self) -> int:
        return stage_index_at(self.stages, self.state.global_step)

    def _apply_stage(self) -> None:
        index = self.current_stage_index()
        if index == self._stage_applied:
            return
        student = self.student
        layers = encoder_layers(student)
        num_layers = len(layers)
        layer_of = {id(p): i + 1 for i, layer in enumerate(layers) for p in layer.parameters()}
        embeddings = student.base_model.get_submodule(encoder_layout(student).embeddings)
        embedding_ids = {id(p) for p in embeddings.parameters()}
        selectors = self.stages[index].train
        for name, parameter in self._trainable:
            if name.startswith("projections."):
                continue
            parameter.requires_grad_(
                selected(selectors, layer_of.get(id(parameter)), id(parameter) in embedding_ids, num_layers)
            )
        self._stage_applied = index

    def training_step(self, model, inputs, num_items_in_batch=None):
        # Applied here rather than at init: the optimizer and DDP are built while every parameter still trains, so
        # parameters frozen by an early stage are still optimised (and synchronised) once a later stage frees them.
        self._apply_stage()
        return super().training_step(model, inputs, num_items_in_batch)

    # ---- loss ----

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        batch_samples, num_items_in_batch = super().get_batch_samples(epoch_iterator, num_batches, device)
        if batch_samples:
            kinds = ("tokens", "rows", "labels")
            per_batch = [
                torch.stack([counts[kind].float() for kind in kinds])
                for counts in (item_counts(batch, self.task) for batch in batch_samples)
            ]
            totals = accumulated_counts(self.accelerator, per_batch, device)
            self._accumulated_counts = dict(zip(kinds, totals))
        return batch_samples, num_items_in_batch

    def _scale(self, component: str, counts: dict[str, torch.Tensor], training: bool):
        """Share of this micro-batch in the accumulated global batch: the component is a mean over the micro-batch's
        items, so its sum over them divided by the trainers' one denominator (`process_denominators`)."""
        if not training or self._accumulated_counts is None:
            return 1.0
        kind = _COUNT_OF[component]
        total = self._accumulated_counts[kind]
        return counts[kind].to(total.dtype) / process_denominators(total, self.accelerator.num_processes)

    def _teacher_targets(self, inputs, plan: ForwardPlan, student_qkv, mask):
        """The teacher's hidden states and logits, and each attention pair's loss.

        The teacher runs after the student, and each mapped teacher layer is scored against the student's captured
        projections as soon as its own exist: the teacher's projections are dropped at once (neither they nor any
        (seq, seq) map accumulate over the layers), and the loss carries its gradient from its own pass."""
        grad_enabled = torch.is_grad_enabled()
        losses = {}
        # One set of block buffers for every pair of the step, dropped with it.
        workspace = BlockWorkspace()

        def score(layer, projections):
            target = tuple(projections[name] for name in plan.projections)
            with torch.set_grad_enabled(grad_enabled):
                for s, t in self.attention_pairs:
                    if t == layer:
                        losses[(s, t)] = self._pair_attention_loss(student_qkv[s], target, mask, workspace)

        capture = EncoderCapture(
            self.teacher,
            hidden_layers=[t for _, t in plan.hidden_pairs],
            qkv_layers=[t for _, t in self.attention_pairs] if plan.attention_layers else [],
            projections=plan.projections,
            on_qkv=score,
        )
        with torch.no_grad(), capture:
            logits, _ = run_model(self.teacher, inputs, None, plan.rows, plan.need_logits, False)
        attention = torch.stack([losses[pair] for pair in self.attention_pairs]).mean() if losses else None
        return capture.hidden, attention, logits

    def _pair_attention_loss(self, student, teacher, mask, workspace):
        # Made in row blocks with the student's gradient in the same pass (attention_loss): no activation
        # checkpointing is needed to hold one layer's maps at a time, as no map outlives its block.
        if self.args.attention_loss == "relation":
            return relation_attention_loss(student, teacher, mask, self.args.relation_heads, workspace=workspace)
        kind = self.args.attention_loss.removesuffix("_head_mean")
        return head_mean_attention_loss(
            student,
            teacher,
            mask,
            attention_heads(self.student),
            attention_heads(self.teacher),
            kind,
            workspace=workspace,
        )

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        stage = self.stages[self.current_stage_index()]
        labels = inputs.get("labels")
        encoder_inputs = {name: inputs[name] for name in self._input_names if name in inputs}
        mask = real_tokens(inputs)
        active = [c for c in stage.losses if c != "ce" or labels is not None]
        rows = logit_rows(self.task, labels, mask)
        relation = self.args.attention_loss == "relation"
        plan = ForwardPlan(
            hidden_pairs=self.hidden_pairs if "hidden" in active else [],
            attention_layers=[s for s, _ in self.attention_pairs] if "attention" in active else [],
            projections=("query", "key", "value") if relation else ("query", "key"),
            need_logits="logits" in active,
            need_ce="ce" in active,
            rows=rows if self.task == "masked_lm" else None,
        )
        outputs = model(plan=plan, labels=labels, **encoder_inputs)
        teacher_hidden, attention, teacher_logits = self._teacher_targets(encoder_inputs, plan, outputs["qkv"], mask)

        components = {}
        if "hidden" in active:
            components["hidden"] = torch.stack(
                [self._hidden_loss(outputs["hidden"][(s, t)], teacher_hidden[t], mask) for s, t in self.hidden_pairs]
            ).mean()
        if "attention" in active:
            components["attention"] = attention
        if "logits" in active:
            logits_mask = rows if self.task == "token" else None
            kwargs = {"temperature": self.args.temperature} if self.args.logit_loss == "kl" else {}
            components["logits"] = self._logit_loss(outputs["logits"], teacher_logits, logits_mask, **kwargs)
        if "ce" in active:
            components["ce"] = outputs["ce"]

        training = self.model.training
        counts = _counts(mask, labels, rows)
        weights = self.args.loss_weights()
        loss = 0.0
        for name, value in components.items():
            scale = self._scale(name, counts, training)
            loss = loss + weights[name] * value * scale
            if training:
                self._components.add(name, value * scale, scale)
        return (loss, {"logits": outputs["logits"]}) if return_outputs else loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        # Distillation losses need no labels, so evaluation always computes them.
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad():
            loss, outputs = self.compute_loss(model, inputs, return_outputs=True)
        if prediction_loss_only or self.task == "masked_lm":
            return loss.detach(), None, None
        return loss.detach(), outputs["logits"], inputs.get("labels")

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:
            # Training logs only (they carry `loss`); every process reaches them, so the reduce inside is safe.
            logs.update(self._components.pop_means(self.accelerator, self.args.device))
        super().log(logs, start_time)

    # ---- columns ----

    def _set_signature_columns_if_needed(self) -> None:
        # The Trainer would inspect DistillationModule.forward; the columns the losses need are the student's inputs.
        if self._signature_columns is None:
            self._signature_columns = [*_forward_parameters(self.student), "label", "label_ids", *self.label_names]

    # ---- saving and loading ----

    def _save_checkpoint(self, model, trial) -> None:
        self._writing_checkpoint = True
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self._writing_checkpoint = False

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """The student as a plain `save_pretrained` checkpoint; inside training checkpoints also the projections."""
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        if not self.args.should_save:
            return
        os.makedirs(output_dir, exist_ok=True)
        module = self.accelerator.unwrap_model(self.model)
        student_state = projection_state = None
        if state_dict is not None:  # gathered by DeepSpeed / FSDP for the whole DistillationModule
            student_state = {k[len("student.") :]: v for k, v in state_dict.items() if k.startswith("student.")}
            projection_state = {
                k[len("projections.") :]: v for k, v in state_dict.items() if k.startswith("projections.")
            }
        module.student.save_pretrained(output_dir, state_dict=student_state)
        if getattr(self, "_writing_checkpoint", False):
            projection_state = projection_state if projection_state is not None else module.projections.state_dict()
            save_file(
                {k: v.contiguous() for k, v in projection_state.items()}, os.path.join(output_dir, PROJECTIONS_NAME)
            )
        if self.processing_class is not None:
            self.processing_class.save_pretrained(output_dir)
        torch.save(self.args, os.path.join(output_dir, TRAINING_ARGS_NAME))

    def _load_distillation_checkpoint(self, checkpoint_dir: str) -> None:
        module = self.accelerator.unwrap_model(self.model)
        single, index = (
            os.path.join(checkpoint_dir, SAFE_WEIGHTS_NAME),
            os.path.join(checkpoint_dir, SAFE_WEIGHTS_INDEX_NAME),
        )
        if os.path.isfile(single):
            state = load_file(single)
        elif os.path.isfile(index):
            with open(index) as f:
                shards = sorted(set(json.load(f)["weight_map"].values()))
            state = {k: v for shard in shards for k, v in load_file(os.path.join(checkpoint_dir, shard)).items()}
        else:
            raise ValueError(f"no {SAFE_WEIGHTS_NAME} (or sharded index) in checkpoint {checkpoint_dir}")
        result = module.student.load_state_dict(state, strict=False)
        tied = set(getattr(module.student, "_tied_weights_keys", None) or ())
        missing = [k for k in result.missing_keys if k not in tied]
        if missing or result.unexpected_keys:
            raise ValueError(
                f"checkpoint {checkpoint_dir} does not match the student: missing {missing}, unexpected "
                f"{result.unexpected_keys}"
            )
        projections_file = os.path.join(checkpoint_dir, PROJECTIONS_NAME)
        if len(module.projections):
            if not os.path.isfile(projections_file):
                raise ValueError(f"checkpoint {checkpoint_dir} has no {PROJECTIONS_NAME}; cannot restore projections")
            module.projections.load_state_dict(load_file(projections_file))

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        if self.is_fsdp_enabled:
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        self._load_distillation_checkpoint(resume_from_checkpoint)

    def _load_best_model(self) -> None:
        if self.is_deepspeed_enabled or self.is_fsdp_enabled:
            return super()._load_best_model()
        self._load_distillation_checkpoint(self.state.best_model_checkpoint)
