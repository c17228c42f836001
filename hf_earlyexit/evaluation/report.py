"""Markdown report from results.json. The table builders are shared with the model card (hub.py)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .results import validate_results

REPORT_FILENAME = "report.md"
TASK_TITLES = {"xnli": "XNLI", "wikiann": "WikiANN NER"}
METRIC_TITLES = {"accuracy": "accuracy", "f1": "entity F1"}
RANDOM_WEIGHTS_NOTE = (
    "**Random-weights demo.** These models were built from configs with random (or barely trained) weights, so "
    "the numbers show that the mechanics work (sweep, exit layers, FLOPs, timing), not the quality of any model."
)


def pct(value: float) -> str:
    return f"{100.0 * value:.2f}"


def format_flops(flops: float) -> str:
    for scale, unit in ((1e12, "TFLOPs"), (1e9, "GFLOPs"), (1e6, "MFLOPs"), (1e3, "kFLOPs")):
        if flops >= scale:
            return f"{flops / scale:.2f} {unit}"
    return f"{flops:.0f} FLOPs"


def format_count(count: int) -> str:
    return f"{count / 1e6:.2f} M" if count >= 1e6 else f"{count:,}"


def metric_title(results: Mapping[str, Any]) -> str:
    return METRIC_TITLES[results["metric"]]


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def language_table(results: Mapping[str, Any]) -> str:
    """Per language: full depth against the language's own chosen threshold and the global threshold."""
    metric = metric_title(results)
    global_choice = results["chosen_global"]
    header = [
        "language",
        "examples",
        f"{metric} full depth (%)",
        "chosen threshold",
        f"{metric} at chosen (%)",
        "drop (points)",
        "mean exit layer",
        "FLOPs saving (%)",
        "speedup (x)",
        f"{metric} at global {global_choice['threshold']:g} (%)",
        "saving at global (%)",
    ]
    rows = []
    for lang, entry in results["languages"].items():
        full, chosen = entry["full_depth"], entry["chosen"]
        rows.append(
            [
                lang,
                entry["num_examples"],
                pct(full["metric"]),
                f"{chosen['threshold']:g}",
                pct(chosen["metric"]),
                f"{100.0 * (full['metric'] - chosen['metric']):.2f}",
                f"{chosen['mean_exit_layer']:.2f} / {results['model']['num_layers']}",
                pct(chosen["flops_saving"]),
                f"{chosen['speedup']:.2f}",
                pct(global_choice["metric_by_language"][lang]),
                pct(global_choice["flops_saving_by_language"][lang]),
            ]
        )
    return _table(header, rows)


def threshold_table(results: Mapping[str, Any], key: str = "sweep") -> str:
    """Rows = thresholds, cells = metric (FLOPs saving) per language, both in %."""
    languages = [lang for lang in results["languages"] if key in results["languages"][lang]]
    thresholds = sorted({row["threshold"] for lang in languages for row in results["languages"][lang][key]})
    lookup = {lang: {row["threshold"]: row for row in results["languages"][lang][key]} for lang in languages}
    header = ["threshold"] + [f"{lang}: {metric_title(results)} % (saving %)" for lang in languages]
    rows = []
    for threshold in thresholds:
        cells = [f"{threshold:g}"]
        for lang in languages:
            row = lookup[lang].get(threshold)
            cells.append("–" if row is None else f"{pct(row['metric'])} ({pct(row['flops_saving'])})")
        rows.append(cells)
    return _table(header, rows)


def timing_line(efficiency: Mapping[str, Any]) -> str:
    """What the latencies timed (results.json files from before it was recorded: nothing to say)."""
    timed = efficiency.get("timed")
    if timed is None:
        return ""
    parts = []
    for batch, label in (
        ("batch_1", "batch 1: mean over {n} single examples"),
        ("batch_32", "batch 32: mean over {n} batches"),
    ):
        entry = timed[batch]
        languages = ", ".join(f"{lang} {count}" for lang, count in sorted(entry["examples_by_language"].items()))
        passes = entry["passes"]
        parts.append(label.format(n=entry["batches"]) + f" ({languages}), median of {passes} pass{'es' * (passes > 1)}")
    return (
        f" Timed with {efficiency['threads']} CPU thread{'s' if efficiency['threads'] != 1 else ''}; "
        f"{'; '.join(parts)}; examples drawn with seed {efficiency.get('seed', 0)}; "
        f"inputs {', '.join(efficiency['inputs'])}."
    )


def efficiency_table(results: Mapping[str, Any]) -> str:
    model, efficiency = results["model"], results.get("efficiency")
    lines = [
        _table(
            [
                "parameters",
                "parameters outside embeddings",
                f"FLOPs per {results['seq_len']}-token example (full depth)",
            ],
            [
                [
                    format_count(model["parameters"]),
                    format_count(model["parameters_without_embeddings"]),
                    format_flops(results["full_depth_flops"]),
                ]
            ],
        )
    ]
    trimming = model.get("vocabulary_trimming")
    if trimming is not None:
        lines.append("\nVocabulary trimmed before fine-tuning (`trim_vocabulary`):\n")
        lines.append(
            _table(
                ["", "vocabulary", "parameters", "checkpoint"],
                [
                    [side, f"{trimming[side]['vocabulary']:,}", format_count(trimming[side]["parameters"]),
                     f"{trimming[side]['checkpoint_bytes'] / 2**20:.1f} MiB"]
                    for side in ("before", "after")
                ],
            )
        )  # fmt: skip
    if efficiency is None:
        lines.append("\nLatency and memory were not measured.")
        return "\n".join(lines)
    latency, memory = efficiency["latency_ms"], efficiency["peak_memory_mb"]
    chosen_threshold = efficiency.get("chosen_threshold", results["chosen_global"]["threshold"])
    rows = []
    for setting, label in (("full_depth", "full depth (threshold 0)"), ("chosen", f"threshold {chosen_threshold:g}")):
        rows.append(
            [
                label,
                f"{latency['batch_1'][setting]:.2f}",
                f"{latency['batch_32'][setting]:.2f}",
                f"{memory[setting]:.1f}",
            ]
        )
    device = efficiency.get("device", "unknown device")
    lines.append(
        f"\nMeasured on {device}, inputs fixed to {efficiency['seq_len']} tokens, median over repetitions "
        f"(peak memory at batch {efficiency.get('peak_memory_batch_size', 32)}, weights included)."
        + (f" Full depth: {efficiency['full_depth_reference']}." if "full_depth_reference" in efficiency else "")
        + timing_line(efficiency)
        + "\n"
    )
    lines.append(_table(["setting", "latency batch 1 (ms)", "latency batch 32 (ms)", "peak memory (MiB)"], rows))
    return "\n".join(lines)


def cumulative_tokens(partitions: Sequence[Mapping[str, Any]]) -> list[int]:
    """Tokens seen by each partition's checkpoint: training continues partition after partition, and each entry's
    `tokens_by_language` counts only its own partition."""
    totals, running = [], 0
    for part in partitions:
        running += sum(part["tokens_by_language"].values())
        totals.append(running)
    return totals


def distillation_table(results: Mapping[str, Any]) -> str | None:
    distillation = results.get("distillation")
    if not distillation or not distillation.get("partitions"):
        return None
    partitions = distillation["partitions"]
    languages = sorted({lang for part in partitions for lang in part["metric_by_language"]})
    header = ["partition", "distillation tokens (cumulative)"] + [
        f"{lang} {metric_title(results)} (%)" for lang in languages
    ]
    rows = []
    for part, tokens in zip(partitions, cumulative_tokens(partitions)):
        cells = [part["partition"], format_count(tokens)]
        cells += [
            pct(part["metric_by_language"][lang]) if lang in part["metric_by_language"] else "–" for lang in languages
        ]
        rows.append(cells)
    return _table(header, rows)


def pooling_clause(model: Mapping[str, Any]) -> str:
    """", heads read the mean over the real tokens" for mean-pooled sequence heads (results.json's model.pooling);
    nothing for the first-token default or older files without the field."""
    return ", heads read the mean over the real tokens" if model.get("pooling") == "mean" else ""


def partition_eval_lines(distillation: Mapping[str, Any]) -> list[str]:
    """What the per-partition metric of the distillation-data table is (distillation.json's `partition_eval`)."""
    described = distillation.get("partition_eval")
    return [f"Each partition's checkpoint evaluated by {described}."] if described else []


def recipe_lines(distillation: Mapping[str, Any] | None) -> list[str]:
    if not distillation:
        return []
    lines = [f"- teacher: `{distillation['teacher']}`", f"- student initialised from: `{distillation['student_init']}`"]
    if distillation.get("layer_map") is not None:
        lines.append(f"- layer map (student, teacher): `{distillation['layer_map']}`")
    if distillation.get("losses"):
        losses = ", ".join(f"{name} × {weight}" for name, weight in distillation["losses"].items())
        lines.append(f"- losses: {losses}")
    for part in distillation.get("partitions") or []:
        tokens = ", ".join(f"{lang} {format_count(n)}" for lang, n in part["tokens_by_language"].items())
        lines.append(f"- partition {part['partition']} tokens: {tokens}")
    return lines


def deployment_line(results: Mapping[str, Any]) -> str:
    """One line on the ONNX Runtime export run_task made (``onnx_export``), or "" without one."""
    deployment = results.get("deployment")
    if not deployment:
        return ""
    precision = "int8 layer runs" if deployment["precision"] == "int8" else "fp32"
    kept = deployment.get("fp32_ffn_down_layers")
    if kept:
        # export_onnx keeps an outlier layer's FFN down-projection fp32 (see OUTLIER_FACTOR).
        precision += f"; FFN down-projection of layer{'s' * (len(kept) > 1)} {', '.join(map(str, kept))} fp32"
    return (
        f"ONNX Runtime export ({precision}, opset {deployment['opset']}) in `{deployment['onnx_dir']}/`; fp32 graphs "
        f"matched PyTorch to {deployment['fp32_max_abs_diff']:.1e} max logit difference. Run it with "
        f"`hf_earlyexit.OnnxEarlyExitRunner(\"{deployment['onnx_dir']}\")(texts, exit_threshold=...)` "
        "(per-example early exit; needs `pip install 'hf_earlyexit[onnx]'`)."
    )


def render_report(results: Mapping[str, Any], plot_files: Sequence[str] = ()) -> str:
    """The markdown report; `plot_files` are paths relative to the report's folder."""
    validate_results(results)
    model = results["model"]
    task = TASK_TITLES[results["task"]]
    sections = [f"# {task}: early exit per language ({results['split']} split)"]
    if results["random_weights"]:
        sections.append(f"> {RANDOM_WEIGHTS_NOTE}")
    sections.append(
        f"Model `{model['name_or_path']}` ({model['model_type']}), {model['num_layers']} layers, exits at "
        f"{model['exit_layers']}, criterion `{model['exit_criterion']}`, {model['exit_granularity']}-level exits"
        f"{pooling_clause(model)}. "
        f"Fine-tuned on `{results['train_language']}`, evaluated zero-shot on the other languages. The chosen "
        f"threshold is the one with the largest FLOPs saving whose {metric_title(results)} is at most "
        f"{100 * results['max_drop']:.2f} points below full depth on that language; the global threshold "
        f"({results['chosen_global']['threshold']:g}) satisfies that for every language at once."
    )
    sections += ["## Per language", language_table(results)]
    for plot in plot_files:
        sections.append(f"![{Path(plot).stem}]({plot})")
    sections += ["## Threshold sweep", threshold_table(results)]
    if any("sweep_token" in entry for entry in results["languages"].values()):
        sections += ["### Token-level exits", threshold_table(results, key="sweep_token")]
    sections += ["## Efficiency", efficiency_table(results)]
    table = distillation_table(results)
    if table is not None:
        sections += ["## Distillation data", *partition_eval_lines(results["distillation"]), table]
    recipe = recipe_lines(results.get("distillation"))
    if recipe:
        sections += ["## Distillation recipe", "\n".join(recipe)]
    if results.get("deployment"):
        sections += ["## Deployment", deployment_line(results)]
    return "\n\n".join(sections) + "\n"


def write_report(results: Mapping[str, Any], output_dir: str | Path, plot_files: Sequence[str] = ()) -> Path:
    path = Path(output_dir) / REPORT_FILENAME
    text = render_report(results, plot_files)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path
