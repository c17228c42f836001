"""PNG plots from results.json (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .report import TASK_TITLES, cumulative_tokens, metric_title  # noqa: E402
from .results import validate_results  # noqa: E402

# Prefixed with the task ("xnli_metric_vs_flops.png") so XNLI and WikiANN plots can share a folder.
METRIC_VS_FLOPS_PNG = "metric_vs_flops.png"
METRIC_VS_DATA_PNG = "metric_vs_distillation_data.png"
GRANULARITY_PNG = "sequence_vs_token_exit.png"
X_UNITS = ("percent", "gflops")
DPI = 120


def _x_values(rows: Sequence[Mapping[str, Any]], x_units: str) -> list[float]:
    if x_units == "percent":
        return [100.0 * (1.0 - row["flops_saving"]) for row in rows]
    return [row["flops_per_example"] / 1e9 for row in rows]


def _x_label(x_units: str) -> str:
    if x_units == "percent":
        return "FLOPs per example (% of full depth, on the same examples)"
    return "FLOPs per example (GFLOPs, at each example's real length)"


def _title(results: Mapping[str, Any], what: str) -> str:
    title = f"{TASK_TITLES[results['task']]}: {what}"
    return title + "\n(random-weights demo: mechanics, not quality)" if results["random_weights"] else title


def _legend(ax, **kwargs) -> None:
    # outside the axes: sweep curves can cover any corner, and a legend must never hide a point
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, **kwargs)


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _check_units(x_units: str) -> None:
    if x_units not in X_UNITS:
        raise ValueError(f"x_units={x_units!r} is invalid; expected one of {X_UNITS}")


def plot_metric_vs_flops(results: Mapping[str, Any], path: str | Path, x_units: str = "percent") -> Path:
    """Metric (%) against FLOPs per example, one line per language over the threshold sweep; a star marks each
    language's chosen threshold."""
    _check_units(x_units)
    validate_results(results)
    fig, ax = plt.subplots(figsize=(8.5, 5))
    for lang, entry in results["languages"].items():
        rows = entry["sweep"]
        (line,) = ax.plot(_x_values(rows, x_units), [100 * r["metric"] for r in rows], marker="o", ms=3, label=lang)
        chosen = entry["chosen"]
        ax.plot(
            _x_values([chosen], x_units),
            [100 * chosen["metric"]],
            marker="*",
            ms=14,
            color=line.get_color(),
            markeredgecolor="black",
            linestyle="none",
        )
    ax.plot(
        [], [], marker="*", ms=12, color="grey", markeredgecolor="black", linestyle="none", label="chosen threshold"
    )
    ax.set_xlabel(_x_label(x_units))
    ax.set_ylabel(f"{metric_title(results)} (%)")
    ax.set_title(_title(results, f"{metric_title(results)} against compute, per language"))
    ax.grid(alpha=0.3)
    _legend(ax, title="language")
    return _save(fig, Path(path))


def plot_metric_vs_distillation_data(results: Mapping[str, Any], path: str | Path) -> Path:
    """Metric (%) of each partition's checkpoint against the distillation tokens it has seen, one line per
    language. Needs at least two evaluated partitions."""
    validate_results(results)
    partitions = (results.get("distillation") or {}).get("partitions") or []
    if len(partitions) < 2:
        raise ValueError(f"{len(partitions)} distillation partitions in results; expected at least 2 to plot")
    tokens = [t / 1e6 for t in cumulative_tokens(partitions)]
    languages = sorted({lang for part in partitions for lang in part["metric_by_language"]})
    fig, ax = plt.subplots(figsize=(8.5, 5))
    for lang in languages:
        points = [
            (x, 100 * p["metric_by_language"][lang])
            for x, p in zip(tokens, partitions)
            if lang in p["metric_by_language"]
        ]
        ax.plot([x for x, _ in points], [y for _, y in points], marker="o", label=lang)
    for x, part in zip(tokens, partitions):
        ax.annotate(
            f"partition {part['partition']}", (x, 0.01), xycoords=("data", "axes fraction"), fontsize=8, ha="center"
        )
    ax.set_xlabel("distillation tokens seen by the checkpoint (millions)")
    ax.set_ylabel(f"{metric_title(results)} (%)")
    ax.set_title(_title(results, f"{metric_title(results)} against distillation data"))
    ax.grid(alpha=0.3)
    _legend(ax, title="language")
    return _save(fig, Path(path))


def plot_granularity_comparison(results: Mapping[str, Any], path: str | Path, x_units: str = "percent") -> Path:
    """NER: sequence-level exits (solid) against token-level exits (dashed, `sweep_token`), per language."""
    _check_units(x_units)
    validate_results(results)
    languages = [lang for lang, entry in results["languages"].items() if "sweep_token" in entry]
    if not languages:
        raise ValueError("no language in results has 'sweep_token'; expected token-level sweeps to compare")
    fig, ax = plt.subplots(figsize=(8.5, 5))
    for lang in languages:
        entry = results["languages"][lang]
        (line,) = ax.plot(
            _x_values(entry["sweep"], x_units), [100 * r["metric"] for r in entry["sweep"]], label=f"{lang} sequence"
        )
        ax.plot(
            _x_values(entry["sweep_token"], x_units),
            [100 * r["metric"] for r in entry["sweep_token"]],
            linestyle="--",
            color=line.get_color(),
            label=f"{lang} token",
        )
    ax.set_xlabel(_x_label(x_units))
    ax.set_ylabel(f"{metric_title(results)} (%)")
    ax.set_title(_title(results, "sequence-level against token-level exits"))
    ax.grid(alpha=0.3)
    _legend(ax, fontsize=8)
    return _save(fig, Path(path))


def write_plots(results: Mapping[str, Any], output_dir: str | Path, x_units: str = "percent") -> list[str]:
    """Every plot the results support; returns their paths relative to `output_dir` (for the report and card)."""
    output_dir = Path(output_dir)
    prefix = f"{results['task']}_"
    written = [plot_metric_vs_flops(results, output_dir / (prefix + METRIC_VS_FLOPS_PNG), x_units)]
    if len((results.get("distillation") or {}).get("partitions") or []) >= 2:
        written.append(plot_metric_vs_distillation_data(results, output_dir / (prefix + METRIC_VS_DATA_PNG)))
    if any("sweep_token" in entry for entry in results["languages"].values()):
        written.append(plot_granularity_comparison(results, output_dir / (prefix + GRANULARITY_PNG), x_units))
    return [path.name for path in written]
