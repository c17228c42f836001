"""The multilingual distillation corpus: language-aligned partitions, sampling, streaming.

A corpus is a set of files (local folder, glob, or Hub dataset repo) whose rows are texts in known languages.
The language of a row comes from a `lang`/`language` column when the file has one, otherwise from the path:
the last dot-separated part of the file name (`en.txt`, `cc100.en.jsonl`, `rus.txt`) if it looks like a language
code, else the nearest folder that does (`en/part-000.parquet`, `data/en/train-0.parquet`).

Before anything is streamed, every file is read once to count its rows per language (parquet: footer plus the
language column only; a local file is counted once per process while unchanged) and to refuse bad input with one
line naming the file and line. The counts make the
partitions exact and cheap: partition p of a language with n rows is rows [floor(p n / P), floor((p+1) n / P)),
and files wholly outside that range are never opened.
"""

from __future__ import annotations

import glob
import json
import math
import os
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import fsspec
from datasets import Dataset, DatasetInfo, Features, IterableDataset, Value

from .language_table import ISO_639_1, TATOEBA_639_3, TO_ISO_639_1
from .packing import count_tokens_by_language, mlm_data_collator, pack_for_mlm
from .stream import COMPRESSIONS, CorpusStream
from .textfiles import count_lines, read_text, split_lines

__all__ = [
    "CORPUS_FEATURES",
    "DEFAULT_CORPUS",
    "CorpusPlan",
    "count_tokens_by_language",
    "load_distillation_corpus",
    "mlm_data_collator",
    "pack_for_mlm",
    "language_code",
    "plan_corpus",
    "sampling_probabilities",
]

DEFAULT_CORPUS = "xmli/filtered_cc100_27gb"
CORPUS_FEATURES = Features({"text": Value("string"), "lang": Value("string")})
BUILDERS = {".txt": "text", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}
LANGUAGE_COLUMNS = ("lang", "language")
# A language code: a base code, optionally a script (zh-Hans, sr_Latn), a region (pt_BR) or CC100's romanised /
# Zawgyi variants (hi_rom, my_zaw) after "_" or "-".
LANGUAGE_CODE = re.compile(r"(?P<base>[a-z]{2,3})(?:(?P<sep>[_-])(?P<variant>[A-Z][a-z]{3}|[A-Z]{2}|rom|zaw))?")
# CC100's one code outside ISO 639-1 ("ns", Northern Sotho; ISO 639-3 "nso").
CC100_EXTRA_CODES = frozenset({"ns"})
SAMPLINGS = ("proportional", "temperature")
PROBABILITY_TOLERANCE = 1e-6
_INSPECTED_FILES: dict[tuple, CorpusFile] = {}


@dataclass(frozen=True)
class CorpusFile:
    url: str  # local path or hf:// URL, whatever `datasets` and fsspec open
    builder: str  # the `datasets` packaged builder: "text", "json" or "parquet"
    language_column: str | None
    rows_by_language: dict[str, int]
    # language -> the values of `language_column` naming it ({"en": ("en", "eng")}); empty without a column.
    language_values: dict[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass
class CorpusPlan:
    """What will be streamed: files per language in stream order, row counts, partition bounds, probabilities."""

    source: str
    files: dict[str, list[CorpusFile]]
    num_partitions: int
    sampling: str | dict[str, float]
    temperature_alpha: float
    rows: dict[str, int] = field(init=False)

    def __post_init__(self):
        self.rows = {lang: sum(f.rows_by_language[lang] for f in files) for lang, files in self.files.items()}

    @property
    def languages(self) -> list[str]:
        return list(self.files)

    def bounds(self, lang: str, partition: int) -> tuple[int, int]:
        rows = self.rows[lang]
        return partition * rows // self.num_partitions, (partition + 1) * rows // self.num_partitions

    def partition_rows(self, partition: int) -> dict[str, int]:
        """Rows of each language in a partition (its equal slice: global share kept to within one row)."""
        return {lang: stop - start for lang in self.rows for start, stop in [self.bounds(lang, partition)]}

    def probabilities(self, partition: int) -> dict[str, float]:
        if self.sampling == "proportional":
            return sampling_probabilities(self.partition_rows(partition), "proportional")
        return sampling_probabilities(self.rows, self.sampling, self.temperature_alpha)


def sampling_probabilities(
    rows: Mapping[str, int], sampling: str | Mapping[str, float], temperature_alpha: float = 0.3
) -> dict[str, float]:
    """p_l = n_l / N ("proportional"), p_l = n_l^alpha / sum_k n_k^alpha ("temperature", XLM-R), or given."""
    if isinstance(sampling, Mapping):
        return dict(sampling)
    weights = {
        lang: float(n) if sampling == "proportional" else float(n) ** temperature_alpha for lang, n in rows.items()
    }
    total = sum(weights.values())
    return {lang: weight / total for lang, weight in weights.items()}


def plan_corpus(
    source: str = DEFAULT_CORPUS,
    languages: Sequence[str] | None = None,
    num_partitions: int = 5,
    sampling: str | Mapping[str, float] = "proportional",
    temperature_alpha: float = 0.3,
) -> CorpusPlan:
    """Find, validate and count the corpus files (the only full read before streaming); see the module docstring."""
    if not isinstance(num_partitions, int) or num_partitions < 1:
        raise ValueError(f"num_partitions={num_partitions!r}: expected an int >= 1")
    if isinstance(sampling, str) and sampling not in SAMPLINGS:
        raise ValueError(f"sampling={sampling!r}: expected one of {SAMPLINGS} or a {{language: probability}} mapping")
    if sampling == "temperature" and not 0 < temperature_alpha <= 1:
        raise ValueError(f"temperature_alpha={temperature_alpha}: expected 0 < alpha <= 1 (XLM-R uses 0.3)")
    if isinstance(sampling, Mapping):
        _check_probabilities(sampling)
        sampling = {language_code(lang) or lang: p for lang, p in sampling.items()}
    root, urls = _list_files(source)
    files_by_language: dict[str, list[CorpusFile]] = {}
    for url in urls:
        corpus_file = _inspect_file_once(url, _path_languages(root, url))
        for lang in corpus_file.rows_by_language:
            files_by_language.setdefault(lang, []).append(corpus_file)
    files_by_language = dict(sorted(files_by_language.items()))
    if languages is not None:
        languages = [languages] if isinstance(languages, str) else list(languages)
        # Asked for as written in the files or as their ISO 639-1 form: "eng" is "en".
        languages = list(dict.fromkeys(language_code(lang) or lang for lang in languages))
        for lang in languages:
            if lang not in files_by_language:
                raise ValueError(f"unknown language code {lang!r}: {source} holds {_preview(files_by_language)}")
        files_by_language = {lang: files_by_language[lang] for lang in languages}
    if isinstance(sampling, Mapping) and set(sampling) != set(files_by_language):
        raise ValueError(
            f"sampling probabilities name {sorted(sampling)}: expected exactly the corpus languages "
            f"{_preview(files_by_language)}"
        )
    for lang, files in files_by_language.items():
        if len({(f.builder, f.language_column) for f in files}) > 1:
            raise ValueError(f"language {lang!r} mixes file formats {[f.url for f in files]}: expected one format")
    plan = CorpusPlan(source, files_by_language, num_partitions, sampling, temperature_alpha)
    for lang, rows in plan.rows.items():
        if rows < num_partitions:
            raise ValueError(
                f"language {lang!r} has {rows} rows in {[f.url for f in plan.files[lang]]}: expected at least "
                f"num_partitions={num_partitions} so every partition holds some of it"
            )
    return plan


def load_distillation_corpus(
    source: str = DEFAULT_CORPUS,
    languages: Sequence[str] | None = None,
    num_partitions: int = 5,
    partition: int | None = None,
    sampling: str | Mapping[str, float] = "proportional",
    temperature_alpha: float = 0.3,
    seed: int = 0,
    streaming: bool = True,
) -> IterableDataset | Dataset:
    """Stream of {"text", "lang"} rows: one language-aligned partition, or all of them in order (`partition=None`).

    "proportional": every row of the partition exactly once, languages interleaved at random with probability
    equal to their remaining share (a uniformly random order of the partition's rows by language), so each
    language's share is its global share all along the stream. "temperature" (or explicit {lang: p}): as many rows as the proportional partition,
    languages drawn with p_l ∝ n_l^alpha; a language whose slice runs out restarts it (XLM-R's upsampling).
    The same seed gives the same stream. `streaming=False` writes the same stream into a map-style Dataset.
    """
    plan = plan_corpus(source, languages, num_partitions, sampling, temperature_alpha)
    partitions = range(num_partitions) if partition is None else [_check_partition(partition, num_partitions)]
    stream = IterableDataset(
        CorpusStream(plan, list(partitions), seed, CORPUS_FEATURES), info=DatasetInfo(features=CORPUS_FEATURES)
    )
    if streaming:
        return stream
    # The cache is keyed by the generator's arguments: the files' versions among them, so a changed file (even with
    # the same row count) is read again instead of served from the cache of its old text.
    # One string, not a list: `datasets` would shard a list-valued argument and run the generator once per item.
    versions = repr(sorted({_file_version(f.url) for files in plan.files.values() for f in files}))
    return Dataset.from_generator(
        _rows_of, gen_kwargs={"stream": stream, "versions": versions}, features=CORPUS_FEATURES
    )


def _rows_of(stream, versions):
    yield from stream


def _file_version(url: str) -> tuple:
    """(url, size, modification time or content id): what changes when the file does."""
    if "://" not in url:
        stat = os.stat(url)
        return url, stat.st_size, stat.st_mtime_ns
    info = fsspec.core.url_to_fs(url)[0].info(url)
    return url, info.get("size"), str(info.get("blob_id") or info.get("ETag") or info.get("mtime") or "")


def _check_partition(partition, num_partitions: int) -> int:
    if not isinstance(partition, int) or not 0 <= partition < num_partitions:
        raise ValueError(
            f"partition index {partition!r} is out of range: expected 0 <= partition < num_partitions={num_partitions}"
        )
    return partition


def _check_probabilities(probabilities: Mapping[str, float]) -> None:
    negative = {lang: p for lang, p in probabilities.items() if not p >= 0}
    if negative:
        raise ValueError(f"sampling probabilities {negative} are negative or NaN: expected values in [0, 1]")
    total = sum(probabilities.values())
    if not math.isclose(total, 1.0, abs_tol=PROBABILITY_TOLERANCE):
        raise ValueError(f"sampling probabilities sum to {total:.6g}: expected them to sum to 1")


def _preview(files_by_language: Mapping[str, object], limit: int = 12) -> str:
    names = list(files_by_language)
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return f"{len(names)} languages ({', '.join(names[:limit])}{more})"


def _list_files(source: str) -> tuple[str, list[str]]:
    """(root the layout is read from, data files in a stable order)."""
    local = Path(source).expanduser()
    if local.is_dir():
        root = str(local)
        paths = [str(p) for p in local.rglob("*") if p.is_file()]
    elif local.is_file():
        root, paths = str(local.parent), [str(local)]
    elif any(char in source for char in "*?["):
        root = str(Path(re.split(r"[*?\[]", source, maxsplit=1)[0] or ".").parent) if "/" in source else "."
        paths = [p for p in glob.glob(str(local), recursive=True) if Path(p).is_file()]
    elif re.fullmatch(r"[\w.-]+/[\w.-]+", source):
        root, paths = _list_hub_files(source)
    else:
        raise ValueError(f"corpus source {source!r} is neither a folder, a file, a glob nor a Hub dataset id")
    paths = sorted((p for p in paths if _builder_of(p)), key=_natural_key)
    if not paths:
        raise ValueError(
            f"{source} holds no corpus files: expected {', '.join(BUILDERS)} files (optionally compressed)"
        )
    return root, paths


def _list_hub_files(repo_id: str) -> tuple[str, list[str]]:
    from huggingface_hub import HfApi

    root = f"hf://datasets/{repo_id}"
    return root, [f"{root}/{path}" for path in HfApi().list_repo_files(repo_id, repo_type="dataset")]


def _natural_key(path: str):
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path)]


def _strip_suffixes(name: str) -> tuple[str, str]:
    """(name without data/compression suffixes, data suffix or "")."""
    for compression in COMPRESSIONS:
        if name.endswith(compression):
            name = name[: -len(compression)]
            break
    for suffix in BUILDERS:
        if name.endswith(suffix):
            return name[: -len(suffix)], suffix
    return name, ""


def _builder_of(path: str) -> str | None:
    return BUILDERS.get(_strip_suffixes(PurePosixPath(path).name)[1])


def language_code(name: str) -> str | None:
    """The language a file, folder or column value names, as an ISO 639-1 code where there is one, else None.

    Two letters: an ISO 639-1 code (or CC100's "ns"). Three letters: an ISO 639-2/3 code with an ISO 639-1
    equivalent, written as that (eng -> en, ger -> de, cmn -> zh, swh -> sw), or one of the XTREME Tatoeba
    languages without one (ang, tzl, yue, ...). Any other three letters are not taken for a language even when
    ISO 639-3 lists them: nearly every English three-letter word is a code there (all, raw, new, dev, log, ...).
    A script, region or CC100 variant after "_" / "-" is kept: zh-Hans, sr_Latn, pt_BR, hi_rom, zho-Hant -> zh-Hant.
    """
    match = LANGUAGE_CODE.fullmatch(name) if isinstance(name, str) else None
    if match is None:
        return None
    base = match["base"]
    if len(base) == 3:
        base = TO_ISO_639_1.get(base, base if base in TATOEBA_639_3 else None)
    elif base not in ISO_639_1 and base not in CC100_EXTRA_CODES:
        base = None
    if base is None:
        return None
    return base + (match["sep"] + match["variant"] if match["variant"] else "")


def _path_languages(root: str, url: str) -> tuple[str, ...]:
    """The languages the file name's dot-separated parts name (`en.txt`, `cc100.en.jsonl`, `en.dev.txt`, `eng.txt`
    -> ("en",)), else the nearest folder named by one (`en/part-000.parquet`); more than one when the name is
    ambiguous (`en.ru.txt`), none when nothing names a language."""
    relative = PurePosixPath(url[len(root) :].lstrip("/") if url.startswith(root) else PurePosixPath(url).name)
    stem = _strip_suffixes(relative.name)[0]
    named = tuple(dict.fromkeys(code for part in stem.split(".") if (code := language_code(part))))
    if named:
        return named
    return next(((code,) for part in reversed(relative.parent.parts) if (code := language_code(part))), ())


def _inspect_file_once(url: str, path_languages: tuple[str, ...]) -> CorpusFile:
    """`_inspect_file`, remembered for a local file while its size and modification time stay the same.

    The counting pass reads the whole corpus, and run_distil loads each partition separately: without this, a
    5-partition run would read a 27 GB corpus five times before training. Hub files are counted every time.
    """
    if "://" in url:
        return _inspect_file(url, path_languages)
    stat = os.stat(url)
    key = (url, stat.st_size, stat.st_mtime_ns, path_languages)
    if key not in _INSPECTED_FILES:
        _INSPECTED_FILES[key] = _inspect_file(url, path_languages)
    return _INSPECTED_FILES[key]


def _inspect_file(url: str, path_languages: tuple[str, ...]) -> CorpusFile:
    builder = _builder_of(url)
    language_values = {}
    if builder == "text":
        columns, rows_by_language = None, None
        rows = count_lines(url)
    elif builder == "parquet":
        columns, rows, rows_by_language, language_values = _inspect_parquet(url)
    else:
        columns, rows, rows_by_language, language_values = _inspect_json(url)
    if columns is not None and "text" not in columns:
        raise ValueError(f"{url} has no 'text' column (columns: {sorted(columns)}): expected a 'text' column")
    if rows == 0:
        raise ValueError(f"{url} is empty: expected at least one text")
    language_column = next((c for c in LANGUAGE_COLUMNS if columns and c in columns), None)
    if language_column is None:
        if len(path_languages) > 1:
            raise ValueError(
                f"{url}: the file name names several languages ({', '.join(path_languages)}): expected one; rename "
                f"the file or give it a 'lang'/'language' column"
            )
        if not path_languages:
            raise ValueError(
                f"{url}: cannot tell its language: expected a 'lang'/'language' column, a file named like "
                f"'en.txt' / 'eng.txt' / 'name.en.jsonl', or a folder named by a language code (ISO 639-1, or 639-3 "
                f"with a 639-1 equivalent; see docs/data.md)"
            )
        rows_by_language = {path_languages[0]: rows}
    return CorpusFile(url, builder, language_column, rows_by_language, language_values)


def _inspect_parquet(url: str):
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    with fsspec.open(url, "rb") as handle:
        parquet = pq.ParquetFile(handle)
        schema = parquet.schema_arrow
        columns = schema.names
        language_column = next((c for c in LANGUAGE_COLUMNS if c in columns), None)
        if "text" not in columns:
            return columns, parquet.metadata.num_rows, None, {}
        text_type = schema.field("text").type
        if not (pa.types.is_string(text_type) or pa.types.is_large_string(text_type)):
            raise ValueError(
                f"{url}: row 1: column 'text' holds {text_type} values: expected strings (a string column)"
            )
        # Nulls from the footer's statistics; a row group without them (or with nulls) is read to find the row.
        text_index = schema.get_field_index("text")
        first_row = 0
        for group in range(parquet.num_row_groups):
            meta = parquet.metadata.row_group(group)
            stats = meta.column(text_index).statistics
            if stats is None or not stats.has_null_count or stats.null_count:
                nulls = pc.is_null(parquet.read_row_group(group, columns=["text"]).column(0))
                if pc.any(nulls).as_py():
                    row = first_row + pc.index(nulls, True).as_py() + 1
                    raise ValueError(f"{url}: row {row}: column 'text' is null (NoneType): expected a string")
            first_row += meta.num_rows
        if language_column is None:
            return columns, parquet.metadata.num_rows, None, {}
        values = parquet.read(columns=[language_column]).column(0).to_pylist()
    return columns, len(values), *_count_languages(url, values, language_column)


def _inspect_json(url: str):
    text = read_text(url)
    if text.lstrip().startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(
                f"{url}:{error.lineno}: malformed JSON ({error.msg}): expected a JSON array of objects"
            ) from None
        numbered = list(enumerate(records, start=1))
    else:
        numbered = []
        for number, line in enumerate(split_lines(text), start=1):
            if not line.strip():
                continue
            try:
                numbered.append((number, json.loads(line)))
            except json.JSONDecodeError as error:
                raise ValueError(
                    f"{url}:{number}: malformed JSON ({error.msg}): expected one JSON object per line"
                ) from None
    columns = language_column = None
    languages = []
    for number, record in numbered:
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise ValueError(
                f"{url}:{number}: expected a JSON object with a string 'text' field, got {str(record)[:60]!r}"
            )
        if columns is None:  # the first object names the columns
            columns = list(record)
            language_column = next((c for c in LANGUAGE_COLUMNS if c in columns), None)
        if language_column is not None:
            if language_column not in record:
                raise ValueError(f"{url}:{number}: missing column {language_column!r}: expected it on every row")
            languages.append(record[language_column])
    if columns is None:
        return None, 0, None, {}
    if language_column is None:
        return columns, len(numbered), None, {}
    lines = [number for number, _ in numbered]
    return columns, len(numbered), *_count_languages(url, languages, language_column, lines)


def _count_languages(url: str, values: list, column: str, lines: list[int] | None = None):
    """({language: rows}, {language: the column values naming it}); a value naming no language is refused."""
    counts = Counter(values)
    codes = {value: language_code(value) for value in counts}
    bad = [value for value, code in codes.items() if code is None]
    if bad:
        bad = bad[0]
        index = values.index(bad)
        where = f"{url}:{lines[index]}" if lines else f"{url}: row {index + 1}"
        raise ValueError(
            f"{where}: unknown language code {bad!r} ({type(bad).__name__}) in column {column!r}: expected a "
            f"string such as 'en', 'eng', 'hi_rom', 'zh-Hans'"
        )
    rows_by_language, language_values = Counter(), {}
    for value, count in counts.items():
        rows_by_language[codes[value]] += count
        language_values.setdefault(codes[value], []).append(value)
    return dict(sorted(rows_by_language.items())), {lang: tuple(sorted(v)) for lang, v in language_values.items()}
