"""The segments an early-exit sequence classifier is cut into for deployment, as small torch modules.

One graph per segment: the embeddings, each run of layers that ends at an exit layer, each intermediate exit head and
the final head. A runner then executes the layer runs one after the other and, after each run, the head of the exit
it ends at; rows that leave are removed from the batch before the next run (host-side compaction), exactly like the
model's batched exit loop (``EarlyExitMixin._forward_batched_exit``).

Every layer run and head takes the 2-D ``attention_mask`` (1 = real token) and builds what it needs from it inside
the graph, so the runner only ever slices ``(rows, seq)`` arrays.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

# Graph input / output names, shared by the exporter and the runner.
INPUT_IDS, TOKEN_TYPE_IDS, ATTENTION_MASK, HIDDEN, LOGITS = (
    "input_ids",
    "token_type_ids",
    "attention_mask",
    "hidden_states",
    "logits",
)
# A graph's output cannot share its input's name.
HIDDEN_OUT = "hidden_states_out"


@dataclass(frozen=True)
class Segment:
    """One graph: ``kind`` is ``"embeddings"``, ``"layers"`` (layers ``first``..``last``, 1-based, inclusive),
    ``"exit_head"`` (the head of exit layer ``last``) or ``"final_head"``."""

    kind: str
    first: int = 0
    last: int = 0

    @property
    def name(self) -> str:
        if self.kind == "layers":
            return f"layers_{self.first:02d}_{self.last:02d}"
        if self.kind == "exit_head":
            return f"exit_head_{self.last:02d}"
        return self.kind

    @property
    def inputs(self) -> tuple[str, ...]:
        return (INPUT_IDS, TOKEN_TYPE_IDS) if self.kind == "embeddings" else (HIDDEN, ATTENTION_MASK)

    @property
    def output(self) -> str:
        return {"embeddings": HIDDEN, "layers": HIDDEN_OUT}.get(self.kind, LOGITS)


def plan_segments(exit_layers: list[int]) -> list[Segment]:
    """Embeddings, then for each exit layer the run of layers ending there followed by that exit's head (the final
    head after the last run)."""
    segments = [Segment("embeddings")]
    first = 1
    for layer in exit_layers[:-1]:
        segments += [Segment("layers", first, layer), Segment("exit_head", layer, layer)]
        first = layer + 1
    last = exit_layers[-1]
    return segments + [Segment("layers", first, last), Segment("final_head", last, last)]


def additive_mask(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``(rows, 1, 1, seq)`` additive mask (0 for real keys, the dtype's minimum for padding): the 4-D form every
    attention implementation of transformers takes as is (``create_bidirectional_mask`` returns a 4-D mask
    unchanged), so eager and SDPA layers export alike."""
    return (1.0 - attention_mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min


# The attention the layer runs are exported with (registered with transformers' AttentionInterface on first use):
# eager attention with the scores divided by sqrt(head_dim) instead of multiplied by its inverse. Same numbers
# (within float rounding), but the graph then has the one pattern ONNX Runtime's BERT Attention fusion matches beside
# our additive mask: ``Softmax(Add(Div(MatMul(q, k)), Mul(Sub(1, Cast(Unsqueeze(Unsqueeze(mask)))))))``. With the
# eager ``* scaling`` the fusion looks for the mask's Mul and finds the scaling Mul first (no Attention fused); the
# SDPA export splits the scaling over q and k (no fusion either).
FUSABLE_ATTENTION = "hf_earlyexit_onnx_fusable"


def fusable_attention_forward(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    scaling = query.size(-1) ** -0.5 if scaling is None else scaling
    scores = torch.matmul(query, key.transpose(2, 3)) / (1.0 / scaling)
    if attention_mask is not None:
        scores = scores + attention_mask
    weights = nn.functional.softmax(scores, dim=-1)
    weights = nn.functional.dropout(weights, p=dropout, training=module.training)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights


@contextmanager
def fusable_attention(model):
    """Run ``model`` with ``FUSABLE_ATTENTION`` inside the block (for tracing), its own attention again after."""
    from transformers import AttentionInterface

    AttentionInterface.register(FUSABLE_ATTENTION, fusable_attention_forward)  # idempotent
    previous = model.config._attn_implementation
    model.set_attn_implementation(FUSABLE_ATTENTION)
    try:
        yield model
    finally:
        model.set_attn_implementation(previous)


class EmbeddingsSegment(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.embeddings = model.base_model.embeddings

    def forward(self, input_ids, token_type_ids):
        return self.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)


class LayersSegment(nn.Module):
    def __init__(self, model, first: int, last: int):
        super().__init__()
        self.layers = nn.ModuleList(model.base_model.encoder.layer[first - 1 : last])

    def forward(self, hidden_states, attention_mask):
        mask = additive_mask(attention_mask, hidden_states.dtype)
        for layer in self.layers:
            hidden_states = layer(hidden_states, mask)
        return hidden_states


class HeadSegment(nn.Module):
    """An exit head (``index`` into ``model.exit_heads``) or, for ``index=None``, the model's final head."""

    def __init__(self, model, index: int | None):
        super().__init__()
        self.model = model
        self.index = index

    def forward(self, hidden_states, attention_mask):
        return head_logits(self.model, self.index, hidden_states, attention_mask)


def head_logits(model, index: int | None, hidden_states, attention_mask):
    """The logits of the model's exit head ``index`` (or of its final head for ``None``) on what the model's heads
    read (``config.pooling``: the first token, or the mean over the real tokens of ``attention_mask``)."""
    head = model.final_head if index is None else model.exit_heads[index]
    return head(model._head_input(hidden_states, attention_mask))


def segment_module(model, segment: Segment) -> nn.Module:
    """The eval-mode torch module of one segment (sharing the model's parameters)."""
    if segment.kind == "embeddings":
        module = EmbeddingsSegment(model)
    elif segment.kind == "layers":
        module = LayersSegment(model, segment.first, segment.last)
    else:
        index = None if segment.kind == "final_head" else model.config.exit_layers.index(segment.last)
        module = HeadSegment(model, index)
    return module.eval()
