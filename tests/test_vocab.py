"""trim_vocabulary: identical pieces and logits on the map's texts, what held-out text becomes, tied MLM weights,
save -> load (Auto classes, remote code in a clean process, pipelines), and one-line refusals before any change."""

import copy
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from test_auto import outputs_in_a_clean_process
from test_modeling import mixing_thresholds
from test_pipelines import assert_same_results
from transformers import (
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
    BertTokenizer,
    XLMRobertaConfig,
    XLMRobertaForMaskedLM,
    XLMRobertaForSequenceClassification,
    XLMRobertaForTokenClassification,
    XLMRobertaTokenizer,
    pipeline,
)

from hf_earlyexit import (
    XLMRobertaEarlyExitConfig,
    XLMRobertaForEarlyExit,
    XLMRobertaForEarlyExitTokenClassification,
    save_pretrained_with_pipeline,
    trim_vocabulary,
)
from hf_earlyexit.data import load_distillation_corpus
from hf_earlyexit.data.tokenizer import train_tokenizer
from hf_earlyexit.pipelines import TEXT_CLASSIFICATION_TASK, TOKEN_CLASSIFICATION_TASK

CORPUS = Path(__file__).resolve().parents[1] / "examples" / "configs" / "demo-tiny" / "data" / "corpus"
MAP_LANGUAGES = ("en", "ru", "hi")  # the tokenizer knows ten languages; the trimmed one serves these three
MAP_ROWS = 30  # per language; the rest of each file is held-out text of the same language
KINDS = {
    "sequence": (XLMRobertaConfig, XLMRobertaForSequenceClassification),
    "token": (XLMRobertaConfig, XLMRobertaForTokenClassification),
    "masked-lm": (XLMRobertaConfig, XLMRobertaForMaskedLM),
    "early-exit-sequence": (XLMRobertaEarlyExitConfig, XLMRobertaForEarlyExit),
    "early-exit-token": (XLMRobertaEarlyExitConfig, XLMRobertaForEarlyExitTokenClassification),
}


def corpus_lines(lang: str) -> list[str]:
    return (CORPUS / f"{lang}.txt").read_text(encoding="utf-8").splitlines()


MAP_TEXTS = [line for lang in MAP_LANGUAGES for line in corpus_lines(lang)[:MAP_ROWS]]
HELD_OUT = [line for lang in MAP_LANGUAGES for line in corpus_lines(lang)[MAP_ROWS:]]


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer([line for path in sorted(CORPUS.glob("*.txt")) for line in corpus_lines(path.stem)])


def tiny_model(kind: str, tokenizer, seed: int = 0, extra_rows: int = 0):
    """Random tiny XLM-R of `kind`; `extra_rows` adds (or with a negative value removes) embedding rows."""
    config_class, model_class = KINDS[kind]
    config = config_class(
        vocab_size=len(tokenizer) + extra_rows,
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=160,
        pad_token_id=tokenizer.pad_token_id,
        num_labels=3,
        initializer_range=0.2,  # spreads the random exit heads' confidences so thresholds split the batch
    )
    torch.manual_seed(seed)
    return model_class(config).eval()


def forward(model, tokenizer, texts, thresholds=None):
    inputs = tokenizer(texts, padding=True, return_tensors="pt")  # mixed lengths: right padding in most rows
    kwargs = {} if thresholds is None else {"exit_threshold": thresholds}
    with torch.no_grad():
        return model(**inputs, **kwargs)


def kept_original_ids(original, trimmed) -> list[int]:
    """The original id of each trimmed id, found by piece string (independently of the code under test)."""
    return original.convert_tokens_to_ids(trimmed.convert_ids_to_tokens(list(range(len(trimmed)))))


def pieces(tokenizer, texts):
    return [tokenizer.convert_ids_to_tokens(ids) for ids in tokenizer(texts)["input_ids"]]


@pytest.mark.parametrize("kind", list(KINDS))
def test_the_maps_texts_keep_their_pieces_and_logits_for_every_head(kind, tokenizer):
    original = tiny_model(kind, tokenizer)
    thresholds = None
    if kind.startswith("early-exit"):
        inputs = tokenizer(MAP_TEXTS, padding=True, return_tensors="pt")
        thresholds = mixing_thresholds(original, inputs["input_ids"], inputs["attention_mask"])
    expected = forward(original, tokenizer, MAP_TEXTS, thresholds)

    model, trimmed = trim_vocabulary(copy.deepcopy(original), tokenizer, MAP_TEXTS)
    assert len(trimmed) < 0.6 * len(tokenizer)  # three of the ten languages
    assert model.config.vocab_size == len(trimmed) == model.get_input_embeddings().num_embeddings
    assert pieces(trimmed, MAP_TEXTS) == pieces(tokenizer, MAP_TEXTS)
    actual = forward(model, trimmed, MAP_TEXTS, thresholds)
    expected_logits = expected.logits[..., kept_original_ids(tokenizer, trimmed)] if kind == "masked-lm" else None
    torch.testing.assert_close(actual.logits, expected.logits if expected_logits is None else expected_logits,
                               atol=1e-5, rtol=0)  # fmt: skip
    if thresholds is not None:
        assert torch.equal(actual.exit_layer, expected.exit_layer)
        assert len(set(expected.exit_layer.flatten().tolist())) >= 2  # exits really took place
    if kind == "masked-lm":
        assert model.lm_head.decoder.weight is model.roberta.embeddings.word_embeddings.weight
        assert model.lm_head.decoder.bias is model.lm_head.bias
        assert model.lm_head.decoder.out_features == len(trimmed)


def test_embedding_rows_past_the_tokenizers_last_id_are_dropped_as_in_multilingual_e5_small(tokenizer):
    original = tiny_model("masked-lm", tokenizer, extra_rows=35)
    model, trimmed = trim_vocabulary(copy.deepcopy(original), tokenizer, MAP_TEXTS)
    assert model.get_input_embeddings().num_embeddings == model.config.vocab_size == len(trimmed)
    expected = forward(original, tokenizer, MAP_TEXTS).logits[..., kept_original_ids(tokenizer, trimmed)]
    torch.testing.assert_close(forward(model, trimmed, MAP_TEXTS).logits, expected, atol=1e-5, rtol=0)


def test_specials_keep_their_ids_the_mask_stays_last_and_keep_and_min_count_choose_the_pieces(tokenizer):
    used = [p for row in pieces(tokenizer, MAP_TEXTS) for p in row[1:-1]]
    german = next(p for row in pieces(tokenizer, corpus_lines("de")) for p in row[1:-1] if len(p) > 2 and p not in used)
    model, trimmed = trim_vocabulary(tiny_model("sequence", tokenizer), tokenizer, MAP_TEXTS, keep=[german])
    assert trimmed.convert_ids_to_tokens([0, 1, 2, 3, len(trimmed) - 1]) == ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    assert (trimmed.bos_token_id, trimmed.pad_token_id, trimmed.eos_token_id) == (0, 1, 2)
    assert model.config.pad_token_id == 1 and model.get_input_embeddings().padding_idx == 1
    assert german in trimmed.get_vocab()
    assert trimmed("Hallo", "Welt")["input_ids"][:1] + trimmed("Hallo", "Welt")["input_ids"][-1:] == [0, 2]

    once = {p for p in used if used.count(p) == 1}
    _, frequent = trim_vocabulary(tiny_model("sequence", tokenizer), tokenizer, MAP_TEXTS, min_count=2)
    single_chars = {p for p in once if len(p) == 1}  # kept anyway: the fallback for seen characters
    assert not (once - single_chars) & set(frequent.get_vocab()) and once - single_chars
    assert len(frequent) < len(trimmed)


def test_texts_as_a_dataset_or_the_corpus_loaders_language_selection_give_the_same_vocabulary(tokenizer):
    from_list = trim_vocabulary(tiny_model("sequence", tokenizer), tokenizer, MAP_TEXTS)[1].get_vocab()
    rows = Dataset.from_dict({"text": MAP_TEXTS, "lang": [t[:2] for t in MAP_TEXTS]})
    assert trim_vocabulary(tiny_model("sequence", tokenizer), tokenizer, rows)[1].get_vocab() == from_list

    stream = load_distillation_corpus(str(CORPUS), languages=list(MAP_LANGUAGES), num_partitions=1, partition=0)
    whole_files = [line for lang in MAP_LANGUAGES for line in corpus_lines(lang)]
    expected = trim_vocabulary(tiny_model("sequence", tokenizer), tokenizer, whole_files)[1].get_vocab()
    assert trim_vocabulary(tiny_model("sequence", tokenizer), tokenizer, stream)[1].get_vocab() == expected


def test_held_out_text_is_re_segmented_from_kept_pieces_and_only_unseen_characters_become_unk(tokenizer):
    _, trimmed = trim_vocabulary(tiny_model("sequence", tokenizer), tokenizer, MAP_TEXTS)
    before, after = pieces(tokenizer, HELD_OUT), pieces(trimmed, HELD_OUT)
    identical = sum(a == b for a, b in zip(before, after))
    assert 0 < identical < len(HELD_OUT)  # both cases occur on this held-out text
    seen = set("".join(MAP_TEXTS))
    for text, old, new in zip(HELD_OUT, before, after):
        if set(text) <= seen:
            # Same characters, only cut into (more, shorter) kept pieces; decoding gives the same text back.
            assert "".join(new) == "".join(old) and len(new) >= len(old)
            assert trimmed.decode(trimmed(text)["input_ids"], skip_special_tokens=True) == text
    assert 0 < sum(set(text) <= seen for text in HELD_OUT) < len(HELD_OUT)
    urdu = corpus_lines("ur")[0]  # a script the map never saw
    assert tokenizer.unk_token_id not in tokenizer(urdu)["input_ids"]
    ids = trimmed(urdu, add_special_tokens=False)["input_ids"]
    assert trimmed.unk_token_id in ids and set(trimmed.convert_ids_to_tokens(ids)) <= {"▁", trimmed.unk_token}


def hand_built_tokenizer(scores: dict[str, float]) -> XLMRobertaTokenizer:
    specials = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    return XLMRobertaTokenizer(vocab=specials + list(scores.items()) + [("<mask>", 0.0)])


def test_unk_keeps_its_score_so_a_segmentation_next_to_an_unknown_character_does_not_change():
    # "X" has no single-character piece. Unigram scores <unk> as (lowest piece score - 10): -30 here, so "Xab" is
    # "▁Xa b" (-26.5) rather than "▁ <unk> ab" (-32). Without the unused lowest piece "q" the minimum would rise to
    # -14, <unk> to -24, and "▁ <unk> ab" (-26) would win.
    scores = {"▁": -1.0, "a": -3.0, "b": -12.5, "ab": -1.0, "▁Xa": -14.0, "q": -20.0}
    tokenizer = hand_built_tokenizer(scores)
    texts = ["Xab", "ab"]
    assert pieces(tokenizer, texts) == [["<s>", "▁Xa", "b", "</s>"], ["<s>", "▁", "ab", "</s>"]]
    model = tiny_model("sequence", tokenizer)
    _, trimmed = trim_vocabulary(model, tokenizer, texts)
    assert pieces(trimmed, texts) == pieces(tokenizer, texts)
    without_lowest = hand_built_tokenizer({p: s for p, s in scores.items() if p in trimmed.get_vocab() and p != "q"})
    assert pieces(without_lowest, ["Xab"]) == [["<s>", "▁", "<unk>", "ab", "</s>"]]  # the case kept apart


@pytest.mark.parametrize(
    "kind,auto_class",
    [
        ("early-exit-sequence", AutoModelForSequenceClassification),
        ("early-exit-token", AutoModelForTokenClassification),
        ("masked-lm", AutoModelForMaskedLM),
    ],
)
def test_save_and_load_through_the_auto_classes_gives_the_trimmed_models_logits(kind, auto_class, tokenizer, tmp_path):
    model, trimmed = trim_vocabulary(tiny_model(kind, tokenizer), tokenizer, MAP_TEXTS)
    model.save_pretrained(tmp_path)
    trimmed.save_pretrained(tmp_path)
    assert not (tmp_path / "sentencepiece.bpe.model").exists()  # the old vocabulary's file must not travel along
    loaded_tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    loaded = auto_class.from_pretrained(tmp_path).eval()
    assert type(loaded) is type(model) and loaded.config.vocab_size == len(trimmed) == len(loaded_tokenizer)
    texts = MAP_TEXTS + HELD_OUT
    assert loaded_tokenizer(texts)["input_ids"] == trimmed(texts)["input_ids"]
    expected = forward(model, trimmed, texts).logits
    torch.testing.assert_close(forward(loaded, loaded_tokenizer, texts).logits, expected, atol=1e-6, rtol=0)
    if kind == "masked-lm":
        assert loaded.lm_head.decoder.weight is loaded.roberta.embeddings.word_embeddings.weight


@pytest.mark.slow
def test_a_trimmed_checkpoint_loads_with_trust_remote_code_in_a_process_without_the_package(tokenizer, tmp_path):
    model, trimmed = trim_vocabulary(tiny_model("early-exit-sequence", tokenizer), tokenizer, MAP_TEXTS)
    folder = tmp_path / "checkpoint"
    model.save_pretrained(folder)
    inputs = dict(trimmed(MAP_TEXTS, padding=True, return_tensors="pt"))
    thresholds = mixing_thresholds(model, inputs["input_ids"], inputs["attention_mask"])
    remote = outputs_in_a_clean_process(folder, "sequence", inputs, thresholds, tmp_path)
    expected = forward(model, trimmed, MAP_TEXTS, thresholds)
    torch.testing.assert_close(remote["logits"], expected.logits, atol=1e-5, rtol=1e-5)
    assert torch.equal(remote["exit_layer"], expected.exit_layer)


def test_pipelines_from_a_saved_trimmed_folder_give_the_untrimmed_models_results(tokenizer, tmp_path):
    texts = MAP_TEXTS[::7]
    for kind, task in (
        ("early-exit-sequence", TEXT_CLASSIFICATION_TASK),
        ("early-exit-token", TOKEN_CLASSIFICATION_TASK),
    ):
        original = tiny_model(kind, tokenizer)
        expected = pipeline(task, model=original, tokenizer=tokenizer)(texts)
        model, trimmed = trim_vocabulary(copy.deepcopy(original), tokenizer, MAP_TEXTS)
        save_pretrained_with_pipeline(model, trimmed, tmp_path / kind)
        assert_same_results(pipeline(task, model=str(tmp_path / kind), trust_remote_code=True)(texts), expected)


def wordpiece_tokenizer():
    return BertTokenizer(
        vocab={token: i for i, token in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a"])}
    )


@pytest.mark.parametrize(
    "case,message",
    [
        ("no texts", "texts has no non-empty text"),
        ("blank texts", "texts has no non-empty text"),
        ("one string", "expected an iterable of strings"),
        ("a row without text", "expected a string or a row with a string 'text' field"),
        ("unknown keep", "keep lists 1 piece(s) not in the vocabulary: ['▁notapiece']"),
        ("min_count 0", "min_count=0: expected an integer >= 1"),
        ("wordpiece", "uses a WordPiece model: trim_vocabulary needs a SentencePiece-Unigram tokenizer"),
        (
            "embedding size",
            "has {rows} embedding rows but the tokenizer has {tokens} tokens: expected at least one row",
        ),
    ],
)
def test_bad_input_is_refused_in_one_line_before_anything_changes(case, message, tokenizer):
    model = tiny_model("masked-lm", tokenizer)
    arguments = {"model": model, "tokenizer": tokenizer, "texts": MAP_TEXTS}
    arguments.update(
        {
            "no texts": {"texts": []},
            "blank texts": {"texts": ["", "  \n"]},
            "one string": {"texts": MAP_TEXTS[0]},
            "a row without text": {"texts": [{"premise": "a", "hypothesis": "b"}]},
            "unknown keep": {"keep": ["▁notapiece"]},
            "min_count 0": {"min_count": 0},
            "wordpiece": {"tokenizer": wordpiece_tokenizer()},
            "embedding size": {"model": tiny_model("masked-lm", tokenizer, extra_rows=-5)},
        }[case]
    )
    before = {name: p.clone() for name, p in arguments["model"].state_dict().items()}
    vocabulary = arguments["tokenizer"].get_vocab()
    with pytest.raises(ValueError) as error:
        trim_vocabulary(**arguments)
    message = message.format(rows=len(tokenizer) - 5, tokens=len(tokenizer))
    assert message in str(error.value) and "\n" not in str(error.value)
    after = arguments["model"].state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert arguments["tokenizer"].get_vocab() == vocabulary
