"""The pure logic of bench/real_multilingual.py: reading dev figures at the held-out threshold, the target verdicts
and the README block. No model, no data: the inputs are results.json-shaped dicts built here."""

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "real_multilingual.py"
LANGS = ("en", "ru", "hi", "tr", "sw", "ur")


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("real_multilingual_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def row(threshold, metric, saving, full_flops=100.0):
    flops = full_flops * (1 - saving)
    return {"threshold": threshold, "metric": metric, "flops_saving": saving, "flops_per_example": flops,
            "mean_exit_layer": 6.0, "exit_layer_counts": [1, 2]}  # fmt: skip


def results(full, at_half, saving, full_flops=100.0, token=None):
    """results.json with every language at metric `full` at full depth and `at_half` / `saving` at threshold 0.5."""
    languages = {}
    for lang in LANGS:
        sweep = [
            row(0.0, full, 0.0, full_flops),
            row(0.5, at_half, saving, full_flops),
            row(1.01, 0.33, 0.9, full_flops),
        ]
        languages[lang] = {"full_depth": {"metric": full, "flops_per_example": full_flops}, "sweep": sweep,
                           "chosen": sweep[1]}  # fmt: skip
        if token is not None:
            languages[lang]["sweep_token"] = [row(0.0, full, 0.0, full_flops), row(0.5, *token, full_flops)]
    return {"languages": languages, "chosen_global": {"threshold": 0.5}}


HELDOUT = {"sequence": {"threshold": 0.5}, "token": {"threshold": 0.5}}


def summary(bench, teacher_saving=0.45, teacher_at=0.695, distilled_full=0.66, token=(0.795, 0.35)):
    arm = bench.summarize_arm
    return {
        "xnli": {
            "teacher": arm(results(0.70, teacher_at, teacher_saving), HELDOUT),
            "plain": arm(results(0.64, 0.63, 0.3, 50.0), HELDOUT),
            "distilled": arm(results(distilled_full, 0.68, 0.4, 50.0), HELDOUT),
        },
        "wikiann": {
            "teacher": arm(results(0.80, 0.79, 0.2, token=token), HELDOUT),
            "teacher-token": arm(results(0.80, 0.79, 0.2, token=token), HELDOUT, "token"),
            "plain": arm(results(0.60, 0.59, 0.2), HELDOUT),
            "distilled": arm(results(0.62, 0.61, 0.2), HELDOUT),
        },
    }


def test_dev_figures_are_read_at_the_heldout_threshold_not_the_dev_choice(bench):
    dev = results(0.70, 0.60, 0.5)
    for entry in dev["languages"].values():
        entry["chosen"] = entry["sweep"][2]  # what dev alone would choose
    summarized = bench.summarize_arm(dev, {"sequence": {"threshold": 0.5}})
    assert summarized["mean"]["heldout_metric"] == pytest.approx(0.60)
    assert summarized["mean"]["heldout_saving"] == pytest.approx(0.5)
    assert summarized["mean"]["oracle_per_language_saving"] == pytest.approx(0.9)


def test_a_threshold_off_the_grid_is_refused(bench):
    with pytest.raises(ValueError, match="0.37 is not in the sweep"):
        bench.row_at(results(0.7, 0.6, 0.5)["languages"]["en"]["sweep"], 0.37)


def test_verdicts_meet_and_miss_with_the_measured_reason(bench):
    met = bench.verdicts(summary(bench))
    assert met["a"]["met"] and "45.0 %" in met["a"]["reason"]
    # (b): distilled 66 vs plain 64 = +2.0 XNLI, PAN-X 62 vs 60 = +2.0
    assert met["b"]["met"], met["b"]["reason"]
    # (c): student at 60 % of the teacher's FLOPs... 50 * 0.6 = 30 of 100: 70 % fewer, drop 70 - 68 = 2 points
    assert met["c"]["met"] and met["c"]["arm"] == "distilled" and "70.0 % fewer" in met["c"]["reason"]
    assert met["d"]["met"], met["d"]["reason"]
    missed = bench.verdicts(
        summary(bench, teacher_saving=0.45, teacher_at=0.68, distilled_full=0.645, token=(0.7, 0.5))
    )
    assert not missed["a"]["met"] and "2.0 points" in missed["a"]["reason"]
    assert not missed["b"]["met"] and "+0.5" in missed["b"]["reason"]
    assert not missed["d"]["met"]


def test_resource_verdict_compares_low_and_medium_with_high(bench):
    summarized = summary(bench)
    for lang in ("sw", "ur", "hi", "tr"):
        summarized["xnli"]["distilled"]["languages"][lang]["heldout_threshold"]["metric"] = 0.60
    verdict = bench.resource_verdict(summarized["xnli"], "distilled")
    assert verdict["holds"] and verdict["by_class"]["low"] == pytest.approx(0.10)
    assert not bench.resource_verdict(summary(bench)["xnli"], "distilled")["holds"]  # equal drops everywhere
    # low loses more, medium less: holds in part, and the reason says which (the recorded run's case)
    partial = summary(bench)
    for lang, metric in (("sw", 0.60), ("ur", 0.60), ("hi", 0.70), ("tr", 0.70)):
        partial["xnli"]["distilled"]["languages"][lang]["heldout_threshold"]["metric"] = metric
    verdict = bench.resource_verdict(partial["xnli"], "distilled")
    assert not verdict["holds"] and verdict["holds_for"] == ["low"]
    assert "only low loses more than high, medium less" in verdict["reason"]


def test_readme_block_is_replaced_in_place_or_appended(bench):
    block = f"{bench.README_START}\nnew\n{bench.README_END}"
    text = f"intro\n{bench.README_START}\nold\n{bench.README_END}\noutro\n"
    assert bench.replace_block(text, block) == f"intro\n{block}\noutro\n"
    assert bench.replace_block("intro\n", block) == f"intro\n\n{block}\n"


def test_rendered_tables_carry_every_language_and_target(bench):
    summarized = summary(bench)
    summarized["phases"] = {"xnli-teacher": {"seconds": 60.0, "load_at_start": [1.0], "load_at_end": [2.0]}}
    meta = {"date": "2026-12-02", "command": "python bench/real_multilingual.py", "machine": "x", "workers": 2,
            "load_start": [1.0], "load_end": [2.0], "wall_minutes": 30.0, "timing_load": [1.0], "timings": {},
            "budgets": {"nli_train": 6000, "xnli_eval": 600, "panx_train": 3000, "panx_eval": 500, "heldout": 600},
            "verdicts": bench.verdicts(summarized)}  # fmt: skip
    summarized["xnli"]["teacher"]["parameters"] = summarized["xnli"]["teacher"]["parameters_without_embeddings"] = 1
    for task in ("xnli", "wikiann"):
        for arm in summarized[task].values():
            arm.setdefault("parameters", 1), arm.setdefault("parameters_without_embeddings", 1)
    markdown = bench.render_markdown(summarized, meta)
    assert all(f"({key})" in markdown for key in "abcde") and "| en | ru | hi | tr | sw | ur | mean |" in markdown
    readme = bench.render_readme(summarized, meta)
    assert readme.startswith(bench.README_START) and readme.endswith(bench.README_END)
    assert "student-6L distilled + exits" in readme


def test_a_partial_run_reports_unmeasured_targets_instead_of_failing(bench):
    partial = summary(bench)
    del partial["wikiann"]["plain"], partial["wikiann"]["distilled"]
    result = bench.verdicts(partial)
    assert result["b"]["met"] is None and "wikiann plain" in result["b"]["reason"]
    assert result["a"]["met"] and result["d"]["met"] is not None
    assert not bench.readme_ready(partial, result)
