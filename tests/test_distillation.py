"""Distillation building blocks: losses, attention recomputation from captured Q/K, layer maps, arguments."""

import json

import pytest
import torch
from distill_helpers import as_dataset, mlm_batch, tiny_config, tiny_pair
from transformers import BertForMaskedLM, HfArgumentParser, PreTrainedTokenizerFast, XLMRobertaForMaskedLM

from hf_earlyexit.distillation import DistillationArguments, DistillationTrainer, resolve_layer_map
from hf_earlyexit.distillation.capture import EncoderCapture, attention_log_probs, head_mean_log_probs
from hf_earlyexit.distillation.losses import (
    attention_kl_head_mean,
    attention_mse_head_mean,
    attention_relation,
    hidden_cosine,
    hidden_mse,
    log_head_mean,
    logits_kl,
    logits_mse,
)
from hf_earlyexit.distillation.module import mlm_head, run_model

# ---- losses ----


def _attention(batch, heads, seq, generator, scale=3.0):
    return (torch.randn(batch, heads, seq, seq, generator=generator) * scale).log_softmax(-1)


def _cases(generator):
    """(name, loss(student, teacher, mask), make(student_or_teacher_index) -> tensor) with different shapes."""
    hidden = lambda: torch.randn(2, 6, 16, generator=generator)  # noqa: E731
    logits = lambda: torch.randn(2, 6, 11, generator=generator)  # noqa: E731
    return [
        ("hidden_mse", hidden_mse, hidden, hidden),
        ("hidden_cosine", hidden_cosine, hidden, hidden),
        (
            "kl_head_mean",
            attention_kl_head_mean,
            lambda: _attention(2, 3, 6, generator),
            lambda: _attention(2, 4, 6, generator),
        ),
        (
            "mse_head_mean",
            attention_mse_head_mean,
            lambda: _attention(2, 3, 6, generator),
            lambda: _attention(2, 4, 6, generator),
        ),
        (
            "relation",
            lambda s, t, m: attention_relation(s, t, m, relation_heads=4),
            lambda: tuple(torch.randn(2, 6, 48, generator=generator) for _ in range(3)),
            lambda: tuple(torch.randn(2, 6, 64, generator=generator) for _ in range(3)),
        ),
        ("logits_kl", lambda s, t, m: logits_kl(s, t, m, temperature=2.0), logits, logits),
        ("logits_mse", logits_mse, logits, logits),
    ]


def _mask():
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[1, 4:] = False
    return mask


@pytest.mark.parametrize("index", range(7))
def test_loss_zero_for_identical_positive_otherwise(index):
    generator = torch.Generator().manual_seed(index)
    name, loss, make_student, make_teacher = _cases(generator)[index]
    student, teacher = make_student(), make_teacher()
    same = make_teacher()
    assert loss(same, same, _mask()).abs().item() < 1e-6, name
    assert loss(student, teacher, _mask()).item() > 1e-3, name


@pytest.mark.parametrize("loss", [attention_kl_head_mean, attention_mse_head_mean])
def test_head_mean_losses_accept_maps_already_averaged_over_heads(loss):
    # The trainer passes (batch, 1, seq, seq) maps from `head_mean_log_probs`; averaging them again must change nothing.
    generator = torch.Generator().manual_seed(30)
    student, teacher, mask = _attention(2, 3, 6, generator), _attention(2, 4, 6, generator), _mask()
    averaged = loss(log_head_mean(student), log_head_mean(teacher), mask)
    torch.testing.assert_close(averaged, loss(student, teacher, mask))
    assert averaged.item() > 1e-3


def _pad(x, extra, value=0.0):
    """Append `extra` padded positions to every sequence axis (tokens, and keys of attention maps)."""
    if isinstance(x, tuple):
        return tuple(_pad(t, extra, value) for t in x)
    if x.dim() == 4:  # attention log-probs: padded keys get probability 0, padded query rows anything
        x = torch.cat([x, torch.full((*x.shape[:3], extra), float("-inf"))], dim=-1)
        return torch.cat([x, torch.randn(x.shape[0], x.shape[1], extra, x.shape[3]).log_softmax(-1)], dim=2)
    return torch.cat([x, torch.randn(x.shape[0], extra, *x.shape[2:]) * 50], dim=1)


@pytest.mark.parametrize("index", range(7))
def test_loss_unchanged_by_extra_padding(index):
    generator = torch.Generator().manual_seed(10 + index)
    name, loss, make_student, make_teacher = _cases(generator)[index]
    student, teacher, mask = make_student(), make_teacher(), _mask()
    padded_student, padded_teacher = _pad(student, 3), _pad(teacher, 3)
    padded_mask = torch.cat([mask, torch.zeros(2, 3, dtype=torch.bool)], dim=1)
    torch.testing.assert_close(
        loss(padded_student, padded_teacher, padded_mask), loss(student, teacher, mask), msg=name
    )


@pytest.mark.parametrize("index", range(7))
def test_loss_finite_in_bf16_for_extreme_values(index):
    generator = torch.Generator().manual_seed(20 + index)
    name, loss, make_student, make_teacher = _cases(generator)[index]

    def extreme(x):
        if isinstance(x, tuple):
            return tuple(extreme(t) for t in x)
        if x.dim() == 4:  # log-probs: from extreme scores, as the model would produce them in bf16
            return (x.exp() * 3e4).to(torch.bfloat16).float().log_softmax(-1).to(torch.bfloat16)
        return (x * 3e4).to(torch.bfloat16)

    value = loss(extreme(make_student()), extreme(make_teacher()), _mask())
    assert torch.isfinite(value), name
    assert value.dtype == torch.float32


def test_logit_kl_temperature_scaling_matches_definition():
    generator = torch.Generator().manual_seed(3)
    student, teacher = torch.randn(5, 7, generator=generator), torch.randn(5, 7, generator=generator)
    expected = torch.nn.functional.kl_div(
        (student / 2).log_softmax(-1), (teacher / 2).log_softmax(-1), log_target=True, reduction="batchmean"
    )
    torch.testing.assert_close(logits_kl(student, teacher, None, temperature=2.0), expected * 4)


# ---- capture and attention recomputation ----


@pytest.mark.parametrize("family", ["xlm-roberta", "bert"])
def test_recomputed_probs_equal_eager_attention(family):
    model_class = XLMRobertaForMaskedLM if family == "xlm-roberta" else BertForMaskedLM
    torch.manual_seed(0)
    eager = model_class(tiny_config(3, 64, 4, family, initializer_range=0.3)).eval()
    eager.config._attn_implementation = "eager"
    batch = mlm_batch(4, 10)
    with torch.no_grad(), EncoderCapture(eager, hidden_layers=[0, 1, 3], qkv_layers=[1, 3]) as capture:
        outputs = eager(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            output_attentions=True,
            output_hidden_states=True,
        )
    for layer in (1, 3):
        q, k = capture.qkv[layer]["query"], capture.qkv[layer]["key"]
        probs = attention_log_probs(q, k, 4, batch["attention_mask"]).exp()
        torch.testing.assert_close(probs, outputs.attentions[layer - 1], atol=1e-5, rtol=0)
        assert probs[1, :, :, -2:].abs().max() == 0  # padded keys get no attention
    for layer in (0, 1, 3):
        torch.testing.assert_close(capture.hidden[layer], outputs.hidden_states[layer])
    q, k, mask = capture.qkv[3]["query"], capture.qkv[3]["key"], batch["attention_mask"]
    fast = head_mean_log_probs(q, k, 4, mask)  # the trainer's path: fewer passes over the per-head maps
    exact = log_head_mean(attention_log_probs(q, k, 4, mask))
    valid = mask.bool()[:, None, None, :].expand_as(fast)
    torch.testing.assert_close(fast[valid], exact[valid], atol=1e-5, rtol=1e-5)
    assert sorted(capture.qkv) == [1, 3]  # only mapped layers are held


def test_attention_scores_of_bf16_projections_are_computed_in_fp32():
    """SDPA accumulates Q·Kᵀ in fp32; the targets must not round the scores to bf16 first."""
    generator = torch.Generator().manual_seed(0)
    query = (3 * torch.randn(2, 12, 64, generator=generator)).bfloat16()
    key = (3 * torch.randn(2, 12, 64, generator=generator)).bfloat16()
    mask = torch.ones(2, 12, dtype=torch.bool)
    mask[1, 9:] = False
    exact = attention_log_probs(query.float(), key.float(), 4, mask)
    got = attention_log_probs(query, key, 4, mask)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, exact, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        head_mean_log_probs(query, key, 4, mask), head_mean_log_probs(query.float(), key.float(), 4, mask)
    )


def test_sdpa_model_unchanged_by_capture():
    teacher, _ = tiny_pair()
    teacher.eval()
    batch = mlm_batch(4, 10)
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    with torch.no_grad():
        plain = teacher(**inputs).logits
        with EncoderCapture(teacher, hidden_layers=[2], qkv_layers=[2, 4]):
            captured = teacher(**inputs).logits
    assert teacher.config._attn_implementation == "sdpa"
    torch.testing.assert_close(captured, plain)
    assert not teacher.base_model.encoder.layer[1]._forward_hooks  # hooks removed on exit


def test_masked_lm_logits_only_at_masked_rows():
    teacher, _ = tiny_pair()
    teacher.eval()
    batch = mlm_batch(4, 10)
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    rows = batch["labels"] != -100
    with torch.no_grad():
        logits, ce = run_model(teacher, inputs, batch["labels"], rows, need_logits=True, need_ce=True)
        full = teacher(**inputs, labels=batch["labels"])
    assert logits.shape == (int(rows.sum()), teacher.config.vocab_size)
    torch.testing.assert_close(logits, full.logits[rows])
    torch.testing.assert_close(ce, full.loss)
    assert mlm_head(teacher) is teacher.lm_head


# ---- layer maps ----


def test_layer_map_presets_for_large_to_base():
    assert resolve_layer_map("uniform", 12, 24) == [(i, 2 * i) for i in range(1, 13)]
    assert resolve_layer_map("skip", 12, 24) == [(i, 2 * i - 1) for i in range(1, 13)]
    assert resolve_layer_map("uniform_with_embeddings", 12, 24)[0] == (0, 0)
    assert resolve_layer_map("last", 12, 24) == [(12, 24)]
    assert resolve_layer_map("first", 12, 24) == [(i, i) for i in range(1, 13)]
    assert resolve_layer_map("top", 12, 24) == [(i, i + 12) for i in range(1, 13)]
    assert resolve_layer_map("uniform", 3, 4) == [(1, 1), (2, 2), (3, 4)]
    assert resolve_layer_map([[0, 0], [2, 4]], 2, 4) == [(0, 0), (2, 4)]


@pytest.mark.parametrize(
    "spec, message",
    [
        ("diagonal", "not a known preset"),
        ([[3, 4]], "student layer 3 is out of range"),
        ([[1, 5]], "teacher layer 5 is out of range"),
        ([[1, 2], [1, 2]], "lists a pair twice"),
        ([[1, 2, 3]], "pair of integers"),
    ],
)
def test_layer_map_errors(spec, message):
    with pytest.raises(ValueError, match=message):
        resolve_layer_map(spec, 2, 4)


# ---- arguments ----


def test_arguments_from_yaml_and_flags(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        "output_dir: out\n"
        "layer_map: [[1, 2], [2, 4]]\n"
        "attention_loss: relation\n"
        "relation_heads: 16\n"
        "stages:\n"
        "  - {name: intermediate, losses: [hidden, attention], train: ['top:1'], steps: 10}\n"
        "  - {name: all, losses: [hidden, attention]}\n"
    )
    parser = HfArgumentParser(DistillationArguments)
    (args,) = parser.parse_yaml_file(str(recipe))
    assert args.layer_map == [[1, 2], [2, 4]]
    assert args.stages[0]["train"] == ["top:1"]
    assert args.relation_heads == 16
    (flags,) = parser.parse_args_into_dataclasses(
        ["--output_dir", "out", "--layer_map", "[[2, 4]]", "--stages", json.dumps([{"losses": ["hidden"]}])]
    )
    assert flags.layer_map == [[2, 4]] and flags.stages == [{"losses": ["hidden"]}]
    (preset,) = parser.parse_args_into_dataclasses(["--output_dir", "out", "--layer_map", "skip"])
    assert preset.layer_map == "skip"
    nulls = tmp_path / "nulls.yaml"  # YAML null means off, as "none" does
    nulls.write_text("output_dir: out\nattention_loss: null\nlogit_loss: null\nhard_label_weight: 1.0\n")
    (off,) = parser.parse_yaml_file(str(nulls))
    assert (off.attention_loss, off.logit_loss) == ("none", "none") and list(off.enabled_losses()) == ["hidden", "ce"]
    no_hidden = DistillationArguments(output_dir="out", hidden_loss=None, hidden_projection=None)
    assert (no_hidden.hidden_loss, no_hidden.hidden_projection) == ("none", "none")


def test_defaults_are_the_thesis_recipe():
    args = DistillationArguments(output_dir="out")
    assert (args.layer_map, args.hidden_loss, args.attention_loss, args.num_partitions) == (
        "uniform",
        "mse",
        "kl_head_mean",
        5,
    )
    assert args.enabled_losses() == ("hidden", "attention")


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"hidden_loss": "l1"}, "hidden_loss='l1' is not supported"),
        ({"attention_loss": "kl"}, "attention_loss='kl' is not supported"),
        ({"logit_loss": "ce"}, "logit_loss='ce' is not supported"),
        ({"layer_map": "diagonal"}, "layer_map='diagonal' is not a known preset"),
        ({"temperature": 0.0}, "temperature=0.0 is not positive"),
        ({"hidden_loss_weight": -1.0}, "hidden_loss_weight=-1.0 is negative"),
        ({"stages": [{"losses": ["hidden", "contrastive"]}]}, "unknown loss 'contrastive'"),
        ({"stages": [{"losses": ["logits"]}]}, "uses loss 'logits', which is switched off"),
        ({"stages": [{"losses": ["hidden"]}, {"losses": ["attention"]}]}, "has no steps"),
        ({"stages": [{"losses": ["hidden"], "train": ["bottom:2"]}]}, "train selector 'bottom:2' is not valid"),
        ({"stages": "[{"}, "stages='\\[{' is not valid JSON"),
        ({"hidden_loss": "none", "attention_loss": "none"}, "every loss is off"),
    ],
)
def test_bad_arguments_fail_with_one_line(overrides, message):
    with pytest.raises(ValueError, match=message) as error:
        DistillationArguments(output_dir="out", **overrides)
    assert "\n" not in str(error.value)


# ---- bad input against the models: fails before training ----


def _word_level_tokenizer(words):
    from tokenizers import Tokenizer, models

    vocab = {word: i for i, word in enumerate(words)}
    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token=words[0])))


@pytest.mark.parametrize(
    "overrides, pair_overrides, message",
    [
        ({"layer_map": [[1, 5]]}, {}, "teacher layer 5 is out of range"),
        ({"layer_map": [[3, 4]]}, {}, "student layer 3 is out of range"),
        ({"attention_loss": "relation", "relation_heads": 5}, {}, "relation_heads=5 must divide both"),
        ({"hidden_projection": "none"}, {}, "needs a projection"),
        ({"attention_layer_map": [[0, 0]]}, {}, "uses layer 0"),
        ({"stages": [{"losses": ["hidden"], "train": ["top:3"]}]}, {}, "top:3' is out of range"),
        ({}, {"student_vocab": 120}, "vocabulary size 120 differs from the teacher's 100"),
    ],
)
def test_bad_model_combinations_fail_before_training(tmp_path, overrides, pair_overrides, message):
    teacher, student = tiny_pair()
    if "student_vocab" in pair_overrides:
        student = XLMRobertaForMaskedLM(tiny_config(2, 48, 3, vocab_size=pair_overrides["student_vocab"]))
    args = DistillationArguments(output_dir=str(tmp_path / "run"), report_to=[], **overrides)
    with pytest.raises(ValueError, match=message) as error:
        DistillationTrainer(model=student, teacher_model=teacher, args=args, train_dataset=as_dataset(mlm_batch()))
    assert "\n" not in str(error.value)
    assert not (tmp_path / "run").exists()  # nothing written before the error


def test_same_size_different_tokenizers_fail(tmp_path):
    teacher, student = tiny_pair()
    words = [f"w{i}" for i in range(100)]
    args = DistillationArguments(output_dir=str(tmp_path / "run"), report_to=[])
    with pytest.raises(ValueError, match="tokenizers differ"):
        DistillationTrainer(
            model=student,
            teacher_model=teacher,
            args=args,
            processing_class=_word_level_tokenizer(words),
            teacher_processing_class=_word_level_tokenizer(words[:50] + ["other"] + words[51:]),
        )


def test_unknown_model_family_fails():
    from transformers import DistilBertConfig, DistilBertForMaskedLM

    teacher, _ = tiny_pair()
    student = DistilBertForMaskedLM(DistilBertConfig(vocab_size=100, dim=32, n_layers=1, n_heads=2, hidden_dim=64))
    with pytest.raises(ValueError, match="no encoder layout known for model_type 'distilbert'"):
        DistillationTrainer(
            model=student, teacher_model=teacher, args=DistillationArguments(output_dir="out", report_to=[])
        )


def test_projection_none_is_fine_without_hidden_loss(tmp_path):
    teacher, student = tiny_pair()
    args = DistillationArguments(output_dir=str(tmp_path), report_to=[], hidden_loss="none", hidden_projection="none")
    trainer = DistillationTrainer(model=student, teacher_model=teacher, args=args)
    assert len(trainer.model.projections) == 0 and trainer.attention_pairs == [(1, 2), (2, 4)]


@pytest.mark.parametrize("name, kind", [("ddp", "MULTI_GPU"), ("fsdp", "FSDP"), ("deepspeed_zero2", "DEEPSPEED")])
def test_shipped_accelerate_configs_load(name, kind):
    from pathlib import Path

    from accelerate.commands.config.config_args import ClusterConfig

    path = Path(__file__).resolve().parents[1] / "examples" / "configs" / "accelerate" / f"{name}.yaml"
    config = ClusterConfig.from_yaml_file(str(path))
    assert config.distributed_type.value == kind and config.num_machines == 1
