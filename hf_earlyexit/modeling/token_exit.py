"""Per-token early exit (``exit_granularity="token"``), batched: each token leaves on its own (TokEE).

After each exit layer a token leaves when no active token of its window must stay (``criteria.window_leaves``).
A token that has left keeps its last hidden state; later layers still read it as key and value, but compute
nothing else for it. Per layer, for the rows still running:

* K and V: every position of the row (the frozen tokens included: they are the context of the active ones);
* Q, the attention output projection + residual + LayerNorm, and the feed-forward: only the active tokens,
  gathered from the flattened ``(rows * seq)`` grid into one dense ``(active, hidden)`` tensor across the batch,
  then scattered back; the exit head also runs on that packed tensor only;
* attention: the active queries of each row are laid out in a ``(rows, max active per row)`` buffer and attend to
  their row's keys under the row's padding mask, in one SDPA (or eager) call for the batch. This wastes
  ``(max - count)`` query slots per row, but the score products are ~3% of a layer's FLOPs at 128 tokens (Base),
  whereas the alternatives cost more: per-row SDPA calls serialise small kernels, and attending every position
  (scatter Q into the full grid) keeps the whole ``seq x seq`` score matrix.

A row leaves the batch entirely once all its tokens have left (as in the sequence path), so its keys and values
stop costing too. Host synchronisations: one per layer for the packing sizes after a change, one per exit layer for
how many tokens leave.

Works on any encoder whose layers have the BERT structure (``attention.self.{query,key,value}``,
``attention.output``, ``intermediate``, ``output``): XLM-R and BERT alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .criteria import check_exit_layers, heads_to_evaluate, keep_rows, may_leave, window_leaves


@dataclass
class ActiveTokens:
    """Where the active tokens of the running rows sit.

    Attributes:
        flat_index: ``(active,)`` positions in the flattened ``(rows * seq)`` grid, row-major.
        slot_index: ``(active,)`` positions in the flattened ``(rows * max_active)`` query buffer; None when every
            row has ``max_active`` active tokens (the packed tensor already is the buffer).
        max_active: the largest number of active tokens of one row.
    """

    flat_index: torch.Tensor
    slot_index: torch.Tensor | None
    max_active: int

    @classmethod
    def of(cls, active: torch.Tensor) -> ActiveTokens:
        rows = active.shape[0]
        flat_index = active.flatten().nonzero().squeeze(1)
        max_active = int(active.sum(dim=1).max()) if rows else 0
        if flat_index.numel() == rows * max_active:
            return cls(flat_index, None, max_active)
        rank_in_row = active.long().cumsum(dim=1) - 1
        slots = torch.arange(rows, device=active.device)[:, None] * max_active + rank_in_row
        return cls(flat_index, slots.flatten().index_select(0, flat_index), max_active)


def _attend(query, key, value, key_mask, scaling: float, eager: bool) -> torch.Tensor:
    """Each row's queries over its row's keys, padding keys masked; ``(rows, heads, queries, head_size)``."""
    if eager:  # what the model's eager attention computes (and what torch's flop counter can see on CPU)
        scores = torch.matmul(query, key.transpose(2, 3)) * scaling
        scores = scores.masked_fill(~key_mask[:, None, None, :], torch.finfo(scores.dtype).min)
        return torch.matmul(torch.softmax(scores, dim=-1), value)
    return torch.nn.functional.scaled_dot_product_attention(
        query, key, value, attn_mask=key_mask[:, None, None, :], scale=scaling
    )


def token_exit_layer(
    layer, hidden: torch.Tensor, active: ActiveTokens, key_mask: torch.Tensor, eager: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """One encoder layer in which only the active tokens are updated (eval mode: no dropout).

    Returns the new ``(rows, seq, hidden)`` states (frozen tokens unchanged) and the active tokens' new states
    packed ``(active, hidden)`` (what the exit head reads).
    """
    rows, seq, width = hidden.shape
    attention = layer.attention.self
    heads, head_size = attention.num_attention_heads, attention.attention_head_size
    scaling = getattr(attention, "scaling", head_size**-0.5)
    flat = hidden.reshape(rows * seq, width)
    states = flat.index_select(0, active.flat_index)

    key = attention.key(hidden).view(rows, seq, heads, head_size).transpose(1, 2)
    value = attention.value(hidden).view(rows, seq, heads, head_size).transpose(1, 2)
    query = attention.query(states)
    if active.slot_index is not None:
        query = query.new_zeros(rows * active.max_active, query.shape[-1]).index_copy_(0, active.slot_index, query)
    query = query.view(rows, active.max_active, heads, head_size).transpose(1, 2)
    context = _attend(query, key, value, key_mask, scaling, eager)
    context = context.transpose(1, 2).reshape(rows * active.max_active, heads * head_size)
    if active.slot_index is not None:
        context = context.index_select(0, active.slot_index)

    attention_output = layer.attention.output(context, states)
    new_states = layer.output(layer.intermediate(attention_output), attention_output)
    if torch.is_grad_enabled() and new_states.requires_grad:  # autograd saved `hidden` for K and V: no in-place
        flat = flat.index_copy(0, active.flat_index, new_states)
    else:  # `hidden` is this loop's own tensor; skipping the copy of the whole grid matters at batch 32
        flat.index_copy_(0, active.flat_index, new_states)
    return flat.view(rows, seq, width), new_states


def forced_token_layers(forced, exit_layers, batch: int, seq_len: int, device) -> torch.Tensor | None:
    """Validate a forced exit (int, ``(batch,)`` or ``(batch, seq)`` exit layers) as a ``(batch, seq)`` tensor."""
    if forced is None:
        return None
    forced = torch.as_tensor(forced, dtype=torch.long, device=device)
    if forced.dim() == 0:
        forced = forced.expand(batch, seq_len)
    elif forced.dim() == 1 and forced.shape == (batch,):
        forced = forced[:, None].expand(batch, seq_len)
    if forced.shape != (batch, seq_len):
        raise ValueError(
            f"forced_exit_layer has shape {tuple(forced.shape)}; expected an int, shape ({batch},) or "
            f"({batch}, {seq_len}) for token-level exit"
        )
    check_exit_layers("forced_exit_layer", forced, exit_layers)
    return forced


def forward_token_exit(model, inputs, real, thresholds, forced, kwargs):
    """The batched per-token exit path of ``EarlyExitMixin`` (eval); ``real`` ``(batch, seq)`` bool marks the real
    tokens. Returns ``(logits, exit_layer)``, both per token; padding positions get zero logits and their row's
    deepest exit layer (they travelled with the row)."""
    config = model.config
    backbone = model.base_model
    hidden = backbone.embeddings(**inputs)
    batch, seq_len = hidden.shape[:2]
    device = hidden.device
    logits_out = hidden.new_zeros(batch * seq_len, config.num_labels)
    exit_layer_out = torch.full((batch * seq_len,), config.num_hidden_layers, dtype=torch.long, device=device)
    exit_of_layer = {layer: index for index, layer in enumerate(config.exit_layers[:-1])}
    needed = heads_to_evaluate(config.exit_criterion, thresholds, forced is not None)
    eager = config._attn_implementation == "eager"
    window = config.exit_window

    # Rows are sliced away as they finish; `origin` maps each running grid position to the output's position.
    origin = torch.arange(batch * seq_len, device=device).view(batch, seq_len)
    active, key_mask, state = real.clone(), real, None
    running = real.any(dim=1)
    if not bool(running.all()):  # rows without any real token have nothing to compute
        origin, hidden, active, key_mask = origin[running], hidden[running], active[running], key_mask[running]
        forced = forced[running] if forced is not None else None
    packing = ActiveTokens.of(active)
    states = None

    for number, layer in enumerate(backbone.encoder.layer, start=1):
        if hidden.shape[0] == 0:
            break
        hidden, states = token_exit_layer(layer, hidden, packing, key_mask, eager)
        index = exit_of_layer.get(number)
        if index is None or not needed[index]:
            continue
        head_logits = model.exit_heads[index](states)
        if forced is not None:
            leave = active & (forced == number)
        else:
            grid = head_logits.new_zeros(active.numel(), head_logits.shape[-1])
            grid = grid.index_copy_(0, packing.flat_index, head_logits).view(*active.shape, -1)
            token_may_leave, state = may_leave(
                config.exit_criterion, grid, thresholds[index], config.exit_patience, state
            )
            leave = window_leaves(token_may_leave, active, window)
        leaving_packed = leave.flatten().index_select(0, packing.flat_index)
        if not bool(leaving_packed.any()):  # the one host synchronisation of this exit
            continue
        target = origin.flatten().index_select(0, packing.flat_index)[leaving_packed]
        logits_out.index_copy_(0, target, head_logits[leaving_packed].to(logits_out.dtype))
        exit_layer_out.index_fill_(0, target, number)
        active = active & ~leave
        stay = active.any(dim=1)
        if not bool(stay.all()):
            origin, hidden, active, key_mask = origin[stay], hidden[stay], active[stay], key_mask[stay]
            forced, state = keep_rows(stay, forced, state)
        packing = ActiveTokens.of(active)
        states = None

    if hidden.shape[0]:  # tokens that reached the last layer; `states` are theirs (the last layer never repacks)
        final_logits = model.final_head(states)
        target = origin.flatten().index_select(0, packing.flat_index)
        logits_out.index_copy_(0, target, final_logits.to(logits_out.dtype))

    exit_layer_out = exit_layer_out.view(batch, seq_len)
    row_depth = exit_layer_out.masked_fill(~real, 0).amax(dim=1)
    row_depth = torch.where(row_depth > 0, row_depth, torch.full_like(row_depth, config.exit_layers[0]))
    exit_layer_out = torch.where(real, exit_layer_out, row_depth[:, None])
    return logits_out.view(batch, seq_len, -1), exit_layer_out
