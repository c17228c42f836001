"""Token-level exit (exit_granularity="token"): equivalences, batch independence, frozen keys/values, packed compute,
window semantics, FLOPs against torch's counter, training for tokens, and the per-threshold token sweep."""

import pytest
import torch
from datasets import Dataset
from torch.utils.flop_counter import FlopCounterMode
from transformers import DataCollatorForTokenClassification, PreTrainedTokenizerFast, XLMRobertaForTokenClassification

from hf_earlyexit import (
    BertEarlyExitConfig,
    BertForEarlyExitTokenClassification,
    XLMRobertaEarlyExitConfig,
    XLMRobertaForEarlyExitTokenClassification,
    flops_per_example,
)
from hf_earlyexit.evaluation.flops import flops_token_exit, token_exit_flops_per_row
from hf_earlyexit.evaluation.sweep import evaluate_languages, sweep_token_exits, token_granularity
from hf_earlyexit.modeling.criteria import normalized_entropy, window_any, window_leaves
from hf_earlyexit.training import EarlyExitTrainer, EarlyExitTrainingArguments

VOCAB, PAD, LAYERS = 100, 1, 4
FAMILIES = {
    "xlm-roberta": (XLMRobertaEarlyExitConfig, XLMRobertaForEarlyExitTokenClassification),
    "bert": (BertEarlyExitConfig, BertForEarlyExitTokenClassification),
}
TAGS = ("O", "B-PER", "I-PER", "B-LOC", "I-LOC")


def tiny_config(family="xlm-roberta", **overrides):
    fields = dict(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=LAYERS,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        pad_token_id=PAD,
        num_labels=len(TAGS),
        id2label=dict(enumerate(TAGS)),
        label2id={tag: i for i, tag in enumerate(TAGS)},
        # A wide init spreads the random heads' confidences, so thresholds split tokens across exits.
        initializer_range=0.3,
        exit_granularity="token",
    )
    fields.update(overrides)
    return FAMILIES[family][0](**fields)


def tiny_model(family="xlm-roberta", seed=0, attn="sdpa", **overrides):
    torch.manual_seed(seed)
    config = tiny_config(family, **overrides)
    return FAMILIES[family][1]._from_config(config, attn_implementation=attn).eval()


def padded_batch(lengths, seed=0):
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.full((len(lengths), max(lengths)), PAD, dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    for row, length in enumerate(lengths):
        input_ids[row, :length] = torch.randint(3, VOCAB, (length,), generator=generator)
        input_ids[row, 0] = 0
        attention_mask[row, :length] = 1
    return input_ids, attention_mask


LENGTHS = [9, 4, 12, 7, 12, 5]


def run(model, input_ids, attention_mask, **kwargs):
    with torch.no_grad():
        return model(input_ids, attention_mask=attention_mask, **kwargs)


def mixing_threshold(model, input_ids, attention_mask):
    """A threshold that lets some but not all tokens leave at each intermediate exit."""
    exit_logits = run(model, input_ids, attention_mask, output_exit_logits=True).exit_logits
    entropy = torch.cat([normalized_entropy(logits)[attention_mask.bool()] for logits in exit_logits[:-1]])
    return float(entropy.quantile(0.4))


# ------------------------------------------------------------------------------------------------ equivalences
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_threshold_zero_and_nobody_leaving_equal_the_full_depth_model(family, attn):
    model = tiny_model(family, attn=attn)
    input_ids, attention_mask = padded_batch(LENGTHS)
    real = attention_mask.bool()
    full = run(model, input_ids, attention_mask, exit_threshold=0.0)
    # Tiny positive thresholds make the token path run (heads evaluated) while no token is certain enough.
    token_path = run(model, input_ids, attention_mask, exit_threshold=[1e-12] * (LAYERS - 1) + [0.0])
    forced_last = run(model, input_ids, attention_mask, forced_exit_layer=torch.full(input_ids.shape, LAYERS))
    plain = XLMRobertaForTokenClassification if family == "xlm-roberta" else None
    if plain is not None:
        reference = plain._from_config(model.config, attn_implementation=attn).eval()
        reference.load_state_dict(model.state_dict(), strict=False)
        torch.testing.assert_close(run(reference, input_ids, attention_mask).logits, full.logits, atol=1e-5, rtol=0)
    assert bool((full.exit_layer == LAYERS).all()) and bool((token_path.exit_layer == LAYERS).all())
    for output in (token_path, forced_last):
        torch.testing.assert_close(output.logits[real], full.logits[real], atol=1e-5, rtol=0)
        assert bool((output.logits[~real] == 0).all())  # padding gets no prediction


@pytest.mark.parametrize("family", FAMILIES)
def test_everything_leaving_at_the_first_exit_equals_its_head_on_that_layer(family):
    model = tiny_model(family, exit_layers=[2, 4])
    input_ids, attention_mask = padded_batch(LENGTHS)
    real = attention_mask.bool()
    early = run(model, input_ids, attention_mask, exit_threshold=1.01)
    hidden = run(model, input_ids, attention_mask, exit_threshold=0.0, output_hidden_states=True).hidden_states
    with torch.no_grad():
        expected = model.exit_heads[0](hidden[2])
    assert bool((early.exit_layer == 2).all())
    torch.testing.assert_close(early.logits[real], expected[real], atol=1e-5, rtol=0)


@pytest.mark.parametrize("window", [1, 3])
def test_tokens_exit_layers_and_logits_do_not_depend_on_other_sequences(window):
    model = tiny_model(exit_window=window)
    input_ids, attention_mask = padded_batch(LENGTHS, seed=3)
    threshold = mixing_threshold(model, input_ids, attention_mask)
    batched = run(model, input_ids, attention_mask, exit_threshold=threshold)
    layers = batched.exit_layer[attention_mask.bool()]
    assert len(set(layers.tolist())) >= 3, "the threshold should spread tokens over several exits"
    for row, length in enumerate(LENGTHS):
        alone = run(
            model, input_ids[row : row + 1, :length], attention_mask[row : row + 1, :length], exit_threshold=threshold
        )
        assert torch.equal(alone.exit_layer[0], batched.exit_layer[row, :length])
        torch.testing.assert_close(alone.logits[0], batched.logits[row, :length], atol=1e-5, rtol=0)
        if length < input_ids.shape[1]:  # padding reports the row's deepest layer
            assert bool((batched.exit_layer[row, length:] == alone.exit_layer[0].max()).all())


def test_all_exits_eval_path_reports_the_batched_token_decision():
    model = tiny_model(exit_window=3)
    input_ids, attention_mask = padded_batch(LENGTHS, seed=4)
    threshold = mixing_threshold(model, input_ids, attention_mask)
    batched = run(model, input_ids, attention_mask, exit_threshold=threshold)
    everything = run(model, input_ids, attention_mask, exit_threshold=threshold, output_exit_logits=True)
    with_grad = model(input_ids, attention_mask=attention_mask, exit_threshold=threshold, output_exit_logits=True)
    for output in (everything, with_grad):  # with autograd on, the token path must not write into saved tensors
        assert torch.equal(output.exit_layer, batched.exit_layer)
        torch.testing.assert_close(output.logits, batched.logits, atol=1e-6, rtol=0)
    with_grad.logits[attention_mask.bool()].sum().backward()
    assert model.roberta.encoder.layer[-1].attention.self.query.weight.grad is not None
    assert len(everything.exit_logits) == LAYERS and everything.exit_logits[0].shape == (*input_ids.shape, len(TAGS))


# --------------------------------------------------------------------------------- frozen keys, packed compute
def test_frozen_tokens_stay_keys_and_values_and_only_active_tokens_are_computed():
    model = tiny_model()
    input_ids, attention_mask = padded_batch([10])
    forced = torch.full((1, 10), LAYERS)
    frozen = 3
    forced[0, frozen] = 1
    forced[0, 6] = 2

    def perturb_frozen_token(module, args, output):
        output = output.clone()  # layer 1: every token active, packed in position order (one row, no padding)
        output[frozen] += 1.0
        return output

    reference = run(model, input_ids, attention_mask, forced_exit_layer=forced)
    handle = model.roberta.encoder.layer[0].output.register_forward_hook(perturb_frozen_token)
    try:
        perturbed = run(model, input_ids, attention_mask, forced_exit_layer=forced)
    finally:
        handle.remove()
    others = [i for i in range(10) if i != frozen]
    # The frozen token's state is only read as key/value by layers 2-4, yet every active token's output moves.
    differences = (perturbed.logits[0, others] - reference.logits[0, others]).abs().amax(dim=-1)
    assert bool((differences > 1e-4).all()), differences

    rows_seen = {}

    def count_rows(name):
        def hook(module, args):
            rows_seen.setdefault(name, []).append(args[0].reshape(-1, args[0].shape[-1]).shape[0])

        return hook

    handles = []
    for number, layer in enumerate(model.roberta.encoder.layer, start=1):
        for part, module in (("query", layer.attention.self.query), ("key", layer.attention.self.key)):
            handles.append(module.register_forward_pre_hook(count_rows(f"{part}{number}")))
        handles.append(layer.intermediate.register_forward_pre_hook(count_rows(f"ffn{number}")))
    try:
        run(model, input_ids, attention_mask, forced_exit_layer=forced)
    finally:
        for handle in handles:
            handle.remove()
    active = [int((forced >= layer).sum()) for layer in range(1, LAYERS + 1)]  # [10, 9, 8, 8]
    assert [rows_seen[f"query{n}"][0] for n in range(1, LAYERS + 1)] == active
    assert [rows_seen[f"ffn{n}"][0] for n in range(1, LAYERS + 1)] == active
    assert [rows_seen[f"key{n}"][0] for n in range(1, LAYERS + 1)] == [10] * LAYERS  # keys: every token


def test_rows_whose_tokens_all_left_are_removed_and_forced_layers_are_honoured():
    model = tiny_model(exit_layers=[1, 2, 4])
    input_ids, attention_mask = padded_batch([6, 6, 6])
    forced = torch.tensor([[1] * 6, [2, 1, 4, 1, 2, 2], [1, 1, 1, 1, 1, 2]])
    keys_per_layer = []
    handles = [
        layer.attention.self.key.register_forward_pre_hook(lambda m, args: keys_per_layer.append(args[0].shape[0]))
        for layer in model.roberta.encoder.layer
    ]
    try:
        output = run(model, input_ids, attention_mask, forced_exit_layer=forced)
    finally:
        for handle in handles:
            handle.remove()
    assert torch.equal(output.exit_layer, forced)
    assert keys_per_layer == [3, 2, 1, 1]  # running rows per layer
    with pytest.raises(ValueError, match=r"forced_exit_layer has layers \[3\]; expected exit layers \[1, 2, 4\]"):
        run(model, input_ids, attention_mask, forced_exit_layer=torch.full((3, 6), 3))
    with pytest.raises(ValueError, match=r"forced_exit_layer has shape \(3, 5\); expected an int, shape \(3,\)"):
        run(model, input_ids, attention_mask, forced_exit_layer=torch.ones(3, 5, dtype=torch.long))


# ---------------------------------------------------------------------------------------------------- windows
def test_window_any_covers_centred_windows_clipped_at_the_ends():
    flags = torch.tensor([[False, False, True, False, False, False]])
    assert window_any(flags, 1).tolist() == flags.tolist()
    assert window_any(flags, 3).tolist() == [[False, True, True, True, False, False]]
    assert window_any(flags, 2).tolist() == [[False, True, True, False, False, False]]  # even windows lean right
    assert window_any(torch.tensor([[True, False, False]]), 5).tolist() == [[True, True, True]]


def test_window_leaves_ignores_padding_and_tokens_that_already_left():
    may_leave = torch.tensor([[True, False, True, True, True, False]])
    active = torch.tensor([[True, True, True, True, True, False]])  # the last position is padding
    assert window_leaves(may_leave, active, 1).tolist() == [[True, False, True, True, True, False]]
    assert window_leaves(may_leave, active, 3).tolist() == [[False, False, False, True, True, False]]
    gone = active.clone()
    gone[0, 1] = False  # the uncertain token left at an earlier exit: it no longer holds its neighbours
    assert window_leaves(may_leave, gone, 3).tolist() == [[True, False, True, True, True, False]]


def test_model_window_rule_at_the_first_exit_is_the_maximum_entropy_of_the_window():
    # Before any token leaves, the batched path's states equal the full model's, so the first exit's decision
    # can be checked against the entropies of the all-exits forward.
    model = tiny_model(exit_layers=[1, 4], exit_window=3)
    input_ids, attention_mask = padded_batch(LENGTHS, seed=5)
    real = attention_mask.bool()
    entropy = normalized_entropy(run(model, input_ids, attention_mask, output_exit_logits=True).exit_logits[0])
    entropy = entropy.masked_fill(~real, 0.0)
    window_max = torch.nn.functional.max_pool1d(entropy[:, None], 3, stride=1, padding=1)[:, 0]
    threshold = float(entropy[real].median())
    output = run(model, input_ids, attention_mask, exit_threshold=threshold)
    expected = real & (window_max < threshold)
    assert 0 < int(expected.sum()) < int(real.sum())
    assert torch.equal((output.exit_layer == 1) & real, expected)


@pytest.mark.parametrize("criterion", ["max_prob", "patience"])
def test_other_criteria_work_per_token(criterion):
    model = tiny_model(exit_criterion=criterion, exit_patience=1)
    input_ids, attention_mask = padded_batch(LENGTHS, seed=2)
    output = run(model, input_ids, attention_mask, exit_threshold=0.9)
    layers = output.exit_layer[attention_mask.bool()]
    if criterion == "patience":
        assert int(layers.min()) >= 2  # patience 1 needs two agreeing exits
    assert int(layers.min()) < LAYERS
    for row, length in enumerate(LENGTHS):
        alone = run(
            model, input_ids[row : row + 1, :length], attention_mask[row : row + 1, :length], exit_threshold=0.9
        )
        assert torch.equal(alone.exit_layer[0], output.exit_layer[row, :length])


# ------------------------------------------------------------------------------------------------------ FLOPs
@pytest.mark.parametrize("family", FAMILIES)
def test_flops_token_exit_matches_torch_flop_counter_on_the_token_forward(family):
    model = tiny_model(family, attn="eager", exit_layers=[1, 3])  # the counter cannot see SDPA on CPU
    generator = torch.Generator().manual_seed(0)
    for seq_len in (5, 23, 40):
        input_ids = torch.randint(3, VOCAB, (1, seq_len), generator=generator)
        forced = torch.tensor([1, 3, 4])[torch.randint(0, 3, (1, seq_len), generator=generator)]
        forced[0, 0] = 4
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            output = model(input_ids, forced_exit_layer=forced)
        assert torch.equal(output.exit_layer, forced)
        analytic = flops_token_exit(model.config, seq_len, forced[0])
        assert analytic == pytest.approx(counter.get_total_flops(), rel=0.01), seq_len


def test_flops_token_exit_equals_flops_per_example_when_every_token_leaves_together():
    config = tiny_config(exit_layers=[1, 3])
    for seq_len in (1, 7, 128):
        for layer in (1, 3, 4):
            for heads in (True, False):
                expected = flops_per_example(config, seq_len, layer, task="token", include_exit_heads=heads)
                assert flops_token_exit(config, seq_len, [layer] * seq_len, include_exit_heads=heads) == expected
    mixed = flops_token_exit(config, 10, [1] * 5 + [4] * 5)
    assert flops_per_example(config, 10, 1, task="token") < mixed < flops_per_example(config, 10, 4, task="token")
    per_row = token_exit_flops_per_row(
        config, torch.tensor([[1] * 5 + [4] * 5 + [3] * 2]), torch.tensor([[1] * 10 + [0] * 2])
    )
    assert float(per_row[0]) == mixed  # padding ignored: the row at its real length
    with pytest.raises(ValueError, match=r"token_exit_layers has 3 entries for seq_len=4; expected one exit layer"):
        flops_token_exit(config, 4, [1, 1, 1])
    with pytest.raises(ValueError, match=r"token_exit_layers has layers \[2\]; expected exit layers \[1, 3, 4\]"):
        flops_token_exit(config, 3, [1, 2, 4])


# ------------------------------------------------------------------------------------------------- training
def block_examples(count, seed, labelled=True):
    """Each word's tag is the id block it comes from (ids 4+10c .. 13+10c): readable from the embedding alone."""
    generator = torch.Generator().manual_seed(seed)
    examples = []
    for _ in range(count):
        tags = torch.randint(0, 3, (8,), generator=generator)
        words = 4 + 10 * tags + torch.randint(0, 10, (8,), generator=generator)
        example = {
            "input_ids": torch.cat([torch.tensor([0]), words, torch.tensor([2])]),
            "attention_mask": torch.ones(10, dtype=torch.long),
        }
        if labelled:
            example["labels"] = torch.cat([torch.tensor([-100]), tags, torch.tensor([-100])])
        examples.append(example)
    return examples


def exit_token_accuracy(model, examples, **kwargs):
    input_ids = torch.stack([e["input_ids"] for e in examples])
    labels = torch.stack([e["labels"] for e in examples])
    labelled = labels != -100
    model.eval()
    output = run(model, input_ids, None, **kwargs)
    if "exit_threshold" in kwargs:
        return float((output.logits.argmax(-1) == labels)[labelled].float().mean()), output.exit_layer[labelled]
    return [float((logits.argmax(-1) == labels)[labelled].float().mean()) for logits in output.exit_logits]


def test_self_distillation_teaches_token_exits_the_final_head_and_token_exit_then_saves_depth(tmp_path):
    model = tiny_model(
        seed=1,
        num_hidden_layers=3,
        num_labels=3,
        id2label=None,
        label2id=None,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        initializer_range=0.02,
    )
    held_out = block_examples(64, seed=99)
    common = dict(
        output_dir=str(tmp_path),
        per_device_train_batch_size=16,
        learning_rate=3e-3,
        logging_steps=50,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
    )
    stage_one = EarlyExitTrainingArguments(**common, exit_training_mode="two_stage", first_stage_steps=60, max_steps=60)
    EarlyExitTrainer(model=model, args=stage_one, train_dataset=block_examples(480, seed=0)).train()
    for head in model.exit_heads:  # exits that know nothing: every token gets tag 0
        torch.nn.init.zeros_(head.out_proj.weight)
        torch.nn.init.zeros_(head.out_proj.bias)
    *exits, final = exit_token_accuracy(model, held_out, output_exit_logits=True)
    assert final > 0.9 and max(exits) < 0.6, (exits, final)
    distill = EarlyExitTrainingArguments(**common, exit_training_mode="self_distillation", max_steps=60)
    EarlyExitTrainer(model=model, args=distill, train_dataset=block_examples(480, seed=1, labelled=False)).train()
    *exits, final_after = exit_token_accuracy(model, held_out, output_exit_logits=True)
    assert final_after == final and min(exits) > 0.9, (exits, final_after)
    accuracy, layers = exit_token_accuracy(model, held_out, exit_threshold=0.5)
    assert accuracy > 0.9 and float(layers.float().mean()) < 2.0, (accuracy, layers.float().mean())


# ---------------------------------------------------------------------------------------------------- sweep
def token_dataset(n=12, seed=0):
    generator = torch.Generator().manual_seed(seed)
    rows = {"input_ids": [], "labels": []}
    for _ in range(n):
        length = int(torch.randint(3, 14, (1,), generator=generator))
        labels = torch.randint(0, len(TAGS), (length,), generator=generator).tolist()
        rows["input_ids"].append([0] + torch.randint(5, VOCAB, (length,), generator=generator).tolist() + [2])
        rows["labels"].append([-100] + [-100 if i % 3 == 2 else tag for i, tag in enumerate(labels)] + [-100])
    return Dataset.from_dict(rows)


def collator():
    from tokenizers import Tokenizer, models

    tokenizer = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"<pad>": PAD}, unk_token="<pad>")))
    tokenizer.pad_token = "<pad>"
    return DataCollatorForTokenClassification(tokenizer)


def test_token_sweep_rows_are_what_the_model_does_at_each_threshold():
    model = tiny_model(exit_granularity="sequence", exit_window=3)
    dataset = token_dataset()
    entry = sweep_token_exits(model, dataset, collator(), thresholds=[0.5, 0.8, 1.01], batch_size=5)
    assert model.config.exit_granularity == "sequence" and model.config.exit_window == 3  # restored
    rows = {row["threshold"]: row for row in entry["sweep"]}
    assert list(rows) == [0.0, 0.5, 0.8, 1.01]
    assert rows[0.0]["flops_saving"] == 0.0 and rows[0.0]["metric"] == entry["full_depth"]["metric"]
    assert rows[1.01]["exit_layer_counts"][0] == sum(len(ids) for ids in dataset["input_ids"])
    assert rows[1.01]["flops_saving"] > 0.5
    # The 0.8 row against running the model by hand on the same batches.
    batch = collator()([dataset[i] for i in range(5)])
    labels = batch.pop("labels")
    with token_granularity(model):
        output = run(model, batch["input_ids"], batch["attention_mask"], exit_threshold=0.8)
    expected = token_exit_flops_per_row(model.config, output.exit_layer, batch["attention_mask"])
    first_five = sweep_token_exits(model, dataset.select(range(5)), collator(), thresholds=[0.8], batch_size=5)
    assert first_five["sweep"][1]["flops_per_example"] == pytest.approx(float(expected.mean()))
    real = batch["attention_mask"].bool()
    assert first_five["sweep"][1]["mean_exit_layer"] == pytest.approx(float(output.exit_layer[real].float().mean()))
    assert labels.shape == output.exit_layer.shape


def test_evaluate_languages_adds_token_rows_and_sweeps_token_models_on_their_batched_path():
    model = tiny_model(exit_granularity="sequence")
    datasets = {"en": token_dataset(seed=0), "sw": token_dataset(seed=1)}
    languages, _ = evaluate_languages(
        model, datasets, collator(), thresholds=[0.7, 1.01], batch_size=4, compare_token_exit=True
    )
    for entry in languages.values():
        assert [row["threshold"] for row in entry["sweep_token"]] == [0.0, 0.7, 1.01]
        assert entry["sweep_token"][0]["metric"] == entry["full_depth"]["metric"]
    model.config.exit_granularity = "token"
    token_languages, _ = evaluate_languages(model, datasets, collator(), thresholds=[0.7, 1.01], batch_size=4)
    for lang, entry in token_languages.items():
        assert entry["sweep"] == languages[lang]["sweep_token"] and "exit_check" not in entry
    with pytest.raises(ValueError, match=r"compare_token_exit=True needs a token classification model with exit_gran"):
        evaluate_languages(model, datasets, collator(), thresholds=[0.7], compare_token_exit=True)


def test_token_thresholds_set_the_token_sweeps_own_grid():
    model = tiny_model(exit_granularity="sequence")
    datasets = {"en": token_dataset(seed=0)}
    languages, _ = evaluate_languages(model, datasets, collator(), thresholds=[0.7, 1.01], batch_size=4,
                                      compare_token_exit=True, token_thresholds=[1.01])
    entry = languages["en"]
    assert [row["threshold"] for row in entry["sweep"]] == [0.0, 0.7, 1.01]
    assert [row["threshold"] for row in entry["sweep_token"]] == [0.0, 1.01]
    full, _ = evaluate_languages(model, datasets, collator(), thresholds=[0.7, 1.01], batch_size=4,
                                 compare_token_exit=True)
    assert entry["sweep_token"] == [row for row in full["en"]["sweep_token"] if row["threshold"] != 0.7]
    from hf_earlyexit.finetune import SweepArguments

    with pytest.raises(ValueError, match=r"token_thresholds=\[\]; expected None or a non-empty list"):
        SweepArguments(token_thresholds=[])
