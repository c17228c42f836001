"""Analytic forward FLOPs of early-exit models, in the convention of ``torch.utils.flop_counter`` (2 × MACs of the
matrix products; embeddings lookups, layer norms, softmax, activations and residual adds count as 0).

What is counted for one example of ``T`` real tokens (no padding), hidden size ``H``, FFN size ``F``, ``C`` labels:

* each transformer layer: Q, K, V and output projections ``2·T·4·H²``, FFN ``2·T·2·H·F``, attention scores
  ``Q·Kᵀ`` and ``scores·V`` ``2·2·T²·H`` (all heads together). This is "the encoder": for XLM-R Base
  (12 × 768, FFN 3072) at 128 tokens it is 22.35 GFLOP.
* the exit heads evaluated on the way (see ``ExitHead``): every intermediate exit at or below the exit layer (an
  example is scored at each exit it passes) whose head the config's thresholds switch on (a per-exit threshold of 0
  skips its head, as the model does), and the final head when it reaches the last layer. Sequence heads run on one
  vector (the first token, or with ``pooling="mean"`` the mean of the real tokens, whose masked sum is elementwise
  work the counter does not count either), token heads on all ``T``. ``include_exit_heads=False`` leaves the
  intermediate heads out, as for
  the plain full-depth model (or the early-exit model with every threshold 0, which skips them).

Token-level exit (``exit_granularity="token"``, ``flops_token_exit``): with ``A_l`` the tokens still active at
layer ``l`` (exit layer >= l), a layer costs K and V projections for all ``T`` tokens of the row ``2·T·2·H²``
(frozen tokens are still keys and values) while the row is alive (some token active), and only for the active
tokens the Q and output projections ``2·A_l·2·H²``, the FFN ``2·A_l·2·H·F`` and the attention scores against all
keys ``2·2·A_l·T·H``; each exit head runs on the tokens active at its layer. With every token at the same layer
this is ``flops_per_example`` exactly. (The batched implementation lays each row's active queries out up to the
batch's largest active count per row, so in a batch its score products can exceed ``A_l·T`` by that padding;
these products are ~3% of a layer at 128 tokens for XLM-R Base. One row alone is counted exactly.)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..modeling.criteria import check_exit_layers, exits_needing_heads, per_exit_thresholds
from ..modeling.early_exit import default_exit_head

TASKS = ("sequence", "token")


def _task(config, task: str | None) -> str:
    if task is not None:
        if task not in TASKS:
            raise ValueError(f"task={task!r}; expected one of {TASKS}")
        return task
    architectures = getattr(config, "architectures", None) or []
    return "token" if any("TokenClassification" in name for name in architectures) else "sequence"


def _exit_layers(config) -> list[int]:
    return list(getattr(config, "exit_layers", None) or [config.num_hidden_layers])


def layer_flops(config, seq_len):
    """FLOPs of one transformer layer over ``seq_len`` tokens (works on ints and tensors)."""
    hidden, ffn = config.hidden_size, config.intermediate_size
    return 2 * seq_len * (4 * hidden * hidden + 2 * hidden * ffn) + 4 * seq_len * seq_len * hidden


def head_flops(config, seq_len, design: str, task: str):
    """FLOPs of one classification head: ``"pooler"`` (dense H×H + linear H×C) or ``"linear"`` (H×C)."""
    hidden, labels = config.hidden_size, config.num_labels
    per_token = 2 * hidden * labels + (2 * hidden * hidden if design == "pooler" else 0)
    return per_token * (seq_len if task == "token" else 1)


def final_head_design(task: str) -> str:
    # XLM-R's sequence head (dense + tanh + out_proj) and BERT's (pooler dense + classifier) are both "pooler"
    # shaped; both families' token heads are a single linear layer.
    return "linear" if task == "token" else "pooler"


def _evaluated_exit_layers(config) -> list[int]:
    """The intermediate exits whose heads the model evaluates: those the config's thresholds switch on (a per-exit
    threshold of 0 skips its head); when none is on, every one (only forced exits can then leave early, and they
    run every head on the way)."""
    intermediate = _exit_layers(config)[:-1]
    threshold = getattr(config, "exit_threshold", None)
    if threshold is None:
        return intermediate
    needed = exits_needing_heads(
        getattr(config, "exit_criterion", "entropy"), per_exit_thresholds(threshold, len(intermediate) + 1)
    )
    return [layer for layer, on in zip(intermediate, needed) if on] if any(needed) else intermediate


def _flops(config, seq_len, exit_layer, task: str, include_exit_heads: bool):
    """Vectorised core: ``seq_len`` and ``exit_layer`` may be ints or broadcastable tensors."""
    depth = config.num_hidden_layers
    total = exit_layer * layer_flops(config, seq_len)
    if include_exit_heads:
        per_exit = head_flops(config, seq_len, default_exit_head(config, task == "token"), task)
        for layer in _evaluated_exit_layers(config):
            total = total + per_exit * (exit_layer >= layer)
    return total + head_flops(config, seq_len, final_head_design(task), task) * (exit_layer == depth)


def flops_per_example(
    config, seq_len: int, exit_layer: int | None = None, task: str | None = None, include_exit_heads: bool = True
) -> int:
    """Forward FLOPs for one example of ``seq_len`` tokens leaving at ``exit_layer`` (default: full depth).

    ``task`` ("sequence" or "token") defaults to what ``config.architectures`` names (token classification when a
    ``*TokenClassification`` class is listed, else sequence).
    """
    task = _task(config, task)
    exit_layer = config.num_hidden_layers if exit_layer is None else int(exit_layer)
    if exit_layer not in _exit_layers(config):
        raise ValueError(f"exit_layer={exit_layer}; expected one of the exit layers {_exit_layers(config)}")
    if not int(seq_len) >= 1:
        raise ValueError(f"seq_len={seq_len}; expected an int >= 1")
    return int(_flops(config, int(seq_len), exit_layer, task, include_exit_heads))


def mean_flops(
    config,
    seq_lens: Sequence[int] | torch.Tensor,
    exit_layers: Sequence[int] | torch.Tensor,
    task: str | None = None,
    include_exit_heads: bool = True,
) -> float:
    """Mean FLOPs per example of a set of examples, from each example's real length and exit layer.

    ``exit_layers`` is one layer per example (for the token twin take ``exit_layer[:, 0]``: the whole sequence
    leaves together).
    """
    task = _task(config, task)
    lengths = torch.as_tensor(seq_lens, dtype=torch.float64).flatten()
    layers = torch.as_tensor(exit_layers, dtype=torch.float64)
    if layers.dim() != 1 or layers.shape != lengths.shape:
        raise ValueError(
            f"exit_layers has shape {tuple(layers.shape)} and seq_lens {tuple(lengths.shape)}; expected one exit "
            "layer and one length per example"
        )
    if lengths.numel() == 0:
        raise ValueError("mean_flops got no examples")
    check_exit_layers("exit_layers", layers, _exit_layers(config))
    return float(_flops(config, lengths, layers, task, include_exit_heads).mean())


def _token_exit_flops(config, exit_layer: torch.Tensor, real: torch.Tensor, include_exit_heads: bool) -> torch.Tensor:
    """Vectorised core of ``flops_token_exit``: ``exit_layer`` and ``real`` ``(rows, seq)``; FLOPs per row
    (float64), each row at its real length ``real.sum(1)``."""
    hidden, ffn = config.hidden_size, config.intermediate_size
    depth = config.num_hidden_layers
    layers = torch.arange(1, depth + 1, dtype=torch.long, device=exit_layer.device)
    # active[r, l-1]: tokens of row r still computed at layer l
    active = ((exit_layer[:, :, None] >= layers) & real[:, :, None]).sum(dim=1).double()
    tokens = real.sum(dim=1, keepdim=True).double()
    key_value = 2 * tokens * 2 * hidden * hidden * (active > 0)
    active_only = 2 * active * (2 * hidden * hidden + 2 * hidden * ffn) + 4 * active * tokens * hidden
    total = (key_value + active_only).sum(dim=1)
    if include_exit_heads:
        per_token = head_flops(config, 1, default_exit_head(config, per_token=True), "token")
        for layer in _exit_layers(config)[:-1]:
            total = total + per_token * active[:, layer - 1]
    return total + head_flops(config, 1, final_head_design("token"), "token") * active[:, depth - 1]


def flops_token_exit(
    config, seq_len: int, token_exit_layers: Sequence[int] | torch.Tensor, include_exit_heads: bool = True
) -> int:
    """Forward FLOPs of one example of ``seq_len`` real tokens under token-level exit, token ``i`` leaving at
    ``token_exit_layers[i]`` (see the module docstring). Equals ``flops_per_example(config, seq_len, L,
    task="token")`` when every token leaves at ``L``."""
    layers = torch.as_tensor(token_exit_layers, dtype=torch.long).flatten()
    if not int(seq_len) >= 1 or layers.numel() != int(seq_len):
        raise ValueError(
            f"token_exit_layers has {layers.numel()} entries for seq_len={seq_len}; expected one exit layer per "
            "real token (seq_len >= 1)"
        )
    check_exit_layers("token_exit_layers", layers, _exit_layers(config))
    real = torch.ones(1, layers.numel(), dtype=torch.bool)
    return int(round(float(_token_exit_flops(config, layers[None], real, include_exit_heads)[0])))


def token_exit_flops_per_row(
    config, exit_layer: torch.Tensor, attention_mask: torch.Tensor, include_exit_heads: bool = True
) -> torch.Tensor:
    """``flops_token_exit`` of every row of a batch: ``exit_layer`` and ``attention_mask`` ``(batch, seq)`` as the
    model returns / takes them (padding ignored: each row at its real length). float64 ``(batch,)``."""
    if exit_layer.shape != attention_mask.shape or exit_layer.dim() != 2:
        raise ValueError(
            f"exit_layer has shape {tuple(exit_layer.shape)} and attention_mask {tuple(attention_mask.shape)}; "
            "expected the same (batch, seq) shape"
        )
    real = attention_mask.bool()
    if not bool(real.any(dim=1).all()):
        raise ValueError("attention_mask has a row without real tokens; expected at least one token per row")
    return _token_exit_flops(config, exit_layer.long(), real, include_exit_heads)
