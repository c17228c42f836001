#!/usr/bin/env python
"""Print where the demo wrote its results and a short per-language table from each results.json."""

import sys
from pathlib import Path

from hf_earlyexit.evaluation.results import load_results


def summarize(folder: Path) -> str:
    results = load_results(folder / "results.json")
    metric = results["metric"]
    lines = [f"{results['task']} ({metric}, {folder}):"]
    if results.get("random_weights"):
        lines.append("  demo models trained from random weights on toy data: mechanics, not quality")
    lines.append(f"  {'lang':<5} {'full depth':>10} {'chosen':>8} {'threshold':>9} {'FLOPs saved':>11}")
    for lang, entry in results["languages"].items():
        chosen = entry["chosen"]
        lines.append(
            f"  {lang:<5} {entry['full_depth']['metric'] * 100:>9.1f}% {chosen['metric'] * 100:>7.1f}% "
            f"{chosen['threshold']:>9.2f} {chosen['flops_saving'] * 100:>10.1f}%"
        )
    files = ", ".join(sorted(p.name for p in folder.iterdir() if p.suffix in (".md", ".png", ".json")))
    lines.append(f"  files: {files}")
    return "\n".join(lines)


def partition_curve(folder: Path) -> str | None:
    """The distillation record's per-partition metric per language (the accuracy-vs-distillation-data curve)."""
    distillation = load_results(folder / "results.json").get("distillation") or {}
    partitions = [part for part in distillation.get("partitions", []) if part["metric_by_language"]]
    if not partitions:
        return None
    languages = list(partitions[0]["metric_by_language"])
    lines = [f"distillation partitions ({distillation.get('partition_eval', 'metric per language')}):"]
    lines.append("  partition " + " ".join(f"{lang:>6}" for lang in languages))
    for part in partitions:
        cells = " ".join(f"{part['metric_by_language'][lang] * 100:>5.1f}%" for lang in languages)
        lines.append(f"  {part['partition']:>9} {cells}")
    return "\n".join(lines)


if __name__ == "__main__":
    folders = [Path(argument) for argument in sys.argv[1:]]
    curve = next((text for text in map(partition_curve, folders) if text), None)
    if curve:
        print(curve)
    for folder in folders:
        print(summarize(folder))
