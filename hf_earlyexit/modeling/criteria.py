"""Exit criteria as pure tensor functions, shared by the batched exit loop and the full-compute path.

Every criterion follows one convention so that ``exit_threshold`` means the same thing for all of them: an example
(a token, for token classification) may leave at an exit when its *uncertainty* there is strictly below the
threshold of that exit. Hence ``0.0`` never leaves early and a threshold above 1 leaves at the first exit.

* ``"entropy"``: uncertainty = normalized entropy ``H(p) / log(num_labels)`` in [0, 1] (DeeBERT, but from
  ``log_softmax`` so extreme logits and bf16 stay finite).
* ``"max_prob"``: uncertainty = ``1 - max_c p_c`` in [0, 1); threshold ``0.1`` means "leave when the top class
  has probability above 0.9".
* ``"patience"`` (PABEE): leave once the predicted class has stayed the same for ``patience`` consecutive exits
  (so never at the first exit). The threshold only gates it: an exit with threshold 0 cannot be left at.

No function here raises for control flow or synchronises with the host; the caller decides when to look.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

EXIT_CRITERIA = ("entropy", "patience", "max_prob")


def normalized_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of softmax(logits) over the last dim divided by log(num_labels); float32, in [0, 1]."""
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    probs = log_probs.exp()
    # 0 * log 0 is 0 by continuity; without the where, a -inf logit would give 0 * -inf = nan.
    plogp = torch.where(probs > 0, probs * log_probs, torch.zeros_like(probs))
    return (-plogp.sum(dim=-1) / math.log(logits.shape[-1])).clamp(0.0, 1.0)


def max_probability(logits: torch.Tensor) -> torch.Tensor:
    """Probability of the most likely class; float32."""
    return torch.log_softmax(logits.float(), dim=-1).amax(dim=-1).exp()


def uncertainty(logits: torch.Tensor, criterion: str) -> torch.Tensor:
    """The score compared with the threshold (entropy or 1 - max probability)."""
    if criterion == "entropy":
        return normalized_entropy(logits)
    return 1.0 - max_probability(logits)


def sequence_leaves(token_leaves: torch.Tensor, real_tokens: torch.Tensor) -> torch.Tensor:
    """A sequence leaves when every real (non-pad) token may leave (``exit_granularity="sequence"``); the
    per-token mode combines the same token flags with ``window_leaves`` instead."""
    return (token_leaves | ~real_tokens).all(dim=-1)


def window_any(flags: torch.Tensor, window: int) -> torch.Tensor:
    """For each position of ``flags`` ``(rows, seq)`` (bool), whether any position of its window is set.

    The window holds ``window`` consecutive positions of the same row: ``(window - 1) // 2`` to the left and
    ``window // 2`` to the right (an even window leans right), clipped at the row's ends.
    """
    if window == 1:
        return flags
    padded = torch.nn.functional.pad(flags.to(torch.uint8), ((window - 1) // 2, window // 2))
    return padded.unfold(-1, window, 1).amax(dim=-1).bool()


def window_leaves(may_leave: torch.Tensor, active: torch.Tensor, window: int) -> torch.Tensor:
    """TokEE's window rule: an active token leaves when no active token of its window must stay.

    For ``"entropy"`` this is "the maximum normalized entropy over the active tokens of the window is below the
    threshold". Only ``active`` tokens count: padding never holds a neighbour back, and neither does a token that
    has already left (it was certain enough when it left; its state no longer changes). Special tokens (``<s>``,
    ``</s>``) are real tokens and count like any other: the model cannot tell them apart from the mask alone.
    """
    return active & ~window_any(active & ~may_leave, window)


def may_leave(
    criterion: str,
    logits: torch.Tensor,
    threshold: float,
    patience: int = 1,
    state: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
    """Whether each item (row, or token) of ``logits`` ``(..., num_labels)`` is certain enough to leave at this
    exit on its own, and the new patience state (see ``exit_step``)."""
    if criterion != "patience":
        return uncertainty(logits, criterion) < threshold, state
    prediction = logits.argmax(dim=-1)
    if state is None:
        count = torch.zeros_like(prediction)
    else:
        previous, count = state
        count = torch.where(prediction == previous, count + 1, torch.zeros_like(count))
    leaves = count >= patience
    if threshold <= 0:
        leaves = torch.zeros_like(leaves)
    return leaves, (prediction, count)


def exit_step(
    criterion: str,
    logits: torch.Tensor,
    threshold: float,
    patience: int = 1,
    state: tuple[torch.Tensor, torch.Tensor] | None = None,
    real_tokens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
    """Decide, at one exit, which rows leave.

    Args:
        logits: ``(rows, num_labels)``, or ``(rows, seq, num_labels)`` with ``real_tokens`` ``(rows, seq)`` (bool).
        threshold: this exit's threshold (a Python float, known on the host).
        state: the patience state ``(previous prediction, unchanged count)`` returned by the previous exit for
            the same rows in the same order (None at the first exit and for the other criteria).

    Returns:
        ``(leave, state)``: bool ``(rows,)`` and the new patience state (rows must be selected from it together
        with the hidden states when rows leave).
    """
    token_leaves, state = may_leave(criterion, logits, threshold, patience, state)
    if real_tokens is not None:
        return sequence_leaves(token_leaves, real_tokens), state
    return token_leaves, state


def exits_needing_heads(criterion: str, thresholds: Sequence[float]) -> list[bool]:
    """Which intermediate exits must evaluate their head (all but the last exit; the last always runs).

    Entropy / max-prob only look at an exit whose threshold is positive; patience needs every prediction to track
    its count as soon as any exit can be left at. All False means the plain full-depth forward gives the answer.
    """
    intermediate = [t > 0 for t in thresholds[:-1]]
    if criterion == "patience":
        return [any(intermediate)] * len(intermediate)
    return intermediate


def heads_to_evaluate(criterion: str, thresholds: Sequence[float], forced: bool) -> list[bool]:
    """Which intermediate exit heads an exit loop (sequence or token) evaluates: every one on the way when exits are
    forced (so costs stay faithful), else those the criterion needs (``exits_needing_heads``)."""
    if forced:
        return [True] * (len(thresholds) - 1)
    return exits_needing_heads(criterion, thresholds)


def keep_rows(stay: torch.Tensor, forced: torch.Tensor | None, state: tuple[torch.Tensor, ...] | None):
    """The forced layers and criterion state of the rows that stay in an exit loop (either may be None)."""
    return (
        forced[stay] if forced is not None else None,
        tuple(part[stay] for part in state) if state is not None else None,
    )


def check_exit_layers(name: str, layers: torch.Tensor, exit_layers: Sequence[int]) -> None:
    """One-line ValueError naming the values of ``layers`` (any shape) that are not among ``exit_layers``."""
    allowed = torch.tensor(list(exit_layers), dtype=layers.dtype, device=layers.device)
    outside = ~torch.isin(layers, allowed)
    if bool(outside.any()):
        bad = sorted(set(layers[outside].long().tolist()))
        raise ValueError(f"{name} has layers {bad}; expected exit layers {list(exit_layers)}")


def per_exit_thresholds(threshold: float | Sequence[float], num_exits: int) -> list[float]:
    """One float per exit; raises a one-line ValueError for a negative value or a list of the wrong length.

    Accepts Python and numpy numbers, 0-d tensors / arrays (one value) and 1-d tensors / arrays (one per exit)."""
    if hasattr(threshold, "tolist") and not isinstance(threshold, bool):  # tensors, numpy arrays and scalars
        threshold = threshold.tolist()
    if isinstance(threshold, (int, float)) and not isinstance(threshold, bool):
        values = [float(threshold)] * num_exits
    elif isinstance(threshold, Sequence) and not isinstance(threshold, str):
        values = [float(t) for t in threshold]
        if len(values) != num_exits:
            raise ValueError(
                f"exit_threshold has {len(values)} values {list(threshold)}; expected one float or one per exit "
                f"layer ({num_exits})"
            )
    else:
        raise ValueError(f"exit_threshold={threshold!r}; expected a float >= 0 or a list of one per exit layer")
    negative = [t for t in values if not t >= 0]  # also catches nan
    if negative:
        which = "" if isinstance(threshold, (int, float)) else f" has negative values {negative}"
        raise ValueError(f"exit_threshold={threshold!r}{which}; expected values >= 0 (0.0 never exits early)")
    return values


def select_exits(
    exit_logits: Sequence[torch.Tensor],
    exit_layers: Sequence[int],
    criterion: str,
    threshold: float | Sequence[float],
    patience: int = 1,
    real_tokens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The logits and 1-based exit layer each example gets, given the logits of every exit.

    ``exit_logits[i]`` belongs to ``exit_layers[i]`` (the last one is the final layer, which everybody reaches).
    Returns ``logits`` shaped like one exit's logits and ``exit_layer`` (long) ``(batch,)``, or ``(batch, seq)``
    when ``real_tokens`` is given (sequence-level exit: the sequence's layer repeated over its tokens; token-level
    exit cannot be replayed from stored logits, see ``token_exit.py``). Equals the model's batched path.
    """
    if criterion not in EXIT_CRITERIA:
        raise ValueError(f"exit_criterion={criterion!r}; expected one of {EXIT_CRITERIA}")
    if len(exit_logits) != len(exit_layers):
        raise ValueError(f"got {len(exit_logits)} exit logits for {len(exit_layers)} exit layers {list(exit_layers)}")
    thresholds = per_exit_thresholds(threshold, len(exit_layers))
    if real_tokens is not None:
        real_tokens = real_tokens.bool()
    batch = exit_logits[0].shape[0]
    device = exit_logits[0].device
    chosen = torch.full((batch,), len(exit_layers) - 1, dtype=torch.long, device=device)
    decided = torch.zeros(batch, dtype=torch.bool, device=device)
    state = None
    for index, needed in enumerate(exits_needing_heads(criterion, thresholds)):
        if not needed:
            continue
        leave, state = exit_step(criterion, exit_logits[index], thresholds[index], patience, state, real_tokens)
        chosen = torch.where(leave & ~decided, torch.full_like(chosen, index), chosen)
        decided |= leave
    return gather_exits(exit_logits, exit_layers, chosen, per_token=real_tokens is not None)


def gather_exits(
    exit_logits: Sequence[torch.Tensor], exit_layers: Sequence[int], exit_index: torch.Tensor, per_token: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pick each row's logits from exit ``exit_index[row]`` (0-based into ``exit_layers``)."""
    stacked = torch.stack(list(exit_logits))
    rows = torch.arange(exit_index.shape[0], device=exit_index.device)
    logits = stacked[exit_index, rows]
    exit_layer = torch.tensor(list(exit_layers), dtype=torch.long, device=exit_index.device)[exit_index]
    if per_token:
        exit_layer = exit_layer[:, None].expand(-1, logits.shape[1])
    return logits, exit_layer
