"""`DistillationModule`: the student and its projections as the one module the Trainer trains.

Wrapping both makes the optimizer, DDP/FSDP/DeepSpeed (which must see every trainable parameter in the forward
they wrap) and checkpoints handle the projections like the student's own weights. The teacher stays outside.
"""

import inspect
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .capture import EncoderCapture
from .projections import project


def model_task(model: nn.Module) -> str:
    """ "masked_lm", "token" or "sequence": where the logits live and which rows the output loss compares."""
    name = type(model).__name__
    if name.endswith("ForMaskedLM"):
        return "masked_lm"
    return "token" if "TokenClassification" in name else "sequence"


def mlm_head(model: nn.Module) -> nn.Module:
    """The LM head of a ...ForMaskedLM model: its only child besides the base model."""
    heads = [module for name, module in model.named_children() if name != model.base_model_prefix]
    if len(heads) != 1:
        raise ValueError(f"cannot find the LM head of {type(model).__name__}: children besides the encoder are {heads}")
    return heads[0]


def _accepts(model: nn.Module, argument: str) -> bool:
    return argument in inspect.signature(model.forward).parameters


def run_model(
    model: nn.Module,
    inputs: dict[str, torch.Tensor],
    labels: torch.Tensor | None,
    rows: torch.Tensor | None,
    need_logits: bool,
    need_ce: bool,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Forward `model` and return (logits, cross-entropy) as far as needed.

    Masked-LM logits are computed only for the `rows` positions: over every position the 250k-vocabulary head of
    XLM-R costs more than the whole Base encoder. Without an output loss only the encoder runs."""
    task = model_task(model)
    if not need_logits and not need_ce:
        model.base_model(**inputs)
        return None, None
    if task == "masked_lm":
        hidden = model.base_model(**inputs).last_hidden_state
        logits = mlm_head(model)(hidden[rows])
        ce = F.cross_entropy(logits.float(), labels[rows]) if need_ce else None
        return logits, ce
    kwargs = dict(inputs)
    if need_ce:
        kwargs["labels"] = labels
    if not model.training and _accepts(model, "exit_threshold"):
        # Early-exit students in eval: the hooks need every mapped layer of every token, and the targets are
        # full-depth quantities, so the student runs at full depth (threshold 0: the plain forward). The capture then
        # never depends on the exit path (the token path would call Q/K/V again on packed tokens).
        kwargs["exit_threshold"] = 0.0
    outputs = model(**kwargs)
    return outputs.logits, (outputs.loss if need_ce else None)


@dataclass
class ForwardPlan:
    """What one forward has to produce, given the active stage and the batch."""

    hidden_pairs: list[tuple[int, int]] = field(default_factory=list)
    attention_layers: list[int] = field(default_factory=list)  # student layers whose projections are captured
    projections: tuple[str, ...] = ("query", "key")
    need_logits: bool = False
    need_ce: bool = False
    rows: torch.Tensor | None = None  # masked-LM positions whose logits are computed


class DistillationModule(nn.Module):
    def __init__(self, student: nn.Module, projections: nn.ModuleDict):
        super().__init__()
        self.student = student
        self.projections = projections

    # The trainer normalises every component itself over the accumulated batch.
    accepts_loss_kwargs = False

    def activation_checkpointing_enable(self, activation_checkpointing_kwargs=None, every_n_layers=1, offload=False):
        """Called by the Trainer for `activation_checkpointing=True`: checkpoint the student's layers."""
        kwargs = {"use_reentrant": False, **(activation_checkpointing_kwargs or {})}
        if kwargs["use_reentrant"]:
            raise ValueError(
                "use_reentrant=True runs checkpointed layers under no_grad, so the captured query/key projections "
                "would carry no gradient; use use_reentrant=False"
            )
        self.student.activation_checkpointing_enable(kwargs, every_n_layers=every_n_layers, offload=offload)

    def forward(self, plan: ForwardPlan, labels: torch.Tensor | None = None, **inputs) -> dict:
        capture = EncoderCapture(
            self.student,
            hidden_layers=[s for s, _ in plan.hidden_pairs],
            qkv_layers=plan.attention_layers,
            projections=plan.projections,
        )
        with capture:
            logits, ce = run_model(self.student, inputs, labels, plan.rows, plan.need_logits, plan.need_ce)
        hidden = {(s, t): project(self.projections, s, t, capture.hidden[s]) for s, t in plan.hidden_pairs}
        qkv = {layer: tuple(capture.qkv[layer][name] for name in plan.projections) for layer in plan.attention_layers}
        return {"hidden": hidden, "qkv": qkv, "logits": logits, "ce": ce}
