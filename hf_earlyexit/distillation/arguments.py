"""`DistillationArguments`: everything a distillation run needs beyond `TrainingArguments`, in one dataclass.

List-valued fields (`layer_map`, `attention_layer_map`, `stages`) take a list when parsed from a YAML/JSON file
and a JSON string when given as a command-line flag; `__post_init__` turns the string into the list.
"""

import json
from dataclasses import dataclass, field

from transformers import TrainingArguments

from ..run_outputs import OutputDirArguments
from .layer_maps import LAYER_MAP_PRESETS, check_layer_map_spec
from .losses import ATTENTION_LOSSES, HIDDEN_LOSSES, LOGIT_LOSSES
from .stages import parse_stages

PROJECTIONS = ("linear", "shared", "none")
TEACHER_DTYPES = ("float32", "bfloat16", "float16")


def _json_if_string(name: str, value):
    if not isinstance(value, str) or not value.lstrip().startswith(("[", "{")):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError as error:
        raise ValueError(f"{name}={value!r} is not valid JSON ({error.msg}); expected a JSON list") from None


def _check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not supported; expected one of {', '.join(map(str, choices))}")


@dataclass
class DistillationArguments(TrainingArguments, OutputDirArguments):
    """Arguments of `DistillationTrainer`. Defaults reproduce the thesis recipe: XLM-R Large -> Base with a uniform
    layer map, hidden-state MSE and head-averaged attention KL on every mapped layer, no output loss, 5 corpus
    partitions."""

    layer_map: list | str | None = field(
        default="uniform",
        metadata={
            "help": "Which student layer learns from which teacher layer: a preset name ("
            + ", ".join(LAYER_MAP_PRESETS)
            + ") or an explicit list [[student_layer, teacher_layer], ...]; layer 0 is the embedding output."
        },
    )
    attention_layer_map: list | str | None = field(
        default=None,
        metadata={
            "help": "Layer map for the attention loss only (same syntax as layer_map, layer 0 not allowed). "
            "Default: the pairs of layer_map without layer 0."
        },
    )
    hidden_loss: str = field(
        default="mse", metadata={"help": f"Hidden-state loss: {', '.join(HIDDEN_LOSSES)} or none."}
    )
    hidden_loss_weight: float = field(default=1.0, metadata={"help": "Weight of the hidden-state loss (>= 0)."})
    hidden_projection: str = field(
        default="linear",
        metadata={
            "help": "Map student hidden states to the teacher width: linear (one trainable projection per mapped "
            "layer), shared (one for all layers) or none (widths must then be equal)."
        },
    )
    attention_loss: str = field(
        default="kl_head_mean",
        metadata={
            "help": f"Attention loss: {', '.join(ATTENTION_LOSSES)} or none. Head-mean losses compare maps "
            "averaged over heads, so head counts may differ; relation is MiniLMv2's Q-Q/K-K/V-V relations."
        },
    )
    attention_loss_weight: float = field(default=1.0, metadata={"help": "Weight of the attention loss (>= 0)."})
    relation_heads: int = field(
        default=64,
        metadata={"help": "Relation heads of the relation loss; must divide the widths of both models."},
    )
    logit_loss: str = field(
        default="none",
        metadata={
            "help": f"Output loss: {', '.join(LOGIT_LOSSES)} or none. Masked-LM models compare vocabulary "
            "logits at masked positions only."
        },
    )
    logit_loss_weight: float = field(default=1.0, metadata={"help": "Weight of the output loss (>= 0)."})
    temperature: float = field(default=1.0, metadata={"help": "Softmax temperature of the kl output loss (> 0)."})
    hard_label_weight: float = field(
        default=0.0, metadata={"help": "Weight of the cross-entropy on labels, when the batch has labels (>= 0)."}
    )
    stages: list | str | None = field(
        default=None,
        metadata={
            "help": "Ordered training stages, each {name, losses: [hidden|attention|logits|ce], train: [all|"
            "embeddings|head|top:N|layer:N], steps: N optimizer steps (the last may be null = until the end)}. "
            "Default: one stage with every enabled loss, training everything."
        },
    )
    teacher_dtype: str | None = field(
        default=None,
        metadata={"help": f"Cast the frozen teacher to this dtype ({', '.join(TEACHER_DTYPES)}); default: as loaded."},
    )
    num_partitions: int = field(
        default=5, metadata={"help": "Corpus partitions distilled one after another (thesis recipe: 5)."}
    )

    def __post_init__(self):
        self.layer_map = _json_if_string("layer_map", self.layer_map)
        self.attention_layer_map = _json_if_string("attention_layer_map", self.attention_layer_map)
        self.stages = _json_if_string("stages", self.stages)
        if self.layer_map is None:
            raise ValueError("layer_map=None is not supported; expected a preset name or [[student, teacher], ...]")
        check_layer_map_spec("layer_map", self.layer_map)
        if self.attention_layer_map is not None:
            check_layer_map_spec("attention_layer_map", self.attention_layer_map)
        # YAML `null` (and Python None) mean what "none" means: the component is off.
        for name in ("hidden_loss", "attention_loss", "logit_loss", "hidden_projection"):
            if getattr(self, name) is None:
                setattr(self, name, "none")
        _check_choice("hidden_loss", self.hidden_loss, (*HIDDEN_LOSSES, "none"))
        _check_choice("attention_loss", self.attention_loss, (*ATTENTION_LOSSES, "none"))
        _check_choice("logit_loss", self.logit_loss, (*LOGIT_LOSSES, "none"))
        _check_choice("hidden_projection", self.hidden_projection, PROJECTIONS)
        if self.teacher_dtype is not None:
            _check_choice("teacher_dtype", self.teacher_dtype, TEACHER_DTYPES)
        for name in ("hidden_loss_weight", "attention_loss_weight", "logit_loss_weight", "hard_label_weight"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name}={getattr(self, name)} is negative; expected a weight >= 0")
        if not self.temperature > 0:
            raise ValueError(f"temperature={self.temperature} is not positive; expected > 0")
        if self.relation_heads < 1:
            raise ValueError(f"relation_heads={self.relation_heads} is not positive; expected an integer >= 1")
        if self.num_partitions < 1:
            raise ValueError(f"num_partitions={self.num_partitions} is not positive; expected an integer >= 1")
        if not self.enabled_losses():
            raise ValueError(
                "every loss is off (none or weight 0); enable at least one of hidden, attention, logits, ce"
            )
        parse_stages(self.stages, self.enabled_losses())
        super().__post_init__()

    def enabled_losses(self) -> tuple[str, ...]:
        """Loss components switched on (a name other than none and a positive weight), in logging order."""
        candidates = {
            "hidden": self.hidden_loss != "none" and self.hidden_loss_weight > 0,
            "attention": self.attention_loss != "none" and self.attention_loss_weight > 0,
            "logits": self.logit_loss != "none" and self.logit_loss_weight > 0,
            "ce": self.hard_label_weight > 0,
        }
        return tuple(name for name, on in candidates.items() if on)

    def loss_weights(self) -> dict[str, float]:
        return {
            "hidden": self.hidden_loss_weight,
            "attention": self.attention_loss_weight,
            "logits": self.logit_loss_weight,
            "ce": self.hard_label_weight,
        }
