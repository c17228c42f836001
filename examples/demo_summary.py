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


if __name__ == "__main__":
    for argument in sys.argv[1:]:
        print(summarize(Path(argument)))
