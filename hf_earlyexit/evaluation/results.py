"""results.json: the one file the example scripts write and the report, plots and model card read.

The schema is the team contract (docs/results_schema.md documents every field). Metrics are fractions in [0, 1]
(accuracy, seqeval entity F1); `max_drop` is in the same unit, so 0.01 is one point.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

TASK_METRICS = {"xnli": "accuracy", "wikiann": "f1"}
GRANULARITIES = ("sequence", "token")
POOLINGS = ("first", "mean")  # modeling.configuration_early_exit.POOLINGS; this module stays free of torch
ROW_KEYS = (
    "threshold",
    "metric",
    "mean_exit_layer",
    "flops_per_example",
    "flops_saving",
    "speedup",
    "exit_layer_counts",
)
MODEL_KEYS = {
    "name_or_path": str,
    "model_type": str,
    "num_layers": int,
    "exit_layers": list,
    "exit_criterion": str,
    "exit_granularity": str,
    "parameters": int,
    "parameters_without_embeddings": int,
}
RESULTS_FILENAME = "results.json"


def build_results(
    *,
    task: str,
    languages: Mapping[str, Mapping[str, Any]],
    model_info: Mapping[str, Any],
    seq_len: int,
    full_depth_flops: float,
    max_drop: float,
    chosen_global: Mapping[str, Any],
    efficiency: Mapping[str, Any] | None = None,
    distillation: Mapping[str, Any] | None = None,
    split: str = "validation",
    train_language: str = "en",
    random_weights: bool = False,
    eval_rows: str | None = None,
) -> dict[str, Any]:
    """Assemble results.json from the sweep (`sweep_language` per language, `choose_global_threshold`), the
    efficiency measurement (`measure_efficiency`) and `model_info`; validates before returning."""
    if task not in TASK_METRICS:
        raise ValueError(f"task={task!r} is not supported; expected one of {sorted(TASK_METRICS)}")
    results = {
        "task": task,
        "metric": TASK_METRICS[task],
        "split": split,
        "eval_rows": split if eval_rows is None else eval_rows,
        "random_weights": bool(random_weights),
        "model": dict(model_info),
        "seq_len": int(seq_len),
        "full_depth_flops": float(full_depth_flops),
        "train_language": train_language,
        "languages": {lang: dict(entry) for lang, entry in languages.items()},
        "max_drop": float(max_drop),
        "chosen_global": dict(chosen_global),
        "efficiency": None if efficiency is None else dict(efficiency),
        "distillation": None if distillation is None else dict(distillation),
    }
    validate_results(results)
    return results


def save_results(results: Mapping[str, Any], path: str | Path) -> Path:
    """Validate, then write (a directory means `<dir>/results.json`). Validation comes first so a bad dict never
    overwrites a good file."""
    validate_results(results)
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS_FILENAME
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def load_results(path: str | Path) -> dict[str, Any]:
    """Read and validate results.json (a directory means `<dir>/results.json`)."""
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS_FILENAME
    if not path.is_file():
        raise ValueError(f"results file {str(path)!r} does not exist; expected the results.json an example wrote")
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"results file {str(path)!r} is not valid JSON: {error}") from None
    validate_results(results)
    return results


def validate_results(results: Any) -> None:
    """Raise ValueError with one line naming the first field that breaks the schema."""
    _require(isinstance(results, Mapping), "results", results, "a JSON object")
    _require(results.get("task") in TASK_METRICS, "task", results.get("task"), f"one of {sorted(TASK_METRICS)}")
    expected_metric = TASK_METRICS[results["task"]]
    _require(results.get("metric") == expected_metric, "metric", results.get("metric"), repr(expected_metric))
    _check_type(results, "split", str, "results")
    if "eval_rows" in results:  # absent in results.json files written before it existed
        _check_type(results, "eval_rows", str, "results")
    _check_type(results, "random_weights", bool, "results")
    _check_type(results, "train_language", str, "results")
    _check_positive_int(results, "seq_len", "results")
    _check_number(results, "full_depth_flops", "results", minimum=0.0)
    _check_number(results, "max_drop", "results", minimum=0.0)

    model = results.get("model")
    _require(isinstance(model, Mapping), "model", model, "an object")
    for key, kind in MODEL_KEYS.items():
        _check_type(model, key, kind, "model")
    _require(model["num_layers"] >= 1, "model.num_layers", model["num_layers"], "an integer >= 1")
    exit_layers = model["exit_layers"]
    _require(
        exit_layers == sorted(set(exit_layers)) and all(isinstance(x, int) and 1 <= x for x in exit_layers),
        "model.exit_layers",
        exit_layers,
        "increasing 1-based layer indices",
    )
    _require(
        bool(exit_layers) and exit_layers[-1] == model["num_layers"],
        "model.exit_layers",
        exit_layers,
        f"a list ending with the last layer {model['num_layers']}",
    )
    _require(
        model["exit_granularity"] in GRANULARITIES, "model.exit_granularity", model["exit_granularity"], GRANULARITIES
    )
    if "pooling" in model:  # absent in results.json files written before it existed
        _require(model["pooling"] in POOLINGS, "model.pooling", model["pooling"], POOLINGS)
        _require(
            model["pooling"] == "first" or model["exit_granularity"] == "sequence",
            "model.pooling",
            model["pooling"],
            "'first' for token-level exits (each token is classified; nothing is pooled)",
        )

    _validate_trimming(model.get("vocabulary_trimming"))

    languages = results.get("languages")
    _require(isinstance(languages, Mapping) and languages, "languages", languages, "a non-empty object")
    for lang, entry in languages.items():
        _validate_language(lang, entry, len(exit_layers), results["task"], model["exit_granularity"])

    _validate_chosen_global(results.get("chosen_global"), languages)
    _validate_efficiency(results.get("efficiency"))
    validate_distillation(results.get("distillation"))


def _validate_language(lang: str, entry: Any, num_exits: int, task: str, granularity: str) -> None:
    where = f"languages.{lang}"
    _require(isinstance(entry, Mapping), where, entry, "an object")
    _check_positive_int(entry, "num_examples", where)
    full = entry.get("full_depth")
    _require(isinstance(full, Mapping), f"{where}.full_depth", full, "an object")
    for key in ("metric", "mean_exit_layer", "flops_per_example"):
        _check_number(full, key, f"{where}.full_depth", minimum=0.0)
    _validate_rows(entry.get("sweep"), f"{where}.sweep", num_exits)
    _validate_row(entry.get("chosen"), f"{where}.chosen", num_exits)
    thresholds = [row["threshold"] for row in entry["sweep"]]
    _require(thresholds[0] == 0.0, f"{where}.sweep[0].threshold", thresholds[0], "0.0 (full depth is always a row)")
    _require(
        entry["chosen"]["threshold"] in thresholds,
        f"{where}.chosen.threshold",
        entry["chosen"]["threshold"],
        "one of the sweep's thresholds",
    )
    same_row = entry["sweep"][thresholds.index(entry["chosen"]["threshold"])]
    _require(entry["chosen"] == same_row, f"{where}.chosen", entry["chosen"], f"the sweep's row {same_row}")
    if "sweep_token" in entry:
        _require(
            task == "wikiann" and granularity == "sequence",
            f"{where}.sweep_token",
            "present",
            "only on WikiANN results whose main sweep is sequence-level",
        )
        _validate_rows(entry["sweep_token"], f"{where}.sweep_token", num_exits)


def _validate_rows(rows: Any, where: str, num_exits: int) -> None:
    _require(isinstance(rows, list) and rows, where, rows, "a non-empty list of rows")
    for index, row in enumerate(rows):
        _validate_row(row, f"{where}[{index}]", num_exits)
    thresholds = [row["threshold"] for row in rows]
    _require(
        all(a < b for a, b in zip(thresholds, thresholds[1:])), f"{where}.threshold", thresholds, "strictly increasing"
    )


def _validate_row(row: Any, where: str, num_exits: int) -> None:
    _require(isinstance(row, Mapping), where, row, "an object")
    missing = [key for key in ROW_KEYS if key not in row]
    _require(not missing, where, f"missing {missing}", f"keys {list(ROW_KEYS)}")
    for key in ("threshold", "metric", "mean_exit_layer", "flops_per_example", "speedup"):
        _check_number(row, key, where, minimum=0.0)
    _check_number(row, "flops_saving", where)
    _require(row["metric"] <= 1.0, f"{where}.metric", row["metric"], "a fraction in [0, 1]")
    counts = row["exit_layer_counts"]
    _require(
        isinstance(counts, list) and len(counts) == num_exits and all(isinstance(c, int) and c >= 0 for c in counts),
        f"{where}.exit_layer_counts",
        counts,
        f"{num_exits} non-negative integers (one per exit layer)",
    )


def _validate_chosen_global(chosen: Any, languages: Mapping[str, Any]) -> None:
    _require(isinstance(chosen, Mapping), "chosen_global", chosen, "an object")
    _check_number(chosen, "threshold", "chosen_global", minimum=0.0)
    for key in ("metric_by_language", "flops_saving_by_language"):
        value = chosen.get(key)
        _require(
            isinstance(value, Mapping) and set(value) == set(languages),
            f"chosen_global.{key}",
            value,
            f"one number per language {sorted(languages)}",
        )
        for lang in value:
            _check_number(value, lang, f"chosen_global.{key}")


def _validate_efficiency(efficiency: Any) -> None:
    if efficiency is None:
        return
    _require(isinstance(efficiency, Mapping), "efficiency", efficiency, "an object or null")
    _check_positive_int(efficiency, "seq_len", "efficiency")
    latency = efficiency.get("latency_ms")
    _require(isinstance(latency, Mapping), "efficiency.latency_ms", latency, "an object")
    for batch in ("batch_1", "batch_32"):
        _require(
            isinstance(latency.get(batch), Mapping), f"efficiency.latency_ms.{batch}", latency.get(batch), "an object"
        )
        for setting in ("full_depth", "chosen"):
            _check_number(latency[batch], setting, f"efficiency.latency_ms.{batch}", minimum=0.0)
    memory = efficiency.get("peak_memory_mb")
    _require(isinstance(memory, Mapping), "efficiency.peak_memory_mb", memory, "an object")
    for setting in ("full_depth", "chosen"):
        _check_number(memory, setting, "efficiency.peak_memory_mb", minimum=0.0)
    if "timed" in efficiency:  # absent in results.json files written before what was timed was recorded
        _validate_timing(efficiency)


def _validate_timing(efficiency: Mapping[str, Any]) -> None:
    """How the latencies were taken: threads, device, repetitions, and the batches timed per batch size."""
    _check_type(efficiency, "device", str, "efficiency")
    for key in ("threads", "repeats"):
        _check_positive_int(efficiency, key, "efficiency")
    inputs = efficiency.get("inputs")
    _require(
        isinstance(inputs, list) and "input_ids" in inputs and all(isinstance(name, str) for name in inputs),
        "efficiency.inputs",
        inputs,
        "a list of model input names including 'input_ids'",
    )
    timed = efficiency.get("timed")
    _require(isinstance(timed, Mapping), "efficiency.timed", timed, "an object")
    for batch in ("batch_1", "batch_32"):
        where = f"efficiency.timed.{batch}"
        entry = timed.get(batch)
        _require(isinstance(entry, Mapping), where, entry, "an object")
        _check_positive_int(entry, "batches", where)
        _check_positive_int(entry, "passes", where)
        languages = entry.get("examples_by_language")
        _require(
            isinstance(languages, Mapping) and len(languages) > 0,
            f"{where}.examples_by_language",
            languages,
            "an object of example counts by language",
        )
        for language in languages:
            _check_positive_int(languages, language, f"{where}.examples_by_language")


def _validate_trimming(trimming: Any) -> None:
    """model.vocabulary_trimming (absent unless trim_vocabulary ran): the same sizes before and after."""
    if trimming is None:
        return
    _require(isinstance(trimming, Mapping), "model.vocabulary_trimming", trimming, "an object or absent")
    for side in ("before", "after"):
        entry = trimming.get(side)
        _require(isinstance(entry, Mapping), f"model.vocabulary_trimming.{side}", entry, "an object")
        for key in ("vocabulary", "parameters", "checkpoint_bytes"):
            _check_positive_int(entry, key, f"model.vocabulary_trimming.{side}")


def validate_distillation(distillation: Any) -> None:
    """results.json's `distillation` record (run_distil's distillation.json), or None."""
    if distillation is None:
        return
    _require(isinstance(distillation, Mapping), "distillation", distillation, "an object or null")
    for key in ("teacher", "student_init"):
        _check_type(distillation, key, str, "distillation")
    partitions = distillation.get("partitions", [])
    _require(isinstance(partitions, list), "distillation.partitions", partitions, "a list")
    for index, part in enumerate(partitions):
        where = f"distillation.partitions[{index}]"
        _require(isinstance(part, Mapping), where, part, "an object")
        _check_type(part, "partition", int, where)
        if index:
            # each checkpoint has seen the partitions before it, so order carries meaning
            previous = partitions[index - 1]["partition"]
            _require(part["partition"] > previous, f"{where}.partition", part["partition"], f"> {previous}")
        for key in ("tokens_by_language", "metric_by_language"):
            _require(isinstance(part.get(key), Mapping), f"{where}.{key}", part.get(key), "an object")
        for lang, tokens in part["tokens_by_language"].items():
            _require(
                isinstance(tokens, int) and not isinstance(tokens, bool) and tokens >= 0,
                f"{where}.tokens_by_language.{lang}",
                tokens,
                "a token count >= 0",
            )
        for lang in part["metric_by_language"]:
            _check_number(part["metric_by_language"], lang, f"{where}.metric_by_language", minimum=0.0)
        if "steps" in part:
            _check_positive_int(part, "steps", where)
        if "checkpoint" in part:
            _check_type(part, "checkpoint", str, where)
    for key in ("corpus", "partition_eval"):
        if distillation.get(key) is not None:
            _check_type(distillation, key, str, "distillation")
    losses = distillation.get("losses")
    _require(losses is None or isinstance(losses, Mapping), "distillation.losses", losses, "an object or null")
    if distillation.get("block_size") is not None:
        _check_positive_int(distillation, "block_size", "distillation")


def _require(ok: Any, field: str, value: Any, expected: Any) -> None:
    if not ok:
        shown = repr(value)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        raise ValueError(f"results.json field {field}={shown} is invalid; expected {expected}")


def _check_type(mapping: Mapping[str, Any], key: str, kind: type, where: str) -> None:
    value = mapping.get(key)
    # bool is an int subclass; a count given as True is a bug, not a 1
    ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
    _require(ok, f"{where}.{key}", value, f"a {kind.__name__}")


def _check_positive_int(mapping: Mapping[str, Any], key: str, where: str) -> None:
    _check_type(mapping, key, int, where)
    _require(mapping[key] >= 1, f"{where}.{key}", mapping[key], "an integer >= 1")


def _check_number(mapping: Mapping[str, Any], key: str, where: str, minimum: float | None = None) -> None:
    value = mapping.get(key)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and minimum is not None:
        ok = value >= minimum
    _require(ok, f"{where}.{key}", value, "a finite number" + ("" if minimum is None else f" >= {minimum}"))
