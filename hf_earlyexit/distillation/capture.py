"""Capture hidden states and query/key/value projections of chosen layers with forward hooks.

The models keep their fast attention (SDPA) for the forward pass; attention probabilities are recomputed only for
the mapped layers from the captured projections (`attention_log_probs`), so memory holds maps for those layers only.
Where the modules live differs per model family, hence the small layout table.
"""

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class EncoderLayout:
    """Module paths, relative to the model's base model (`model.base_model`)."""

    embeddings: str
    layers: str
    # relative to one layer
    query: str
    key: str
    value: str


_BERT_STYLE = EncoderLayout(
    embeddings="embeddings",
    layers="encoder.layer",
    query="attention.self.query",
    key="attention.self.key",
    value="attention.self.value",
)

ENCODER_LAYOUTS: dict[str, EncoderLayout] = {
    "bert": _BERT_STYLE,
    "roberta": _BERT_STYLE,
    "xlm-roberta": _BERT_STYLE,
    "xlm-roberta-early-exit": _BERT_STYLE,
    "camembert": _BERT_STYLE,
    "bert-early-exit": _BERT_STYLE,
}


def encoder_layout(model: nn.Module) -> EncoderLayout:
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in ENCODER_LAYOUTS:
        raise ValueError(
            f"no encoder layout known for model_type {model_type!r}; supported: {', '.join(ENCODER_LAYOUTS)} "
            "(add an entry to hf_earlyexit.distillation.capture.ENCODER_LAYOUTS)"
        )
    return ENCODER_LAYOUTS[model_type]


def encoder_layers(model: nn.Module) -> nn.ModuleList:
    return model.base_model.get_submodule(encoder_layout(model).layers)


def attention_heads(model: nn.Module) -> int:
    return model.config.num_attention_heads


def _attention_scores(query, key, num_heads, mask):
    batch, seq, width = query.shape
    head_dim = width // num_heads
    q = query.view(batch, seq, num_heads, head_dim).transpose(1, 2)
    k = key.view(batch, key.shape[1], num_heads, head_dim).transpose(1, 2)
    scores = (q @ k.transpose(-1, -2)).float() * head_dim**-0.5
    if mask is not None and not bool(mask.all()):
        scores = scores.masked_fill(~mask.bool()[:, None, None, :], torch.finfo(scores.dtype).min)
    return scores


def attention_log_probs(
    query: torch.Tensor, key: torch.Tensor, num_heads: int, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Attention log-probabilities (batch, heads, seq, seq) from query/key projections (batch, seq, width), as the
    model's own attention computes them (scaled dot product, padding keys masked), in float32."""
    return _attention_scores(query, key, num_heads, mask).log_softmax(-1)


def head_mean_log_probs(
    query: torch.Tensor, key: torch.Tensor, num_heads: int, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """log of the head-averaged attention distribution, (batch, 1, seq, seq): what the head-mean losses compare.

    Equal to `losses.log_head_mean(attention_log_probs(...))` but with fewer passes over the per-head maps, which
    dominate the cost of the attention loss at long sequences."""
    probs = _attention_scores(query, key, num_heads, mask).softmax(-1).mean(1, keepdim=True)
    return probs.clamp_min(torch.finfo(probs.dtype).tiny).log()


def _first_tensor(output):
    return output[0] if isinstance(output, (tuple, list)) else output


class EncoderCapture:
    """Context manager: while active, forward passes of `model` record the hidden states of `hidden_layers`
    (0 = embedding output) into `.hidden` and the `projections` ("query", "key", "value") of `qkv_layers` into
    `.qkv[layer]` (a dict by projection name). `on_qkv(layer, projections)`, if given, replaces a layer's dict as
    soon as it is complete: the trainer scores each teacher layer with it at once, so no projections pile up."""

    def __init__(
        self,
        model: nn.Module,
        hidden_layers: Iterable[int] = (),
        qkv_layers: Iterable[int] = (),
        projections: tuple[str, ...] = ("query", "key"),
        on_qkv: Callable[[int, dict[str, torch.Tensor]], object] | None = None,
    ):
        self.model = model
        self.layout = encoder_layout(model)
        self.hidden_layers = sorted(set(hidden_layers))
        self.qkv_layers = sorted(set(qkv_layers))
        self.projections = projections
        self.on_qkv = on_qkv
        self.hidden: dict[int, torch.Tensor] = {}
        self.qkv: dict[int, object] = {}
        self._handles = []

    def _hidden_hook(self, layer: int):
        def hook(module, args, output):
            self.hidden[layer] = _first_tensor(output)

        return hook

    def _projection_hook(self, layer: int, name: str):
        def hook(module, args, output):
            entry = self.qkv.setdefault(layer, {})
            entry[name] = output
            if self.on_qkv is not None and len(entry) == len(self.projections):
                self.qkv[layer] = self.on_qkv(layer, entry)

        return hook

    def __enter__(self) -> "EncoderCapture":
        base = self.model.base_model
        layers = base.get_submodule(self.layout.layers)
        for layer in self.hidden_layers:
            module = base.get_submodule(self.layout.embeddings) if layer == 0 else layers[layer - 1]
            self._handles.append(module.register_forward_hook(self._hidden_hook(layer)))
        for layer in self.qkv_layers:
            for name in self.projections:
                module = layers[layer - 1].get_submodule(getattr(self.layout, name))
                self._handles.append(module.register_forward_hook(self._projection_hook(layer, name)))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
