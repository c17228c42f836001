"""Early-exit models: equivalence with the plain models, exit semantics, batch independence, the batched loop."""

from types import SimpleNamespace

import pytest
import torch
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    BertForTokenClassification,
    XLMRobertaConfig,
    XLMRobertaForSequenceClassification,
    XLMRobertaForTokenClassification,
)

from hf_earlyexit import (
    BertEarlyExitConfig,
    BertForEarlyExit,
    BertForEarlyExitTokenClassification,
    XLMRobertaEarlyExitConfig,
    XLMRobertaForEarlyExit,
    XLMRobertaForEarlyExitTokenClassification,
)
from hf_earlyexit.modeling.criteria import max_probability, normalized_entropy

VOCAB = 120
PAD = 1  # both families use pad_token_id 1 here so the same inputs fit both
FAMILIES = {
    "xlm-roberta": SimpleNamespace(
        config=XLMRobertaEarlyExitConfig,
        plain_config=XLMRobertaConfig,
        sequence=XLMRobertaForEarlyExit,
        token=XLMRobertaForEarlyExitTokenClassification,
        plain_sequence=XLMRobertaForSequenceClassification,
        plain_token=XLMRobertaForTokenClassification,
    ),
    "bert": SimpleNamespace(
        config=BertEarlyExitConfig,
        plain_config=BertConfig,
        sequence=BertForEarlyExit,
        token=BertForEarlyExitTokenClassification,
        plain_sequence=BertForSequenceClassification,
        plain_token=BertForTokenClassification,
    ),
}
FAMILY_TASKS = [(family, task) for family in FAMILIES for task in ("sequence", "token")]


def tiny_kwargs(**overrides):
    kwargs = dict(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        pad_token_id=PAD,
        num_labels=3,
        # A wide init spreads the random heads' confidences, so thresholds can split a batch across exits.
        initializer_range=0.2,
    )
    kwargs.update(overrides)
    return kwargs


def tiny_model(family="xlm-roberta", task="sequence", seed=0, **overrides):
    torch.manual_seed(seed)
    spec = FAMILIES[family]
    return getattr(spec, task)(spec.config(**tiny_kwargs(**overrides))).eval()


def padded_batch(lengths, seed=0):
    """Random ids (never the pad id) right-padded to the longest length, with the attention mask."""
    generator = torch.Generator().manual_seed(seed)
    width = max(lengths)
    input_ids = torch.full((len(lengths), width), PAD, dtype=torch.long)
    attention_mask = torch.zeros((len(lengths), width), dtype=torch.long)
    for row, length in enumerate(lengths):
        input_ids[row, :length] = torch.randint(3, VOCAB, (length,), generator=generator)
        attention_mask[row, :length] = 1
    return input_ids, attention_mask


def mixed_lengths(n=32, seed=0, longest=19):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(3, longest + 1, (n,), generator=generator).tolist()


def row_scores(logits, attention_mask, score):
    """Per-row uncertainty at one exit (token models: the most uncertain real token, the one that decides)."""
    values = score(logits)
    if values.dim() == 2:
        values = values.masked_fill(~attention_mask.bool(), float("-inf")).amax(dim=1)
    return values


def mixing_thresholds(model, input_ids, attention_mask, score=normalized_entropy):
    """Per-exit thresholds that send a real share of the batch out at every intermediate exit, each placed in the
    widest gap between neighbouring scores so tiny numeric differences cannot flip a decision."""
    with torch.no_grad():
        exit_logits = model(input_ids, attention_mask=attention_mask, output_exit_logits=True).exit_logits
    thresholds = []
    for logits in exit_logits[:-1]:
        values = row_scores(logits, attention_mask, score).sort().values
        lo, hi = int(0.2 * len(values)), int(0.45 * len(values))
        gaps = values[lo + 1 : hi + 1] - values[lo:hi]
        best = lo + int(gaps.argmax())
        assert float(gaps.max()) > 1e-4, "scores too close together to place a robust threshold"
        thresholds.append(float(values[best] + values[best + 1]) / 2)
    return thresholds + [0.0]


def plain_twin(model, task, tmp_path):
    """The plain transformers model with the same backbone and final head (loaded from the early-exit weights)."""
    spec = next(spec for spec in FAMILIES.values() if isinstance(model, (spec.sequence, spec.token)))
    model.save_pretrained(tmp_path)
    plain_class = spec.plain_sequence if task == "sequence" else spec.plain_token
    plain, info = plain_class.from_pretrained(tmp_path, output_loading_info=True)
    assert all(key.startswith("exit_heads.") for key in info["unexpected_keys"]), info
    assert not info["missing_keys"], info
    return plain.eval()


@pytest.mark.parametrize("family,task", FAMILY_TASKS)
def test_plain_checkpoint_loads_with_only_exit_heads_new_and_threshold_zero_matches_it(family, task, tmp_path):
    spec = FAMILIES[family]
    torch.manual_seed(0)
    plain_class = spec.plain_sequence if task == "sequence" else spec.plain_token
    plain = plain_class(spec.plain_config(**tiny_kwargs())).eval()
    plain.save_pretrained(tmp_path)
    model, info = getattr(spec, task).from_pretrained(tmp_path, output_loading_info=True)
    model.eval()
    assert info["missing_keys"] and all(key.startswith("exit_heads.") for key in info["missing_keys"]), info
    assert not info["unexpected_keys"], info
    assert model.config.exit_threshold == 0.0 and model.config.exit_layers == [1, 2, 3, 4]

    input_ids, attention_mask = padded_batch([5, 12, 9, 3])
    with torch.no_grad():
        expected = plain(input_ids, attention_mask=attention_mask).logits
        fast = model(input_ids, attention_mask=attention_mask)
        # A positive but unreachable threshold takes the batched loop (heads evaluated, nobody leaves).
        looped = model(input_ids, attention_mask=attention_mask, exit_threshold=1e-9)
        full = model(input_ids, attention_mask=attention_mask, output_exit_logits=True)
    for output in (fast, looped, full):
        torch.testing.assert_close(output.logits, expected, atol=1e-5, rtol=0)
        assert bool((output.exit_layer == 4).all())
    expected_shape = (4,) if task == "sequence" else tuple(input_ids.shape)
    assert tuple(fast.exit_layer.shape) == expected_shape == tuple(looped.exit_layer.shape)


@pytest.mark.parametrize("family,task", FAMILY_TASKS)
def test_threshold_above_one_leaves_everyone_at_the_first_exit(family, task):
    model = tiny_model(family, task, exit_layers=[2, 3, 4])
    input_ids, attention_mask = padded_batch([5, 12, 9, 3, 7])
    with torch.no_grad():
        output = model(input_ids, attention_mask=attention_mask, exit_threshold=1.5)
        full = model(input_ids, attention_mask=attention_mask, output_exit_logits=True)
    assert bool((output.exit_layer == 2).all())
    torch.testing.assert_close(output.logits, full.exit_logits[0], atol=1e-5, rtol=0)


@pytest.mark.parametrize("family,task", FAMILY_TASKS)
def test_example_alone_and_inside_a_mixed_padded_batch_of_32_get_the_same_exit(family, task):
    model = tiny_model(family, task)
    lengths = mixed_lengths(32)
    input_ids, attention_mask = padded_batch(lengths)
    thresholds = mixing_thresholds(model, input_ids, attention_mask)
    with torch.no_grad():
        batched = model(input_ids, attention_mask=attention_mask, exit_threshold=thresholds)
        exit_layers = batched.exit_layer if task == "sequence" else batched.exit_layer[:, 0]
        assert len(set(exit_layers.tolist())) >= 3, exit_layers  # a real mix, not everybody at one layer
        for row, length in enumerate(lengths):
            alone = model(input_ids[row : row + 1, :length], exit_threshold=thresholds)
            assert alone.exit_layer.flatten()[0] == exit_layers[row]
            batched_logits = batched.logits[row] if task == "sequence" else batched.logits[row, :length]
            torch.testing.assert_close(alone.logits[0], batched_logits, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("criterion", ["entropy", "max_prob", "patience"])
@pytest.mark.parametrize("family,task", FAMILY_TASKS)
def test_batched_path_equals_full_compute_select_exits_path(family, task, criterion):
    model = tiny_model(family, task, exit_criterion=criterion, exit_patience=1)
    # Every token of a sequence must hold its prediction for patience to fire: short sequences make that happen.
    longest = 4 if (task, criterion) == ("token", "patience") else 19
    input_ids, attention_mask = padded_batch(mixed_lengths(32, seed=1, longest=longest), seed=1)
    if criterion == "patience":
        thresholds = 1.0
    else:
        score = normalized_entropy if criterion == "entropy" else (lambda logits: 1 - max_probability(logits))
        thresholds = mixing_thresholds(model, input_ids, attention_mask, score)
    with torch.no_grad():
        batched = model(input_ids, attention_mask=attention_mask, exit_threshold=thresholds)
        full = model(input_ids, attention_mask=attention_mask, exit_threshold=thresholds, output_exit_logits=True)
    assert batched.exit_logits is None and len(full.exit_logits) == 4
    assert torch.equal(batched.exit_layer, full.exit_layer)
    assert len(set(batched.exit_layer.flatten().tolist())) >= 2
    torch.testing.assert_close(batched.logits, full.logits, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("criterion", ["entropy", "max_prob"])
@pytest.mark.parametrize("task", ["sequence", "token"])
def test_each_example_leaves_at_the_first_exit_whose_uncertainty_is_below_the_threshold(task, criterion):
    model = tiny_model("xlm-roberta", task, exit_criterion=criterion)
    score = normalized_entropy if criterion == "entropy" else (lambda logits: 1 - max_probability(logits))
    input_ids, attention_mask = padded_batch(mixed_lengths(32, seed=2), seed=2)
    thresholds = mixing_thresholds(model, input_ids, attention_mask, score)
    with torch.no_grad():
        output = model(input_ids, attention_mask=attention_mask, exit_threshold=thresholds)
        full = model(input_ids, attention_mask=attention_mask, output_exit_logits=True)
    exit_layers = output.exit_layer if task == "sequence" else output.exit_layer[:, 0]
    uncertainty = torch.stack([row_scores(logits, attention_mask, score) for logits in full.exit_logits[:-1]], dim=1)
    below = uncertainty < torch.tensor(thresholds[:-1])
    for row, layer in enumerate(exit_layers.tolist()):
        assert not bool(below[row, : layer - 1].any())
        assert layer == 4 or bool(below[row, layer - 1])


def pabee_exit_layer(predictions, patience):
    """Reference PABEE in plain Python: ``predictions[k]`` lists the predicted class of each real token (one item
    for a sequence) at exit layer k + 1; leave once every item's prediction held for ``patience`` exits."""
    counts = [0] * len(predictions[0])
    for k in range(1, len(predictions) - 1):
        counts = [c + 1 if now == before else 0 for c, now, before in zip(counts, predictions[k], predictions[k - 1])]
        if all(c >= patience for c in counts):
            return k + 1
    return len(predictions)


@pytest.mark.parametrize("patience", [1, 2])
@pytest.mark.parametrize("task", ["sequence", "token"])
def test_patience_leaves_once_the_prediction_held_for_patience_exits(task, patience):
    model = tiny_model(
        "xlm-roberta", task, num_hidden_layers=6, exit_criterion="patience", exit_patience=patience, exit_threshold=1.0
    )
    input_ids, attention_mask = padded_batch(mixed_lengths(32, seed=3, longest=5), seed=3)
    with torch.no_grad():
        output = model(input_ids, attention_mask=attention_mask)
        full = model(input_ids, attention_mask=attention_mask, output_exit_logits=True)
    exit_layers = output.exit_layer if task == "sequence" else output.exit_layer[:, 0]
    expected = []
    for row in range(len(exit_layers)):
        if task == "sequence":
            predictions = [[int(logits[row].argmax())] for logits in full.exit_logits]
        else:
            real = attention_mask[row].bool()
            predictions = [logits[row, real].argmax(-1).tolist() for logits in full.exit_logits]
        expected.append(pabee_exit_layer(predictions, patience))
    assert exit_layers.tolist() == expected
    assert min(expected) >= patience + 1  # never before patience + 1 exits
    assert len(set(expected)) >= 2


def test_the_loop_really_removes_rows_that_left():
    model = tiny_model("xlm-roberta", "sequence")
    input_ids, attention_mask = padded_batch(mixed_lengths(32, seed=4), seed=4)
    thresholds = mixing_thresholds(model, input_ids, attention_mask)
    rows_seen = []
    hooks = [
        layer.register_forward_hook(lambda module, args, output: rows_seen.append(args[0].shape[0]))
        for layer in model.roberta.encoder.layer
    ]
    try:
        with torch.no_grad():
            output = model(input_ids, attention_mask=attention_mask, exit_threshold=thresholds)
    finally:
        for hook in hooks:
            hook.remove()
    expected = [int((output.exit_layer >= layer).sum()) for layer in range(1, 5)]
    assert rows_seen == expected
    assert expected[0] == 32 and expected[-1] < 32


def test_forced_exit_layer_sets_each_examples_exit_and_rejects_non_exit_layers():
    model = tiny_model("xlm-roberta", "sequence", exit_layers=[1, 3, 4], exit_threshold=0.0)
    input_ids, attention_mask = padded_batch([5, 9, 4, 7])
    forced = torch.tensor([3, 1, 4, 3])
    with torch.no_grad():
        output = model(input_ids, attention_mask=attention_mask, forced_exit_layer=forced)
        full = model(input_ids, attention_mask=attention_mask, forced_exit_layer=forced, output_exit_logits=True)
        everyone = model(input_ids, attention_mask=attention_mask, forced_exit_layer=3)
    assert output.exit_layer.tolist() == [3, 1, 4, 3] == full.exit_layer.tolist()
    assert everyone.exit_layer.tolist() == [3, 3, 3, 3]
    exit_index = {1: 0, 3: 1, 4: 2}
    for row, layer in enumerate(forced.tolist()):
        torch.testing.assert_close(output.logits[row], full.exit_logits[exit_index[layer]][row], atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match=r"forced_exit_layer has layers \[2\]; expected exit layers \[1, 3, 4\]"):
        model(input_ids, attention_mask=attention_mask, forced_exit_layer=torch.tensor([2, 1, 4, 3]))


@pytest.mark.parametrize("family,task", FAMILY_TASKS)
def test_training_mode_runs_every_exit_with_joint_linear_loss_and_returns_hidden_states(family, task):
    model = tiny_model(family, task, exit_threshold=1.5).train()
    input_ids, attention_mask = padded_batch([5, 9, 4, 7])
    labels = torch.tensor([0, 2, 1, 1]) if task == "sequence" else torch.randint(0, 3, input_ids.shape)
    if task == "token":
        labels[attention_mask == 0] = -100
    output = model(input_ids, attention_mask=attention_mask, labels=labels, output_hidden_states=True)
    assert len(output.exit_logits) == 4 and len(output.hidden_states) == 5
    assert bool((output.exit_layer == 4).all())  # training: final head's logits, whatever the threshold
    torch.testing.assert_close(output.logits, output.exit_logits[-1])
    per_exit = [
        torch.nn.functional.cross_entropy(logits.reshape(-1, 3), labels.reshape(-1), ignore_index=-100)
        for logits in output.exit_logits
    ]
    expected = sum(weight * loss for weight, loss in zip([1, 2, 3, 4], per_exit)) / 10
    torch.testing.assert_close(output.loss, expected)
    output.loss.backward()
    for head in model.exit_heads:
        assert head.out_proj.weight.grad is not None and float(head.out_proj.weight.grad.abs().sum()) > 0


def test_exit_head_design_defaults_per_task_and_follows_config():
    assert tiny_model("xlm-roberta", "sequence").exit_heads[0].dense is not None
    assert tiny_model("xlm-roberta", "token").exit_heads[0].dense is None
    assert tiny_model("xlm-roberta", "sequence", exit_head="linear").exit_heads[0].dense is None
    assert len(tiny_model("bert", "token", exit_layers=[2]).exit_heads) == 1  # [2] + the final layer 4


def test_token_granularity_is_refused_for_sequence_classifiers():
    # Token-level exit itself is tested in tests/test_token_exit.py.
    model = tiny_model("xlm-roberta", "sequence", exit_granularity="token")
    input_ids, attention_mask = padded_batch([4, 6])
    with pytest.raises(ValueError, match=r"exit_granularity='token' needs a token classification model"):
        model(input_ids, attention_mask=attention_mask)


def test_bf16_batched_exit_gives_finite_outputs():
    model = tiny_model("xlm-roberta", "sequence").to(torch.bfloat16)
    input_ids, attention_mask = padded_batch(mixed_lengths(8))
    with torch.no_grad():
        output = model(input_ids, attention_mask=attention_mask, exit_threshold=0.9999)
    assert output.logits.dtype == torch.bfloat16 and bool(torch.isfinite(output.logits).all())


def test_eval_with_hidden_states_or_attentions_runs_every_layer_but_keeps_the_exit_decision():
    torch.manual_seed(0)
    config = XLMRobertaEarlyExitConfig(**tiny_kwargs())
    model = XLMRobertaForEarlyExit._from_config(config, attn_implementation="eager").eval()
    input_ids, attention_mask = padded_batch(mixed_lengths(16, seed=6), seed=6)
    thresholds = mixing_thresholds(model, input_ids, attention_mask)
    with torch.no_grad():
        batched = model(input_ids, attention_mask=attention_mask, exit_threshold=thresholds)
        hidden = model(input_ids, attention_mask=attention_mask, exit_threshold=thresholds, output_hidden_states=True)
        attentions = model(input_ids, attention_mask=attention_mask, exit_threshold=thresholds, output_attentions=True)
        as_tuple = model(input_ids, attention_mask=attention_mask, exit_threshold=thresholds, return_dict=False)
    assert len(hidden.hidden_states) == 5 and len(attentions.attentions) == 4
    assert batched.hidden_states is None and batched.attentions is None
    for output in (hidden, attentions):
        assert torch.equal(output.exit_layer, batched.exit_layer)
        torch.testing.assert_close(output.logits, batched.logits, atol=1e-5, rtol=1e-5)
    assert torch.equal(as_tuple[0], batched.logits) and torch.equal(as_tuple[1], batched.exit_layer)
    with torch.no_grad():
        labels = torch.zeros(16, dtype=torch.long)
        with_loss = model(
            input_ids, attention_mask=attention_mask, labels=labels, exit_threshold=thresholds, return_dict=False
        )
    assert with_loss[0].dim() == 0 and torch.equal(with_loss[1], batched.logits)  # loss first, as in transformers


@pytest.mark.parametrize("granularity", ["sequence", "token"])
def test_asking_for_more_outputs_in_eval_changes_neither_the_loss_nor_the_exit_decision(granularity):
    task = "token" if granularity == "token" else "sequence"
    model = tiny_model("xlm-roberta", task, exit_granularity=granularity).eval()
    input_ids, attention_mask = padded_batch(mixed_lengths(12, seed=3), seed=3)
    thresholds = mixing_thresholds(model, input_ids, attention_mask)
    labels = torch.randint(
        0, 3, input_ids.shape if task == "token" else (12,), generator=torch.Generator().manual_seed(0)
    )
    call = {"attention_mask": attention_mask, "labels": labels, "exit_threshold": thresholds}
    with torch.no_grad():
        plain = model(input_ids, **call)
        asked = {
            "output_hidden_states": model(input_ids, **call, output_hidden_states=True),
            "output_exit_logits": model(input_ids, **call, output_exit_logits=True),
        }
        model.config.output_hidden_states = True
        asked["config.output_hidden_states"] = model(input_ids, **call)
    assert len(set(plain.exit_layer.flatten().tolist())) >= 2  # the thresholds really split the batch
    expected_loss = torch.nn.functional.cross_entropy(plain.logits.reshape(-1, 3).float(), labels.reshape(-1))
    torch.testing.assert_close(plain.loss, expected_loss)
    for name, output in asked.items():
        assert torch.equal(output.exit_layer, plain.exit_layer), name
        torch.testing.assert_close(output.logits, plain.logits, atol=1e-5, rtol=1e-5, msg=name)
        torch.testing.assert_close(output.loss, plain.loss, atol=1e-5, rtol=1e-5, msg=name)


def test_gradient_checkpointing_gives_the_same_joint_loss_gradients():
    def loss_and_grad(checkpointing):
        model = tiny_model("xlm-roberta", "sequence", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
        if checkpointing:
            model.activation_checkpointing_enable()
        model.train()
        input_ids, attention_mask = padded_batch([5, 9, 4])
        loss = model(input_ids, attention_mask=attention_mask, labels=torch.tensor([0, 1, 2])).loss
        loss.backward()
        return loss.detach(), model.roberta.encoder.layer[0].output.dense.weight.grad

    plain_loss, plain_grad = loss_and_grad(False)
    checkpointed_loss, checkpointed_grad = loss_and_grad(True)
    torch.testing.assert_close(checkpointed_loss, plain_loss)
    torch.testing.assert_close(checkpointed_grad, plain_grad)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_mean_pooling_feeds_every_head_the_mean_of_the_real_tokens(family):
    model = tiny_model(family, "sequence", pooling="mean")
    input_ids, attention_mask = padded_batch([5, 12, 3, 9])
    with torch.no_grad():
        output = model(input_ids, attention_mask=attention_mask, output_exit_logits=True, output_hidden_states=True)
        first = tiny_model(family, "sequence")(input_ids, attention_mask=attention_mask, output_exit_logits=True)
        for index, (layer, logits) in enumerate(zip(model.config.exit_layers, output.exit_logits)):
            hidden = output.hidden_states[layer]
            real = attention_mask[:, :, None].float()
            mean = ((hidden * real).sum(1) / real.sum(1))[:, None]
            head = model.exit_heads[index] if index < len(model.exit_heads) else model.final_head
            torch.testing.assert_close(logits, head(mean), atol=1e-6, rtol=0)
            assert not torch.allclose(logits, first.exit_logits[index], atol=1e-3)  # not the first token's


@pytest.mark.parametrize("family", list(FAMILIES))
def test_mean_pooling_is_the_same_alone_padded_batched_and_through_every_path(family):
    model = tiny_model(family, "sequence", pooling="mean")
    lengths = mixed_lengths(32, seed=2)
    input_ids, attention_mask = padded_batch(lengths, seed=2)
    thresholds = mixing_thresholds(model, input_ids, attention_mask)
    with torch.no_grad():
        batched = model(input_ids, attention_mask=attention_mask, exit_threshold=thresholds)
        full = model(input_ids, attention_mask=attention_mask, exit_threshold=thresholds, output_exit_logits=True)
        full_depth = model(input_ids, attention_mask=attention_mask)
        assert len(set(batched.exit_layer.tolist())) >= 3, batched.exit_layer
        assert torch.equal(batched.exit_layer, full.exit_layer)
        torch.testing.assert_close(batched.logits, full.logits, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(full_depth.logits, full.exit_logits[-1], atol=1e-5, rtol=1e-5)
        for row, length in enumerate(lengths):
            alone = model(input_ids[row : row + 1, :length], exit_threshold=thresholds)  # no mask: all tokens real
            assert alone.exit_layer[0] == batched.exit_layer[row]
            torch.testing.assert_close(alone.logits[0], batched.logits[row], atol=1e-5, rtol=1e-5)


def test_mean_pooling_is_refused_for_token_models_and_for_masks_it_cannot_read():
    with pytest.raises(ValueError, match=r"pooling='mean' is for sequence classification; .* use pooling='first'"):
        tiny_model("xlm-roberta", "token", pooling="mean")
    model = tiny_model("bert", "sequence", pooling="mean")
    input_ids, attention_mask = padded_batch([4, 6])
    with pytest.raises(ValueError, match=r"pooling='mean' needs a 2-D \(batch, seq\) attention_mask .* \(2, 1, 6, 6\)"):
        model(input_ids, attention_mask=attention_mask[:, None, None, :].expand(2, 1, 6, 6))


@pytest.mark.parametrize("family,task", FAMILY_TASKS)
def test_loading_with_fewer_layers_re_resolves_the_exit_layers(family, task, tmp_path):
    model = tiny_model(family, task)  # 4 layers, an exit at each
    model.save_pretrained(tmp_path)
    shallow = type(model).from_pretrained(tmp_path, num_hidden_layers=2).eval()
    assert shallow.config.exit_layers == [1, 2] and len(shallow.exit_heads) == 1
    input_ids, attention_mask = padded_batch([5, 9, 4])
    with torch.no_grad():
        output = shallow(input_ids, attention_mask=attention_mask, output_exit_logits=True, exit_threshold=2.0)
    assert len(output.exit_logits) == 2 and bool((output.exit_layer == 1).all())
    torch.testing.assert_close(shallow.exit_heads[0].out_proj.weight, model.exit_heads[0].out_proj.weight)
    model.config.exit_threshold = [0.1, 0.2, 0.3, 0.0]  # one per saved exit: cannot fit 2 layers
    model.save_pretrained(tmp_path / "per_exit")
    with pytest.raises(ValueError, match=r"exit_threshold has 4 values .*one per exit layer \(2\)"):
        type(model).from_pretrained(tmp_path / "per_exit", num_hidden_layers=2)


def test_exit_threshold_accepts_numpy_numbers_arrays_and_tensors(tmp_path):
    import numpy as np

    model = tiny_model("xlm-roberta", "sequence")
    input_ids, attention_mask = padded_batch(mixed_lengths(12, seed=2), seed=2)
    thresholds = mixing_thresholds(model, input_ids, attention_mask)
    with torch.no_grad():
        expected = model(input_ids, attention_mask=attention_mask, exit_threshold=thresholds).exit_layer
        single = model(input_ids, attention_mask=attention_mask, exit_threshold=2.0).exit_layer
        for value in (np.array(thresholds, dtype=np.float32), torch.tensor(thresholds)):
            got = model(input_ids, attention_mask=attention_mask, exit_threshold=value).exit_layer
            assert torch.equal(got, expected), type(value)
        for value in (np.float32(2.0), np.float64(2.0), torch.tensor(2.0), np.array(2.0)):
            got = model(input_ids, attention_mask=attention_mask, exit_threshold=value).exit_layer
            assert torch.equal(got, single), type(value)
    config = type(model.config)(**{**model.config.to_dict(), "exit_threshold": np.float32(0.25)})
    config.save_pretrained(tmp_path)  # stored as a Python float, so JSON can write it
    assert type(config).from_pretrained(tmp_path).exit_threshold == 0.25
