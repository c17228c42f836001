"""Exit criteria as pure tensor functions and select_exits."""

import math

import pytest
import torch

from hf_earlyexit.modeling.criteria import (
    exit_step,
    max_probability,
    normalized_entropy,
    per_exit_thresholds,
    select_exits,
)


def test_normalized_entropy_is_one_for_uniform_and_zero_for_certain():
    logits = torch.tensor([[0.0, 0.0, 0.0], [50.0, 0.0, 0.0], [1.0, 2.0, 3.0]])
    entropy = normalized_entropy(logits)
    probs = torch.softmax(logits[2], -1)
    expected = float(-(probs * probs.log()).sum() / math.log(3))
    assert entropy[0].item() == pytest.approx(1.0, abs=1e-6)
    assert entropy[1].item() == pytest.approx(0.0, abs=1e-6)
    assert entropy[2].item() == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_criteria_stay_finite_for_extreme_logits_in_low_precision(dtype):
    logits = torch.tensor([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4], [1e4, 1e4, -1e4], [0.0, -torch.inf, 1.0]])
    logits = logits.to(dtype)
    entropy = normalized_entropy(logits)
    top = max_probability(logits)
    assert bool(torch.isfinite(entropy).all()) and bool(torch.isfinite(top).all())
    assert entropy[0].item() == pytest.approx(0.0, abs=1e-6)
    assert entropy[1].item() == pytest.approx(1.0, abs=1e-3)
    assert entropy[2].item() == pytest.approx(math.log(2) / math.log(3), abs=1e-3)
    assert top[0].item() == pytest.approx(1.0) and top[2].item() == pytest.approx(0.5, abs=1e-3)


def test_max_probability_matches_softmax_max():
    logits = torch.randn(5, 4)
    torch.testing.assert_close(max_probability(logits), torch.softmax(logits, -1).amax(-1))


def confident(label, num_labels=3, strength=10.0):
    logits = torch.zeros(num_labels)
    logits[label] = strength
    return logits


def test_select_exits_threshold_zero_keeps_full_depth_and_above_one_takes_the_first_exit():
    exit_logits = [torch.randn(6, 3) for _ in range(3)]
    logits, layer = select_exits(exit_logits, [2, 4, 6], "entropy", 0.0)
    assert layer.tolist() == [6] * 6 and torch.equal(logits, exit_logits[-1])
    logits, layer = select_exits(exit_logits, [2, 4, 6], "entropy", 1.01)
    assert layer.tolist() == [2] * 6 and torch.equal(logits, exit_logits[0])
    logits, layer = select_exits(exit_logits, [2, 4, 6], "max_prob", 1.01)
    assert layer.tolist() == [2] * 6


def test_select_exits_entropy_picks_the_first_exit_strictly_below_its_threshold():
    uniform = torch.zeros(3)
    exit_logits = [
        torch.stack([confident(0), uniform, uniform]),
        torch.stack([uniform, confident(1), uniform]),
        torch.stack([confident(2), confident(2), confident(2)]),
    ]
    logits, layer = select_exits(exit_logits, [1, 2, 3], "entropy", 0.5)
    assert layer.tolist() == [1, 2, 3]
    assert logits.argmax(-1).tolist() == [0, 1, 2]
    # per-exit thresholds: the first exit disabled
    _, layer = select_exits(exit_logits, [1, 2, 3], "entropy", [0.0, 0.5, 0.0])
    assert layer.tolist() == [3, 2, 3]


def test_select_exits_max_prob_threshold_is_one_minus_the_required_confidence():
    # top probabilities 0.8 and 0.95 at the first exit
    first = torch.log(torch.tensor([[0.8, 0.1, 0.1], [0.95, 0.03, 0.02]]))
    exit_logits = [first, torch.zeros(2, 3)]
    _, layer = select_exits(exit_logits, [1, 2], "max_prob", 0.1)  # leave when max prob > 0.9
    assert layer.tolist() == [2, 1]
    _, layer = select_exits(exit_logits, [1, 2], "max_prob", 0.25)
    assert layer.tolist() == [1, 1]


def test_select_exits_patience_counts_consecutive_unchanged_predictions():
    # predictions per exit for 3 examples: [0,0,0,0,0], [0,1,1,1,1], [0,1,0,1,0]
    sequences = [[0, 0, 0, 0, 0], [0, 1, 1, 1, 1], [0, 1, 0, 1, 0]]
    exit_logits = [torch.stack([confident(seq[k]) for seq in sequences]) for k in range(5)]
    layers = [1, 2, 3, 4, 5]
    _, layer = select_exits(exit_logits, layers, "patience", 1.0, patience=1)
    assert layer.tolist() == [2, 3, 5]
    _, layer = select_exits(exit_logits, layers, "patience", 1.0, patience=2)
    assert layer.tolist() == [3, 4, 5]
    _, layer = select_exits(exit_logits, layers, "patience", 0.0, patience=1)  # threshold 0: never early
    assert layer.tolist() == [5, 5, 5]


def test_select_exits_tokens_leave_together_when_every_real_token_may():
    uniform = torch.zeros(3)
    # 2 sequences x 3 tokens; sequence 0 has a pad token that is uncertain, sequence 1 has a real uncertain token
    first = torch.stack(
        [torch.stack([confident(0), confident(1), uniform]), torch.stack([confident(0), uniform, confident(1)])]
    )
    exit_logits = [first, torch.zeros(2, 3, 3)]
    real_tokens = torch.tensor([[1, 1, 0], [1, 1, 1]])
    logits, layer = select_exits(exit_logits, [1, 2], "entropy", 0.5, real_tokens=real_tokens)
    assert layer.tolist() == [[1, 1, 1], [2, 2, 2]]
    assert torch.equal(logits[0], first[0]) and torch.equal(logits[1], exit_logits[1][1])


def test_exit_step_carries_patience_state_without_host_sync_or_exceptions():
    logits = torch.stack([confident(0), confident(1)])
    leave, state = exit_step("patience", logits, 1.0, patience=1)
    assert leave.tolist() == [False, False]
    leave, state = exit_step("patience", torch.stack([confident(0), confident(2)]), 1.0, patience=1, state=state)
    assert leave.tolist() == [True, False] and state[1].tolist() == [1, 0]


@pytest.mark.parametrize(
    "threshold,message",
    [
        (-0.1, r"exit_threshold=-0.1; expected values >= 0 \(0.0 never exits early\)"),
        ([0.1, -2, 0.0], r"exit_threshold=\[0.1, -2, 0.0\] has negative values \[-2.0\]; expected values >= 0"),
        ([0.1, 0.2], r"exit_threshold has 2 values \[0.1, 0.2\]; expected one float or one per exit layer \(3\)"),
        ("high", r"exit_threshold='high'; expected a float >= 0 or a list of one per exit layer"),
    ],
)
def test_bad_thresholds_get_one_line_errors(threshold, message):
    with pytest.raises(ValueError, match=message):
        per_exit_thresholds(threshold, 3)


def test_select_exits_rejects_unknown_criterion_and_mismatched_lengths():
    with pytest.raises(ValueError, match=r"exit_criterion='margin'; expected one of"):
        select_exits([torch.zeros(1, 2)], [1], "margin", 0.5)
    with pytest.raises(ValueError, match=r"got 1 exit logits for 2 exit layers \[1, 2\]"):
        select_exits([torch.zeros(1, 2)], [1, 2], "entropy", 0.5)
