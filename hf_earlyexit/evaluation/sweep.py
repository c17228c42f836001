"""Threshold sweeps without re-running the model.

Every exit's logits are collected once (eval mode, `output_exit_logits=True`); each threshold then replays the
model's own decision rule (`select_exits`, the function its full-compute path uses) on the stored logits, batch by
batch as the model saw them, so the sweep's exit layers are the batched path's exit layers
(`verify_batched_exits` checks this on a sample).

Token-level exit (``exit_granularity="token"``) cannot be replayed this way: a token that leaves freezes its state,
and the later logits of every other token of its sequence depend on that frozen state (it stays a key and value).
Its sweep (`sweep_token_exits`) therefore runs the model's batched token path once per threshold — cheap, since
that path is the fast one — so each row is exactly what the deployed model does.

Units: metrics are fractions (accuracy, seqeval entity F1); FLOPs are per example at each example's real
(unpadded) length. Exit statistics count examples for sequence-level exits and real tokens for token-level exits.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from seqeval.metrics import f1_score
from torch.utils.data import DataLoader

from ..modeling.criteria import exits_needing_heads, select_exits
from .flops import flops_per_example, token_exit_flops_per_row

logger = logging.getLogger(__name__)

# 0.0 (never leave early) first, so full depth is always a candidate; above 1 every example leaves at the first exit.
DEFAULT_THRESHOLDS = tuple(round(0.05 * step, 2) for step in range(21)) + (1.01,)
MODEL_INPUT_KEYS = ("input_ids", "attention_mask", "token_type_ids", "labels", "label")
# Float noise in a metric difference must not disqualify a threshold whose drop is exactly max_drop.
DROP_TOLERANCE = 1e-9
GLOBAL_RULE = "largest mean FLOPs saving over languages with every language's metric drop <= max_drop"


@dataclass
class ExitLogitsBatch:
    exit_logits: tuple[torch.Tensor, ...]  # one per exit layer: (batch, labels) or (batch, seq, labels)
    attention_mask: torch.Tensor  # (batch, seq)
    labels: torch.Tensor  # (batch,) or (batch, seq) with -100 where no label

    @property
    def seq_lens(self) -> torch.Tensor:
        return self.attention_mask.sum(dim=-1)


@dataclass
class ExitLogits:
    """Every exit's logits over one eval set, kept per batch (same batches as the batched path would see)."""

    batches: list[ExitLogitsBatch]
    exit_layers: tuple[int, ...]
    num_layers: int
    token_level: bool
    batch_size: int
    id2label: dict[int, str] = field(default_factory=dict)

    @property
    def num_examples(self) -> int:
        return sum(len(batch.labels) for batch in self.batches)


@dataclass
class ExitDecisions:
    """What every example gets at one threshold: its logits and the exit layer(s) it used."""

    logits: list[torch.Tensor]  # per batch: the logits of the layer each example (token) left at
    example_exit_layers: list[torch.Tensor]  # per batch: (batch,), the deepest layer the example reached
    counted_exit_layers: torch.Tensor  # flat: one entry per counted unit (example, or real token)


@dataclass
class ExitCheck:
    """Outcome of `verify_batched_exits`: the batched exit path against the sweep on the same batches."""

    threshold: float
    num_examples: int
    num_mismatched_exits: int
    max_abs_logit_diff: float

    @property
    def ok(self) -> bool:
        return self.num_mismatched_exits == 0


def is_token_model(model) -> bool:
    # The early-exit model classes declare it (EarlyExitFor*ClassificationMixin.per_token), as the pipelines and
    # the trainer read it.
    return bool(getattr(model, "per_token", False))


def exit_granularity(model) -> str:
    return getattr(getattr(model, "config", None), "exit_granularity", "sequence")


def _dataloader(dataset, data_collator: Callable, batch_size: int) -> DataLoader:
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} is invalid; expected an integer >= 1")

    def collate(features: list[Mapping[str, Any]]):
        # Raw text columns (premise, tokens, lang, ...) would break the padding collators.
        return data_collator([{k: v for k, v in f.items() if k in MODEL_INPUT_KEYS} for f in features])

    return DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate)


def _split_labels(batch: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    inputs = dict(batch)
    labels = inputs.pop("labels", None)
    if labels is None:
        labels = inputs.pop("label", None)
    if labels is None:
        raise ValueError(f"eval batch has no 'labels' column (keys {sorted(batch)}); expected labelled examples")
    if "attention_mask" not in inputs:
        inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
    return inputs, labels


def _model_device(model) -> torch.device:
    return next(model.parameters()).device


def _id2label(config) -> dict[int, str]:
    # A config read back from JSON has string keys.
    return {int(k): v for k, v in (getattr(config, "id2label", None) or {}).items()}


@torch.inference_mode()
def collect_exit_logits(model, dataset, data_collator: Callable, batch_size: int = 32) -> ExitLogits:
    """Run the model once over `dataset` (already tokenized, with labels) and keep every exit's logits on CPU."""
    loader = _dataloader(dataset, data_collator, batch_size)
    device = _model_device(model)
    was_training = model.training
    model.eval()
    batches = []
    try:
        for batch in loader:
            inputs, labels = _split_labels(batch)
            inputs = {k: v.to(device) for k, v in inputs.items()}
            output = model(**inputs, output_exit_logits=True)
            batches.append(
                ExitLogitsBatch(
                    exit_logits=tuple(logits.float().cpu() for logits in output.exit_logits),
                    attention_mask=inputs["attention_mask"].cpu(),
                    labels=labels.cpu(),
                )
            )
    finally:
        model.train(was_training)
    if not batches:
        raise ValueError("eval dataset is empty; expected at least one labelled example")
    config = model.config
    return ExitLogits(
        batches=batches,
        exit_layers=tuple(config.exit_layers),
        num_layers=config.num_hidden_layers,
        token_level=is_token_model(model),
        batch_size=batch_size,
        id2label=_id2label(config),
    )


def decide_exits(collected: ExitLogits, config, threshold: float) -> ExitDecisions:
    """Each example's prediction and exit layer at `threshold`, from the stored logits via `select_exits`."""
    chosen_logits, example_layers, counted = [], [], []
    for batch in collected.batches:
        real_tokens = batch.attention_mask.bool() if collected.token_level else None
        logits, exit_layer = select_exits(
            list(batch.exit_logits),
            list(collected.exit_layers),
            config.exit_criterion,
            threshold,
            patience=getattr(config, "exit_patience", 1),
            real_tokens=real_tokens,
        )
        chosen_logits.append(logits)
        if exit_layer.dim() == 2:
            real = batch.attention_mask.bool()
            example_layers.append(_deepest_real_layer(exit_layer, real))
            per_token_differs = bool((exit_layer != example_layers[-1][:, None])[real].any())
            counted.append(exit_layer[real] if per_token_differs else example_layers[-1])
        else:
            example_layers.append(exit_layer)
            counted.append(exit_layer)
    return ExitDecisions(chosen_logits, example_layers, torch.cat(counted))


def _deepest_real_layer(token_exit_layer: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """(batch,) from (batch, seq): an example costs as deep as its deepest real token went."""
    return token_exit_layer.masked_fill(~real, 0).amax(dim=-1)


def compute_metric(collected: ExitLogits, predictions: Sequence[torch.Tensor]) -> float:
    """Accuracy for sequence models; seqeval entity F1 (labelled positions only) for token models."""
    labels = [batch.labels for batch in collected.batches]
    return _metric(collected.token_level, collected.id2label, labels, predictions)


def _metric(
    token_level: bool, id2label: Mapping[int, str], labels: Sequence[torch.Tensor], predictions: Sequence[torch.Tensor]
) -> float:
    if not token_level:
        correct = sum(int((pred == gold).sum()) for pred, gold in zip(predictions, labels))
        return correct / sum(len(gold) for gold in labels)
    if not id2label:
        raise ValueError("token model config has no id2label; expected tag names such as 'B-PER' for seqeval")
    y_true, y_pred = [], []
    for pred, gold in zip(predictions, labels):
        for row_pred, row_labels in zip(pred.tolist(), gold.tolist()):
            pairs = [(id2label[t], id2label[p]) for p, t in zip(row_pred, row_labels) if t != -100]
            y_true.append([t for t, _ in pairs])
            y_pred.append([p for _, p in pairs])
    return float(f1_score(y_true, y_pred, zero_division=0))


class _FlopsTable:
    """flops_per_example at each (real length, exit layer), cached: sweeps ask for the same pairs thousands of
    times. `with_exit_heads` is False for full depth: with threshold 0 the model skips every intermediate head."""

    def __init__(self, config, token_level: bool):
        self.config = config
        self.task = "token" if token_level else "sequence"
        self.cache: dict[tuple[int, int, bool], int] = {}

    def __call__(self, seq_len: int, exit_layer: int, with_exit_heads: bool) -> int:
        key = (seq_len, exit_layer, with_exit_heads)
        if key not in self.cache:
            self.cache[key] = flops_per_example(
                self.config, seq_len, exit_layer, task=self.task, include_exit_heads=with_exit_heads
            )
        return self.cache[key]

    def mean(self, collected: ExitLogits, example_layers: Sequence[torch.Tensor] | None) -> float:
        """Mean over examples; `example_layers` None means full depth without exit heads."""
        total, count = 0, 0
        for index, batch in enumerate(collected.batches):
            lens = batch.seq_lens.tolist()
            if example_layers is None:
                total += sum(self(int(n), collected.num_layers, False) for n in lens)
            else:
                total += sum(self(int(n), int(layer), True) for n, layer in zip(lens, example_layers[index].tolist()))
            count += len(lens)
        return total / count


def _sweep_row(collected: ExitLogits, config, threshold: float, flops: _FlopsTable, full_flops: float) -> dict:
    decisions = decide_exits(collected, config, threshold)
    heads_run = any(exits_needing_heads(config.exit_criterion, [threshold] * len(collected.exit_layers)))
    mean_flops = flops.mean(collected, decisions.example_exit_layers if heads_run else None)
    counted = decisions.counted_exit_layers
    return {
        "threshold": float(threshold),
        "metric": compute_metric(collected, [logits.argmax(dim=-1) for logits in decisions.logits]),
        "mean_exit_layer": float(counted.float().mean()),
        "flops_per_example": mean_flops,
        "flops_saving": 1.0 - mean_flops / full_flops,
        "speedup": full_flops / mean_flops,
        "exit_layer_counts": [int((counted == layer).sum()) for layer in collected.exit_layers],
    }


def _check_thresholds(thresholds: Iterable[float]) -> list[float]:
    values = sorted({float(t) for t in thresholds} | {0.0})
    bad = [t for t in values if not 0 <= t < math.inf]  # NaN fails both comparisons
    if bad:
        raise ValueError(f"thresholds {bad} are invalid; expected finite non-negative numbers")
    return values


def _check_max_drop(max_drop: float) -> None:
    if not 0.0 <= max_drop <= 1.0:
        raise ValueError(f"max_drop={max_drop} is invalid; expected a metric drop in [0, 1] (0.01 = one point)")


def sweep_thresholds(
    collected: ExitLogits, config, thresholds: Iterable[float] = DEFAULT_THRESHOLDS, max_drop: float = 0.01
) -> dict[str, Any]:
    """One results.json `languages[lang]` entry: full depth, one row per threshold (increasing; 0.0 is always
    included) and the chosen row."""
    thresholds = _check_thresholds(thresholds)
    _check_max_drop(max_drop)
    flops = _FlopsTable(config, collected.token_level)
    full_flops = flops.mean(collected, None)
    full_predictions = [batch.exit_logits[-1].argmax(dim=-1) for batch in collected.batches]
    full_depth = {
        "metric": compute_metric(collected, full_predictions),
        "mean_exit_layer": float(collected.num_layers),
        "flops_per_example": full_flops,
    }
    rows = [_sweep_row(collected, config, t, flops, full_flops) for t in thresholds]
    return _language_entry(collected.num_examples, full_depth, rows, max_drop)


def _language_entry(num_examples: int, full_depth: dict, rows: list[dict], max_drop: float) -> dict[str, Any]:
    return {
        "num_examples": num_examples,
        "full_depth": full_depth,
        "sweep": rows,
        "chosen": choose_threshold(rows, full_depth["metric"], max_drop),
    }


def _within_drop(metric: float, full_metric: float, max_drop: float) -> bool:
    return full_metric - metric <= max_drop + DROP_TOLERANCE


def choose_threshold(rows: Sequence[Mapping[str, Any]], full_metric: float, max_drop: float) -> dict[str, Any]:
    """The row with the largest FLOPs saving whose metric is at most `max_drop` below full depth (ties: the
    higher metric, then the smaller threshold)."""
    _check_max_drop(max_drop)
    eligible = [row for row in rows if _within_drop(row["metric"], full_metric, max_drop)]
    if not eligible:
        raise ValueError(f"no threshold keeps the metric within max_drop={max_drop} of {full_metric:.4f}")
    return dict(max(eligible, key=lambda row: (row["flops_saving"], row["metric"], -row["threshold"])))


def choose_global_threshold(languages: Mapping[str, Mapping[str, Any]], max_drop: float) -> dict[str, Any]:
    """One threshold for every language: the largest mean saving such that EVERY language stays within
    `max_drop` of its own full depth. A mean-drop rule would let a low-resource language lose far more than the
    target while English hides it; the guarantee is what someone shipping one threshold needs."""
    _check_max_drop(max_drop)
    if not languages:
        raise ValueError("languages is empty; expected at least one language's sweep")
    rows_by_lang = {lang: {row["threshold"]: row for row in entry["sweep"]} for lang, entry in languages.items()}
    common = sorted(set.intersection(*(set(rows) for rows in rows_by_lang.values())))
    best = None
    for threshold in common:
        rows = {lang: rows_by_lang[lang][threshold] for lang in languages}
        if not all(
            _within_drop(rows[lang]["metric"], languages[lang]["full_depth"]["metric"], max_drop) for lang in rows
        ):
            continue
        mean_saving = sum(row["flops_saving"] for row in rows.values()) / len(rows)
        if best is None or mean_saving > best[0]:
            best = (mean_saving, threshold, rows)
    if best is None:
        raise ValueError(f"no threshold common to all languages keeps every language within max_drop={max_drop}")
    _, threshold, rows = best
    return {
        "threshold": threshold,
        "metric_by_language": {lang: row["metric"] for lang, row in rows.items()},
        "flops_saving_by_language": {lang: row["flops_saving"] for lang, row in rows.items()},
        "rule": GLOBAL_RULE,
    }


def sweep_language(
    model,
    dataset,
    data_collator: Callable,
    thresholds: Iterable[float] = DEFAULT_THRESHOLDS,
    max_drop: float = 0.01,
    batch_size: int = 32,
) -> tuple[dict[str, Any], ExitLogits | None]:
    """collect_exit_logits + sweep_thresholds for one language; returns the results entry and the logits (keep
    them for `verify_batched_exits`). A token-level exit model is swept by `sweep_token_exits` instead (no logits
    to keep: None)."""
    thresholds = _check_thresholds(thresholds)
    _check_max_drop(max_drop)
    if exit_granularity(model) == "token":
        return sweep_token_exits(model, dataset, data_collator, thresholds, max_drop, batch_size), None
    collected = collect_exit_logits(model, dataset, data_collator, batch_size=batch_size)
    return sweep_thresholds(collected, model.config, thresholds, max_drop), collected


@torch.inference_mode()
def verify_batched_exits(
    model, dataset, data_collator: Callable, collected: ExitLogits, threshold: float, max_batches: int = 2
) -> ExitCheck:
    """Run the batched exit path (rows leave the batch as they exit) at `threshold` on the first `max_batches`
    batches and compare its exit layers and logits with what the sweep derived from the stored logits."""
    if max_batches < 1:
        raise ValueError(f"max_batches={max_batches} is invalid; expected an integer >= 1")
    decisions = decide_exits(collected, model.config, threshold)
    loader = _dataloader(dataset, data_collator, collected.batch_size)
    device = _model_device(model)
    was_training = model.training
    model.eval()
    examples = mismatched = 0
    max_diff = 0.0
    try:
        for index, batch in enumerate(loader):
            if index >= max_batches or index >= len(collected.batches):
                break
            inputs, _ = _split_labels(batch)
            output = model(**{k: v.to(device) for k, v in inputs.items()}, exit_threshold=threshold)
            exit_layer = output.exit_layer.cpu()
            if exit_layer.dim() == 2:
                exit_layer = _deepest_real_layer(exit_layer, inputs["attention_mask"].bool())
            expected_layers = decisions.example_exit_layers[index]
            mismatched += int((exit_layer != expected_layers).sum())
            examples += len(expected_layers)
            expected_logits = decisions.logits[index]
            got = output.logits.float().cpu()
            if collected.token_level:
                real = inputs["attention_mask"].bool()
                got, expected_logits = got[real], expected_logits[real]
            max_diff = max(max_diff, float((got - expected_logits).abs().max()))
    finally:
        model.train(was_training)
    return ExitCheck(float(threshold), examples, mismatched, max_diff)


def check_sweepable(config) -> None:
    """One-line refusal for a criterion whose threshold sweep cannot trade accuracy for FLOPs: with ``patience`` the
    threshold only switches exits on (> 0) or off (0), so every positive threshold is the same operating point."""
    if getattr(config, "exit_criterion", None) == "patience":
        raise ValueError(
            "exit_criterion='patience' cannot be threshold-swept (any threshold > 0 gives the same exits); expected "
            "'entropy' or 'max_prob' for the sweep, or evaluate patience at fixed exit_patience values"
        )


def evaluate_languages(
    model,
    datasets: Mapping[str, Any],
    data_collator: Callable,
    thresholds: Iterable[float] = DEFAULT_THRESHOLDS,
    max_drop: float = 0.01,
    batch_size: int = 32,
    verify_batches: int = 2,
    compare_token_exit: bool = False,
    token_thresholds: Iterable[float] | None = None,
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Sweep every language (tokenized eval datasets by language code), then choose the global threshold.

    Returns results.json's `languages` and `chosen_global`. Each language entry also records `exit_check`: the
    batched exit path run at the language's chosen threshold on its first `verify_batches` batches, compared with
    the sweep (a mismatch is logged as a warning: the two paths must agree). Token-level exit models are swept on
    the batched path itself, so they need no check.

    `compare_token_exit` (token classification model with sequence-level exits, e.g. WikiANN): also sweep the same
    model with token-level exits (`sweep_token_exits`) and store its rows as the language's `sweep_token`, for the
    sequence-against-token plot, on `token_thresholds` (default: `thresholds`; each is one forward pass of the
    language). The chosen thresholds stay the sequence-level ones."""
    if not datasets:
        raise ValueError("datasets is empty; expected one tokenized eval dataset per language")
    check_sweepable(model.config)
    thresholds = _check_thresholds(thresholds)
    token_thresholds = thresholds if token_thresholds is None else _check_thresholds(token_thresholds)
    _check_max_drop(max_drop)
    if compare_token_exit and (not is_token_model(model) or exit_granularity(model) != "sequence"):
        raise ValueError(
            f"compare_token_exit=True needs a token classification model with exit_granularity='sequence'; got "
            f"{type(model).__name__} with {exit_granularity(model)!r}"
        )
    languages = {}
    for lang, dataset in datasets.items():
        entry, collected = sweep_language(model, dataset, data_collator, thresholds, max_drop, batch_size)
        if compare_token_exit:
            entry["sweep_token"] = sweep_token_exits(
                model, dataset, data_collator, token_thresholds, max_drop, batch_size
            )["sweep"]
        if verify_batches and collected is not None:
            check = verify_batched_exits(
                model, dataset, data_collator, collected, entry["chosen"]["threshold"], verify_batches
            )
            entry["exit_check"] = {
                "threshold": check.threshold,
                "num_examples": check.num_examples,
                "num_mismatched_exits": check.num_mismatched_exits,
            }
            if not check.ok:
                logger.warning(
                    "%s: the batched exit path disagrees with the sweep on %d of %d examples at threshold %g",
                    lang,
                    check.num_mismatched_exits,
                    check.num_examples,
                    check.threshold,
                )
        languages[lang] = entry
    return languages, choose_global_threshold(languages, max_drop)


@contextmanager
def token_granularity(model, exit_window: int | None = None) -> Iterator[None]:
    """Run a token classification model with ``exit_granularity="token"`` (and ``exit_window`` when given) inside
    the block; the config is restored afterwards."""
    if not is_token_model(model):
        raise ValueError(f"token-level exit needs a token classification model; got {type(model).__name__}")
    if exit_window is not None and (
        not isinstance(exit_window, int) or isinstance(exit_window, bool) or exit_window < 1
    ):
        raise ValueError(f"exit_window={exit_window!r}; expected an int >= 1")
    config = model.config
    saved = (config.exit_granularity, config.exit_window)
    config.exit_granularity = "token"
    config.exit_window = saved[1] if exit_window is None else exit_window
    try:
        yield
    finally:
        config.exit_granularity, config.exit_window = saved


@torch.inference_mode()
def sweep_token_exits(
    model,
    dataset,
    data_collator: Callable,
    thresholds: Iterable[float] = DEFAULT_THRESHOLDS,
    max_drop: float = 0.01,
    batch_size: int = 32,
    exit_window: int | None = None,
) -> dict[str, Any]:
    """One results.json `languages[lang]` entry for token-level exits: the model's batched token path run once
    per threshold (see the module docstring for why it cannot be replayed), with the same keys and units as
    `sweep_thresholds` (exit statistics over real tokens; FLOPs per example from `flops_token_exit` at the real
    length). Works on a token model of either granularity: it is run with ``exit_granularity="token"``
    (``exit_window``: the model's own unless given)."""
    thresholds = _check_thresholds(thresholds)
    _check_max_drop(max_drop)
    loader = _dataloader(dataset, data_collator, batch_size)
    batches = [_split_labels(batch) for batch in loader]
    if not batches:
        raise ValueError("eval dataset is empty; expected at least one labelled example")
    config = model.config
    id2label = _id2label(config)
    device = _model_device(model)
    labels = [gold for _, gold in batches]
    was_training = model.training
    model.eval()
    rows = []
    try:
        with token_granularity(model, exit_window):
            for threshold in thresholds:
                heads_run = any(exits_needing_heads(config.exit_criterion, [threshold] * len(config.exit_layers)))
                predictions, token_layers, flops = [], [], []
                for inputs, _ in batches:
                    output = model(**{k: v.to(device) for k, v in inputs.items()}, exit_threshold=threshold)
                    exit_layer = output.exit_layer.cpu()
                    mask = inputs["attention_mask"]
                    predictions.append(output.logits.argmax(dim=-1).cpu())
                    token_layers.append(exit_layer[mask.bool()])
                    flops.append(token_exit_flops_per_row(config, exit_layer, mask, include_exit_heads=heads_run))
                counted = torch.cat(token_layers)
                rows.append(
                    {
                        "threshold": float(threshold),
                        "metric": _metric(True, id2label, labels, predictions),
                        "mean_exit_layer": float(counted.float().mean()),
                        "flops_per_example": float(torch.cat(flops).mean()),
                        "exit_layer_counts": [int((counted == layer).sum()) for layer in config.exit_layers],
                    }
                )
    finally:
        model.train(was_training)
    full = rows[0]  # threshold 0.0 (always swept): the plain full-depth forward, no exit head
    for row in rows:
        row["flops_saving"] = 1.0 - row["flops_per_example"] / full["flops_per_example"]
        row["speedup"] = full["flops_per_example"] / row["flops_per_example"]
    full_depth = {
        "metric": full["metric"],
        "mean_exit_layer": float(config.num_hidden_layers),
        "flops_per_example": full["flops_per_example"],
    }
    return _language_entry(sum(len(gold) for gold in labels), full_depth, rows, max_drop)
