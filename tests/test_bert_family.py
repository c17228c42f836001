"""What the family-parametrized tests (test_modeling, test_auto, test_token_exit) do not reach for BERT:

* sentence pairs: BERT, unlike XLM-R, reads ``token_type_ids``; they must reach the embeddings on every exit path
  (batched, all exits, alone vs. in a batch);
* a bare ``BertModel`` checkpoint (keys without the ``bert.`` prefix, pooler included: the sentence-transformers
  layout of all-MiniLM-L6-v2) through ``load_early_exit_model``: backbone and pooler loaded, only heads new, and
  exits off equal to the plain transformers classifier with the same head;
* token-level exit on BERT: the plain ``BertForTokenClassification`` equivalence and batch independence;
* the token twin loaded by remote code in a clean process (test_auto runs the BERT sequence model only).
"""

import functools

import pytest
import torch
from test_auto import test_a_clean_process_without_the_package_loads_the_folder_with_trust_remote_code as clean_load
from test_modeling import mixing_thresholds, tiny_kwargs
from test_token_exit import LENGTHS, mixing_threshold, run
from test_token_exit import padded_batch as token_batch
from test_token_exit import tiny_model as tiny_token_model
from transformers import BertConfig, BertForSequenceClassification, BertForTokenClassification, BertModel

from hf_earlyexit import BertEarlyExitConfig, BertForEarlyExit, BertForEarlyExitTokenClassification
from hf_earlyexit.finetune import load_early_exit_model

VOCAB, PAD, CLS, SEP = 100, 0, 1, 2
LABELS = {"sequence": ("entailment", "neutral", "contradiction"), "token": ("O", "B-PER", "I-PER", "B-LOC", "I-LOC")}
# BERT reads two segments; the pad id is BERT's 0.
TINY = tiny_kwargs(type_vocab_size=2, pad_token_id=PAD)


def sentence_pairs(segment_lengths, seed=0):
    """``[CLS] a [SEP] b [SEP]`` rows, right-padded: (input_ids, token_type_ids, attention_mask)."""
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for first, second in segment_lengths:
        a, b = (torch.randint(3, VOCAB, (n,), generator=generator).tolist() for n in (first, second))
        rows.append(([CLS, *a, SEP, *b, SEP], [0] * (first + 2) + [1] * (second + 1)))
    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), width), PAD, dtype=torch.long)
    token_type_ids = torch.zeros_like(input_ids)
    attention_mask = torch.zeros_like(input_ids)
    for row, (ids, types) in enumerate(rows):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        token_type_ids[row, : len(ids)] = torch.tensor(types)
        attention_mask[row, : len(ids)] = 1
    return input_ids, token_type_ids, attention_mask


def pair_lengths(n=24, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(2, 12, (n, 2), generator=generator).tolist()


@pytest.mark.parametrize("task", ["sequence", "token"])
def test_bare_bert_model_checkpoint_loads_backbone_and_pooler_and_exits_off_equal_the_plain_classifier(task, tmp_path):
    torch.manual_seed(0)
    base = BertModel(BertConfig(**TINY)).eval()
    base.save_pretrained(tmp_path / "base")  # keys "embeddings.*", "encoder.*", "pooler.*": no "bert." prefix
    labels = LABELS[task]
    model = load_early_exit_model(str(tmp_path / "base"), task == "token", labels, {"exit_criterion": "entropy"})
    model.eval()
    assert type(model) is (BertForEarlyExit if task == "sequence" else BertForEarlyExitTokenClassification)
    assert model.config.model_type == "bert-early-exit" and model.config.id2label == dict(enumerate(labels))
    backbone = model.bert.state_dict()
    for key, value in base.state_dict().items():
        if key.startswith("pooler.") and task == "token":
            continue  # the token twin has no pooler, as BertForTokenClassification
        assert torch.equal(backbone[key], value), key

    plain_class = BertForSequenceClassification if task == "sequence" else BertForTokenClassification
    plain = plain_class.from_pretrained(tmp_path / "base", num_labels=len(labels)).eval()
    plain.classifier.load_state_dict(model.classifier.state_dict())
    input_ids, token_type_ids, attention_mask = sentence_pairs(pair_lengths(8))
    inputs = dict(input_ids=input_ids, token_type_ids=token_type_ids, attention_mask=attention_mask)
    with torch.no_grad():
        expected = plain(**inputs).logits
        for path in ({"exit_threshold": 0.0}, {"exit_threshold": 0.0, "output_exit_logits": True}):
            got = model(**inputs, **path)
            torch.testing.assert_close(got.logits, expected, atol=1e-5, rtol=0)
            assert bool((got.exit_layer == TINY["num_hidden_layers"]).all())


@pytest.mark.parametrize("task", ["sequence", "token"])
def test_sentence_pairs_leave_at_the_same_layer_alone_in_a_batch_and_on_the_all_exits_path(task):
    torch.manual_seed(1)
    model_class = BertForEarlyExit if task == "sequence" else BertForEarlyExitTokenClassification
    model = model_class(BertEarlyExitConfig(**{**TINY, "num_labels": len(LABELS[task])})).eval()
    lengths = pair_lengths()
    input_ids, token_type_ids, attention_mask = sentence_pairs(lengths)
    thresholds = mixing_thresholds(functools.partial(model, token_type_ids=token_type_ids), input_ids, attention_mask)
    with torch.no_grad():
        batched = model(
            input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids, exit_threshold=thresholds
        )
        all_exits = model(
            input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            exit_threshold=thresholds,
            output_exit_logits=True,
        )
        types_ignored = model(input_ids, attention_mask=attention_mask, exit_threshold=thresholds)
    assert len(set(batched.exit_layer.flatten().tolist())) >= 3, "thresholds should spread rows over several exits"
    assert torch.equal(batched.exit_layer, all_exits.exit_layer)
    real = attention_mask.bool() if task == "token" else slice(None)
    torch.testing.assert_close(batched.logits[real], all_exits.logits[real], atol=1e-5, rtol=0)
    assert not torch.allclose(batched.logits[real], types_ignored.logits[real]), "token_type_ids must reach the model"
    for row, (first, second) in enumerate(lengths):
        length = first + second + 3
        with torch.no_grad():
            alone = model(
                input_ids[row : row + 1, :length],
                attention_mask=attention_mask[row : row + 1, :length],
                token_type_ids=token_type_ids[row : row + 1, :length],
                exit_threshold=thresholds,
            )
        if task == "sequence":
            assert int(alone.exit_layer[0]) == int(batched.exit_layer[row])
            torch.testing.assert_close(alone.logits[0], batched.logits[row], atol=1e-5, rtol=0)
        else:
            assert torch.equal(alone.exit_layer[0], batched.exit_layer[row, :length])
            torch.testing.assert_close(alone.logits[0], batched.logits[row, :length], atol=1e-5, rtol=0)


def test_bert_token_level_exit_with_nobody_leaving_equals_plain_bert_for_token_classification():
    model = tiny_token_model("bert")
    input_ids, attention_mask = token_batch(LENGTHS)
    real = attention_mask.bool()
    plain = BertForTokenClassification._from_config(model.config).eval()
    plain.load_state_dict(model.state_dict(), strict=False)
    expected = run(plain, input_ids, attention_mask).logits
    layers = model.config.num_hidden_layers
    # Tiny positive thresholds run the token path (heads evaluated) while no token is certain enough to leave.
    token_path = run(model, input_ids, attention_mask, exit_threshold=[1e-12] * (layers - 1) + [0.0])
    assert bool((token_path.exit_layer == layers).all())
    torch.testing.assert_close(token_path.logits[real], expected[real], atol=1e-5, rtol=0)


@pytest.mark.parametrize("window", [1, 3])
def test_bert_tokens_exit_layers_and_logits_do_not_depend_on_other_sequences(window):
    model = tiny_token_model("bert", exit_window=window)
    input_ids, attention_mask = token_batch(LENGTHS, seed=3)
    threshold = mixing_threshold(model, input_ids, attention_mask)
    batched = run(model, input_ids, attention_mask, exit_threshold=threshold)
    assert len(set(batched.exit_layer[attention_mask.bool()].tolist())) >= 3, "tokens should use several exits"
    for row, length in enumerate(LENGTHS):
        alone = run(
            model, input_ids[row : row + 1, :length], attention_mask[row : row + 1, :length], exit_threshold=threshold
        )
        assert torch.equal(alone.exit_layer[0], batched.exit_layer[row, :length])
        torch.testing.assert_close(alone.logits[0], batched.logits[row, :length], atol=1e-5, rtol=0)


@pytest.mark.slow
def test_bert_token_twin_loads_in_a_clean_process_with_trust_remote_code(tmp_path):
    clean_load("bert", "token", "first", tmp_path)


@pytest.mark.parametrize("pooling", ["first", "mean"])
def test_bert_sequence_model_runs_its_pooler_once_per_call_on_every_path(pooling):
    """The backbone's forward already runs the pooler; the full depth and all exits paths reuse its output for
    pooling="first" (as ``BertForSequenceClassification`` does: the same numbers, bit for bit); the batched loop runs
    its own layers, so its final head calls the pooler itself, once."""
    model = BertForEarlyExit(BertEarlyExitConfig(**{**TINY, "pooling": pooling})).eval()
    calls = []
    model.bert.pooler.register_forward_hook(lambda module, args, output: calls.append(args[0].shape))
    input_ids, token_type_ids, attention_mask = sentence_pairs(pair_lengths(6))
    inputs = dict(input_ids=input_ids, token_type_ids=token_type_ids, attention_mask=attention_mask)
    paths = {"full depth": {}, "all exits": {"output_exit_logits": True}, "batched": {"exit_threshold": 1e-9}}
    outputs = {}
    with torch.no_grad():
        for name, call in paths.items():
            calls.clear()
            outputs[name] = model(**inputs, **call)
            # mean pooling: the backbone's own call reads the first token and is spent, the head's reads the mean.
            wanted = 2 if pooling == "mean" and name != "batched" else 1
            assert len(calls) == wanted, (name, calls)
    for name in ("all exits", "batched"):
        torch.testing.assert_close(outputs[name].logits, outputs["full depth"].logits, atol=1e-5, rtol=0)
    if pooling == "first":
        plain = BertForSequenceClassification(BertConfig(**TINY)).eval()
        plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("exit_heads.")})
        with torch.no_grad():
            expected = plain(**inputs).logits
        assert torch.equal(outputs["full depth"].logits, expected)
        assert torch.equal(outputs["all exits"].logits, expected)
