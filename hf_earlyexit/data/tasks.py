"""XNLI and WikiANN (PAN-X): per-language datasets with the Hub's columns and label ids, from the Hub or local files.

Local layouts (as in ../shared/data): `{data_dir}/{lang}.{split}.tsv` with header `premise<TAB>hypothesis<TAB>label`
(label as a name) and `{data_dir}/{lang}.{split}.conll` with `token<TAB>tag` lines and a blank line after every
sentence. Local files name the validation split "dev"; the returned datasets use the Hub's split names.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path

from datasets import ClassLabel, Dataset, Features, List, Value, load_dataset

from .textfiles import read_lines

EVAL_LANGUAGES = ("en", "ru", "hi", "tr", "sw", "ur")
XNLI_LABELS = ("entailment", "neutral", "contradiction")
WIKIANN_TAGS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC")
XNLI_LANGUAGES = ("ar", "bg", "de", "el", "en", "es", "fr", "hi", "ru", "sw", "th", "tr", "ur", "vi", "zh")
XNLI_HUB_ID = "facebook/xnli"
WIKIANN_HUB_ID = "unimelb-nlp/wikiann"
SPLITS = ("train", "validation", "test")
LOCAL_SPLIT_NAMES = {"train": "train", "validation": "dev", "test": "test"}
LOCAL_SUFFIXES = {"xnli": "tsv", "wikiann": "conll"}
LABEL_IGNORE_INDEX = -100  # CrossEntropyLoss's ignore_index

XNLI_FEATURES = Features(
    {"premise": Value("string"), "hypothesis": Value("string"), "label": ClassLabel(names=list(XNLI_LABELS))}
)
WIKIANN_FEATURES = Features(
    {
        "tokens": List(Value("string")),
        "ner_tags": List(ClassLabel(names=list(WIKIANN_TAGS))),
        "langs": List(Value("string")),
        "spans": List(Value("string")),
    }
)


def load_xnli(languages: str | Iterable[str], split: str, data_dir: str | Path | None = None) -> dict[str, Dataset]:
    """XNLI per language: columns premise, hypothesis, label (ClassLabel entailment/neutral/contradiction = 0/1/2)."""
    languages = _check_languages(languages, XNLI_LANGUAGES, "XNLI")
    return _load_task(
        languages,
        split,
        data_dir,
        XNLI_HUB_ID,
        XNLI_FEATURES,
        LOCAL_SUFFIXES["xnli"],
        lambda path, lang: _read_xnli_tsv(path),
    )


def load_wikiann(languages: str | Iterable[str], split: str, data_dir: str | Path | None = None) -> dict[str, Dataset]:
    """WikiANN per language: columns tokens, ner_tags (List(ClassLabel) over the 7 IOB2 tags), langs, spans."""
    languages = _check_languages(languages, None, "WikiANN")
    return _load_task(
        languages, split, data_dir, WIKIANN_HUB_ID, WIKIANN_FEATURES, LOCAL_SUFFIXES["wikiann"], _read_conll
    )


def read_xnli_files(paths: Iterable[str | Path]) -> Dataset:
    """XNLI-layout TSV files of any name (e.g. the English NLI training pairs of ../shared/data/nli), in order."""
    return _read_files(paths, XNLI_FEATURES, lambda path: _read_xnli_tsv(path))


def read_wikiann_files(paths: Iterable[str | Path], lang: str = "en") -> Dataset:
    """CoNLL files of any name (tokens of language ``lang``), in order."""
    return _read_files(paths, WIKIANN_FEATURES, lambda path: _read_conll(path, lang))


def _read_files(paths, features: Features, read_local) -> Dataset:
    paths = [Path(path) for path in paths]
    missing = [str(path) for path in paths if not path.is_file()]
    if not paths or missing:
        raise ValueError(f"train files {missing or '[]'} do not exist; expected one or more local task files")
    columns: dict[str, list] = {}
    for path in paths:
        for column, values in read_local(path).items():
            columns.setdefault(column, []).extend(values)
    return Dataset.from_dict(columns, features=features)


def _load_task(languages, split, data_dir, hub_id, features, suffix, read_local) -> dict[str, Dataset]:
    split = normalize_split(split)
    if data_dir is None:
        return {lang: _from_hub(hub_id, lang, split, features) for lang in languages}
    # Every path checked before any file is parsed.
    paths = {lang: _local_path(data_dir, lang, split, suffix) for lang in languages}
    return {lang: Dataset.from_dict(read_local(path, lang), features=features) for lang, path in paths.items()}


def tokenize_xnli(dataset, tokenizer, max_length: int = 128):
    """Premise/hypothesis as a sentence pair, truncated to `max_length`, unpadded (pad per batch in the collator)."""

    def encode(batch):
        return tokenizer(batch["premise"], batch["hypothesis"], truncation=True, max_length=max_length)

    key = _tokenization_key(tokenizer, "xnli", max_length)
    return _map_each(
        dataset,
        lambda ds: ds.map(
            encode, batched=True, remove_columns=["premise", "hypothesis"], new_fingerprint=_fingerprint(ds, key)
        ),
    )


def tokenize_and_align_labels(dataset, tokenizer, max_length: int = 128):
    """Word-level tags → sub-token `labels`: a word's first sub-token carries its tag, the rest (and specials) -100."""

    def encode(batch):
        encoding = tokenizer(batch["tokens"], is_split_into_words=True, truncation=True, max_length=max_length)
        encoding["labels"] = [_align(encoding.word_ids(row), tags) for row, tags in enumerate(batch["ner_tags"])]
        return encoding

    key = _tokenization_key(tokenizer, "wikiann", max_length)

    def apply(ds):
        return ds.map(encode, batched=True, remove_columns=ds.column_names, new_fingerprint=_fingerprint(ds, key))

    return _map_each(dataset, apply)


def _align(word_ids: list[int | None], tags: list[int]) -> list[int]:
    labels, previous = [], None
    for word in word_ids:
        labels.append(tags[word] if word is not None and word != previous else LABEL_IGNORE_INDEX)
        previous = word
    return labels


def _tokenization_key(tokenizer, kind: str, max_length: int) -> str | None:
    """What a tokenization `map` depends on, hashed once: without it `datasets` dill-pickles the tokenizer (a 250k-piece
    XLM-R vocabulary: ~5 s) to fingerprint every `map` call. None (let `datasets` hash) for a tokenizer without a
    serialisable fast backend."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    settings = (type(tokenizer).__name__, tokenizer.padding_side, tokenizer.truncation_side, tokenizer.model_max_length)
    state = json.loads(backend.to_str())
    state.pop("truncation", None), state.pop("padding", None)  # per-call settings of the last call, not the tokenizer
    digest = hashlib.sha256(json.dumps(state, sort_keys=True).encode())
    digest.update(repr((settings, kind, max_length)).encode())
    return digest.hexdigest()


def _fingerprint(ds, key: str | None) -> str | None:
    return None if key is None else hashlib.sha256(f"{ds._fingerprint}:{key}".encode()).hexdigest()[:32]


def _map_each(dataset, transform):
    if isinstance(dataset, Mapping):
        return {name: transform(ds) for name, ds in dataset.items()}
    return transform(dataset)


def _check_languages(languages, known: tuple[str, ...] | None, task: str) -> list[str]:
    languages = [languages] if isinstance(languages, str) else list(languages)
    if not languages:
        raise ValueError(f"no languages given for {task}: expected language codes such as {list(EVAL_LANGUAGES)}")
    for lang in languages:
        if known is not None and lang not in known:
            raise ValueError(f"unknown {task} language code {lang!r}: expected one of {', '.join(known)}")
    return languages


def normalize_split(split: str) -> str:
    """The Hub's name of a split ("dev", the local files' name, is "validation"); unknown names are refused."""
    split = "validation" if split == "dev" else split
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: expected one of {', '.join(SPLITS)} ('dev' = 'validation')")
    return split


def local_task_file(task: str, data_dir: str | Path, lang: str, split: str) -> Path:
    """The local file `load_xnli` / `load_wikiann` read for a language and split."""
    return _local_path(data_dir, lang, normalize_split(split), LOCAL_SUFFIXES[task])


def _local_path(data_dir: str | Path, lang: str, split: str, suffix: str) -> Path:
    path = Path(data_dir) / f"{lang}.{LOCAL_SPLIT_NAMES[split]}.{suffix}"
    if not path.is_file():
        raise ValueError(f"{path} does not exist: expected {{data_dir}}/{{lang}}.{LOCAL_SPLIT_NAMES[split]}.{suffix}")
    return path


def _from_hub(repo_id: str, lang: str, split: str, features: Features) -> Dataset:
    dataset = load_dataset(repo_id, lang, split=split)
    missing = [column for column in features if column not in dataset.column_names and column != "spans"]
    if missing:
        raise ValueError(f"{repo_id} ({lang}, {split}) lacks column(s) {missing}: expected {list(features)}")
    return dataset.select_columns([column for column in features if column in dataset.column_names])


def _read_xnli_tsv(path: Path) -> dict[str, list]:
    lines = read_lines(str(path))
    header = ("premise", "hypothesis", "label")
    if not lines or tuple(lines[0].split("\t")) != header:
        found = lines[0].split("\t") if lines else "an empty file"
        raise ValueError(f"{path}:1: expected the header premise<TAB>hypothesis<TAB>label, got {found}")
    columns = {"premise": [], "hypothesis": [], "label": []}
    for number, line in enumerate(lines[1:], start=2):
        if not line:
            continue  # the trailing newline
        fields = line.split("\t")
        if len(fields) != 3:
            raise ValueError(
                f"{path}:{number}: expected 3 tab-separated columns (premise, hypothesis, label), got {len(fields)}"
            )
        if fields[2] not in XNLI_LABELS:
            raise ValueError(f"{path}:{number}: label {fields[2]!r} is not one of {', '.join(XNLI_LABELS)}")
        for column, value in zip(header, fields):
            columns[column].append(value)
    if not columns["label"]:
        raise ValueError(f"{path} holds no examples: expected premise<TAB>hypothesis<TAB>label rows after the header")
    return columns


def _read_conll(path: Path, lang: str) -> dict[str, list]:
    columns = {"tokens": [], "ner_tags": [], "langs": [], "spans": []}
    tokens, tags = [], []

    def end_sentence():
        if tokens:
            columns["tokens"].append(tokens)
            columns["ner_tags"].append(tags)
            columns["langs"].append([lang] * len(tokens))
            columns["spans"].append(_spans(tokens, tags))

    for number, line in enumerate(read_lines(str(path)), start=1):
        if not line.strip():
            end_sentence()
            tokens, tags = [], []
            continue
        fields = line.split("\t")
        if len(fields) != 2 or not fields[0]:
            raise ValueError(f"{path}:{number}: expected 'token<TAB>tag', got {len(fields)} tab-separated field(s)")
        if fields[1] not in WIKIANN_TAGS:
            raise ValueError(f"{path}:{number}: tag {fields[1]!r} is not one of {', '.join(WIKIANN_TAGS)}")
        tokens.append(fields[0])
        tags.append(fields[1])
    end_sentence()
    if not columns["tokens"]:
        raise ValueError(
            f"{path} holds no sentences: expected token<TAB>tag lines with a blank line after each sentence"
        )
    return columns


def _spans(tokens: list[str], tags: list[str]) -> list[str]:
    """Entity spans as the Hub dataset spells them ("PER: George Washington")."""
    spans: list[tuple[str, list[str]]] = []
    inside = None
    for token, tag in zip(tokens, tags):
        entity = tag[2:] if tag != "O" else None
        if entity and (tag.startswith("B-") or entity != inside):
            spans.append((entity, [token]))
        elif entity:
            spans[-1][1].append(token)
        inside = entity
    return [f"{entity}: {' '.join(words)}" for entity, words in spans]
