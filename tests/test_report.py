"""results.json schema, markdown report and plots, on hand-built results whose numbers are known."""

import copy
import json

import matplotlib.image
import numpy as np
import pytest

from hf_earlyexit.evaluation.plots import (
    plot_granularity_comparison,
    plot_metric_vs_distillation_data,
    plot_metric_vs_flops,
    write_plots,
)
from hf_earlyexit.evaluation.report import render_report, write_report
from hf_earlyexit.evaluation.results import build_results, load_results, save_results, validate_results

LANGS = ("en", "ru", "sw")
THRESHOLDS = (0.0, 0.2, 0.4, 0.6)


def make_rows(base: float, lang_index: int, num_exits: int = 3):
    rows = []
    for step, threshold in enumerate(THRESHOLDS):
        saving = 0.15 * step
        # each step costs more for later (lower-resource) languages
        metric = round(base - 0.004 * step * (1 + lang_index), 6)
        counts = [10 * step, 5 * step, 100 - 15 * step][:num_exits]
        rows.append(
            {
                "threshold": threshold,
                "metric": metric,
                "mean_exit_layer": 3.0 - 0.3 * step,
                "flops_per_example": 1e9 * (1 - saving),
                "flops_saving": saving,
                "speedup": 1 / (1 - saving),
                "exit_layer_counts": counts,
            }
        )
    return rows


def make_results(task="xnli", random_weights=False, partitions=0, sweep_token=False, languages=LANGS):
    entries = {}
    for index, lang in enumerate(languages):
        rows = make_rows(0.8 - 0.05 * index, index)
        # a later language drops faster, so it picks an earlier threshold (max_drop = 0.01)
        chosen = max((r for r in rows if rows[0]["metric"] - r["metric"] <= 0.01), key=lambda r: r["flops_saving"])
        entries[lang] = {
            "num_examples": 100,
            "full_depth": {"metric": rows[0]["metric"], "mean_exit_layer": 3.0, "flops_per_example": 1e9},
            "sweep": rows,
            "chosen": dict(chosen),
        }
        if sweep_token:
            entries[lang]["sweep_token"] = make_rows(0.78 - 0.05 * index, index + 1)
    distillation = None
    if partitions:
        distillation = {
            "teacher": "FacebookAI/xlm-roberta-large",
            "student_init": "FacebookAI/xlm-roberta-base",
            "layer_map": [[6, 12], [12, 24]],
            "losses": {"hidden_mse": 1.0, "logits_kl": 0.5},
            "partitions": [
                {
                    "partition": p,
                    "tokens_by_language": {lang: 1_000_000 for lang in languages},
                    "metric_by_language": {lang: 0.5 + 0.05 * p for lang in languages},
                }
                for p in range(partitions)
            ],
        }
    return build_results(
        task=task,
        languages=entries,
        model_info={
            "name_or_path": "demo/student",
            "model_type": "xlm-roberta-early-exit",
            "num_layers": 3,
            "exit_layers": [1, 2, 3],
            "exit_criterion": "entropy",
            "exit_granularity": "sequence",
            "pooling": "mean",
            "parameters": 2_500_000,
            "parameters_without_embeddings": 400_000,
        },
        seq_len=128,
        full_depth_flops=2.5e9,
        max_drop=0.01,
        chosen_global={
            "threshold": 0.2,
            "metric_by_language": {lang: entries[lang]["sweep"][1]["metric"] for lang in languages},
            "flops_saving_by_language": {lang: 0.15 for lang in languages},
        },
        efficiency={
            "seq_len": 128,
            "device": "cpu",
            "chosen_threshold": 0.2,
            "latency_ms": {
                "batch_1": {"full_depth": 12.5, "chosen": 9.25},
                "batch_32": {"full_depth": 300.0, "chosen": 210.0},
            },
            "peak_memory_mb": {"full_depth": 55.5, "chosen": 44.25},
            "peak_memory_batch_size": 32,
            "threads": 4,
            "repeats": 10,
            "warmup": 2,
            "seed": 0,
            "inputs": ["input_ids", "attention_mask"],
            "timed": {
                "batch_1": {"batches": 16, "passes": 1, "examples_by_language": {"en": 6, "ru": 5, "sw": 5}},
                "batch_32": {"batches": 4, "passes": 3, "examples_by_language": {"en": 43, "ru": 43, "sw": 42}},
            },
        },
        distillation=distillation,
        random_weights=random_weights,
    )


# ---- schema ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda r: r["languages"]["ru"].pop("sweep"), "languages.ru.sweep"),
        (lambda r: r["languages"]["en"]["sweep"].reverse(), "languages.en.sweep.threshold"),
        (lambda r: r["languages"]["en"]["sweep"][1].update(metric=80.0), "languages.en.sweep[1].metric"),
        (lambda r: r["languages"]["en"]["chosen"].update(threshold=0.33), "languages.en.chosen.threshold"),
        (lambda r: r["languages"]["sw"].update(num_examples=True), "languages.sw.num_examples"),
        (lambda r: r.update(metric="f1"), "metric"),
        (lambda r: r["model"].update(exit_layers=[1, 2]), "model.exit_layers"),
        (lambda r: r["chosen_global"]["metric_by_language"].pop("sw"), "chosen_global.metric_by_language"),
        (lambda r: r["efficiency"]["latency_ms"].pop("batch_32"), "efficiency.latency_ms.batch_32"),
        (lambda r: r["efficiency"].update(threads=0), "efficiency.threads"),
        (lambda r: r["efficiency"]["timed"].pop("batch_32"), "efficiency.timed.batch_32"),
        (lambda r: r["efficiency"]["timed"]["batch_32"].update(passes=0), "efficiency.timed.batch_32.passes"),
        (lambda r: r["efficiency"]["timed"]["batch_1"].update(examples_by_language={}), "examples_by_language"),
        (lambda r: r["efficiency"].update(inputs=["attention_mask"]), "efficiency.inputs"),
        (lambda r: r["languages"]["en"].update(sweep_token=[]), "languages.en.sweep_token"),
        (lambda r: r["languages"]["en"]["sweep"][0].update(exit_layer_counts=[1, 2]), "exit_layer_counts"),
        (lambda r: r["languages"]["en"]["sweep"].pop(0), "languages.en.sweep[0].threshold"),
        (lambda r: r["distillation"]["partitions"].reverse(), "distillation.partitions[1].partition"),
        # a chosen row that is not the sweep's row at its threshold
        (lambda r: r["languages"]["en"]["chosen"].update(metric=0.01), "languages.en.chosen"),
        # wrong types that used to pass and crash the report and card later
        (lambda r: r["chosen_global"]["metric_by_language"].update(en="0.8"), "chosen_global.metric_by_language.en"),
        (
            lambda r: r["distillation"]["partitions"][0]["tokens_by_language"].update(en="12k"),
            "distillation.partitions[0].tokens_by_language.en",
        ),
        (
            lambda r: r["distillation"]["partitions"][0]["metric_by_language"].update(en=None),
            "distillation.partitions[0].metric_by_language.en",
        ),
        (lambda r: r["distillation"].update(losses=["mse"]), "distillation.losses"),
        (lambda r: r["model"].update(pooling="max"), "model.pooling"),
        (lambda r: r["model"].update(exit_granularity="token"), "model.pooling"),  # token exits pool nothing
        (lambda r: r["distillation"].update(partition_eval=["probe"]), "distillation.partition_eval"),
    ],
)
def test_validate_results_names_the_bad_field_in_one_line(mutate, field):
    results = make_results(partitions=2)
    validate_results(results)
    bad = copy.deepcopy(results)
    mutate(bad)
    with pytest.raises(ValueError) as error:
        validate_results(bad)
    message = str(error.value)
    assert field in message and "\n" not in message


def test_save_load_round_trip_and_invalid_save_keeps_the_old_file(tmp_path):
    results = make_results(partitions=2)
    path = save_results(results, tmp_path)
    assert path == tmp_path / "results.json"
    assert load_results(tmp_path) == results
    before = path.read_text()
    bad = copy.deepcopy(results)
    bad["languages"] = {}
    with pytest.raises(ValueError, match="languages"):
        save_results(bad, tmp_path)
    assert path.read_text() == before
    with pytest.raises(ValueError, match="does not exist"):
        load_results(tmp_path / "missing")
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_results(tmp_path / "broken.json")


def test_build_results_rejects_an_unknown_task():
    with pytest.raises(ValueError, match="task='mnli'"):
        build_results(
            task="mnli",
            languages={},
            model_info={},
            seq_len=128,
            full_depth_flops=1.0,
            max_drop=0.01,
            chosen_global={},
        )


# ---- report ----------------------------------------------------------------------------------------------------


def test_report_tables_carry_the_numbers_of_results(tmp_path):
    results = make_results(partitions=3)
    results["distillation"]["partition_eval"] = "a linear probe of the frozen student"
    text = write_report(results, tmp_path, plot_files=["xnli_metric_vs_flops.png"]).read_text()
    for lang in LANGS:
        entry = results["languages"][lang]
        full, chosen = entry["full_depth"]["metric"], entry["chosen"]
        drop = 100 * (full - chosen["metric"])
        expected = (
            f"| {lang} | 100 | {100 * full:.2f} | {chosen['threshold']:g} | {100 * chosen['metric']:.2f} | {drop:.2f} |"
        )
        assert expected in text
    # sw drops fastest, so its own threshold is lower than en's
    assert results["languages"]["sw"]["chosen"]["threshold"] < results["languages"]["en"]["chosen"]["threshold"]
    assert "| 0.4 | 79.20 (30.00) |" in text  # threshold table: en at 0.4
    assert "| threshold 0.2 | 9.25 | 210.00 | 44.2 |" in text  # efficiency
    assert (
        "Timed with 4 CPU threads; batch 1: mean over 16 single examples (en 6, ru 5, sw 5), median of 1 pass; "
        "batch 32: mean over 4 batches (en 43, ru 43, sw 42), median of 3 passes; examples drawn with seed 0; "
        "inputs input_ids, attention_mask."
    ) in text
    assert "| 2 | 9.00 M | 60.00 | 60.00 | 60.00 |" in text  # partitions: cumulative tokens (3 x 3 x 1M)
    assert "Each partition's checkpoint evaluated by a linear probe of the frozen student." in text
    assert "-level exits, heads read the mean over the real tokens." in text  # model.pooling
    assert "![xnli_metric_vs_flops](xnli_metric_vs_flops.png)" in text
    assert "Random-weights" not in text


def test_report_labels_random_weights_and_token_sweeps():
    text = render_report(make_results(task="wikiann", random_weights=True, sweep_token=True))
    assert "Random-weights demo" in text and "not the quality" in text
    assert "### Token-level exits" in text
    assert "entity F1 full depth (%)" in text
    assert "Distillation data" not in text
    results = make_results(task="wikiann")
    results["model"]["pooling"] = "first"
    assert "mean over the real tokens" not in render_report(results)


# ---- plots -----------------------------------------------------------------------------------------------------


def assert_png(path, min_height=300, min_width=400):
    image = matplotlib.image.imread(path)
    assert image.shape[0] >= min_height and image.shape[1] >= min_width
    # a blank canvas would have (almost) one colour
    assert float(np.std(image[..., :3])) > 0.05


def test_write_plots_draws_every_supported_plot(tmp_path):
    results = make_results(task="wikiann", partitions=3, sweep_token=True, random_weights=True)
    files = write_plots(results, tmp_path)
    assert files == [
        "wikiann_metric_vs_flops.png",
        "wikiann_metric_vs_distillation_data.png",
        "wikiann_sequence_vs_token_exit.png",
    ]
    for name in files:
        assert_png(tmp_path / name)


def test_write_plots_only_draws_what_the_results_support(tmp_path):
    assert write_plots(make_results(partitions=1), tmp_path) == ["xnli_metric_vs_flops.png"]
    assert_png(tmp_path / "xnli_metric_vs_flops.png")
    assert_png(plot_metric_vs_flops(make_results(), tmp_path / "gflops.png", x_units="gflops"))


def test_plots_reject_what_they_cannot_draw(tmp_path):
    results = make_results(partitions=1)
    with pytest.raises(ValueError, match="at least 2"):
        plot_metric_vs_distillation_data(results, tmp_path / "d.png")
    with pytest.raises(ValueError, match="sweep_token"):
        plot_granularity_comparison(results, tmp_path / "g.png")
    with pytest.raises(ValueError, match="x_units='flops'"):
        plot_metric_vs_flops(results, tmp_path / "f.png", x_units="flops")
    assert not any(tmp_path.iterdir())


def test_results_is_plain_json():
    results = make_results(partitions=2, sweep_token=False)
    assert json.loads(json.dumps(results)) == results


def test_the_demo_summary_prints_the_partition_curve_once(tmp_path):
    from test_examples import load_example

    summary = load_example("demo_summary")
    results = make_results(partitions=2)
    results["distillation"]["partition_eval"] = "a linear probe"
    save_results(results, tmp_path)
    curve = summary.partition_curve(tmp_path)
    assert curve.splitlines()[0] == "distillation partitions (a linear probe):"
    assert curve.splitlines()[-1].split() == ["1"] + ["55.0%"] * len(LANGS)  # 0.5 + 0.05 * partition
    save_results(make_results(), tmp_path)  # no distillation record: nothing to draw
    assert summary.partition_curve(tmp_path) is None
