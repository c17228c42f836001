"""Latency, peak memory and parameter counts, at full depth and at a chosen exit threshold.

Inputs have a fixed length (`seq_len` tokens, real examples truncated or padded) so that the two settings differ
only in where examples leave. Repetitions of the two settings are interleaved and the median is reported, because
the machines these run on are shared and noisy.

What is timed does not depend on which rows come first: `latency_sample` draws the examples (seeded, ranked by a
hash of their tokens, so reordering the evaluation rows draws the same ones) from every evaluated language in turn;
batch 1 is the mean over `LATENCY_BATCHES[1]` single examples and batch 32 over `LATENCY_BATCHES[32]` batches. The
cost stays near one forward per repetition: `repeats` timed forwards per setting are spread over the batches, in
ceil(repeats / batches) passes that each time every batch once (the median over passes is reported). Every model input the tokenized examples carry (BERT's `token_type_ids`) is
passed on. results.json records the thread count, device, repetitions and what was timed.

Peak memory is the memory the forward pass holds at its worst moment plus the resident weights:
- CUDA: `torch.cuda.max_memory_allocated` after `reset_peak_memory_stats` (weights are on the device, so included).
- CPU: the profiler's allocator records (`torch.profiler.profile(profile_memory=True)`): every allocation and free
  of a tensor in the forward, in time order; their running sum's maximum is the forward's peak, to which the bytes
  of parameters and buffers are added. Process RSS is not used: it only grows, includes Python and the allocator's
  caches, and could not tell the two settings apart within one process.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile

from .flops import flops_per_example
from .sweep import is_token_model

FULL_DEPTH_THRESHOLD = 0.0
MIB = 2**20
LATENCY_BATCH_SIZES = (1, 32)
# How many batches each latency figure averages (batch 1: single examples), drawn across the evaluated languages.
LATENCY_BATCHES = {1: 16, 32: 4}


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(all parameters, parameters outside the embedding tables) — the second is what scales compute per token."""
    total = sum(p.numel() for p in model.parameters())
    embedding = sum(p.numel() for m in model.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters())
    return total, total - embedding


def describe_model(model, name_or_path: str) -> dict[str, Any]:
    """results.json's `model` object."""
    config = model.config
    total, without_embeddings = count_parameters(model)
    return {
        "name_or_path": str(name_or_path),
        "model_type": config.model_type,
        "num_layers": config.num_hidden_layers,
        "exit_layers": list(config.exit_layers),
        "exit_criterion": config.exit_criterion,
        "exit_granularity": getattr(config, "exit_granularity", "sequence"),
        "pooling": getattr(config, "pooling", "first"),
        "parameters": total,
        "parameters_without_embeddings": without_embeddings,
    }


def full_depth_flops(model, seq_len: int = 128) -> float:
    """results.json's `full_depth_flops`: one `seq_len`-token example through every layer, intermediate heads
    skipped (threshold 0), as the plain model computes it."""
    task = "token" if is_token_model(model) else "sequence"
    return float(flops_per_example(model.config, seq_len, task=task, include_exit_heads=False))


def fixed_length_batch(
    examples: Sequence[Mapping[str, Any]],
    batch_size: int,
    seq_len: int,
    pad_token_id: int,
    extra_inputs: Sequence[str] = ("token_type_ids",),
) -> dict[str, torch.Tensor]:
    """`batch_size` real tokenized examples (cycled if fewer), each truncated or padded to exactly `seq_len`; each
    of `extra_inputs` that every example carries (one value per token, e.g. BERT's `token_type_ids`) is truncated
    and zero-padded alongside."""
    if batch_size < 1 or seq_len < 2:
        raise ValueError(f"batch_size={batch_size}, seq_len={seq_len} are invalid; expected >= 1 and >= 2")
    if len(examples) == 0:
        raise ValueError("examples is empty; expected tokenized examples with input_ids")
    rows = [examples[row % len(examples)] for row in range(batch_size)]
    names = [name for name in extra_inputs if all(row.get(name) is not None for row in rows)]
    batch = {
        "input_ids": torch.full((batch_size, seq_len), pad_token_id, dtype=torch.long),
        "attention_mask": torch.zeros((batch_size, seq_len), dtype=torch.long),
        **{name: torch.zeros((batch_size, seq_len), dtype=torch.long) for name in names},
    }
    for row, example in enumerate(rows):
        ids = list(example["input_ids"])[:seq_len]
        batch["input_ids"][row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        batch["attention_mask"][row, : len(ids)] = 1
        for name in names:
            values = list(example[name])
            if len(values) != len(example["input_ids"]):
                raise ValueError(
                    f"{name} has {len(values)} values for {len(example['input_ids'])} input_ids; expected one per token"
                )
            batch[name][row, : len(ids)] = torch.tensor(values[:seq_len], dtype=torch.long)
    return batch


def model_inputs(model) -> tuple[str, ...]:
    """The per-token inputs besides input_ids / attention_mask that `model.forward` takes (token_type_ids, ...)."""
    parameters = inspect.signature(model.forward).parameters
    return tuple(name for name in ("token_type_ids", "position_ids") if name in parameters)


def _draw_key(input_ids: Sequence[int], seed: int) -> bytes:
    """A seeded rank that depends on the example's tokens only, never on where it sits in the evaluation set."""
    tokens = ",".join(str(int(t)) for t in input_ids)
    return hashlib.blake2b(f"{seed}:{tokens}".encode(), digest_size=16).digest()


def _token_ids(rows) -> Sequence[Sequence[int]]:
    # A `datasets.Dataset` gives the whole column at once (no row dicts built for the rows that are not drawn).
    if hasattr(rows, "column_names"):
        return rows["input_ids"]
    return [row["input_ids"] for row in rows]


def latency_sample(
    examples_by_language: Mapping[str, Sequence[Mapping[str, Any]]], count: int, seed: int = 0
) -> list[tuple[str, Mapping[str, Any]]]:
    """`count` (language, example) pairs drawn from every language in turn (languages by name; within one, by the
    seeded token hash of `_draw_key`), so the draw is the same whatever order the rows or languages come in.
    Languages with fewer examples run out first; when all have, the draw starts over."""
    if count < 1:
        raise ValueError(f"count={count} is invalid; expected >= 1")
    ranked = {}
    for language, rows in sorted(examples_by_language.items()):
        keys = [_draw_key(ids, seed) for ids in _token_ids(rows)]
        if keys:
            ranked[language] = sorted(range(len(keys)), key=keys.__getitem__)
    if not ranked:
        raise ValueError(f"no examples in {sorted(examples_by_language)}; expected tokenized examples with input_ids")
    order = [
        (language, indices[position])
        for position in range(max(len(indices) for indices in ranked.values()))
        for language, indices in ranked.items()
        if position < len(indices)
    ]
    return [
        (language, examples_by_language[language][int(index)])
        for language, index in (order[i % len(order)] for i in range(count))
    ]


def packs_real_tokens(model) -> bool:
    """Whether the model's early-exit path computes real tokens only (token-level exit packs them; see token_exit)."""
    return getattr(model.config, "exit_granularity", "sequence") == "token"


def full_depth_reference(model) -> str:
    """What results.json's `full_depth` timings and memory ran: said there, because it decides what the ratio means."""
    if packs_real_tokens(model):
        return "token-exit path with every real token forced to the last layer (real tokens packed, as when exiting)"
    return "plain full-depth forward (threshold 0), same padded rows as the chosen threshold"


def _forward(model, inputs: Mapping[str, torch.Tensor], threshold: float):
    if threshold == FULL_DEPTH_THRESHOLD and packs_real_tokens(model):
        # The token path drops padding, the plain forward computes it: timing the plain forward at full depth would
        # credit early exit with the padding removal. Full depth is the same path with no token leaving early.
        return model(**inputs, forced_exit_layer=model.config.num_hidden_layers)
    return model(**inputs, exit_threshold=threshold)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def measure_latency_ms(
    model,
    inputs: Mapping[str, torch.Tensor] | Sequence[Mapping[str, torch.Tensor]],
    thresholds: Sequence[float],
    warmup: int = 2,
    repeats: int = 10,
) -> list[float]:
    """Wall-clock milliseconds of one forward per threshold: with several batches, each repetition times every
    batch once per threshold (thresholds interleaved) and takes the mean per batch; the median over repetitions is
    returned. `warmup` untimed forwards per threshold run on the first batch."""
    if warmup < 0 or repeats < 1:
        raise ValueError(f"warmup={warmup}, repeats={repeats} are invalid; expected warmup >= 0 and repeats >= 1")
    batches = [inputs] if isinstance(inputs, Mapping) else list(inputs)
    if not batches:
        raise ValueError("inputs is empty; expected one batch or a list of batches")
    device = next(model.parameters()).device
    batches = [{k: v.to(device) for k, v in batch.items()} for batch in batches]
    model.eval()
    for _ in range(warmup):
        for threshold in thresholds:
            _forward(model, batches[0], threshold)
    times: list[list[float]] = [[] for _ in thresholds]
    for _ in range(repeats):
        total = [0.0 for _ in thresholds]
        for batch in batches:
            for index, threshold in enumerate(thresholds):
                _sync(device)
                start = time.perf_counter()
                _forward(model, batch, threshold)
                _sync(device)
                total[index] += (time.perf_counter() - start) * 1000.0
        for index in range(len(thresholds)):
            times[index].append(total[index] / len(batches))
    return [statistics.median(samples) for samples in times]


def _resident_bytes(model: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))


@contextlib.contextmanager
def _quiet_stderr():
    """Send file descriptor 2 to /dev/null: kineto's C++ start/stop prints ("USDT:... profiler_start") bypass
    Python's sys.stderr and would land in the user's console at every memory measurement."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def cpu_peak_bytes(run: Callable[[], Any]) -> int:
    """Peak bytes of CPU tensor memory allocated while `run()` executes, over what was allocated before it."""
    prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
    with _quiet_stderr():  # only around the profiler's start and stop: what `run()` prints still shows
        prof.__enter__()
    try:
        run()
    finally:
        with _quiet_stderr():
            prof.__exit__(None, None, None)
    # Raw allocator records (one per malloc/free); FunctionEvent totals would double count nested ops.
    records = sorted(
        (event.start_ns(), event.nbytes())
        for event in prof.profiler.kineto_results.events()
        if event.name() == "[memory]" and event.device_type() == torch.autograd.DeviceType.CPU
    )
    running = peak = 0
    for _, nbytes in records:
        running += nbytes
        peak = max(peak, running)
    return peak


@torch.inference_mode()
def measure_peak_memory_mb(model, inputs: Mapping[str, torch.Tensor], threshold: float) -> float:
    """Peak MiB during one forward at `threshold`, weights included (see the module docstring for the method)."""
    device = next(model.parameters()).device
    inputs = {k: v.to(device) for k, v in inputs.items()}
    model.eval()
    _forward(model, inputs, threshold)  # lazy initialisation must not count as the forward's memory
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        _forward(model, inputs, threshold)
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) / MIB
    return (_resident_bytes(model) + cpu_peak_bytes(lambda: _forward(model, inputs, threshold))) / MIB


def measure_efficiency(
    model,
    examples: Sequence[Mapping[str, Any]] | Mapping[str, Sequence[Mapping[str, Any]]],
    chosen_threshold: float,
    seq_len: int = 128,
    pad_token_id: int | None = None,
    warmup: int = 2,
    repeats: int = 10,
    batches: Mapping[int, int] | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """results.json's `efficiency`: latency at batch 1 and 32 and peak memory (at the largest batch size) for full
    depth (threshold 0) and `chosen_threshold`, on real examples fixed to `seq_len` tokens.

    `examples`: tokenized examples per evaluated language (a plain sequence counts as one language). `batches`:
    how many batches each batch size averages (default `LATENCY_BATCHES`), drawn by `latency_sample` with `seed`.
    `repeats`: timed forwards per setting and batch size, spread over the batches (at least one pass over them).
    """
    if chosen_threshold < 0:
        raise ValueError(f"chosen_threshold={chosen_threshold} is invalid; expected a non-negative threshold")
    batches = dict(LATENCY_BATCHES if batches is None else batches)
    if sorted(batches) != sorted(LATENCY_BATCH_SIZES) or any(int(n) < 1 for n in batches.values()):
        raise ValueError(f"batches={batches} is invalid; expected a count >= 1 for each of {LATENCY_BATCH_SIZES}")
    by_language = dict(examples) if isinstance(examples, Mapping) else {"all": examples}
    if pad_token_id is None:
        pad_token_id = model.config.pad_token_id
    extra = model_inputs(model)
    settings = (FULL_DEPTH_THRESHOLD, float(chosen_threshold))
    latency, timed = {}, {}
    # One draw (ranking every row is the costly part); each batch size takes its first examples.
    memory_batch = max(LATENCY_BATCH_SIZES)
    pool = latency_sample(by_language, max(memory_batch, *(size * n for size, n in batches.items())), seed)
    for batch_size in LATENCY_BATCH_SIZES:
        count = batches[batch_size]
        drawn = pool[: batch_size * count]
        inputs = [
            fixed_length_batch([row for _, row in drawn[i : i + batch_size]], batch_size, seq_len, pad_token_id, extra)
            for i in range(0, len(drawn), batch_size)
        ]
        passes = math.ceil(repeats / count)
        full, chosen = measure_latency_ms(model, inputs, settings, warmup=warmup, repeats=passes)
        latency[f"batch_{batch_size}"] = {"full_depth": full, "chosen": chosen}
        languages: dict[str, int] = {}
        for language, _ in drawn:
            languages[language] = languages.get(language, 0) + 1
        timed[f"batch_{batch_size}"] = {"batches": count, "passes": passes, "examples_by_language": languages}
    inputs = fixed_length_batch([row for _, row in pool[:memory_batch]], memory_batch, seq_len, pad_token_id, extra)
    memory = {name: measure_peak_memory_mb(model, inputs, t) for name, t in zip(("full_depth", "chosen"), settings)}
    return {
        "seq_len": seq_len,
        "chosen_threshold": float(chosen_threshold),
        "device": str(next(model.parameters()).device),
        "threads": torch.get_num_threads(),
        "repeats": int(repeats),
        "warmup": int(warmup),
        "seed": int(seed),
        "inputs": ["input_ids", "attention_mask", *sorted(set(inputs) - {"input_ids", "attention_mask"})],
        "timed": timed,
        "full_depth_reference": full_depth_reference(model),
        "latency_ms": latency,
        "peak_memory_mb": memory,
        "peak_memory_batch_size": memory_batch,
    }
