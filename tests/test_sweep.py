"""Threshold sweeps: replayed exit decisions against the model's batched exit path, FLOPs and metrics."""

import pytest
import torch
from datasets import Dataset
from seqeval.metrics import f1_score

from hf_earlyexit.evaluation.flops import flops_per_example
from hf_earlyexit.evaluation.sweep import (
    choose_global_threshold,
    choose_threshold,
    collect_exit_logits,
    decide_exits,
    evaluate_languages,
    sweep_language,
    sweep_thresholds,
    verify_batched_exits,
)
from hf_earlyexit.modeling import (
    XLMRobertaEarlyExitConfig,
    XLMRobertaForEarlyExit,
    XLMRobertaForEarlyExitTokenClassification,
)

TAGS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC")
PAD = 1
THRESHOLDS = (0.0, 0.3, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.01)


def tiny_config(**overrides):
    # initializer_range 0.3 spreads the random heads' confidence, so exits really vary with the threshold
    fields = dict(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=80,
        num_labels=3,
        pad_token_id=PAD,
        initializer_range=0.3,
    )
    fields.update(overrides)
    return XLMRobertaEarlyExitConfig(**fields)


def sequence_model(criterion="entropy"):
    torch.manual_seed(0)
    return XLMRobertaForEarlyExit(tiny_config(exit_criterion=criterion)).eval()


def token_model():
    torch.manual_seed(1)
    config = tiny_config(
        num_labels=len(TAGS), id2label=dict(enumerate(TAGS)), label2id={t: i for i, t in enumerate(TAGS)}
    )
    return XLMRobertaForEarlyExitTokenClassification(config).eval()


def sequence_dataset(n=40, seed=0):
    generator = torch.Generator().manual_seed(seed)
    rows = {"input_ids": [], "label": [], "premise": []}
    for i in range(n):
        length = int(torch.randint(4, 30, (1,), generator=generator))
        rows["input_ids"].append([0] + torch.randint(5, 100, (length,), generator=generator).tolist() + [2])
        rows["label"].append(int(torch.randint(0, 3, (1,), generator=generator)))
        rows["premise"].append(f"text {i}")  # a raw column the sweep must drop before collating
    return Dataset.from_dict(rows)


def token_dataset(n=30, seed=0):
    generator = torch.Generator().manual_seed(seed)
    rows = {"input_ids": [], "labels": []}
    for _ in range(n):
        length = int(torch.randint(4, 25, (1,), generator=generator))
        labels = torch.randint(0, len(TAGS), (length,), generator=generator).tolist()
        # sub-tokens after the first carry -100, as tokenize_and_align_labels writes them
        labels = [-100 if i % 3 == 2 else tag for i, tag in enumerate(labels)]
        rows["input_ids"].append([0] + torch.randint(5, 100, (length,), generator=generator).tolist() + [2])
        rows["labels"].append([-100] + labels + [-100])
    return Dataset.from_dict(rows)


def pad_collator(features):
    """Pads like DataCollatorWithPadding / DataCollatorForTokenClassification (input pad id 1, label pad -100)."""
    width = max(len(f["input_ids"]) for f in features)
    batch = {
        "input_ids": torch.tensor([f["input_ids"] + [PAD] * (width - len(f["input_ids"])) for f in features]),
        "attention_mask": torch.tensor(
            [[1] * len(f["input_ids"]) + [0] * (width - len(f["input_ids"])) for f in features]
        ),
    }
    if "labels" in features[0]:
        batch["labels"] = torch.tensor([f["labels"] + [-100] * (width - len(f["labels"])) for f in features])
    else:
        batch["labels"] = torch.tensor([f["label"] for f in features])
    return batch


def batched_path(model, dataset, threshold, batch_size=8):
    """Per example: (real length, exit layer, predicted labels, gold labels) from the model's batched exit path."""
    out = []
    with torch.no_grad():
        for start in range(0, len(dataset), batch_size):
            batch = pad_collator([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
            labels = batch.pop("labels")
            output = model(**batch, exit_threshold=threshold)
            layers = output.exit_layer if output.exit_layer.dim() == 1 else output.exit_layer[:, 0]
            for row in range(len(labels)):
                out.append(
                    (
                        int(batch["attention_mask"][row].sum()),
                        int(layers[row]),
                        output.logits[row].argmax(-1),
                        labels[row],
                    )
                )
    return out


@pytest.fixture(scope="module")
def seq_sweep():
    model, dataset = sequence_model(), sequence_dataset()
    entry, collected = sweep_language(model, dataset, pad_collator, THRESHOLDS, max_drop=0.05, batch_size=8)
    return model, dataset, entry, collected


def test_one_row_per_threshold_with_full_depth_at_zero(seq_sweep):
    model, dataset, entry, _ = seq_sweep
    rows = entry["sweep"]
    assert [row["threshold"] for row in rows] == list(THRESHOLDS)
    assert entry["num_examples"] == len(dataset) == 40
    zero = rows[0]
    assert zero["metric"] == entry["full_depth"]["metric"]
    assert zero["mean_exit_layer"] == 3.0 and zero["exit_layer_counts"] == [0, 0, 40]
    assert zero["flops_saving"] == 0.0 and zero["speedup"] == 1.0
    assert rows[-1]["exit_layer_counts"] == [40, 0, 0]  # above 1 every example leaves at the first exit
    for row in rows:
        assert sum(row["exit_layer_counts"]) == 40
    # the random model really spreads its exits over the sweep
    assert len({tuple(row["exit_layer_counts"]) for row in rows}) >= 4


@pytest.mark.parametrize("criterion", ["entropy", "max_prob"])
def test_mean_exit_layer_never_rises_as_the_threshold_rises(criterion):
    entry, _ = sweep_language(sequence_model(criterion), sequence_dataset(), pad_collator, THRESHOLDS, batch_size=8)
    layers = [row["mean_exit_layer"] for row in entry["sweep"]]
    savings = [row["flops_saving"] for row in entry["sweep"]]
    assert all(a >= b for a, b in zip(layers, layers[1:])), layers  # threshold falls -> exit layer does not fall
    assert all(a <= b for a, b in zip(savings[1:], savings[2:])), savings  # beyond 0, heads cost the same
    assert layers[0] > layers[-1]


@pytest.mark.parametrize("threshold", [0.5, 0.8, 0.95])
def test_rows_agree_with_the_batched_exit_path_through_flops_per_example(seq_sweep, threshold):
    model, dataset, entry, _ = seq_sweep
    row = next(r for r in entry["sweep"] if r["threshold"] == threshold)
    examples = batched_path(model, dataset, threshold)
    config = model.config
    flops = [flops_per_example(config, n, layer, task="sequence") for n, layer, _, _ in examples]
    full = [flops_per_example(config, n, task="sequence", include_exit_heads=False) for n, _, _, _ in examples]
    assert row["flops_per_example"] == pytest.approx(sum(flops) / len(flops), rel=1e-12)
    assert entry["full_depth"]["flops_per_example"] == pytest.approx(sum(full) / len(full), rel=1e-12)
    assert row["flops_saving"] == pytest.approx(1 - sum(flops) / sum(full), rel=1e-9)
    assert row["speedup"] == pytest.approx(sum(full) / sum(flops), rel=1e-9)
    assert row["mean_exit_layer"] == pytest.approx(sum(layer for _, layer, _, _ in examples) / len(examples))
    assert row["metric"] == pytest.approx(sum(int(p == y) for _, _, p, y in examples) / len(examples))
    counts = [sum(1 for _, layer, _, _ in examples if layer == exit_layer) for exit_layer in (1, 2, 3)]
    assert row["exit_layer_counts"] == counts


@pytest.mark.parametrize("max_drop", [0.0, 0.05, 0.15])
def test_chosen_threshold_meets_its_target_with_the_largest_saving(seq_sweep, max_drop):
    model, _, entry, collected = seq_sweep
    rows = entry["sweep"]
    full = entry["full_depth"]["metric"]
    chosen = choose_threshold(rows, full, max_drop)
    assert full - chosen["metric"] <= max_drop + 1e-9
    better = [r for r in rows if r["flops_saving"] > chosen["flops_saving"]]
    assert all(full - r["metric"] > max_drop for r in better)
    assert sweep_thresholds(collected, model.config, THRESHOLDS, max_drop)["chosen"] == chosen


def test_global_threshold_keeps_every_language_within_max_drop():
    def rows(metrics):
        return [
            {"threshold": t, "metric": m, "flops_saving": s, "mean_exit_layer": 0.0}
            for t, m, s in zip((0.0, 0.5, 0.9), metrics, (0.0, 0.3, 0.6))
        ]

    languages = {
        "en": {"full_depth": {"metric": 0.80}, "sweep": rows([0.80, 0.80, 0.795])},
        "sw": {"full_depth": {"metric": 0.60}, "sweep": rows([0.60, 0.595, 0.55])},
    }
    # the mean drop at 0.9 is 2.75 points; sw alone loses 5, so one point rules 0.9 out
    chosen = choose_global_threshold(languages, max_drop=0.01)
    assert chosen["threshold"] == 0.5
    assert chosen["metric_by_language"] == {"en": 0.80, "sw": 0.595}
    assert chosen["flops_saving_by_language"] == {"en": 0.3, "sw": 0.3}
    assert choose_global_threshold(languages, max_drop=0.05)["threshold"] == 0.9


def test_token_model_f1_on_labelled_positions_and_sequence_exits():
    model, dataset = token_model(), token_dataset()
    entry, collected = sweep_language(model, dataset, pad_collator, THRESHOLDS, max_drop=0.05, batch_size=8)
    assert collected.token_level and collected.exit_layers == (1, 2, 3)
    for threshold in (0.0, 0.9, 0.95):
        row = next(r for r in entry["sweep"] if r["threshold"] == threshold)
        examples = batched_path(model, dataset, threshold)
        y_true, y_pred = [], []
        for _, _, pred, gold in examples:
            keep = gold != -100
            y_true.append([TAGS[t] for t in gold[keep].tolist()])
            y_pred.append([TAGS[p] for p in pred[keep].tolist()])
        assert row["metric"] == pytest.approx(f1_score(y_true, y_pred, zero_division=0))
        # sequence-level exits: counted per example
        assert sum(row["exit_layer_counts"]) == len(dataset)
        flops = [flops_per_example(model.config, n, layer, task="token") for n, layer, _, _ in examples]
        if threshold > 0:
            assert row["flops_per_example"] == pytest.approx(sum(flops) / len(flops), rel=1e-12)
    assert entry["sweep"][-1]["exit_layer_counts"] == [len(dataset), 0, 0]


def test_decisions_equal_the_models_own_full_compute_decision(seq_sweep):
    model, dataset, _, collected = seq_sweep
    decisions = decide_exits(collected, model.config, 0.8)
    with torch.no_grad():
        batch = pad_collator([dataset[i] for i in range(8)])
        batch.pop("labels")
        output = model(**batch, output_exit_logits=True, exit_threshold=0.8)
    assert torch.equal(decisions.example_exit_layers[0], output.exit_layer)
    assert torch.allclose(decisions.logits[0], output.logits)


@pytest.mark.parametrize("threshold", [0.5, 0.8, 0.95, 1.01])
def test_verify_batched_exits_agrees_on_both_model_kinds(seq_sweep, threshold):
    model, dataset, _, collected = seq_sweep
    check = verify_batched_exits(model, dataset, pad_collator, collected, threshold, max_batches=3)
    assert check.ok and check.num_examples == 24 and check.max_abs_logit_diff < 1e-4
    tmodel, tdataset = token_model(), token_dataset()
    tcollected = collect_exit_logits(tmodel, tdataset, pad_collator, batch_size=8)
    tcheck = verify_batched_exits(tmodel, tdataset, pad_collator, tcollected, threshold, max_batches=2)
    assert tcheck.ok and tcheck.num_examples == 16 and tcheck.max_abs_logit_diff < 1e-4


def test_verify_batched_exits_catches_a_sweep_that_does_not_match(seq_sweep):
    model, dataset, _, collected = seq_sweep
    other = collect_exit_logits(model, sequence_dataset(seed=7), pad_collator, batch_size=8)
    check = verify_batched_exits(model, dataset, pad_collator, other, 0.8, max_batches=2)
    assert not check.ok and check.num_mismatched_exits > 0


def test_evaluate_languages_builds_entries_and_global_choice():
    model = sequence_model()
    datasets = {"en": sequence_dataset(24, seed=1), "sw": sequence_dataset(16, seed=2)}
    languages, chosen_global = evaluate_languages(
        model, datasets, pad_collator, THRESHOLDS, max_drop=0.05, batch_size=8
    )
    assert list(languages) == ["en", "sw"]
    assert languages["sw"]["num_examples"] == 16
    for lang, entry in languages.items():
        assert entry["exit_check"]["num_mismatched_exits"] == 0 and entry["exit_check"]["num_examples"] == 16
        drop = entry["full_depth"]["metric"] - chosen_global["metric_by_language"][lang]
        assert drop <= 0.05 + 1e-9


class ExplodingModel(torch.nn.Module):
    def forward(self, *args, **kwargs):
        raise AssertionError("the model must not run for bad input")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"thresholds": [0.5, -0.1]}, r"thresholds \[-0.1\]"),
        ({"max_drop": 2.0}, "max_drop=2.0"),
        ({"batch_size": 0}, "batch_size=0"),
    ],
)
def test_bad_arguments_fail_before_the_model_runs(kwargs, match):
    model = ExplodingModel()
    model.register_parameter("p", torch.nn.Parameter(torch.zeros(1)))
    with pytest.raises(ValueError, match=match):
        sweep_language(model, sequence_dataset(4), pad_collator, **kwargs)


def test_unlabelled_or_empty_data_is_refused():
    model = sequence_model()
    unlabelled = Dataset.from_dict({"input_ids": [[0, 5, 2]]})
    with pytest.raises(ValueError, match="no 'labels'"):
        collect_exit_logits(model, unlabelled, lambda f: {"input_ids": torch.tensor([x["input_ids"] for x in f])})
    with pytest.raises(ValueError, match="empty"):
        collect_exit_logits(model, sequence_dataset(1).select([]), pad_collator)


def test_patience_is_refused_by_the_sweep_because_every_positive_threshold_is_one_operating_point():
    model, dataset = sequence_model("patience"), sequence_dataset(16)
    entry, _ = sweep_language(model, dataset, pad_collator, THRESHOLDS, max_drop=0.05, batch_size=8)
    points = {(row["metric"], row["flops_saving"]) for row in entry["sweep"] if row["threshold"] > 0}
    assert len(points) == 1  # why: the threshold only switches the exits on
    with pytest.raises(ValueError, match=r"exit_criterion='patience' cannot be threshold-swept") as error:
        evaluate_languages(model, {"en": dataset}, pad_collator, THRESHOLDS, max_drop=0.05, batch_size=8)
    assert "\n" not in str(error.value)
