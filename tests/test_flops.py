"""Analytic FLOPs against torch.utils.flop_counter and the XLM-R Base reference number."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from hf_earlyexit import (
    BertEarlyExitConfig,
    BertForEarlyExitTokenClassification,
    XLMRobertaEarlyExitConfig,
    XLMRobertaForEarlyExit,
    XLMRobertaForEarlyExitTokenClassification,
    flops_per_example,
    mean_flops,
)

TINY = dict(
    vocab_size=100, hidden_size=32, num_hidden_layers=4, num_attention_heads=4, intermediate_size=64, num_labels=5
)


def counted_flops(model, seq_len, exit_layer):
    input_ids = torch.randint(3, 100, (1, seq_len))
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        output = model(input_ids, forced_exit_layer=exit_layer)
    assert output.exit_layer.flatten()[0].item() == exit_layer
    return counter.get_total_flops()


@pytest.mark.parametrize(
    "model_class,config_class,exit_head,pooling",
    [
        (XLMRobertaForEarlyExit, XLMRobertaEarlyExitConfig, None, "first"),
        (XLMRobertaForEarlyExit, XLMRobertaEarlyExitConfig, "linear", "first"),
        # Mean pooling is a masked sum (elementwise work): neither the counter nor the analytic model counts it.
        (XLMRobertaForEarlyExit, XLMRobertaEarlyExitConfig, None, "mean"),
        (XLMRobertaForEarlyExitTokenClassification, XLMRobertaEarlyExitConfig, None, "first"),
        (BertForEarlyExitTokenClassification, BertEarlyExitConfig, "pooler", "first"),
    ],
)
def test_flops_per_example_is_within_one_percent_of_torch_flop_counter(model_class, config_class, exit_head, pooling):
    # torch's counter does not see SDPA on CPU, so the model is counted with eager attention.
    config = config_class(**TINY, exit_layers=[1, 3], exit_head=exit_head, pooling=pooling)
    model = model_class._from_config(config, attn_implementation="eager").eval()
    for seq_len in (3, 16, 50):
        for exit_layer in (1, 3, 4):
            counted = counted_flops(model, seq_len, exit_layer)
            analytic = flops_per_example(model.config, seq_len, exit_layer)
            assert analytic == pytest.approx(counted, rel=0.01), (seq_len, exit_layer)


def test_full_depth_without_exit_heads_matches_the_no_exit_fast_path():
    config = XLMRobertaEarlyExitConfig(**TINY)
    model = XLMRobertaForEarlyExit._from_config(config, attn_implementation="eager").eval()
    input_ids = torch.randint(3, 100, (1, 20))
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(input_ids)  # threshold 0: no exit head runs
    assert flops_per_example(config, 20, include_exit_heads=False) == pytest.approx(counter.get_total_flops(), rel=0.01)
    assert flops_per_example(config, 20) > flops_per_example(config, 20, include_exit_heads=False)


def test_exits_switched_off_by_a_per_exit_threshold_of_zero_count_no_head():
    # Pooler heads on every token: one head is ~3% of this model's forward, so a wrongly counted one shows.
    thresholds = [1e-9, 0.0, 1e-9, 0.0]  # heads at layers 1 and 3 run; nothing is that certain, so none leaves
    config = XLMRobertaEarlyExitConfig(**TINY, exit_head="pooler", exit_threshold=thresholds)
    model = XLMRobertaForEarlyExitTokenClassification._from_config(config, attn_implementation="eager").eval()
    input_ids = torch.randint(3, 100, (1, 20))
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        output = model(input_ids)
    assert bool((output.exit_layer == 4).all())
    assert flops_per_example(model.config, 20) == pytest.approx(counter.get_total_flops(), rel=0.005)


def test_xlm_roberta_base_encoder_is_22_3_gflop_at_128_tokens():
    base = XLMRobertaEarlyExitConfig(
        vocab_size=250002, hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072
    )
    encoder_only = flops_per_example(base, 128, include_exit_heads=False)
    assert encoder_only / 1e9 == pytest.approx(22.3, rel=0.01)
    # the twelve pooler-style exit heads add ~0.06% of a layer each
    assert flops_per_example(base, 128) / encoder_only == pytest.approx(1.0, abs=0.001)
    assert flops_per_example(base, 128, exit_layer=6) / encoder_only == pytest.approx(0.5, abs=0.001)


def test_token_task_is_read_from_architectures_or_given():
    config = XLMRobertaEarlyExitConfig(**TINY)
    assert config.architectures is None
    sequence = flops_per_example(config, 10)
    token = flops_per_example(config, 10, task="token")
    XLMRobertaForEarlyExitTokenClassification(config)  # a model records itself, as save_pretrained would
    assert config.architectures == ["XLMRobertaForEarlyExitTokenClassification"]
    assert flops_per_example(config, 10) == token != sequence


def test_mean_flops_averages_per_example_flops():
    config = XLMRobertaEarlyExitConfig(**TINY, exit_layers=[2])
    lengths, layers = [10, 20, 7], [2, 4, 2]
    expected = sum(flops_per_example(config, n, e) for n, e in zip(lengths, layers)) / 3
    assert mean_flops(config, lengths, layers) == pytest.approx(expected)
    assert mean_flops(config, torch.tensor(lengths), torch.tensor(layers)) == pytest.approx(expected)


def test_bad_flops_arguments_get_one_line_errors():
    config = XLMRobertaEarlyExitConfig(**TINY, exit_layers=[2])
    with pytest.raises(ValueError, match=r"exit_layer=3; expected one of the exit layers \[2, 4\]"):
        flops_per_example(config, 10, 3)
    with pytest.raises(ValueError, match=r"seq_len=0; expected an int >= 1"):
        flops_per_example(config, 0)
    with pytest.raises(ValueError, match=r"task='words'; expected one of \('sequence', 'token'\)"):
        flops_per_example(config, 10, task="words")
    with pytest.raises(ValueError, match=r"exit_layers has layers \[1\]; expected exit layers \[2, 4\]"):
        mean_flops(config, [5, 6], [1, 2])
    with pytest.raises(ValueError, match=r"exit_layers has shape \(3,\) and seq_lens \(2,\)"):
        mean_flops(config, [5, 6], [2, 2, 4])
