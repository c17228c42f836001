"""Latency, peak memory and parameter counts."""

import os

import pytest
import torch

from hf_earlyexit.evaluation.efficiency import (
    count_parameters,
    cpu_peak_bytes,
    describe_model,
    fixed_length_batch,
    measure_efficiency,
    measure_latency_ms,
    measure_peak_memory_mb,
)
from hf_earlyexit.evaluation.results import _validate_efficiency
from hf_earlyexit.modeling import XLMRobertaEarlyExitConfig, XLMRobertaForEarlyExit

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
