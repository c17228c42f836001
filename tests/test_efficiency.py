"""Latency, peak memory and parameter counts."""

import os

import pytest
import torch

from hf_earlyexit.evaluation.efficiency import (
    LATENCY_BATCHES,
    count_parameters,
    cpu_peak_bytes,
    describe_model,
    fixed_length_batch,
    latency_sample,
    measure_efficiency,
    measure_latency_ms,
    measure_peak_memory_mb,
)
from hf_earlyexit.evaluation.results import _validate_efficiency
from hf_earlyexit.modeling import (
    BertEarlyExitConfig,
    BertForEarlyExit,
    XLMRobertaEarlyExitConfig,
    XLMRobertaForEarlyExit,
)

EXAMPLES = [{"input_ids": [0] + list(range(5, 5 + n)) + [2]} for n in (3, 10, 40)]


def model(layers=3, hidden=32):
    torch.manual_seed(0)
    config = XLMRobertaEarlyExitConfig(
        vocab_size=100,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=2 * hidden,
        max_position_embeddings=160,
        num_labels=3,
        pad_token_id=1,
    )
    return XLMRobertaForEarlyExit(config).eval()


def test_parameter_counts_split_off_the_embedding_tables():
    m = model()
    total, without = count_parameters(m)
    embeddings = m.roberta.embeddings
    tables = sum(
        t.weight.numel()
        for t in (embeddings.word_embeddings, embeddings.position_embeddings, embeddings.token_type_embeddings)
    )
    assert total == m.num_parameters() and without == total - tables
    assert without == m.num_parameters(exclude_embeddings=True)
    info = describe_model(m, "demo/student")
    assert info["parameters"] == total and info["parameters_without_embeddings"] == without
    assert info["exit_layers"] == [1, 2, 3] and info["exit_granularity"] == "sequence"


def test_fixed_length_batch_truncates_pads_and_cycles_real_examples():
    batch = fixed_length_batch(EXAMPLES, batch_size=5, seq_len=12, pad_token_id=1)
    assert batch["input_ids"].shape == (5, 12) and batch["attention_mask"].shape == (5, 12)
    assert batch["attention_mask"].sum(dim=1).tolist() == [5, 12, 12, 5, 12]
    assert batch["input_ids"][0].tolist() == [0, 5, 6, 7, 2] + [1] * 7
    assert batch["input_ids"][2].tolist() == [0] + list(range(5, 16))  # truncated to 12
    assert torch.equal(batch["input_ids"][3], batch["input_ids"][0])
    with pytest.raises(ValueError, match="seq_len=1"):
        fixed_length_batch(EXAMPLES, 2, 1, 1)
    with pytest.raises(ValueError, match="empty"):
        fixed_length_batch([], 2, 8, 1)


def test_cpu_peak_bytes_measures_the_real_allocations(capfd):
    layer = torch.nn.Linear(256, 1024)
    x = torch.randn(64, 256)

    def run():
        hidden = layer(x)  # 64 x 1024 floats
        wider = torch.cat([hidden, hidden], dim=1)  # another 2 x that, while hidden is alive
        os.write(2, b"printed by run\n")  # what the measured code writes still shows
        return wider.sum()

    with torch.inference_mode():
        peak = cpu_peak_bytes(run)
    expected = 64 * 1024 * 4 * 3
    assert expected <= peak <= expected + 4096
    # The profiler's own C++ start/stop lines ("USDT:... profiler_start") stay out of the user's console.
    printed = capfd.readouterr()
    assert "profiler_st" not in printed.err + printed.out and "printed by run" in printed.err


def test_peak_memory_grows_with_batch_and_includes_weights():
    m = model()
    weights_mb = sum(p.numel() * p.element_size() for p in m.parameters()) / 2**20
    small = measure_peak_memory_mb(m, fixed_length_batch(EXAMPLES, 1, 64, 1), 0.0)
    large = measure_peak_memory_mb(m, fixed_length_batch(EXAMPLES, 32, 64, 1), 0.0)
    assert weights_mb < small < large
    # attention probabilities alone at batch 32: 32 x 2 heads x 64 x 64 floats = 1 MiB more than at batch 1
    assert large - small > 0.9


def test_early_exit_is_faster_than_full_depth():
    m = model(layers=6, hidden=64)
    inputs = fixed_length_batch(EXAMPLES, 32, 64, 1)
    # above 1 every example leaves at layer 1, so 5 of 6 layers are skipped
    full, early = measure_latency_ms(m, inputs, [0.0, 1.01], warmup=1, repeats=7)
    assert full > 0 and early > 0
    assert early < 0.7 * full


def test_measure_efficiency_fills_the_results_schema():
    m = model()
    efficiency = measure_efficiency(m, EXAMPLES, chosen_threshold=0.9, seq_len=32, warmup=0, repeats=2)
    _validate_efficiency(efficiency)
    assert efficiency["seq_len"] == 32 and efficiency["peak_memory_batch_size"] == 32
    assert set(efficiency["latency_ms"]) == {"batch_1", "batch_32"}
    assert all(v > 0 for b in efficiency["latency_ms"].values() for v in b.values())
    with pytest.raises(ValueError, match="chosen_threshold=-1"):
        measure_efficiency(m, EXAMPLES, chosen_threshold=-1)
    with pytest.raises(ValueError, match="repeats=0"):
        measure_latency_ms(m, fixed_length_batch(EXAMPLES, 1, 8, 1), [0.0], repeats=0)


def test_token_exit_full_depth_reference_computes_what_the_exit_path_computes_when_no_token_leaves():
    """Token-level exit packs the real tokens: the full-depth timing must run the same packed path, else padding
    removal shows up as an early-exit speed-up with no token leaving (rows padded 4x here)."""
    from torch.utils.flop_counter import FlopCounterMode

    from hf_earlyexit.evaluation.efficiency import _forward
    from hf_earlyexit.modeling import XLMRobertaForEarlyExitTokenClassification

    torch.manual_seed(0)
    config = model().config
    config.exit_granularity, config.architectures = "token", None
    token_model = XLMRobertaForEarlyExitTokenClassification(config).eval()
    inputs = fixed_length_batch(EXAMPLES[:1], batch_size=4, seq_len=20, pad_token_id=1)
    flops = {}
    for setting, threshold in (("full_depth", 0.0), ("chosen", 1e-9)):  # nothing is that certain: no token leaves
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            output = _forward(token_model, inputs, threshold)
        assert (output.exit_layer[inputs["attention_mask"].bool()] == 3).all()
        flops[setting] = counter.get_total_flops()
    assert flops["full_depth"] == pytest.approx(flops["chosen"], rel=0.02), flops
    efficiency = measure_efficiency(token_model, EXAMPLES, chosen_threshold=0.5, seq_len=32, warmup=0, repeats=1)
    assert "forced to the last layer" in efficiency["full_depth_reference"]


def by_language(languages=("en", "ru", "sw"), rows=20, seed=0, segments=False):
    """Tokenized examples per language, every one distinct (ids 3..99, lengths 4..30); with `segments`, BERT's
    token_type_ids (two segments), as a BERT tokenizer gives them for sentence pairs."""
    generator = torch.Generator().manual_seed(seed)
    data = {}
    for language in languages:
        data[language] = []
        for _ in range(rows):
            length = int(torch.randint(4, 31, (1,), generator=generator))
            ids = torch.randint(3, 100, (length,), generator=generator).tolist()
            first = length // 2
            row = {"input_ids": ids}
            if segments:
                row["token_type_ids"] = [0] * first + [1] * (length - first)
            data[language].append(row)
    return data


def shuffled(data, seed=1):
    """The same rows, each language's in another order, languages in reverse order."""
    generator = torch.Generator().manual_seed(seed)
    return {
        lang: [rows[i] for i in torch.randperm(len(rows), generator=generator)] for lang, rows in reversed(data.items())
    }


def test_latency_draw_covers_every_language_and_ignores_the_order_of_the_rows():
    data = by_language()
    drawn = latency_sample(data, 16)
    assert {lang for lang, _ in drawn} == set(data)
    again = latency_sample(shuffled(data), 16)
    assert [(lang, row["input_ids"]) for lang, row in drawn] == [(lang, row["input_ids"]) for lang, row in again]
    # the first rows are not what is drawn: the seed decides
    assert [row["input_ids"] for _, row in drawn[:3]] != [data[lang][0]["input_ids"] for lang in sorted(data)]
    assert latency_sample(data, 16, seed=1) != drawn
    assert LATENCY_BATCHES[1] >= 16 and LATENCY_BATCHES[32] >= 2
    with pytest.raises(ValueError, match="no examples in"):
        latency_sample({"en": []}, 4)


def timed_rows(m, data, **kwargs):
    """measure_efficiency's results and the rows (input_ids, token_type_ids) of every timed batch-1 forward."""
    seen = []

    def record(module, args, kwargs_):
        ids = kwargs_["input_ids"]
        if ids.shape[0] == 1:
            types = kwargs_.get("token_type_ids")
            seen.append((tuple(ids[0].tolist()), None if types is None else tuple(types[0].tolist())))

    handle = m.base_model.embeddings.register_forward_pre_hook(record, with_kwargs=True)
    try:
        efficiency = measure_efficiency(m, data, chosen_threshold=0.5, seq_len=32, warmup=0, repeats=1, **kwargs)
    finally:
        handle.remove()
    return efficiency, seen


def test_measure_efficiency_times_every_language_whatever_the_row_order_and_records_how():
    m, data = model(), by_language()
    efficiency, seen = timed_rows(m, data, batches={1: 16, 32: 2})
    _validate_efficiency(efficiency)
    timed = efficiency["timed"]
    assert timed["batch_1"]["batches"] == 16 and sum(timed["batch_1"]["examples_by_language"].values()) == 16
    assert timed["batch_32"]["batches"] == 2 and sum(timed["batch_32"]["examples_by_language"].values()) == 64
    assert timed["batch_1"]["passes"] == 1 == timed["batch_32"]["passes"]  # repeats=1: one pass over the batches
    for batch in ("batch_1", "batch_32"):
        assert set(timed[batch]["examples_by_language"]) == set(data), batch
    assert efficiency["threads"] == torch.get_num_threads() and efficiency["repeats"] == 1
    assert efficiency["device"] == "cpu" and efficiency["inputs"] == ["input_ids", "attention_mask"]
    assert len(set(seen)) == 16  # 16 different examples at batch 1, not one
    _, seen_shuffled = timed_rows(m, shuffled(data), batches={1: 16, 32: 2})
    assert sorted(seen_shuffled) == sorted(seen)


def test_bert_token_type_ids_reach_the_model_in_every_timed_forward():
    torch.manual_seed(0)
    config = BertEarlyExitConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        type_vocab_size=2,
        num_labels=3,
        pad_token_id=0,
    )
    data = by_language(rows=8, segments=True)
    efficiency, seen = timed_rows(BertForEarlyExit(config).eval(), data, batches={1: 4, 32: 1})
    assert efficiency["inputs"] == ["input_ids", "attention_mask", "token_type_ids"]
    assert seen and all(types is not None and 1 in types for _, types in seen)
    rows = {tuple(row["input_ids"]): row["token_type_ids"] for rows in data.values() for row in rows}
    for ids, types in seen:
        length = len(rows[tuple(i for i in ids if i != 0)])
        assert list(types[:length]) == rows[tuple(ids[:length])] and set(types[length:]) <= {0}


def test_fixed_length_batch_pads_token_type_ids_and_refuses_misaligned_ones():
    rows = [{"input_ids": [5, 6, 7], "token_type_ids": [0, 1, 1]}]
    batch = fixed_length_batch(rows, 2, 5, 0)
    assert batch["token_type_ids"].tolist() == [[0, 1, 1, 0, 0]] * 2
    assert "token_type_ids" not in fixed_length_batch(rows, 2, 5, 0, extra_inputs=())
    with pytest.raises(ValueError, match="token_type_ids has 2 values for 3 input_ids"):
        fixed_length_batch([{"input_ids": [5, 6, 7], "token_type_ids": [0, 1]}], 1, 5, 0)


def test_latency_draw_reads_a_dataset_column_and_each_size_takes_a_prefix_of_one_draw():
    from datasets import Dataset

    data = by_language(rows=12)
    columns = {lang: Dataset.from_list(rows) for lang, rows in data.items()}
    drawn = latency_sample(columns, 40)
    assert [row["input_ids"] for _, row in drawn] == [row["input_ids"] for _, row in latency_sample(data, 40)]
    assert latency_sample(data, 16) == latency_sample(data, 40)[:16]
