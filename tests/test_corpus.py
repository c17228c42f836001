"""Distillation corpus: layouts, language-aligned partitions, sampling, packing, exact resume, bad input."""

import gzip
import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from hf_earlyexit.data.corpus import (
    count_tokens_by_language,
    load_distillation_corpus,
    mlm_data_collator,
    pack_for_mlm,
    plan_corpus,
    sampling_probabilities,
)
from hf_earlyexit.data.language_table import TO_ISO_639_1
from hf_earlyexit.data.stream import CHUNK_ROWS
from hf_earlyexit.data.tokenizer import train_tokenizer

PARTITIONS = 5
SOME_LANGUAGES = ["eng", "rus", "hin", "tur", "swh", "urd", "deu", "tzl", "cmn", "ara"]


@pytest.fixture(scope="module")
def tatoeba(shared_data):
    return str(shared_data / "text" / "tatoeba")


@pytest.fixture(scope="module")
def tatoeba_lines(tatoeba):
    """(language, line) multiset of the files themselves, read without the library under test."""
    from pathlib import Path

    lines = Counter()
    for path in Path(tatoeba).glob("*.txt"):
        text = path.read_text("utf-8")
        lang = TO_ISO_639_1.get(path.stem, path.stem)  # the stream names eng.txt's rows "en"
        lines.update((lang, line) for line in text.split("\n")[: -1 if text.endswith("\n") else None] if line.strip())
    return lines


@pytest.fixture(scope="module")
def tatoeba_partitions(tatoeba):
    return [list(load_distillation_corpus(tatoeba, partition=p, seed=0)) for p in range(PARTITIONS)]


@pytest.fixture(scope="module")
def tokenizer(shared_data):
    folder = shared_data / "text" / "tatoeba"
    texts = [
        line
        for lang in ("eng", "rus", "hin", "deu", "fra", "tur")
        for line in (folder / f"{lang}.txt").read_text("utf-8").splitlines()[:200]
    ]
    return train_tokenizer(texts, vocab_size=300)


@pytest.mark.real_data
def test_partitions_are_disjoint_and_cover_every_line_once(tatoeba_partitions, tatoeba_lines):
    assert len(tatoeba_lines) > 80000 and len({lang for lang, _ in tatoeba_lines}) == 113
    union = Counter()
    for rows in tatoeba_partitions:
        union.update((row["lang"], row["text"]) for row in rows)
    assert union == tatoeba_lines  # multiset equality: nothing lost, nothing twice
    sizes = [len(rows) for rows in tatoeba_partitions]
    assert sum(sizes) == sum(tatoeba_lines.values()) and max(sizes) - min(sizes) <= 113


@pytest.mark.real_data
def test_every_language_keeps_its_global_share_in_every_partition(tatoeba, tatoeba_partitions):
    plan = plan_corpus(tatoeba, num_partitions=PARTITIONS)
    assert plan.rows["en"] == 1000 and plan.rows["sw"] == 390 and plan.rows["tzl"] == 104
    for partition, rows in enumerate(tatoeba_partitions):
        counts = Counter(row["lang"] for row in rows)
        assert counts == plan.partition_rows(partition)
        for lang, total in plan.rows.items():
            assert abs(counts[lang] - total / PARTITIONS) < 1, (partition, lang)
        # Languages are mixed along the stream, not one after another: the first tenth holds most languages.
        assert len({row["lang"] for row in rows[: len(rows) // 10]}) > 90


@pytest.mark.real_data
def test_temperature_sampling_follows_the_xlmr_formula(tatoeba):
    alpha = 0.3
    plan = plan_corpus(tatoeba, num_partitions=PARTITIONS, sampling="temperature", temperature_alpha=alpha)
    probabilities = plan.probabilities(0)
    norm = sum(n**alpha for n in plan.rows.values())
    for lang, n in plan.rows.items():
        assert probabilities[lang] == pytest.approx(n**alpha / norm, rel=1e-12)
    assert probabilities["tzl"] / probabilities["en"] == pytest.approx((104 / 1000) ** alpha)

    rows = list(load_distillation_corpus(tatoeba, partition=0, sampling="temperature", temperature_alpha=alpha))
    assert len(rows) == sum(plan.partition_rows(0).values())  # same budget as the proportional partition
    counts = Counter(row["lang"] for row in rows)
    observed = np.array([counts[lang] for lang in plan.languages])
    expected = np.array([probabilities[lang] * len(rows) for lang in plan.languages])
    chi2 = float(((observed - expected) ** 2 / expected).sum())
    degrees = len(plan.languages) - 1
    assert chi2 < degrees + 4 * math.sqrt(2 * degrees), chi2  # far above any p < 1e-4 outcome
    # Small languages are upsampled (repeated), large ones cut: the point of temperature sampling.
    assert counts["tzl"] > plan.partition_rows(0)["tzl"] and counts["en"] < plan.partition_rows(0)["en"]


@pytest.mark.real_data
def test_same_seed_same_stream_other_seed_other_order(tatoeba):
    def head(seed):
        stream = load_distillation_corpus(tatoeba, languages=SOME_LANGUAGES, partition=1, seed=seed)
        return [(row["lang"], row["text"]) for row in stream]

    first = head(7)
    assert head(7) == first
    other = head(8)
    assert other != first and sorted(other) == sorted(first)  # same partition, other interleaving


@pytest.mark.real_data
def test_resume_mid_partition_yields_exactly_the_rest(tatoeba):
    uninterrupted = list(load_distillation_corpus(tatoeba, partition=3, seed=1))
    dataset = load_distillation_corpus(tatoeba, partition=3, seed=1)
    iterator = iter(dataset)
    head = [next(iterator) for _ in range(7777)]
    state = json.loads(json.dumps(dataset.state_dict()))  # survives the trip through a checkpoint file
    resumed = load_distillation_corpus(tatoeba, partition=3, seed=1)
    resumed.load_state_dict(state)
    assert head + list(resumed) == uninterrupted


def _resumed_rest(make_stream, rows_before):
    """(rows the stream yields after `rows_before` rows, rows a fresh stream yields from the saved state)."""
    dataset = make_stream()
    iterator = iter(dataset)
    for _ in range(rows_before):
        next(iterator)
    state = json.loads(json.dumps(dataset.state_dict()))
    rest = list(iterator)
    resumed = make_stream()
    resumed.load_state_dict(state)
    return rest, list(resumed)


@pytest.mark.real_data
def test_resume_of_temperature_sampling_yields_exactly_the_rest(tatoeba):
    # Small languages cycle through their slice several times: the resumed readers must be at the same lap.
    def stream():
        return load_distillation_corpus(tatoeba, partition=2, sampling="temperature")

    # Inside the first chunk of language draws, at its last row, at the boundary, in a later chunk.
    for rows_before in (1, CHUNK_ROWS - 1, CHUNK_ROWS, 3 * CHUNK_ROWS + 17):
        rest, resumed = _resumed_rest(stream, rows_before)
        assert resumed == rest and len(rest) > 0


def test_resume_across_partitions_continues_in_the_right_partition(tmp_path):
    for lang, size in {"en": 40, "sw": 25, "hi": 10}.items():
        (tmp_path / f"{lang}.txt").write_text("\n".join(_lines(lang, size)) + "\n")

    def stream():
        return load_distillation_corpus(str(tmp_path), num_partitions=5, seed=3)

    everything = list(stream())
    plan = plan_corpus(str(tmp_path), num_partitions=5)
    first_three = sum(sum(plan.partition_rows(p).values()) for p in range(3))
    assert everything[:first_three] == [
        row for p in range(3) for row in load_distillation_corpus(str(tmp_path), num_partitions=5, partition=p, seed=3)
    ]
    for rows_before in (first_three - 1, first_three, first_three + 4):
        rest, resumed = _resumed_rest(stream, rows_before)
        assert resumed == rest == everything[rows_before:]


def test_resume_does_not_open_files_before_the_position(tmp_path):
    sizes = [4, 7, 5]
    for index, size in enumerate(sizes):
        folder = tmp_path / "en"
        folder.mkdir(exist_ok=True)
        start = sum(sizes[:index])
        (folder / f"part-{index}.txt").write_text("\n".join(_lines("en", size, start)) + "\n")
    (tmp_path / "sw.txt").write_text("\n".join(_lines("sw", 6)) + "\n")
    dataset = load_distillation_corpus(str(tmp_path), num_partitions=1, seed=0)
    rows = list(dataset)
    # The first position at which English has left its first two files behind.
    english_seen = np.cumsum([row["lang"] == "en" for row in rows])
    position = int(np.argmax(english_seen >= 11)) + 1
    iterator = iter(dataset)
    for _ in range(position):
        next(iterator)
    state = dataset.state_dict()
    resumed = load_distillation_corpus(str(tmp_path), num_partitions=1, seed=0)
    (tmp_path / "en" / "part-0.txt").unlink()  # after planning: opening it now would fail
    (tmp_path / "en" / "part-1.txt").unlink()
    resumed.load_state_dict(state)
    assert list(resumed) == rows[position:]


def test_a_new_epoch_reorders_the_same_rows(tmp_path):
    for lang, size in {"en": 30, "sw": 30}.items():
        (tmp_path / f"{lang}.txt").write_text("\n".join(_lines(lang, size)) + "\n")
    dataset = load_distillation_corpus(str(tmp_path), num_partitions=1, seed=5)
    first = list(dataset)
    dataset.set_epoch(1)
    second = list(dataset)
    assert second != first and sorted(map(str, second)) == sorted(map(str, first))
    dataset.set_epoch(0)
    assert list(dataset) == first


@pytest.mark.real_data
def test_resume_of_packed_blocks_yields_exactly_the_rest(tatoeba, tokenizer):
    def packed():
        return pack_for_mlm(
            load_distillation_corpus(tatoeba, partition=4, languages=["eng", "rus", "hin", "swh"]),
            tokenizer,
            32,
            batch_size=100,
        )

    uninterrupted = [row["input_ids"] for row in packed()]
    dataset = packed()
    iterator = iter(dataset)
    head = [next(iterator)["input_ids"] for _ in range(123)]
    resumed = packed()
    resumed.load_state_dict(dataset.state_dict())
    assert head + [row["input_ids"] for row in resumed] == uninterrupted


@pytest.mark.real_data
def test_packing_makes_full_blocks_from_the_tokenised_text(tatoeba, tokenizer):
    corpus = load_distillation_corpus(tatoeba, partition=0, languages=["eng", "tur"], num_partitions=PARTITIONS)
    texts = list(corpus)
    blocks = list(pack_for_mlm(corpus, tokenizer, block_size=16, batch_size=len(texts)))
    tokens = [i for row in texts for i in tokenizer(row["text"])["input_ids"]]
    assert all(len(block["input_ids"]) == 16 for block in blocks)
    assert [i for block in blocks for i in block["input_ids"]] == tokens[: len(tokens) // 16 * 16]  # no padding
    for block in blocks:
        # The collator's own default (tokenizer.get_special_tokens_mask) marks every special id, <unk> included.
        assert block["special_tokens_mask"] == [int(i in tokenizer.all_special_ids) for i in block["input_ids"]]
    counts = count_tokens_by_language(corpus, tokenizer)
    assert sum(counts.values()) == len(tokens) and set(counts) == {"en", "tr"}
    assert counts["en"] == sum(len(tokenizer(r["text"])["input_ids"]) for r in texts if r["lang"] == "en")


@pytest.mark.real_data
def test_mlm_collator_masks_fifteen_percent_of_ordinary_tokens(tatoeba, tokenizer):
    blocks = list(
        pack_for_mlm(load_distillation_corpus(tatoeba, partition=0, languages=["deu"]), tokenizer, 64).take(40)
    )
    batch = mlm_data_collator(tokenizer, seed=0)(blocks)
    original = np.array([block["input_ids"] for block in blocks])
    special = np.array([block["special_tokens_mask"] for block in blocks]).astype(bool)
    chosen = batch["labels"].numpy() != -100
    assert batch["input_ids"].shape == (40, 64) and "attention_mask" in batch
    assert not (chosen & special).any()
    assert 0.12 < chosen.sum() / (~special).sum() < 0.18
    assert (batch["labels"].numpy()[chosen] == original[chosen]).all()
    assert (batch["input_ids"].numpy()[chosen] == tokenizer.mask_token_id).mean() == pytest.approx(0.8, abs=0.06)


def test_sampling_probabilities_formulas():
    rows = {"en": 900, "sw": 100}
    assert sampling_probabilities(rows, "proportional") == {"en": 0.9, "sw": 0.1}
    tempered = sampling_probabilities(rows, "temperature", 0.5)
    assert tempered["sw"] == pytest.approx(10 / (30 + 10))
    assert sampling_probabilities(rows, "temperature", 1.0) == pytest.approx({"en": 0.9, "sw": 0.1})


# --- layouts as a Hub repo might have them, exercised with local files --------------------------------------------


def _lines(lang, count, start=0):
    return [f"{lang} sentence {i}" for i in range(start, start + count)]


def test_per_language_folders_with_several_files(tmp_path):
    for lang, sizes in {"en": [4, 7, 5], "sw": [6]}.items():
        (tmp_path / "data" / lang).mkdir(parents=True)
        start = 0
        for index, size in enumerate(sizes):
            (tmp_path / "data" / lang / f"part-{index:02d}.txt").write_text("\n".join(_lines(lang, size, start)) + "\n")
            start += size
    plan = plan_corpus(str(tmp_path), num_partitions=3)
    assert plan.rows == {"en": 16, "sw": 6}
    for partition in range(3):
        rows = list(load_distillation_corpus(str(tmp_path), num_partitions=3, partition=partition))
        start, stop = plan.bounds("en", partition)
        assert [r["text"] for r in rows if r["lang"] == "en"] == _lines("en", stop - start, start)
        assert [r["text"] for r in rows if r["lang"] == "sw"] == _lines("sw", 2, 2 * partition)
    everything = list(load_distillation_corpus(str(tmp_path), num_partitions=3))  # partition=None: all, in order
    assert Counter(r["lang"] for r in everything) == {"en": 16, "sw": 6}


def test_language_from_file_names_and_compressed_text(tmp_path):
    (tmp_path / "cc100.hi.jsonl").write_text(
        "\n".join(json.dumps({"text": t, "id": i}) for i, t in enumerate(_lines("hi", 5))) + "\n"
    )
    with gzip.open(tmp_path / "ur.txt.gz", "wt", encoding="utf-8") as handle:
        handle.write("\n".join(_lines("ur", 5)))  # no final newline: the last line still counts
    (tmp_path / "README.md").write_text("not data")
    (tmp_path / "sw.json").write_text(json.dumps([{"text": t} for t in _lines("sw", 5)], indent=1))  # one array
    rows = list(load_distillation_corpus(str(tmp_path), num_partitions=1, partition=0))
    assert Counter(r["lang"] for r in rows) == {"hi": 5, "ur": 5, "sw": 5}
    assert sorted(r["text"] for r in rows) == sorted(_lines("hi", 5) + _lines("ur", 5) + _lines("sw", 5))
    glob_rows = list(load_distillation_corpus(str(tmp_path / "*.jsonl"), num_partitions=1))
    assert [r["text"] for r in glob_rows] == _lines("hi", 5)


def test_language_column_in_mixed_parquet_and_jsonl(tmp_path):
    languages = ["en", "tr", "en", "en", "tr", "en", "tr", "en", "tr", "en"]  # one file, languages mixed
    texts = [f"{lang} row {index}" for index, lang in enumerate(languages)]
    table = pa.Table.from_pylist([{"text": t, "lang": lang, "url": "x"} for t, lang in zip(texts, languages)])
    pq.write_table(table, tmp_path / "train-00000.parquet")
    (tmp_path / "extra.jsonl").write_text(
        "\n".join(json.dumps({"text": f"sw {i}", "language": "sw"}) for i in range(3))
    )
    plan = plan_corpus(str(tmp_path), num_partitions=2)
    assert plan.rows == {"en": 6, "sw": 3, "tr": 4}
    streamed = [list(load_distillation_corpus(str(tmp_path), num_partitions=2, partition=p)) for p in range(2)]
    union = Counter((r["lang"], r["text"]) for rows in streamed for r in rows)
    assert union == Counter(zip(languages, texts)) + Counter(("sw", f"sw {i}") for i in range(3))
    english = [t for t, lang in zip(texts, languages) if lang == "en"]
    assert [r["text"] for r in streamed[0] if r["lang"] == "en"] == english[:3]
    assert [r["text"] for r in streamed[1] if r["lang"] == "en"] == english[3:]
    assert set(streamed[0][0]) == {"text", "lang"}


def test_counting_pass_reads_an_unchanged_file_once(tmp_path, monkeypatch):
    from hf_earlyexit.data import corpus

    for lang in ("en", "sw"):
        (tmp_path / f"{lang}.txt").write_text("\n".join(_lines(lang, 6)) + "\n")
    counted = []
    inspect = corpus._inspect_file
    monkeypatch.setattr(corpus, "_inspect_file", lambda url, lang: counted.append(url) or inspect(url, lang))
    assert plan_corpus(str(tmp_path), num_partitions=2).rows == {"en": 6, "sw": 6}
    assert plan_corpus(str(tmp_path), num_partitions=3).rows == {"en": 6, "sw": 6} and len(counted) == 2
    with open(tmp_path / "en.txt", "a") as handle:  # a changed file is counted again
        handle.write("one more\n")
    assert plan_corpus(str(tmp_path), num_partitions=2).rows == {"en": 7, "sw": 6} and len(counted) == 3


def test_streaming_false_holds_the_same_rows(tmp_path):
    for lang in ("en", "sw"):
        (tmp_path / f"{lang}.txt").write_text("\n".join(_lines(lang, 9)) + "\n")
    streamed = list(load_distillation_corpus(str(tmp_path), num_partitions=3, partition=1, seed=4))
    stored = load_distillation_corpus(str(tmp_path), num_partitions=3, partition=1, seed=4, streaming=False)
    assert stored.to_list() == streamed and stored.column_names == ["text", "lang"]


def test_streaming_false_reads_a_changed_file_again(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "en.txt").write_text("old one\nold two\n")
    before = load_distillation_corpus(str(corpus), num_partitions=1, partition=0, streaming=False)
    (corpus / "en.txt").write_text("new one\nnew two\n")  # same row count, same size
    after = load_distillation_corpus(str(corpus), num_partitions=1, partition=0, streaming=False)
    assert sorted(before["text"]) == ["old one", "old two"] and sorted(after["text"]) == ["new one", "new two"]


# --- bad input: one line naming the file (and line) and what was expected ------------------------------------------


def _corpus(tmp_path, files):
    for name, content in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, pa.Table):
            pq.write_table(content, path)
        else:
            path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return str(tmp_path)


GOOD = {"en.txt": "a\nb\nc\nd\ne\n", "sw.txt": "f\ng\nh\ni\nj\n"}


@pytest.mark.parametrize(
    ("files", "kwargs", "message"),
    [
        (GOOD, {"languages": ["en", "xx"]}, r"unknown language code 'xx': .* holds 2 languages \(en, sw\)"),
        (
            {**GOOD, "notes.txt": "x\n"},
            {},
            r"notes\.txt: cannot tell its language: expected a 'lang'/'language' column",
        ),
        ({**GOOD, "hi.txt": ""}, {}, r"hi\.txt is empty: expected at least one text"),
        ({**GOOD, "hi.txt": b"ok\nfine\n\xe0\xa4\n"}, {}, r"hi\.txt:3: not valid UTF-8"),
        ({**GOOD, "hi.jsonl": '{"text": "a"}\n{"text": "b"\n'}, {}, r"hi\.jsonl:2: malformed JSON"),
        (
            {**GOOD, "hi.jsonl": '{"text": "a"}\n{"body": "b"}\n'},
            {},
            r"hi\.jsonl:2: expected a JSON object with a string 'text' field",
        ),
        (
            {**GOOD, "hi.parquet": pa.table({"body": ["a"] * 5})},
            {},
            r"hi\.parquet has no 'text' column \(columns: \['body'\]\)",
        ),
        (
            {**GOOD, "mix.parquet": pa.table({"text": ["a", "b"], "lang": ["en", "English"]})},
            {},
            r"mix\.parquet: row 2: unknown language code 'English' \(str\) in column 'lang'",
        ),
        (
            {**GOOD, "nul.parquet": pa.table({"text": ["a", "b", "c"], "lang": ["en", None, "en"]})},
            {},
            r"nul\.parquet: row 2: unknown language code None \(NoneType\) in column 'lang'",
        ),
        (
            {**GOOD, "hi.parquet": pa.table({"text": ["a", "b", None, "d", "e"]})},
            {},
            r"hi\.parquet: row 3: column 'text' is null \(NoneType\): expected a string",
        ),
        (
            {**GOOD, "hi.parquet": pa.table({"text": [1, 2, 3, 4, 5]})},
            {},
            r"hi\.parquet: row 1: column 'text' holds int64 values: expected strings",
        ),
        ({**GOOD, "en.ru.txt": "x\n"}, {}, r"en\.ru\.txt: the file name names several languages \(en, ru\)"),
        ({**GOOD, "raw/all.txt": "x\n"}, {}, r"all\.txt: cannot tell its language"),
        ({**GOOD, "new.txt": "x\n"}, {}, r"new\.txt: cannot tell its language"),
        (
            {**GOOD, "ur.txt": "one\ntwo\n"},
            {},
            r"language 'ur' has 2 rows .*ur\.txt.*expected at least num_partitions=5",
        ),
        (GOOD, {"partition": 5}, r"partition index 5 is out of range: expected 0 <= partition < num_partitions=5"),
        (GOOD, {"partition": -1}, r"partition index -1 is out of range"),
        (GOOD, {"sampling": {"en": 0.5, "sw": 0.4}}, r"sampling probabilities sum to 0\.9: expected them to sum to 1"),
        (
            GOOD,
            {"sampling": {"en": 1.0}},
            r"sampling probabilities name \['en'\]: expected exactly the corpus languages",
        ),
        (GOOD, {"sampling": "uniform"}, r"sampling='uniform': expected one of"),
        (
            GOOD,
            {"sampling": "temperature", "temperature_alpha": 0.0},
            r"temperature_alpha=0\.0: expected 0 < alpha <= 1",
        ),
        ({"README.md": "x"}, {}, r"holds no corpus files: expected \.txt, \.jsonl, \.json, \.parquet"),
    ],
)
def test_bad_input_is_one_clear_line(tmp_path, files, kwargs, message):
    source = _corpus(tmp_path, files)
    with pytest.raises(ValueError, match=message) as error:
        load_distillation_corpus(source, **kwargs)
    assert "\n" not in str(error.value)


def test_explicit_probabilities_are_used(tmp_path):
    source = _corpus(tmp_path, {"en.txt": "\n".join(_lines("en", 500)), "sw.txt": "\n".join(_lines("sw", 500))})
    rows = list(load_distillation_corpus(source, num_partitions=1, sampling={"en": 0.9, "sw": 0.1}))
    assert len(rows) == 1000
    assert 0.85 < sum(r["lang"] == "en" for r in rows) / 1000 < 0.95


# --- exact resume inside the Trainer ---------------------------------------------------------------------------------


def _tiny_mlm_trainer(tmp_path, tokenizer, stream_callback, seen, max_steps, **overrides):
    import torch
    from transformers import Trainer, TrainingArguments, XLMRobertaConfig, XLMRobertaForMaskedLM

    torch.manual_seed(0)
    config = XLMRobertaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=40,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = XLMRobertaForMaskedLM(config)
    model.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs["input_ids"].tolist()), with_kwargs=True
    )

    def collate(rows):  # unmasked, so the batches of two runs can be compared exactly
        ids = torch.tensor([row["input_ids"] for row in rows])
        return {"input_ids": ids, "labels": ids.clone()}

    arguments = {
        "output_dir": str(tmp_path),
        "max_steps": max_steps,
        "per_device_train_batch_size": 3,
        "gradient_accumulation_steps": 2,
        "save_steps": 3,
        "save_strategy": "steps",
        "report_to": [],
        "ignore_data_skip": True,
        "use_cpu": True,
        "logging_steps": 100,
        "disable_tqdm": True,
        **overrides,
    }
    return Trainer(
        model=model,
        args=TrainingArguments(**arguments),
        train_dataset=stream_callback.stream,
        data_collator=collate,
        callbacks=[stream_callback],
    )


@pytest.mark.real_data
@pytest.mark.slow
def test_trainer_resume_continues_the_stream_without_replay(tatoeba, tokenizer, tmp_path):
    from hf_earlyexit.data.resume import STREAM_STATE_NAME, StreamCheckpointCallback

    def packed():
        return pack_for_mlm(
            load_distillation_corpus(tatoeba, languages=SOME_LANGUAGES, partition=2), tokenizer, 24, batch_size=50
        )

    seen_full = []
    _tiny_mlm_trainer(tmp_path / "full", tokenizer, StreamCheckpointCallback(packed()), seen_full, max_steps=7).train()
    checkpoint = tmp_path / "full" / "checkpoint-3"
    assert (checkpoint / STREAM_STATE_NAME).is_file()

    seen_resumed = []
    callback = StreamCheckpointCallback(packed())
    callback.load_checkpoint(str(checkpoint))
    trainer = _tiny_mlm_trainer(tmp_path / "resumed", tokenizer, callback, seen_resumed, max_steps=7)
    trainer.train(resume_from_checkpoint=str(checkpoint))
    # 3 steps x 2 micro-batches were trained before the checkpoint; the resumed run sees exactly the rest.
    assert len(seen_full) == 14 and seen_resumed == seen_full[6:]
    # Without ignore_data_skip the Trainer would also skip batches of the restored stream: refused up front.
    callback = StreamCheckpointCallback(packed())
    callback.load_checkpoint(str(checkpoint))
    trainer = _tiny_mlm_trainer(tmp_path / "bad", tokenizer, callback, [], max_steps=7, ignore_data_skip=False)
    with pytest.raises(ValueError, match="ignore_data_skip=False would skip data twice"):
        trainer.train(resume_from_checkpoint=str(checkpoint))


def test_load_checkpoint_without_stream_state_is_refused(tmp_path):
    from hf_earlyexit.data.resume import StreamCheckpointCallback

    with pytest.raises(ValueError, match=r"stream_state\.json does not exist: expected a checkpoint written with"):
        StreamCheckpointCallback(None).load_checkpoint(str(tmp_path))


# ---- blocks trained per partition, seeded masks across a resume -------------------------------------------------

DEMO_CORPUS = str(Path(__file__).resolve().parents[1] / "examples" / "configs" / "demo-tiny" / "data" / "corpus")


@pytest.fixture(scope="module")
def demo_tokenizer():
    texts = [line for path in sorted(Path(DEMO_CORPUS).glob("*.txt")) for line in path.read_text("utf-8").splitlines()]
    return train_tokenizer(texts, vocab_size=300)


@pytest.mark.parametrize("max_steps", [None, 2])
def test_count_trained_tokens_counts_the_blocks_and_the_tokens_trained(demo_tokenizer, max_steps):
    from hf_earlyexit.data.packing import count_trained_tokens

    corpus = load_distillation_corpus(DEMO_CORPUS, num_partitions=1, partition=0)
    blocks = list(pack_for_mlm(corpus, demo_tokenizer, 16, batch_size=50))
    available, tokens = count_trained_tokens(corpus, demo_tokenizer, 16, 3, max_steps=max_steps, batch_size=50)
    assert available == (len(blocks) if max_steps is None else 6)
    # Independently: each 50-row batch's tokens labelled by language, cut to whole blocks, then to whole steps.
    rows = list(corpus)
    labelled = []
    for start in range(0, len(rows), 50):
        batch = [(row["lang"], n) for row in rows[start : start + 50] for n in demo_tokenizer(row["text"])["input_ids"]]
        labelled += batch[: len(batch) // 16 * 16]
    trained = labelled[: available // 3 * 3 * 16]
    assert [n for _, n in trained] == [n for block in blocks[: available // 3 * 3] for n in block["input_ids"]]
    assert tokens == dict(sorted(Counter(lang for lang, _ in trained).items()))


def test_a_partition_shorter_than_steps_per_partition_is_refused_before_any_model(demo_tokenizer, tmp_path):
    from hf_earlyexit.cli import parse_config
    from hf_earlyexit.distil import DISTIL_ARGUMENTS, run_distillation

    demo_tokenizer.save_pretrained(tmp_path / "tokenizer")
    args = parse_config(
        DISTIL_ARGUMENTS,
        ["--teacher_name_or_path", "nobody/no-teacher", "--tokenizer_name_or_path", str(tmp_path / "tokenizer"),
         "--student_init", "compact", "--corpus", DEMO_CORPUS, "--num_partitions", "2", "--block_size", "32",
         "--per_device_train_batch_size", "4", "--steps_per_partition", "500", "--output_dir", str(tmp_path / "out"),
         "--use_cpu", "true", "--report_to", "none"],
    )  # fmt: skip
    corpus = load_distillation_corpus(DEMO_CORPUS, num_partitions=2, partition=0)
    real = sum(1 for _ in pack_for_mlm(corpus, demo_tokenizer, 32))
    with pytest.raises(ValueError, match=rf"partition 0 packs into {real} blocks of 32 tokens, {real // 4} steps"):
        run_distillation(*args)  # the teacher is not on this offline machine: the refusal comes before it loads


def test_seeded_masks_continue_after_a_resume_instead_of_repeating(demo_tokenizer):
    corpus = load_distillation_corpus(DEMO_CORPUS, num_partitions=1, partition=0)
    blocks = list(pack_for_mlm(corpus, demo_tokenizer, 16).take(8))
    first = mlm_data_collator(demo_tokenizer, seed=0)
    uninterrupted = [first([dict(block) for block in blocks])["labels"] for _ in range(3)]
    resumed = mlm_data_collator(demo_tokenizer, seed=0)
    resumed.set_position(batch_index=2, process_index=0)  # what StreamCheckpointCallback does at step 2
    assert torch.equal(resumed([dict(block) for block in blocks])["labels"], uninterrupted[2])
    assert not torch.equal(uninterrupted[0], uninterrupted[2])
    other_process = mlm_data_collator(demo_tokenizer, seed=0)
    other_process.set_position(batch_index=0, process_index=1)
    assert not torch.equal(other_process([dict(block) for block in blocks])["labels"], uninterrupted[0])


def test_stream_states_are_counted_over_every_pass():
    from datasets import Dataset

    from hf_earlyexit.data.resume import ResumableStream

    stream = ResumableStream(Dataset.from_dict({"x": list(range(6))}).to_iterable_dataset())
    stream.start_counting(examples_per_step=4)
    seen = [row["x"] for _ in range(2) for row in stream]  # the Trainer starts a second pass when the first ends
    assert seen == [0, 1, 2, 3, 4, 5] * 2
    state = stream.state_at(8)  # step 2 ended inside the second pass, at its second example
    resumed = ResumableStream(Dataset.from_dict({"x": list(range(6))}).to_iterable_dataset())
    resumed.load_state_dict(state)
    assert state["epoch"] == 1 and [row["x"] for row in resumed] == [2, 3, 4, 5]


def test_a_single_long_line_is_read_in_linear_time(tmp_path, monkeypatch):
    import time

    import hf_earlyexit.data.stream as stream

    monkeypatch.setattr(stream, "READ_CHARS", 256)  # many reads per line: re-joining the line each read shows up

    def cpu_seconds(chars: int) -> float:
        path = tmp_path / f"{chars}.txt"
        path.write_text("x" * chars + "\nlast\n")
        best = math.inf
        for _ in range(3):
            start = time.process_time()
            lines = [line for chunk in stream._text_line_chunks(str(path)) for line in chunk]
            best = min(best, time.process_time() - start)
        assert lines == ["x" * chars, "last"]
        return best

    small, large = cpu_seconds(200_000), cpu_seconds(800_000)
    # 4x the length: about 4x the time when linear, 16x when quadratic (a one-line JSON array of 24 MB took 11 s)
    assert large < 8 * max(small, 1e-3), (small, large)


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("en", "en"), ("eng", "en"), ("ger", "de"), ("cmn", "zh"), ("swh", "sw"), ("tzl", "tzl"), ("yue", "yue"),
        ("zh-Hans", "zh-Hans"), ("zho-Hant", "zh-Hant"), ("sr_Latn", "sr_Latn"), ("hi_rom", "hi_rom"),
        ("my_zaw", "my_zaw"), ("pt_BR", "pt_BR"), ("ns", "ns"),
        ("all", None), ("raw", None), ("new", None), ("dev", None), ("log", None), ("xx", None), ("en_dev", None),
        ("EN", None), ("train", None), (None, None),
    ],
)
def test_language_codes(name, code):
    from hf_earlyexit.data.corpus import language_code

    assert language_code(name) == code


def test_file_names_give_one_language_each_in_iso_639_1(tmp_path):
    # en.dev/ru.dev used to become one language "dev"; en.txt and eng.txt two languages; raw/ a language code.
    _corpus(tmp_path, {
        "en.dev.txt": "e1\ne2\n", "ru.dev.txt": "r1\nr2\n", "more/eng.txt": "e3\n", "raw/hi.txt": "h1\nh2\n",
        "zh-Hans.txt": "z1\nz2\n", "swh.txt": "s1\ns2\n",
    })
    plan = plan_corpus(str(tmp_path), num_partitions=1)
    assert plan.rows == {"en": 3, "hi": 2, "ru": 2, "sw": 2, "zh-Hans": 2}
    rows = list(load_distillation_corpus(str(tmp_path), languages=["eng", "swh"], num_partitions=1))
    assert Counter(r["lang"] for r in rows) == {"en": 3, "sw": 2}


def test_language_column_values_name_languages_as_file_names_do(tmp_path):
    records = [{"text": f"t{i}", "lang": lang} for i, lang in enumerate(["en", "eng", "tr", "tur", "en", "tr"])]
    (tmp_path / "json").mkdir()
    (tmp_path / "json" / "mix.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    (tmp_path / "parquet").mkdir()
    pq.write_table(pa.Table.from_pylist(records), tmp_path / "parquet" / "mix.parquet")
    expected = Counter((("en" if r["lang"].startswith("e") else "tr"), r["text"]) for r in records)
    for layout in ("json", "parquet"):
        assert plan_corpus(str(tmp_path / layout), num_partitions=1).rows == {"en": 3, "tr": 3}
        rows = list(load_distillation_corpus(str(tmp_path / layout), num_partitions=1))
        assert Counter((r["lang"], r["text"]) for r in rows) == expected


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_blank_lines_are_not_rows_and_the_count_matches_the_stream(tmp_path, newline):
    lines = ["\ufeffone", "", "two", "   ", "\tthree", "", ""]
    (tmp_path / "en.txt").write_bytes(newline.join(lines).encode("utf-8"))
    assert plan_corpus(str(tmp_path), num_partitions=1).rows == {"en": 3}
    assert [r["text"] for r in load_distillation_corpus(str(tmp_path), num_partitions=1)] == ["one", "two", "\tthree"]


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_jsonl_with_u2028_and_u0085_inside_strings_is_valid(tmp_path, newline):
    texts = ["line\u2028separator", "next\u0085line", "form\x0cfeed"]
    body = newline.join(json.dumps({"text": t}, ensure_ascii=False) for t in texts) + newline
    (tmp_path / "en.jsonl").write_bytes(body.encode("utf-8"))
    assert plan_corpus(str(tmp_path), num_partitions=1).rows == {"en": 3}
    assert [r["text"] for r in load_distillation_corpus(str(tmp_path), num_partitions=1)] == texts


def test_the_counting_pass_is_linear_in_a_single_long_line(tmp_path, monkeypatch):
    import time

    import hf_earlyexit.data.textfiles as textfiles

    monkeypatch.setattr(textfiles, "CHUNK_CHARS", 1024)  # many chunks per line: re-joining the line shows up

    def cpu_seconds(text: str) -> float:
        path = tmp_path / "en.txt"
        path.write_text(text)
        best = math.inf
        for _ in range(3):
            start = time.process_time()
            lines = textfiles.count_lines(str(path))
            best = min(best, time.process_time() - start)
        assert lines == text.count("\n")
        return best

    size = 6_000_000
    many = cpu_seconds(("x" * 99 + "\n") * (size // 100))
    one = cpu_seconds("x" * size + "\n")  # quadratic before: ~6,000 chunks re-copying up to 6 MB each (22x)
    assert one < 5 * max(many, 1e-3), (many, one)


def test_a_parquet_shard_holding_several_languages_is_read_once(tmp_path, monkeypatch):
    import hf_earlyexit.data.stream as stream

    languages = ["en", "tr", "sw", "hi"]
    for shard in range(3):
        table = pa.Table.from_pylist(
            [{"text": f"{lang} {shard} {i}", "lang": lang} for i in range(40) for lang in languages]
        )
        pq.write_table(table, tmp_path / f"train-{shard:05d}.parquet", row_group_size=16)
    plan_corpus(str(tmp_path), num_partitions=2)  # the counting pass (remembered while the files are unchanged)
    opened = Counter()
    real_open = stream.fsspec.open

    def counting_open(url, *args, **kwargs):
        opened[Path(url).name] += 1
        return real_open(url, *args, **kwargs)

    monkeypatch.setattr(stream.fsspec, "open", counting_open)
    monkeypatch.setattr(stream, "PARQUET_BATCH_ROWS", 32)
    rows = list(load_distillation_corpus(str(tmp_path), num_partitions=2, partition=0, seed=3))
    assert opened == {f"train-{shard:05d}.parquet": 1 for shard in range(2)}  # shard 2 holds partition 1 only
    for lang in languages:  # each language's rows in file order: the first 60 of its 120
        assert [r["text"] for r in rows if r["lang"] == lang] == [f"{lang} {s} {i}" for s in range(3) for i in range(40)][:60]
