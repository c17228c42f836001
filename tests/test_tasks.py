"""XNLI / WikiANN loaders on the real files in ../shared/data, preprocessing, and bad-input messages."""

from collections import Counter

import pytest

from hf_earlyexit.data.tasks import (
    EVAL_LANGUAGES,
    WIKIANN_TAGS,
    XNLI_LABELS,
    load_wikiann,
    load_xnli,
    tokenize_and_align_labels,
    tokenize_xnli,
)
from hf_earlyexit.data.tokenizer import train_tokenizer

# (sentences, tokens, B-PER, B-ORG, B-LOC) per file, from ../shared/data/README.md
PANX_COUNTS = {
    ("en", "validation"): (10000, 80536, 4635, 4677, 4834),
    ("ru", "validation"): (10000, 70279, 3590, 3892, 4852),
    ("hi", "validation"): (1000, 5808, 434, 369, 423),
    ("tr", "validation"): (10000, 75930, 4374, 4129, 5014),
    ("sw", "validation"): (1000, 5609, 403, 354, 452),
    ("ur", "validation"): (1000, 5027, 340, 327, 352),
    ("en", "train"): (20000, 160394, 9164, 9422, 9345),
    ("ru", "train"): (20000, 141529, 7187, 7944, 9498),
    ("hi", "train"): (5000, 29443, 2261, 1823, 2040),
    ("tr", "train"): (20000, 149786, 8833, 7970, 9679),
    ("sw", "train"): (1000, 5597, 445, 319, 447),
    ("ur", "train"): (20000, 101709, 6839, 6759, 6891),
}


@pytest.fixture(scope="module")
def tokenizer(shared_data):
    texts = [
        line
        for lang in ("eng", "rus", "hin", "tur", "swh", "urd")
        for line in (shared_data / "text" / "tatoeba" / f"{lang}.txt").read_text("utf-8").splitlines()[:300]
    ]
    return train_tokenizer(texts, vocab_size=400)


@pytest.mark.real_data
def test_every_xnli_dev_file_with_readme_counts(shared_data):
    datasets = load_xnli(EVAL_LANGUAGES, "validation", data_dir=shared_data / "xnli")
    assert list(datasets) == list(EVAL_LANGUAGES)
    for lang, dataset in datasets.items():
        assert dataset.column_names == ["premise", "hypothesis", "label"]
        assert dataset.features["label"].names == list(XNLI_LABELS)
        assert Counter(dataset["label"]) == {0: 830, 1: 830, 2: 830}, lang
    # Row 1 of the English dev file is "neutral" (Hub id 1); labels are shared across languages row by row.
    assert datasets["en"][0]["premise"] == "And he said, Mama, I'm home."
    assert datasets["en"]["label"][:3] == [1, 2, 0]
    assert datasets["en"]["label"] == datasets["ur"]["label"]


@pytest.mark.real_data
@pytest.mark.slow
def test_every_panx_train_and_dev_file_with_readme_counts(shared_data):
    for split in ("train", "validation"):
        datasets = load_wikiann(EVAL_LANGUAGES, split, data_dir=shared_data / "panx")
        for lang, dataset in datasets.items():
            sentences, tokens, per, org, loc = PANX_COUNTS[(lang, split)]
            tags = Counter(tag for row in dataset["ner_tags"] for tag in row)
            assert len(dataset) == sentences, (lang, split)
            assert sum(tags.values()) == tokens, (lang, split)
            assert [tags[WIKIANN_TAGS.index(t)] for t in ("B-PER", "B-ORG", "B-LOC")] == [per, org, loc]
            assert dataset.features["ner_tags"].feature.names == list(WIKIANN_TAGS)
            assert set(dataset[0]["langs"]) == {lang}


@pytest.mark.real_data
def test_panx_first_sentence_and_spans(shared_data):
    dev = load_wikiann("en", "dev", data_dir=shared_data / "panx")["en"]
    first = dev[0]
    assert first["tokens"][:3] == ["Sioux", "Falls", "Arena"]
    assert [WIKIANN_TAGS[t] for t in first["ner_tags"][:5]] == ["B-ORG", "I-ORG", "I-ORG", "O", "B-LOC"]
    assert first["spans"] == ["ORG: Sioux Falls Arena", "LOC: Sioux Falls , South Dakota"]


@pytest.mark.real_data
def test_label_alignment_on_real_panx_sentences(shared_data, tokenizer):
    loaded = load_wikiann(["ru", "hi"], "validation", data_dir=shared_data / "panx")
    sentences = {lang: dataset.select(range(200)) for lang, dataset in loaded.items()}
    encoded = tokenize_and_align_labels(sentences, tokenizer, max_length=128)
    for lang in ("ru", "hi"):
        originals, rows = sentences[lang], encoded[lang]
        assert rows.column_names == ["input_ids", "attention_mask", "labels"]
        split_words = 0
        for original, row in zip(originals, rows):
            word_ids = tokenizer(
                original["tokens"], is_split_into_words=True, truncation=True, max_length=128
            ).word_ids()
            starts = [i for i, w in enumerate(word_ids) if w is not None and (i == 0 or word_ids[i - 1] != w)]
            # Exactly one labelled sub-token per word, carrying that word's tag, in order; all others -100.
            assert [row["labels"][i] for i in starts] == original["ner_tags"][: len(starts)]
            assert all(label == -100 for i, label in enumerate(row["labels"]) if i not in starts)
            if len(row["input_ids"]) < 128:  # not truncated: every word keeps its label
                assert len(starts) == len(original["tokens"])
            split_words += len(row["input_ids"]) - 2 > len(starts)
        assert split_words > 100, "the test must exercise words split into several sub-tokens"


@pytest.mark.real_data
def test_label_alignment_truncates_long_sentences(shared_data, tokenizer):
    dev = load_wikiann("en", "validation", data_dir=shared_data / "panx")["en"].select(range(50))
    rows = tokenize_and_align_labels(dev, tokenizer, max_length=6)
    for original, row in zip(dev, rows):
        assert len(row["input_ids"]) <= 6 and len(row["labels"]) == len(row["input_ids"])
        labelled = [label for label in row["labels"] if label != -100]
        assert labelled == original["ner_tags"][: len(labelled)]


@pytest.mark.real_data
def test_tokenize_xnli_builds_xlmr_pairs(shared_data, tokenizer):
    dev = load_xnli(["tr"], "validation", data_dir=shared_data / "xnli")["tr"].select(range(20))
    rows = tokenize_xnli(dev, tokenizer, max_length=64)
    assert rows.column_names == ["label", "input_ids", "attention_mask"]
    assert rows["label"] == dev["label"]
    for original, row in zip(dev, rows):
        premise = tokenizer(original["premise"], add_special_tokens=False)["input_ids"]
        hypothesis = tokenizer(original["hypothesis"], add_special_tokens=False)["input_ids"]
        expected = [0, *premise, 2, 2, *hypothesis, 2]
        assert row["input_ids"] == (expected if len(expected) <= 64 else row["input_ids"])
        assert len(row["input_ids"]) <= 64 and row["input_ids"][0] == 0 and row["input_ids"][-1] == 2


def _write(path, text: str | bytes):
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        (
            "en.dev.tsv",
            "premise\thypothesis\tlabel\na\tb\tneutral\nc\td\n",
            r"en\.dev\.tsv:3: expected 3 tab-separated columns",
        ),
        (
            "en.dev.tsv",
            "premise\thypothesis\tlabel\na\tb\tmaybe\n",
            r"en\.dev\.tsv:2: label 'maybe' is not one of entailment",
        ),
        ("en.dev.tsv", "sentence1\tsentence2\tlabel\na\tb\tneutral\n", r"en\.dev\.tsv:1: expected the header premise"),
        (
            "en.dev.tsv",
            b"premise\thypothesis\tlabel\na\tb\tneutral\n\xff\tb\tneutral\n",
            r"en\.dev\.tsv:3: not valid UTF-8",
        ),
        ("en.dev.tsv", "premise\thypothesis\tlabel\n", r"en\.dev\.tsv holds no examples"),
    ],
)
def test_bad_xnli_files(tmp_path, name, content, message):
    _write(tmp_path / name, content)
    with pytest.raises(ValueError, match=message):
        load_xnli(["en"], "validation", data_dir=tmp_path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("Paris\tB-LOC\n\nBerlin\tB-MISC\n\n", r"en\.train\.conll:3: tag 'B-MISC' is not one of O, B-PER"),
        ("Paris\tB-LOC\nis nice\n\n", r"en\.train\.conll:2: expected 'token<TAB>tag', got 1"),
        ("Paris\tB-LOC\tx\n\n", r"en\.train\.conll:1: expected 'token<TAB>tag', got 3"),
        (b"Paris\tB-LOC\n\n\xc3\tO\n", r"en\.train\.conll:3: not valid UTF-8"),
        ("\n\n", r"en\.train\.conll holds no sentences"),
    ],
)
def test_bad_conll_files(tmp_path, content, message):
    _write(tmp_path / "en.train.conll", content)
    with pytest.raises(ValueError, match=message):
        load_wikiann("en", "train", data_dir=tmp_path)


def test_local_conll_without_final_blank_line_and_dev_alias(tmp_path):
    _write(tmp_path / "sw.dev.conll", "Nairobi\tB-LOC\nni\tO\n\nJuma\tB-PER\nKassim\tI-PER")
    dataset = load_wikiann(["sw"], "dev", data_dir=tmp_path)["sw"]
    assert dataset["tokens"] == [["Nairobi", "ni"], ["Juma", "Kassim"]]
    assert dataset["ner_tags"] == [[5, 0], [1, 2]]
    assert dataset["spans"] == [["LOC: Nairobi"], ["PER: Juma Kassim"]]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda d: load_xnli(["xx"], "validation", data_dir=d), "unknown XNLI language code 'xx'"),
        (lambda d: load_xnli(["en"], "dev2", data_dir=d), "unknown split 'dev2'"),
        (lambda d: load_wikiann(["sw"], "test", data_dir=d), r"sw\.test\.conll does not exist"),
        (lambda d: load_wikiann([], "train", data_dir=d), "no languages given"),
    ],
)
def test_bad_arguments(tmp_path, call, message):
    with pytest.raises(ValueError, match=message):
        call(tmp_path)


def test_a_byte_order_mark_is_not_part_of_the_first_header_or_token(tmp_path):
    (tmp_path / "en.dev.tsv").write_bytes(b"\xef\xbb\xbfpremise\thypothesis\tlabel\nA.\tB.\tneutral\n")
    (tmp_path / "en.dev.conll").write_bytes(b"\xef\xbb\xbfObama\tB-PER\nvisited\tO\n\n")
    assert load_xnli(["en"], "validation", tmp_path)["en"]["premise"] == ["A."]
    assert load_wikiann(["en"], "validation", tmp_path)["en"]["tokens"] == [["Obama", "visited"]]


def test_a_bad_byte_in_a_cr_only_file_is_reported_at_its_line(tmp_path):
    (tmp_path / "en.dev.conll").write_bytes(b"Obama\tB-PER\rvisited\tO\r\rNairobi\t\xffB-LOC\r")
    with pytest.raises(ValueError, match=r"en\.dev\.conll:4: not valid UTF-8"):
        load_wikiann(["en"], "validation", tmp_path)


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_u2028_and_u0085_are_text_in_tsv_and_conll_whatever_the_line_breaks(tmp_path, newline):
    # One line-splitting rule (\n, \r\n, lone \r): a CRLF TSV used to split at U+2028 inside a premise.
    tsv = ["premise\thypothesis\tlabel", "Line\u2028two.\tNext\u0085line.\tneutral", "A.\tB.\tentailment", ""]
    (tmp_path / "en.dev.tsv").write_bytes(newline.join(tsv).encode("utf-8"))
    conll = ["Obama\u2028x\tB-PER", "visited\tO", "", "Nairobi\u0085\tB-LOC", ""]
    (tmp_path / "en.dev.conll").write_bytes(newline.join(conll).encode("utf-8"))
    xnli = load_xnli(["en"], "validation", tmp_path)["en"]
    assert xnli["premise"] == ["Line\u2028two.", "A."] and xnli["hypothesis"] == ["Next\u0085line.", "B."]
    assert load_wikiann(["en"], "validation", tmp_path)["en"]["tokens"] == [["Obama\u2028x", "visited"], ["Nairobi\u0085"]]


@pytest.mark.real_data
def test_tokenizing_never_pickles_the_tokenizer_to_fingerprint_a_map(shared_data, tokenizer, monkeypatch):
    """`datasets` fingerprints a `map` by dill-pickling its function, tokenizer included (~5 s a call for XLM-R's
    250k pieces); the task tokenizers give it a fingerprint from one hash of the tokenizer instead."""
    import datasets.arrow_dataset
    import datasets.fingerprint

    original = datasets.fingerprint.update_fingerprint

    def refuse(fingerprint, transform, transform_args):
        if callable(transform_args.get("function")):
            raise AssertionError("datasets hashed the map function (and its tokenizer)")
        return original(fingerprint, transform, transform_args)

    dev = load_xnli(["tr", "sw"], "validation", data_dir=shared_data / "xnli")
    panx = load_wikiann("en", "validation", data_dir=shared_data / "panx")["en"].select(range(20))
    for module in (datasets.fingerprint, datasets.arrow_dataset):  # map's own call, and the transform decorators'
        monkeypatch.setattr(module, "update_fingerprint", refuse)
    rows = tokenize_xnli(dev, tokenizer, max_length=64)
    tagged = tokenize_and_align_labels(panx, tokenizer, max_length=32)
    # Fingerprints still separate what differs: the language's rows, the length, the tokenizer.
    assert rows["tr"]._fingerprint != rows["sw"]._fingerprint
    assert tokenize_xnli(dev["tr"], tokenizer, max_length=32)._fingerprint != rows["tr"]._fingerprint
    assert tokenize_xnli(dev["tr"], tokenizer, max_length=64)._fingerprint == rows["tr"]._fingerprint
    other = train_tokenizer([line for line in panx["tokens"] for line in [" ".join(line)]] * 5, vocab_size=120)
    assert tokenize_and_align_labels(panx, other, max_length=32)._fingerprint != tagged._fingerprint
