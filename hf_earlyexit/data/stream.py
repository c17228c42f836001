"""The sampled stream of corpus partitions, read straight from the files the counting pass planned.

`datasets.interleave_datasets` over one IterableDataset per language cost about 90 µs per row (a thread hand-off
and a state copy per row), more than tokenising a short sentence. Here the language of every row is drawn in
chunks with numpy, each language's rows are read in bulk from its own files, and rows are handed out as plain
dicts of the declared features (so `datasets` does not re-encode them one by one).

The position is a single number (rows handed out in the current partition), kept in the `datasets` state dict,
so `IterableDataset.state_dict()` / `load_state_dict()` work unchanged, also through `map`, `take` and the
Trainer callback in resume.py. Resuming replays only the RNG draws up to that row, which gives every language's
position; files wholly before it are not opened and nothing skipped is tokenised.

This subclasses `datasets`' examples-iterable base class, the one extension point through which a source keeps
its own exact state inside an IterableDataset (a generator-based one resumes by replaying its generator).
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterator
from copy import copy
from itertools import chain

import fsspec
import numpy as np
import pyarrow.compute as pc
from datasets.iterable_dataset import _BaseExamplesIterable

from .textfiles import TEXT_ENCODING

CHUNK_ROWS = 4096  # languages drawn per RNG call; any value gives the same distribution, not the same stream
READ_CHARS = 1 << 14  # read-ahead per language: a partition starting at a file's start reads little past its end
PARQUET_BATCH_ROWS = 1 << 16
COMPRESSIONS = (".gz", ".bz2", ".xz", ".zst", ".lz4")  # the suffixes fsspec's compression="infer" knows
# numpy's multivariate_hypergeometric(method="marginals") refuses larger populations.
MAX_PROPORTIONAL_ROWS = 10**9


class CorpusStream(_BaseExamplesIterable):
    """Rows {"text", "lang"} of `partitions` of a `CorpusPlan`, one after another.

    "proportional": the languages of a partition's rows are a uniformly random permutation of the multiset
    {lang: rows of lang in the partition}, drawn chunk by chunk (multivariate hypergeometric counts, then a
    permutation inside the chunk), i.e. each row's language is drawn with probability equal to that language's
    remaining share. Every row exactly once; the mix is the same all along the stream.
    Otherwise (temperature or given probabilities): languages drawn independently with those probabilities,
    as many rows as the proportional partition; a language whose slice runs out starts it again.
    """

    def __init__(self, plan, partitions: list[int], seed: int, features, rng_shifts: tuple[int, ...] = ()):
        super().__init__()
        self.plan = plan
        self.partitions = list(partitions)
        self.seed = seed
        self._features = features
        self.rng_shifts = rng_shifts
        self.language_names = np.array(plan.languages, dtype=object)
        for partition in self.partitions:
            rows = sum(plan.partition_rows(partition).values())
            if plan.sampling == "proportional" and rows >= MAX_PROPORTIONAL_ROWS:
                raise ValueError(
                    f"partition {partition} holds {rows} rows: expected fewer than {MAX_PROPORTIONAL_ROWS} for "
                    "proportional sampling (numpy's hypergeometric sampler); use more partitions"
                )

    @property
    def is_typed(self) -> bool:
        return True

    @property
    def features(self):
        return self._features

    @property
    def num_shards(self) -> int:
        return 1

    def _init_state_dict(self) -> dict:
        self._state_dict = {"partition_index": 0, "rows": 0, "type": type(self).__name__}
        return self._state_dict

    def shuffle_data_sources(self, generator: np.random.Generator) -> CorpusStream:
        # Partitions are trained in order; a new epoch changes the interleaving through shift_rngs instead.
        return self

    def shift_rngs(self, value: int) -> CorpusStream:
        shifted = copy(self)
        shifted.rng_shifts = (*self.rng_shifts, int(value))
        return shifted

    def shard_data_sources(self, num_shards: int, index: int, contiguous=True) -> CorpusStream:
        if num_shards != 1:
            raise ValueError(f"num_shards={num_shards}: the corpus stream is one shard (split rows by node instead)")
        return self

    def reshard_data_sources(self) -> CorpusStream:
        return self

    def __iter__(self) -> Iterator[tuple[int, dict]]:
        state = self._state_dict if self._state_dict is not None else self._init_state_dict()
        for index in range(state["partition_index"], len(self.partitions)):
            state["partition_index"] = index
            row = state["rows"]
            # The only per-row work: everything else happens once per chunk of rows.
            for texts, langs in self._row_chunks(self.partitions[index], row):
                for text, lang in zip(texts, langs):
                    row += 1
                    state["rows"] = row  # before the yield: a state read after receiving a row resumes at the next
                    yield row, {"text": text, "lang": lang}
            state["rows"] = 0

    def language_orders(self, partition: int) -> Iterator[np.ndarray]:
        """The language index of every row of a partition, chunk by chunk: all the randomness of the stream."""
        plan = self.plan
        # One RNG per (seed, partition): partitions are not copies of each other's language order.
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, partition, *self.rng_shifts]))
        partition_rows = plan.partition_rows(partition)
        sizes = np.array([partition_rows[lang] for lang in plan.languages])
        left = int(sizes.sum())
        if plan.sampling == "proportional":
            remaining = sizes.copy()
            language_ids = np.arange(len(sizes), dtype=np.int32)
            while left:
                counts = rng.multivariate_hypergeometric(remaining, min(CHUNK_ROWS, left), method="marginals")
                remaining -= counts
                left -= int(counts.sum())
                yield rng.permutation(np.repeat(language_ids, counts))
        else:
            probabilities = plan.probabilities(partition)
            p = np.array([probabilities[lang] for lang in plan.languages], dtype=np.float64)
            while left:
                size = min(CHUNK_ROWS, left)
                left -= size
                yield rng.choice(len(p), size=size, p=p / p.sum()).astype(np.int32)

    def _row_chunks(self, partition: int, first_row: int) -> Iterator[tuple[list[str], list[str]]]:
        """(texts, languages) of the partition's rows from `first_row` on, chunk by chunk."""
        plan = self.plan
        num_languages = len(plan.languages)
        orders = self.language_orders(partition)
        # Replay the draws (no reading) up to the resume row: that gives each language's position in its slice.
        consumed = np.zeros(num_languages, dtype=np.int64)
        chunk_start = 0
        order = next(orders, None)
        while order is not None and chunk_start + len(order) <= first_row:
            consumed += np.bincount(order, minlength=num_languages)
            chunk_start += len(order)
            order = next(orders, None)
        if order is None:
            return
        consumed += np.bincount(order[: first_row - chunk_start], minlength=num_languages)
        order = order[first_row - chunk_start :]
        cycle = plan.sampling != "proportional"
        slices = {
            lang: (start + (int(consumed[i]) % (stop - start) if cycle else int(consumed[i])), stop)
            for i, lang in enumerate(plan.languages)
            for start, stop in [plan.bounds(lang, partition)]
        }
        shared = _shared_files(plan, slices)
        readers = [
            _LanguageReader(plan.files[lang], lang, *plan.bounds(lang, partition), int(consumed[i]), cycle, shared)
            for i, lang in enumerate(plan.languages)
        ]
        while order is not None:
            counts = np.bincount(order, minlength=num_languages)
            texts = np.empty(len(order), dtype=object)
            # Rows of each language, read in bulk, put where the draw placed that language.
            texts[np.argsort(order, kind="stable")] = list(
                chain.from_iterable(readers[i].take(int(counts[i])) for i in np.flatnonzero(counts))
            )
            yield texts.tolist(), self.language_names[order].tolist()
            order = next(orders, None)


class _LanguageReader:
    """Texts of one language's partition slice, handed out in bulk: list slices, not one generator step per row."""

    def __init__(self, files, lang: str, start: int, stop: int, first: int, cycle: bool, shared=None):
        self._chunks = _slice_chunks(files, lang, start, stop, first, cycle, shared or {})
        self._buffer: list[str] = []
        self._index = 0

    def take(self, count: int) -> list[str]:
        texts = self._buffer[self._index : self._index + count]
        self._index += len(texts)
        while len(texts) < count:
            self._buffer, self._index = next(self._chunks), 0
            more = self._buffer[: count - len(texts)]
            self._index = len(more)
            texts += more
        return texts


def _slice_chunks(files, lang: str, start: int, stop: int, first: int, cycle: bool, shared) -> Iterator[list[str]]:
    """Texts of `lang` from row start + first to stop (its partition slice); with `cycle`, then the slice again."""
    position = start + (first % (stop - start) if cycle else first)
    while True:
        yield from _language_chunks(files, lang, position, stop, shared)
        if not cycle:
            return
        position = start


def _language_chunks(files, lang: str, begin: int, end: int, shared=None) -> Iterator[list[str]]:
    """Rows [begin, end) of `lang` across its files in stream order; files outside the range are not opened."""
    offset = 0
    for corpus_file in files:
        rows = corpus_file.rows_by_language[lang]
        if offset + rows > begin and offset < end:
            skip, keep = max(begin - offset, 0), min(end, offset + rows) - offset
            shared_file = (shared or {}).get(corpus_file.url)
            chunks = shared_file.chunks(lang) if shared_file and shared_file.claim(lang) else None
            for chunk in chunks or _file_chunks(corpus_file, lang):
                # `skip` and `keep` count rows of this file from the current chunk on.
                if skip < len(chunk) and keep > 0:
                    yield chunk[skip:keep]
                skip, keep = max(skip - len(chunk), 0), keep - len(chunk)
                if keep <= 0:
                    break
        offset += rows
        if offset >= end:
            return


def _shared_files(plan, slices: dict[str, tuple[int, int]]) -> dict[str, _SharedFile]:
    """One reader for each file several languages of the stream read ([begin, stop) of each in `slices`)."""
    readers: dict[str, set[str]] = {}
    corpus_files = {}
    for lang, (begin, stop) in slices.items():
        offset = 0
        for corpus_file in plan.files[lang]:
            rows = corpus_file.rows_by_language[lang]
            if corpus_file.language_column is not None and offset + rows > begin and offset < stop:
                readers.setdefault(corpus_file.url, set()).add(lang)
                corpus_files[corpus_file.url] = corpus_file
            offset += rows
    return {url: _SharedFile(corpus_files[url], langs) for url, langs in readers.items() if len(langs) > 1}


class _SharedFile:
    """A file holding several languages, read once for all of them: each batch is split by language, and the texts
    of a language that has not reached them yet wait in its queue (proportional interleaving keeps the languages
    at about the same position, so the queues stay short). Without it, 20 languages read every shard 20 times."""

    def __init__(self, corpus_file, languages: set[str]):
        self.corpus_file = corpus_file
        self.queues: dict[str, deque] = {lang: deque() for lang in languages}
        self._unclaimed = set(languages)
        self._batches = None  # opened when a language first needs it

    def claim(self, lang: str) -> bool:
        """True the first time `lang` reads the file (a later pass over its slice reads it on its own)."""
        if lang not in self._unclaimed:
            return False
        self._unclaimed.discard(lang)
        return True

    def chunks(self, lang: str) -> Iterator[list[str]]:
        queue = self.queues[lang]
        try:
            while True:
                if queue:
                    yield queue.popleft()
                    continue
                if self._batches is None:
                    self._batches = _language_batches(self.corpus_file, self.queues)
                batch = next(self._batches, None)
                if batch is None:
                    return
                for other, other_queue in self.queues.items():
                    other_queue.append(batch[other])
        finally:
            self.queues.pop(lang, None)  # done with this file (or stopped early): nothing more is kept for it


def _file_chunks(corpus_file, lang: str) -> Iterator[list[str]]:
    """Texts of `lang` in one file, in file order and in chunks, exactly the rows the counting pass counted."""
    if corpus_file.builder == "text":
        for lines in _text_line_chunks(corpus_file.url):
            yield list(filter(str.strip, lines))  # blank lines are not rows (count_lines does not count them)
    else:
        for batch in _language_batches(corpus_file, {lang: None}):
            yield batch[lang]


def _language_batches(corpus_file, languages) -> Iterator[dict[str, list[str]]]:
    """{language: its texts} for each batch of a parquet or JSON file (one language without a language column)."""
    column, values = corpus_file.language_column, corpus_file.language_values
    if corpus_file.builder == "parquet":
        yield from _parquet_language_batches(corpus_file.url, column, {lang: values.get(lang) for lang in languages})
        return
    for records in _json_record_chunks(corpus_file.url):
        if column is None:
            (lang,) = languages
            yield {lang: [record["text"] for record in records]}
            continue
        names = {value: lang for lang in languages for value in values.get(lang, (lang,))}
        batch: dict[str, list[str]] = {lang: [] for lang in languages}
        for record in records:
            lang = names.get(record[column])
            if lang is not None:
                batch[lang].append(record["text"])
        yield batch


def _text_line_chunks(url: str) -> Iterator[list[str]]:
    """Lines as `count_lines` counts them: universal newlines, a last line without newline counts."""
    with _open_text(url) as handle:
        # The unfinished line as pieces, joined once its newline arrives: re-joining it on every read would copy a
        # long line (a one-line JSON array) once per read, quadratic in its length.
        pending: list[str] = []
        while chunk := handle.read(READ_CHARS):
            if "\n" not in chunk:
                pending.append(chunk)
                continue
            lines = ("".join(pending) + chunk).split("\n")
            pending = [lines.pop()]
            yield lines
        if rest := "".join(pending):
            yield [rest]


def _open_text(url: str):
    # Universal newlines, as the "text" builder and count_lines read them; fsspec only where it is needed (its
    # open costs about as much as reading a short file).
    if "://" in url or url.endswith(COMPRESSIONS):
        return fsspec.open(url, "rt", encoding=TEXT_ENCODING, newline=None, compression="infer")
    return open(url, encoding=TEXT_ENCODING, newline=None)


def _json_record_chunks(url: str) -> Iterator[list[dict]]:
    """Objects of a JSON-lines file (blank lines skipped) or of a JSON array file, as the counting pass reads them."""
    chunks = _text_line_chunks(url)
    seen: list[str] = []
    for lines in chunks:
        first = next((line for line in lines if line.strip()), None)
        if first is None:
            seen += lines
            continue
        if first.lstrip().startswith("["):
            yield json.loads("\n".join(seen + lines + [line for more in chunks for line in more]))
            return
        yield [json.loads(line) for line in lines if line.strip()]
        for lines in chunks:
            yield [json.loads(line) for line in lines if line.strip()]
        return


def _parquet_language_batches(url: str, language_column: str | None, values: dict) -> Iterator[dict[str, list]]:
    """{language: texts} per parquet batch; `values` maps each language to the column values naming it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = ["text"] if language_column is None else ["text", language_column]
    with fsspec.open(url, "rb") as handle:
        for batch in pq.ParquetFile(handle).iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=columns):
            texts = batch.column(0)
            if language_column is None:
                (lang,) = values
                yield {lang: texts.to_pylist()}
                continue
            yield {
                lang: texts.filter(pc.is_in(batch.column(1), value_set=pa.array(named or [lang]))).to_pylist()
                for lang, named in values.items()
            }
