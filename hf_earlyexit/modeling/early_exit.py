"""The exit machinery, written once over a generic encoder.

A model family plugs in by subclassing one of the task mixins below together with its ``PreTrainedModel`` and
providing: a backbone at ``base_model_prefix`` with ``.embeddings`` (called with input_ids / token_type_ids /
position_ids / inputs_embeds) and ``.encoder.layer`` (layers called as ``layer(hidden, mask, **kwargs)``), the
standard classification head as ``final_head(last_hidden_state)`` (and, where the backbone's own forward already
computes part of it, ``final_logits(backbone_outputs, attention_mask)``), and ``self.exit_heads`` built by
``build_exit_heads``. See ``modeling_xlm_roberta_early_exit.py`` and ``modeling_bert_early_exit.py``.

One step decides how examples leave (``_exit_route``: ``full_depth`` in training or when no example can leave,
``forced``, ``criterion`` or ``token``); the paths below only execute that decision:

* all exits (training, ``output_exit_logits``, ``output_hidden_states`` or ``output_attentions``): the backbone runs every layer
  (its own forward, so gradient checkpointing and hidden-state capture behave as in transformers) and every exit
  head runs; in eval the route's ``logits`` / ``exit_layer`` are then read off the exit logits
  (``criteria.select_exits`` / ``gather_exits``), except for the ``token`` route, which runs the token path as well:
  a token's later logits depend on which other tokens froze, so no replay of the stored exit logits reproduces it.
* full depth (route ``full_depth``): the plain backbone forward plus the final head, no exit head at all, so exits
  off costs what the plain model costs.
* batched exit (routes ``forced`` / ``criterion``): layers run one by one; after each exit layer the rows that leave
  are written into preallocated outputs and removed from the running batch (hidden states, attention mask, criterion
  state), so later layers only see the rows that remain. One host synchronisation per active exit layer.
* token exit (route ``token``, token classification): each token leaves on its own; see ``token_exit.py``.

The loss depends on the mode only, never on the outputs asked for: training, the joint weighted CE over exits;
eval, the CE of the returned ``logits``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from transformers.masking_utils import create_bidirectional_mask
from transformers.utils import ModelOutput, logging

from .configuration_early_exit import exit_loss_weights, fit_exit_layers
from .criteria import (
    check_exit_layers,
    exit_step,
    exits_needing_heads,
    gather_exits,
    heads_to_evaluate,
    keep_rows,
    per_exit_thresholds,
    select_exits,
)
from .token_exit import forced_token_layers, forward_token_exit

logger = logging.get_logger(__name__)


@dataclass
class EarlyExitSequenceClassifierOutput(ModelOutput):
    """Output of an early-exit sequence classifier.

    Attributes:
        loss: training mode, the joint weighted CE over exits; eval, CE of ``logits`` (whatever else was asked for).
        logits: ``(batch, num_labels)``, each example's prediction from the layer where it left.
        exit_layer: ``(batch,)`` long, 1-based layer where each example left.
        exit_logits: when all exits ran, one ``(batch, num_labels)`` tensor per exit layer, in order.
        hidden_states: when asked, embeddings + every layer (all exits path).
        attentions: as the backbone returns them (all exits / full depth paths, eager attention).
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    exit_layer: torch.LongTensor | None = None
    exit_logits: tuple[torch.FloatTensor, ...] | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class EarlyExitTokenClassifierOutput(EarlyExitSequenceClassifierOutput):
    """Same fields for token classification: ``logits`` ``(batch, seq, num_labels)``, ``exit_layer``
    ``(batch, seq)``: each token's own exit layer with ``exit_granularity="token"`` (padding gets its row's deepest),
    the sequence's exit layer repeated over its tokens with ``"sequence"``; ``exit_logits`` per exit
    ``(batch, seq, num_labels)``."""


class ExitHead(nn.Module):
    """An intermediate exit head: ``"pooler"`` (dropout, dense H×H, tanh, dropout, linear H×C — the shape of the
    final XLM-R head) or ``"linear"`` (dropout, linear H×C).

    FLOPs (2 × MACs) per example: pooler ``2·n·(H² + H·C)``, linear ``2·n·H·C``, with n = 1 for sequence
    classification (the ``<s>``/``[CLS]`` token or the mean-pooled vector, ``config.pooling``) and n = seq_len for
    token classification. For XLM-R Base
    (H=768) a layer at 128 tokens costs ~1.86 GFLOP, so a pooler head on one token is ~1.2 MFLOP (0.06% of a
    layer) — cheap enough to buy the tanh feature transform that the final head also uses — while a per-token
    pooler at 128 tokens is ~151 MFLOP (8% of a layer, 0.7% of the model per exit); the per-token linear head
    (~1.4 MFLOP at 7 labels) is therefore the token default.
    """

    def __init__(self, config, design: str, per_token: bool):
        super().__init__()
        self.per_token = per_token
        self.dropout = nn.Dropout(classifier_dropout(config))
        self.dense = nn.Linear(config.hidden_size, config.hidden_size) if design == "pooler" else None
        self.out_proj = nn.Linear(config.hidden_size, config.num_labels)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        x = hidden_states if self.per_token else hidden_states[:, 0]
        x = self.dropout(x)
        if self.dense is not None:
            x = self.dropout(torch.tanh(self.dense(x)))
        return self.out_proj(x)


def pool_sequence(hidden_states: torch.Tensor, attention_mask: torch.Tensor | None, pooling: str) -> torch.Tensor:
    """What a sequence head reads, ``(batch, 1, hidden)``: the first token, or the mean over the real tokens
    (``attention_mask`` 2-D, 1 = real; None = every token is real). Kept as a one-token sequence so the heads that
    read the first token (``ExitHead``, XLM-R's classification head, BERT's pooler) read the pooled vector as is.
    The masked sum is elementwise work: ``torch.utils.flop_counter`` counts none of it, nor does ``flops.py``."""
    if pooling == "first":
        return hidden_states[:, :1]
    if attention_mask is None:
        return hidden_states.mean(dim=1, keepdim=True)
    weights = attention_mask[:, :, None].to(hidden_states.dtype)
    return (hidden_states * weights).sum(dim=1, keepdim=True) / weights.sum(dim=1, keepdim=True).clamp(min=1)


def cross_entropy_sum(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """CE summed over labelled items (label -100 ignored); ``logits`` ``(..., C)``, ``labels`` ``(...)``. Sums, not
    means: the caller divides by the item count of the whole accumulated batch."""
    return F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(),
        labels.to(logits.device).reshape(-1),
        ignore_index=-100,
        reduction="sum",
        label_smoothing=label_smoothing,
    )


def joint_cross_entropy_sum(
    exit_logits: Sequence[torch.Tensor], weights: Sequence[float], labels: torch.Tensor, label_smoothing: float = 0.0
) -> torch.Tensor:
    """The joint exit loss, summed over labelled items: per item the weighted mean over the given exits of their CE
    (``Σ_k w_k CE_k / Σ_k w_k``). The model's training loss and every trainer term over exits."""
    total = sum(weights)
    terms = [
        cross_entropy_sum(logits, labels, label_smoothing) * (w / total) for logits, w in zip(exit_logits, weights)
    ]
    return torch.stack(terms).sum()


def classifier_dropout(config) -> float:
    return config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob


def default_exit_head(config, per_token: bool) -> str:
    # getattr: FLOPs accounting also asks this of plain encoder configs, which have no exit fields.
    return getattr(config, "exit_head", None) or ("linear" if per_token else "pooler")


def build_exit_heads(config, per_token: bool) -> nn.ModuleList:
    """One head per intermediate exit layer (the last exit uses the model's final head)."""
    design = default_exit_head(config, per_token)
    return nn.ModuleList(ExitHead(config, design, per_token) for _ in config.exit_layers[:-1])


def forced_exit_index(forced_exit_layer, exit_layers: Sequence[int], batch: int, device) -> torch.Tensor | None:
    """Validate ``forced_exit_layer`` (int or ``(batch,)`` ints, each one of ``exit_layers``) as layer numbers."""
    if forced_exit_layer is None:
        return None
    forced = torch.as_tensor(forced_exit_layer, dtype=torch.long, device=device)
    if forced.dim() == 0:
        forced = forced.expand(batch)
    if forced.shape != (batch,):
        raise ValueError(f"forced_exit_layer has shape {tuple(forced.shape)}; expected an int or shape ({batch},)")
    check_exit_layers("forced_exit_layer", forced, exit_layers)
    return forced


class EarlyExitMixin:
    """Generic early-exit forward; see the module docstring for what a model family provides."""

    # The loss is summed and divided by `num_items_in_batch` when the Trainer passes it, so the Trainer must not
    # divide by the accumulation steps again: gradient accumulation then equals the big batch.
    accepts_loss_kwargs = True
    per_token: bool = False
    output_class = EarlyExitSequenceClassifierOutput

    # Filled by `link_auto_classes`: the `auto_map` written on save so the folder loads with trust_remote_code.
    remote_auto_map: dict[str, str] = {}

    def save_pretrained(self, save_directory, *args, **kwargs):
        # `register_for_auto_class` records one auto class per class; the checkpoint must name all four.
        self.config.auto_map = dict(self.remote_auto_map)
        return super().save_pretrained(save_directory, *args, **kwargs)

    def final_head(self, last_hidden_state: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} must define final_head(last_hidden_state)")

    def final_logits(self, backbone_outputs, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """The final head on the backbone's own forward output (full depth and all exits paths). A family whose
        backbone already computed part of the head (BERT's ``pooler_output``) overrides this to reuse it."""
        return self.final_head(self._head_input(backbone_outputs.last_hidden_state, attention_mask))

    @property
    def num_exit_layers(self) -> int:
        return len(self.config.exit_layers)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        exit_threshold: float | Sequence[float] | None = None,
        output_exit_logits: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        forced_exit_layer: int | torch.Tensor | None = None,
        **kwargs,
    ):
        """Classify, leaving early per example.

        Args:
            exit_threshold: overrides ``config.exit_threshold`` for this call (one float or one per exit layer).
            output_exit_logits: run every exit and return ``exit_logits`` (also implied by training mode).
            forced_exit_layer: hook for benchmarks and ablations: an int or a ``(batch,)`` tensor of exit layers
                (with ``exit_granularity="token"`` also a ``(batch, seq)`` tensor, one layer per token); each example
                (token) leaves exactly there whatever the criterion says (every exit head on its way still runs, as
                in real early exit, so costs stay faithful). Ignored in training mode.
            kwargs: ``num_items_in_batch`` (from ``transformers.Trainer``) normalises the loss; the rest goes to
                the backbone / its layers.
        """
        num_items_in_batch = kwargs.pop("num_items_in_batch", None)
        config = self.config
        return_dict = return_dict if return_dict is not None else config.return_dict
        output_hidden_states = output_hidden_states if output_hidden_states is not None else config.output_hidden_states
        thresholds = per_exit_thresholds(
            config.exit_threshold if exit_threshold is None else exit_threshold, self.num_exit_layers
        )
        self._check_granularity()
        self._check_pooling(attention_mask)
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        batch, seq_len = (input_ids if input_ids is not None else inputs_embeds).shape[:2]
        device = (input_ids if input_ids is not None else inputs_embeds).device
        token_granularity = config.exit_granularity == "token"
        if token_granularity:
            forced = forced_token_layers(forced_exit_layer, config.exit_layers, batch, seq_len, device)
        else:
            forced = forced_exit_index(forced_exit_layer, config.exit_layers, batch, device)
        real_tokens = self._real_tokens(attention_mask, batch, seq_len, device)
        inputs = {
            "input_ids": input_ids,
            "token_type_ids": token_type_ids,
            "position_ids": position_ids,
            "inputs_embeds": inputs_embeds,
        }

        # The one step that decides how examples leave; everything below only executes it.
        route = self._exit_route(forced, thresholds)
        output_attentions = bool(kwargs.get("output_attentions"))
        if self.training or output_exit_logits or output_hidden_states or output_attentions:
            # Per-layer outputs of every example only exist when every example runs every layer.
            if not self.training and route != "full_depth" and (output_hidden_states or output_attentions):
                logger.warning_once(
                    "output_hidden_states / output_attentions run every layer for every example: the exit decision "
                    "and the loss are unchanged, but early exit saves no compute in this call"
                )
            every = self._forward_all_exits(inputs, attention_mask, kwargs)
            logits, exit_layer = self._decide_from_all_exits(
                route, every, inputs, thresholds, forced, real_tokens, kwargs
            )
            output = self._make_output(
                logits,
                exit_layer,
                exit_logits=every.exit_logits,
                hidden_states=every.hidden_states,
                attentions=every.attentions,
            )
        elif route == "full_depth":
            output = self._forward_full_depth(inputs, attention_mask, kwargs)
        elif route == "token":
            output = self._make_output(*forward_token_exit(self, inputs, real_tokens, thresholds, forced, kwargs))
        else:
            output = self._forward_batched_exit(inputs, attention_mask, thresholds, forced, real_tokens, kwargs)

        # Rebuilt rather than assigned to, so that `loss` comes first in `to_tuple()` as in transformers.
        output = self.output_class(
            loss=self._loss(output, labels, num_items_in_batch) if labels is not None else None,
            logits=output.logits,
            exit_layer=output.exit_layer,
            exit_logits=output.exit_logits,
            hidden_states=output.hidden_states if output_hidden_states else None,
            attentions=output.attentions,
        )
        return output if return_dict else output.to_tuple()

    # ----------------------------------------------------------------------------------------------- task hooks
    def _check_granularity(self) -> None:
        if self.config.exit_granularity == "token" and not self.per_token:
            raise ValueError(
                f"exit_granularity='token' needs a token classification model, not {type(self).__name__}; "
                "use 'sequence'"
            )

    def _check_pooling(self, attention_mask) -> None:
        if self.config.pooling == "mean" and attention_mask is not None and attention_mask.dim() != 2:
            raise ValueError(
                f"pooling='mean' needs a 2-D (batch, seq) attention_mask to find the real tokens, got shape "
                f"{tuple(attention_mask.shape)}"
            )

    def _head_input(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """What every head (exit heads and final head) reads: all tokens for token models, else ``pool_sequence``."""
        if self.per_token:
            return hidden_states
        return pool_sequence(hidden_states, attention_mask, self.config.pooling)

    def _exit_route(self, forced, thresholds) -> str:
        """How examples leave in this call: ``"full_depth"`` (training, or no example can leave early: every
        intermediate threshold 0 and nothing forced), ``"forced"``, ``"criterion"`` (sequence-level exit by the
        criterion) or ``"token"`` (each token on its own, ``exit_granularity="token"``)."""
        if self.training:
            return "full_depth"
        if self.config.exit_granularity == "token" and (
            forced is not None or any(exits_needing_heads(self.config.exit_criterion, thresholds))
        ):
            return "token"
        if forced is not None:
            return "forced"
        if any(exits_needing_heads(self.config.exit_criterion, thresholds)):
            return "criterion"
        return "full_depth"

    def _real_tokens(self, attention_mask, batch, seq_len, device) -> torch.Tensor | None:
        """Which tokens the criterion looks at (token classification: the real tokens); None for sequences."""
        if not self.per_token:
            return None
        if attention_mask is not None and attention_mask.dim() == 2:
            return attention_mask.bool()
        return torch.ones(batch, seq_len, dtype=torch.bool, device=device)

    def _loss(self, output, labels, num_items_in_batch) -> torch.Tensor:
        """Training: the joint weighted CE over exits (what training optimises); eval: CE of the returned logits
        (the early-exit prediction), whatever outputs were asked for. Sum over labelled items divided by
        ``num_items_in_batch`` when given (the Trainer's count over the accumulated batch)."""
        if self.training:
            ce = joint_cross_entropy_sum(output.exit_logits, exit_loss_weights(self.config), labels)
        else:
            ce = cross_entropy_sum(output.logits, labels)
        count = labels.ne(-100).sum()
        denominator = num_items_in_batch if num_items_in_batch is not None else count.clamp(min=1)
        if torch.is_tensor(denominator):
            denominator = denominator.to(ce.device)
        return ce / denominator

    # -------------------------------------------------------------------------------------------------- paths
    def _make_output(self, logits, exit_layer, **fields):
        if self.per_token and exit_layer.dim() == 1:
            exit_layer = exit_layer[:, None].expand(-1, logits.shape[1])
        return self.output_class(logits=logits, exit_layer=exit_layer, **fields)

    def _full_depth_layer(self, batch: int, device) -> torch.Tensor:
        return torch.full((batch,), self.config.num_hidden_layers, dtype=torch.long, device=device)

    def _forward_full_depth(self, inputs, attention_mask, kwargs):
        outputs = self.base_model(**inputs, attention_mask=attention_mask, return_dict=True, **kwargs)
        logits = self.final_logits(outputs, attention_mask)
        exit_layer = self._full_depth_layer(logits.shape[0], logits.device)
        return self._make_output(logits, exit_layer, attentions=outputs.attentions)

    def _forward_all_exits(self, inputs, attention_mask, kwargs):
        """Every layer and every exit head for every example; ``logits`` are the final head's."""
        config = self.config
        outputs = self.base_model(
            **inputs, attention_mask=attention_mask, output_hidden_states=True, return_dict=True, **kwargs
        )
        hidden_states = outputs.hidden_states
        exit_logits = [
            head(self._head_input(hidden_states[layer], attention_mask))
            for head, layer in zip(self.exit_heads, config.exit_layers)
        ]
        exit_logits.append(self.final_logits(outputs, attention_mask))
        return self.output_class(
            logits=exit_logits[-1],
            exit_logits=tuple(exit_logits),
            hidden_states=hidden_states,
            attentions=outputs.attentions,
        )

    def _decide_from_all_exits(self, route, output, inputs, thresholds, forced, real_tokens, kwargs):
        """``route``'s logits and exit layers when every exit already ran. Sequence exits are read off the stored
        exit logits; token exits need the token path's own forward, because a token's later logits depend on which
        other tokens froze (no replay of the stored exit logits can reproduce it)."""
        config = self.config
        exit_logits = output.exit_logits
        if route == "full_depth":
            return exit_logits[-1], self._full_depth_layer(exit_logits[-1].shape[0], exit_logits[-1].device)
        if route == "token":
            return forward_token_exit(self, inputs, real_tokens, thresholds, forced, kwargs)
        if route == "forced":
            exit_index = torch.searchsorted(torch.tensor(config.exit_layers, device=forced.device), forced)
            return gather_exits(exit_logits, config.exit_layers, exit_index)
        return select_exits(
            exit_logits, config.exit_layers, config.exit_criterion, thresholds, config.exit_patience, real_tokens
        )

    def _forward_batched_exit(self, inputs, attention_mask, thresholds, forced, real_tokens, kwargs):
        config = self.config
        backbone = self.base_model
        hidden = backbone.embeddings(**inputs)
        layer_mask = create_bidirectional_mask(config=config, inputs_embeds=hidden, attention_mask=attention_mask)
        batch = hidden.shape[0]
        per_token_shape = (hidden.shape[1],) if self.per_token else ()
        logits_out = hidden.new_empty((batch, *per_token_shape, config.num_labels))
        exit_layer_out = self._full_depth_layer(batch, hidden.device)
        rows = torch.arange(batch, device=hidden.device)  # original row of each running row
        running_mask_2d = attention_mask
        exit_of_layer = {layer: index for index, layer in enumerate(config.exit_layers[:-1])}
        active = heads_to_evaluate(config.exit_criterion, thresholds, forced is not None)
        state = None

        for number, layer in enumerate(backbone.encoder.layer, start=1):
            hidden = layer(hidden, layer_mask, **kwargs)
            index = exit_of_layer.get(number)
            if index is None or not active[index]:
                continue
            head_logits = self.exit_heads[index](self._head_input(hidden, running_mask_2d))
            if forced is not None:
                leave = forced == number
            else:
                leave, state = exit_step(
                    config.exit_criterion, head_logits, thresholds[index], config.exit_patience, state, real_tokens
                )
            running = leave.shape[0]
            leaving = int(leave.sum())  # the one host synchronisation of this layer
            if leaving == 0:
                continue
            order = torch.argsort(leave.to(torch.int8), stable=True)  # rows that stay first, in their order
            stay, go = order[: running - leaving], order[running - leaving :]
            logits_out.index_copy_(0, rows[go], head_logits[go].to(logits_out.dtype))
            exit_layer_out.index_fill_(0, rows[go], number)
            if leaving == running:
                return self._make_output(logits_out, exit_layer_out)
            rows, hidden = rows[stay], hidden[stay]
            forced, state = keep_rows(stay, forced, state)
            real_tokens = real_tokens[stay] if real_tokens is not None else None
            layer_mask, running_mask_2d = self._keep_mask_rows(layer_mask, running_mask_2d, stay, running, hidden)

        final_logits = self.final_head(self._head_input(hidden, running_mask_2d))
        logits_out.index_copy_(0, rows, final_logits.to(logits_out.dtype))
        return self._make_output(logits_out, exit_layer_out)

    def _keep_mask_rows(self, layer_mask, mask_2d, stay, running, hidden):
        """Slice the layers' attention mask to the rows that stay (rebuild it for masks that cannot be sliced)."""
        mask_2d = mask_2d[stay] if mask_2d is not None and mask_2d.shape[0] == running else mask_2d
        if layer_mask is None or (torch.is_tensor(layer_mask) and layer_mask.shape[0] == 1):
            return layer_mask, mask_2d
        if torch.is_tensor(layer_mask) and layer_mask.shape[0] == running:
            return layer_mask[stay], mask_2d
        return create_bidirectional_mask(config=self.config, inputs_embeds=hidden, attention_mask=mask_2d), mask_2d


def record_architecture(model, config) -> None:
    # What save_pretrained would write, set now so that `flops_per_example(model.config, ...)` knows the task
    # (sequence or token heads) before any save.
    config.architectures = [type(model).__name__]


class EarlyExitForSequenceClassificationMixin(EarlyExitMixin):
    """Sequence classification: one decision and one label per example."""

    per_token = False
    output_class = EarlyExitSequenceClassifierOutput

    def init_heads(self, config) -> None:
        """The family sets its own standard ``classifier`` (and ``final_head``); the exit heads are generic."""
        fit_exit_layers(config)
        record_architecture(self, config)
        self.num_labels = config.num_labels
        self.exit_heads = build_exit_heads(config, per_token=False)


class EarlyExitForTokenClassificationMixin(EarlyExitMixin):
    """Token classification: labels per token (-100 ignored); a sequence leaves when all its real tokens may."""

    per_token = True
    output_class = EarlyExitTokenClassifierOutput

    def init_heads(self, config) -> None:
        """The standard token head of XLM-R and BERT alike: ``dropout`` + linear ``classifier``."""
        fit_exit_layers(config)
        if config.pooling != "first":
            raise ValueError(
                f"pooling={config.pooling!r} is for sequence classification; {type(self).__name__} classifies each "
                "token (its heads read every token), so use pooling='first'"
            )
        record_architecture(self, config)
        self.num_labels = config.num_labels
        self.dropout = nn.Dropout(classifier_dropout(config))
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.exit_heads = build_exit_heads(config, per_token=True)

    def final_head(self, last_hidden_state: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(last_hidden_state))


def link_auto_classes(config_class, sequence_class, token_class) -> None:
    """Make ``save_pretrained`` of either model write the code and an ``auto_map`` for all four Auto classes."""

    def reference(cls) -> str:
        return f"{cls.__module__.split('.')[-1]}.{cls.__name__}"

    auto_map = {
        "AutoConfig": reference(config_class),
        "AutoModelForSequenceClassification": reference(sequence_class),
        "AutoModelForTokenClassification": reference(token_class),
    }
    config_class.register_for_auto_class("AutoConfig")
    sequence_class.register_for_auto_class("AutoModelForSequenceClassification")
    token_class.register_for_auto_class("AutoModelForTokenClassification")
    # AutoModel gives back the task class that was saved, as the package's own registration does.
    for cls in (sequence_class, token_class):
        cls.remote_auto_map = {**auto_map, "AutoModel": reference(cls)}
