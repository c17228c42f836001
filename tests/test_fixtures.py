"""The embedded demo fixtures (examples/configs/demo-tiny/data) parse in the shared-data formats and have the documented
counts, label balance, scripts and tagging. Plain csv/str parsing on purpose: these tests must not depend on the
project's loaders, whose correctness they help to check."""

import csv
import unicodedata
from collections import Counter
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[1] / "examples" / "configs" / "demo-tiny" / "data"

EVAL_LANGUAGES = ("en", "ru", "hi", "tr", "sw", "ur")
# Unequal on purpose so that proportional and temperature sampling give visibly different mixtures.
CORPUS_LINES = {"en": 80, "ru": 60, "de": 60, "fr": 50, "es": 50, "tr": 50, "ar": 45, "hi": 45, "ur": 40, "sw": 40}
XNLI_HEADER = ["premise", "hypothesis", "label"]
XNLI_LABELS = ("entailment", "neutral", "contradiction")
XNLI_PAIRS = {"en.train": 90, **{f"{lang}.dev": 24 for lang in EVAL_LANGUAGES}}
PANX_TAGS = {"O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC"}
PANX_SENTENCES = {"en.train": 80, **{f"{lang}.dev": 20 for lang in EVAL_LANGUAGES}}

SCRIPT_OF_LANGUAGE = {
    "en": "LATIN", "de": "LATIN", "fr": "LATIN", "es": "LATIN", "tr": "LATIN", "sw": "LATIN",
    "ru": "CYRILLIC", "hi": "DEVANAGARI", "ar": "ARABIC", "ur": "ARABIC",
}  # fmt: skip
# Letters a language uses and its neighbours in this set mostly do not: they catch a file saved under the wrong name.
MARKER_LETTERS = {"de": "äöüß", "fr": "éèêàç", "es": "ñáíóú¿", "tr": "ığşİ", "ur": "ےٹڈڑںہ"}
URDU_ONLY_LETTERS = "ےٹڈڑں"


def script_share(text: str, script: str) -> float:
    """Share of the letters in `text` whose Unicode name starts with `script` (marks and digits are ignored)."""
    letters = [ch for ch in text if ch.isalpha()]
    assert letters, "no letters at all"
    return sum(unicodedata.name(ch, "").startswith(script) for ch in letters) / len(letters)


def read_lines(path: Path) -> list[str]:
    raw = path.read_bytes().decode("utf-8")  # strict: a bad byte fails here
    assert raw.endswith("\n"), f"{path.name}: last line has no newline"
    assert "\r" not in raw, f"{path.name}: CR line endings"
    return raw[:-1].split("\n")


def read_xnli(path: Path) -> list[list[str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    assert rows[0] == XNLI_HEADER, f"{path.name}: header {rows[0]}"
    for number, row in enumerate(rows[1:], start=2):
        assert len(row) == 3, f"{path.name}:{number}: {len(row)} fields"
        assert all(field and field == field.strip() and '"' not in field for field in row), f"{path.name}:{number}"
        assert row[2] in XNLI_LABELS, f"{path.name}:{number}: label {row[2]!r}"
    return rows[1:]


def read_conll(path: Path) -> list[list[tuple[str, str]]]:
    """Sentences as (token, tag) lists; asserts the shared layout: one blank line after every sentence, none extra."""
    sentences, current = [], []
    for number, line in enumerate(read_lines(path), start=1):
        if line == "":
            assert current, f"{path.name}:{number}: blank line without a sentence before it"
            sentences.append(current)
            current = []
            continue
        token, tag = line.split("\t")  # exactly two fields, or this raises
        assert token and token == token.strip() and " " not in token, f"{path.name}:{number}: token {token!r}"
        assert tag in PANX_TAGS, f"{path.name}:{number}: tag {tag!r}"
        current.append((token, tag))
    assert not current, f"{path.name}: last sentence not followed by a blank line"
    return sentences


def entity_spans(tags: list[str]) -> list[tuple[str, int]]:
    """(type, length) of each IOB2 entity; asserts that every I-X continues a B-X or I-X of the same type."""
    spans, previous = [], "O"
    for tag in tags:
        if tag.startswith("I-"):
            assert previous in (f"B-{tag[2:]}", tag), f"{tag} after {previous}"
            spans[-1] = (spans[-1][0], spans[-1][1] + 1)
        elif tag.startswith("B-"):
            spans.append((tag[2:], 1))
        previous = tag
    return spans


# ---- corpus ----


def test_corpus_has_exactly_the_documented_files_and_line_counts():
    files = {path.stem: path for path in (DATA / "corpus").glob("*.txt")}
    assert set(files) == set(CORPUS_LINES)
    counts = {lang: len(read_lines(path)) for lang, path in files.items()}
    assert counts == CORPUS_LINES
    assert all(40 <= count <= 80 for count in counts.values())


@pytest.mark.parametrize("lang", sorted(CORPUS_LINES))
def test_corpus_lines_are_clean_unique_sentences(lang):
    lines = read_lines(DATA / "corpus" / f"{lang}.txt")
    for number, line in enumerate(lines, start=1):
        assert line and line == line.strip(), f"{lang}:{number}: empty or padded line"
        assert "\t" not in line, f"{lang}:{number}: tab"
        assert len(line.split()) >= 3, f"{lang}:{number}: not a sentence: {line!r}"
    duplicates = [line for line, count in Counter(lines).items() if count > 1]
    assert not duplicates


@pytest.mark.parametrize("lang", sorted(CORPUS_LINES))
def test_corpus_script_matches_language(lang):
    text = (DATA / "corpus" / f"{lang}.txt").read_text(encoding="utf-8")
    assert script_share(text, SCRIPT_OF_LANGUAGE[lang]) > 0.97
    if lang in MARKER_LETTERS:
        assert set(MARKER_LETTERS[lang]) & set(text), f"{lang}: none of {MARKER_LETTERS[lang]}"
    if lang == "sw":  # Swahili in Latin script needs no diacritics; accented letters would mean another language
        assert all(ch.isascii() for ch in text if ch.isalpha())
    if lang == "ar":  # Arabic and Urdu share a script; the Urdu-only letters tell them apart
        assert not set(URDU_ONLY_LETTERS) & set(text)


def test_corpus_languages_are_not_copies_of_each_other():
    lines_by_language = {lang: set(read_lines(DATA / "corpus" / f"{lang}.txt")) for lang in CORPUS_LINES}
    for lang, lines in lines_by_language.items():
        others = set().union(*(other for name, other in lines_by_language.items() if name != lang))
        assert not lines & others, lang


# ---- XNLI ----


@pytest.mark.parametrize("name", sorted(XNLI_PAIRS))
def test_xnli_counts_and_label_balance(name):
    rows = read_xnli(DATA / "xnli" / f"{name}.tsv")
    assert len(rows) == XNLI_PAIRS[name]
    assert Counter(row[2] for row in rows) == {label: XNLI_PAIRS[name] // 3 for label in XNLI_LABELS}
    assert len({(row[0], row[1]) for row in rows}) == len(rows), "duplicate pair"
    # XNLI-style: every premise carries one hypothesis per label, so no label is guessable from the premise.
    labels_per_premise = {}
    for premise, _, label in rows:
        labels_per_premise.setdefault(premise, []).append(label)
    assert all(sorted(labels) == sorted(XNLI_LABELS) for labels in labels_per_premise.values())


@pytest.mark.parametrize("lang", [lang for lang in EVAL_LANGUAGES if lang != "en"])
def test_xnli_dev_is_a_translation_of_the_english_dev_set(lang):
    english = read_xnli(DATA / "xnli" / "en.dev.tsv")
    translated = read_xnli(DATA / "xnli" / f"{lang}.dev.tsv")
    assert [row[2] for row in translated] == [row[2] for row in english]
    # Same grouping of hypotheses under premises as the English file, row for row.
    assert [row[0] for row in translated].count(translated[0][0]) == 3
    assert [a[0] == b[0] for a, b in zip(english, english[1:])] == [
        a[0] == b[0] for a, b in zip(translated, translated[1:])
    ]
    assert not {text for row in translated for text in row[:2]} & {text for row in english for text in row[:2]}
    text = " ".join(row[0] + " " + row[1] for row in translated)
    assert script_share(text, SCRIPT_OF_LANGUAGE[lang]) > 0.97
    if lang in MARKER_LETTERS:
        assert set(MARKER_LETTERS[lang]) & set(text)


def test_xnli_train_and_dev_do_not_overlap():
    train = {row[0] for row in read_xnli(DATA / "xnli" / "en.train.tsv")}
    dev = {row[0] for row in read_xnli(DATA / "xnli" / "en.dev.tsv")}
    assert not train & dev


# ---- PAN-X ----


@pytest.mark.parametrize("name", sorted(PANX_SENTENCES))
def test_panx_counts_iob2_and_entity_variety(name):
    sentences = read_conll(DATA / "panx" / f"{name}.conll")
    assert len(sentences) == PANX_SENTENCES[name]
    spans = [span for sentence in sentences for span in entity_spans([tag for _, tag in sentence])]
    assert all(entity_spans([tag for _, tag in sentence]) for sentence in sentences), "a sentence without entities"
    assert {kind for kind, _ in spans} == {"PER", "ORG", "LOC"}
    multi_token_kinds = {kind for kind, length in spans if length > 1}
    assert len(multi_token_kinds) >= 2, f"multi-token entities only of {multi_token_kinds}"
    lang = name.split(".")[0]
    tokens = " ".join(token for sentence in sentences for token, _ in sentence)
    assert script_share(tokens, SCRIPT_OF_LANGUAGE[lang]) > 0.97


def test_iob2_checker_rejects_an_inside_tag_without_its_begin():
    assert entity_spans(["B-PER", "I-PER", "O", "B-LOC"]) == [("PER", 2), ("LOC", 1)]
    with pytest.raises(AssertionError):
        entity_spans(["O", "I-ORG"])
    with pytest.raises(AssertionError):
        entity_spans(["B-PER", "I-LOC"])


def test_panx_train_and_dev_sentences_differ():
    def sentence_texts(name):
        return {" ".join(token for token, _ in sentence) for sentence in read_conll(DATA / "panx" / f"{name}.conll")}

    assert not sentence_texts("en.train") & sentence_texts("en.dev")


# ---- the folder as a whole ----


def test_fixtures_stay_small_and_every_file_is_listed_in_the_readme_with_its_count():
    files = [path for path in DATA.rglob("*") if path.is_file()]
    assert sum(path.stat().st_size for path in files) < 200_000
    readme_rows = [
        line for line in (DATA / "README.md").read_text(encoding="utf-8").splitlines() if line.startswith("|")
    ]
    expected = {f"corpus/{lang}.txt": count for lang, count in CORPUS_LINES.items()}
    expected |= {f"xnli/{name}.tsv": count for name, count in XNLI_PAIRS.items()}
    expected |= {f"panx/{name}.conll": count for name, count in PANX_SENTENCES.items()}
    assert {path.relative_to(DATA).as_posix() for path in files} == set(expected) | {"README.md"}
    for relative, count in expected.items():
        rows = [row for row in readme_rows if f"`{relative}`" in row]
        assert len(rows) == 1 and f"| {count} |" in rows[0], relative


@pytest.mark.real_data
def test_fixture_formats_match_the_shared_data_and_text_is_not_taken_from_it(shared_data):
    """The same strict readers accept the real files, and no fixture sentence appears in them (it was written anew)."""
    shared_xnli = read_xnli(shared_data / "xnli" / "en.dev.tsv")
    assert len(shared_xnli) == 2490
    shared_panx = read_conll(shared_data / "panx" / "sw.dev.conll")
    assert len(shared_panx) == 1000
    for sentence in shared_panx:
        entity_spans([tag for _, tag in sentence])

    shared_xnli_text = {text for row in shared_xnli for text in row[:2]}
    ours = {text for row in read_xnli(DATA / "xnli" / "en.train.tsv") for text in row[:2]}
    ours |= {text for row in read_xnli(DATA / "xnli" / "en.dev.tsv") for text in row[:2]}
    assert not ours & shared_xnli_text

    tatoeba = {"en": "eng", "ru": "rus", "hi": "hin", "tr": "tur", "sw": "swh", "ur": "urd", "de": "deu", "fr": "fra"}
    tatoeba |= {"es": "spa", "ar": "ara"}
    for lang, code in tatoeba.items():
        shared_lines = set(read_lines(shared_data / "text" / "tatoeba" / f"{code}.txt"))
        assert not set(read_lines(DATA / "corpus" / f"{lang}.txt")) & shared_lines, lang
