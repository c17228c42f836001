"""Corpus pipeline throughput vs the bare fast tokenizer, and resume-from-state vs replay, side by side in one run.

Arms, each one full pass over the same partition, run interleaved (rotating order) and reported as medians of wall
and CPU time (CPU time is the steadier one on a loaded machine; all arms are single-threaded):

- tokenizer: the partition's texts, already in memory in stream order, through the tokenizer in batches of 1000
  with the options pack_for_mlm uses (`add_special_tokens=True, return_attention_mask=False`): the target. The
  strings are fresh copies each repetition (untimed), like the strings a data source produces: CPython caches a
  string's UTF-8 form, so re-tokenising the same objects would favour this arm by a few percent.
- files+tokenizer: the same, but each language's slice read from its file with plain Python first and put in
  the stream's order (a bare tokenizer that also iterates its data source; needs one `<lang>.txt` per language,
  like Tatoeba). The order matters: tokenising language after language is ~15-20% faster than the interleaved
  order any sampled stream has (the tokenizer's word cache and the CPU caches stay warm within a language).
- pipeline: load_distillation_corpus (counting pass, partition bounds, sampling, reading) + pack_for_mlm
  (tokenising, packing into blocks, special-token masks), every block iterated.
- stream: load_distillation_corpus alone, every row iterated: what sampling/partitioning/reading cost.
- pipeline-tokenizer: the pipeline with the tokenizer replaced by a lookup of its precomputed outputs: everything
  the pipeline adds to tokenising, measured without the tokenizer's own noise (the steadiest gap estimate).
- count: the counting pass over the whole corpus (every partition), done once per process and file: the
  pipeline arm, like run_distil's partitions after the first, reuses it; it is reported on its own line.

All arms tokenise exactly the same texts, so the tokens/s ratio is the inverse time ratio. Resume: the time to
continue the packed stream from a saved state_dict() at a deep position vs the time to replay the stream to that
position (what the Trainer's default skip does, before it even collates).

    python bench/corpus_throughput.py [--corpus DIR] [--tokenizer PATH] [--repeats 7] [--profile]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from hf_earlyexit.data import corpus as corpus_module  # noqa: E402
from hf_earlyexit.data.corpus import load_distillation_corpus, pack_for_mlm, plan_corpus  # noqa: E402
from hf_earlyexit.data.tokenizer import train_tokenizer  # noqa: E402

DEFAULT_CORPUS = Path(__file__).resolve().parents[2] / "shared" / "data" / "text" / "tatoeba"
TOKENIZER_BATCH = 1000


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default=str(DEFAULT_CORPUS))
    parser.add_argument("--tokenizer", default=None, help="a saved fast tokenizer; default: train one on the corpus")
    parser.add_argument("--num-partitions", type=int, default=5)
    parser.add_argument("--partition", type=int, default=0)
    parser.add_argument("--block-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--resume-fraction", type=float, default=0.9, help="how deep into the partition to resume")
    parser.add_argument("--profile", action="store_true", help="also print a cProfile of one pipeline pass")
    args = parser.parse_args()

    def corpus():
        return load_distillation_corpus(args.corpus, num_partitions=args.num_partitions, partition=args.partition)

    texts = [row["text"] for row in corpus()]
    if args.tokenizer:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    else:
        tokenizer = train_tokenizer(texts[::5], vocab_size=8000)

    def tokenize(batch):
        return tokenizer(batch, add_special_tokens=True, return_attention_mask=False)["input_ids"]

    total_tokens = sum(len(ids) for ids in tokenize(texts))
    print(
        f"corpus: {args.corpus} partition {args.partition}/{args.num_partitions}: {len(texts)} texts, "
        f"{total_tokens} tokens; tokenizer vocab {len(tokenizer)}; TOKENIZERS_PARALLELISM="
        f"{os.environ['TOKENIZERS_PARALLELISM']}"
    )

    fresh = []

    def fresh_copies():
        fresh[:] = [text.encode().decode() for text in texts]

    def bare_tokenizer():
        for start in range(0, len(fresh), TOKENIZER_BATCH):
            tokenize(fresh[start : start + TOKENIZER_BATCH])

    stream_order = stream_positions(args.corpus, args.num_partitions, args.partition, corpus())

    def bare_files_and_tokenizer():
        lines = partition_lines(args.corpus, args.num_partitions, args.partition)
        ordered = [lines[position] for position in stream_order]
        for start in range(0, len(ordered), TOKENIZER_BATCH):
            tokenize(ordered[start : start + TOKENIZER_BATCH])

    def pipeline():
        return sum(1 for _ in pack_for_mlm(corpus(), tokenizer, args.block_size))

    def stream():
        return sum(1 for _ in corpus())

    batches = [tokenize(texts[start : start + TOKENIZER_BATCH]) for start in range(0, len(texts), TOKENIZER_BATCH)]

    def pipeline_without_tokenizer():
        return sum(1 for _ in pack_for_mlm(corpus(), ReplayedTokenizer(tokenizer, batches), args.block_size))

    def count():
        corpus_module._INSPECTED_FILES.clear()
        plan_corpus(args.corpus, num_partitions=args.num_partitions)

    lines = partition_lines(args.corpus, args.num_partitions, args.partition)
    assert [lines[position] for position in stream_order] == texts
    num_blocks = pipeline()
    deep = int(num_blocks * args.resume_fraction)
    packed = pack_for_mlm(corpus(), tokenizer, args.block_size)
    iterator = iter(packed)
    for _ in range(deep):
        next(iterator)
    deep_state = packed.state_dict()
    expected_next = next(iterator)
    del iterator

    def replay():
        iterator = iter(pack_for_mlm(corpus(), tokenizer, args.block_size))
        for _ in range(deep + 1):
            block = next(iterator)
        assert block == expected_next

    def resume():
        stream = pack_for_mlm(corpus(), tokenizer, args.block_size)
        stream.load_state_dict(deep_state)
        assert next(iter(stream)) == expected_next

    arms = {
        "tokenizer": bare_tokenizer,
        "files+tokenizer": bare_files_and_tokenizer,
        "pipeline": pipeline,
        "stream": stream,
        "pipeline-tokenizer": pipeline_without_tokenizer,
        "count": count,
        "replay": replay,
        "resume": resume,
    }
    wall = {name: [] for name in arms}
    cpu = {name: [] for name in arms}
    names = list(arms)
    for repeat in range(args.repeats):  # interleaved and rotated, so load from other processes hits every arm alike
        for name in names[repeat % len(names) :] + names[: repeat % len(names)]:
            if name == "tokenizer":
                fresh_copies()
            start_wall, start_cpu = time.perf_counter(), time.process_time()
            arms[name]()
            wall[name].append(time.perf_counter() - start_wall)
            cpu[name].append(time.process_time() - start_cpu)
    # Paired per repetition (the arms of one repetition ran back to back): steadier than a ratio of medians.
    paired = {
        bare: sorted(b / p for b, p in zip(cpu[bare], cpu["pipeline"])) for bare in ("tokenizer", "files+tokenizer")
    }
    wall = {name: statistics.median(values) for name, values in wall.items()}
    cpu = {name: statistics.median(values) for name, values in cpu.items()}

    print(f"{'arm':16s} {'tokens/s (wall)':>16s} {'wall s':>8s} {'tokens/s (CPU)':>15s} {'CPU s':>7s}")
    for name in ("tokenizer", "files+tokenizer", "pipeline", "stream"):
        print(
            f"{name:16s} {total_tokens / wall[name]:16.0f} {wall[name]:8.3f} "
            f"{total_tokens / cpu[name]:15.0f} {cpu[name]:7.3f}"
        )
    for bare in ("tokenizer", "files+tokenizer"):
        ratios = paired[bare]
        print(
            f"ratio pipeline / {bare} tokens/s: wall {wall[bare] / wall['pipeline']:.2f}, "
            f"CPU {cpu[bare] / cpu['pipeline']:.2f}; paired CPU median {statistics.median(ratios):.2f} "
            f"(quartiles {ratios[len(ratios) // 4]:.2f}-{ratios[3 * len(ratios) // 4]:.2f})  (target >= 0.9)"
        )
    print(f"stream alone: {cpu['stream'] / cpu['tokenizer']:.1%} of the bare tokenizer's CPU time")
    added = cpu["pipeline-tokenizer"]
    print(
        f"pipeline minus tokenizer: {added:.3f} s CPU = {added / cpu['tokenizer']:.1%} of the bare tokenizer's; "
        f"ratio it implies: {cpu['tokenizer'] / (cpu['tokenizer'] + added):.2f}"
    )
    print(
        f"counting pass over all {args.num_partitions} partitions (once per process): {cpu['count']:.3f} s CPU = "
        f"{cpu['count'] / cpu['tokenizer']:.1%} of tokenizing this partition; pipeline / tokenizer with it: "
        f"CPU {cpu['tokenizer'] / (cpu['pipeline'] + cpu['count']):.2f}"
    )
    print(
        f"resume at block {deep}/{num_blocks}: {wall['resume']:.2f} s; replay to it: {wall['replay']:.2f} s; "
        f"replay / resume = {wall['replay'] / wall['resume']:.1f}x (CPU {cpu['replay'] / cpu['resume']:.1f}x)"
    )
    if args.profile:
        import cProfile
        import pstats

        profiler = cProfile.Profile()
        profiler.runcall(pipeline)
        pstats.Stats(profiler).sort_stats("tottime").print_stats(15)


class ReplayedTokenizer:
    """Hands out precomputed `input_ids` batch after batch: pack_for_mlm's work without the tokenizer's."""

    def __init__(self, tokenizer, batches):
        self.is_fast = True
        self.all_special_ids = tokenizer.all_special_ids
        self._size = len(tokenizer)
        self._batches = iter(batches)

    def __len__(self):
        return self._size

    def __call__(self, texts, **kwargs):
        ids = next(self._batches)
        assert len(ids) == len(texts)
        return {"input_ids": ids}


def partition_slices(folder: str, num_partitions: int, partition: int) -> dict[str, list[str]]:
    """Each `<lang>.txt`'s slice of the partition, read with plain Python."""
    slices = {}
    for path in sorted(Path(folder).glob("*.txt")):
        with open(path, encoding="utf-8") as handle:
            rows = handle.read().split("\n")
        if rows[-1] == "":
            rows.pop()
        slices[path.stem] = rows[
            partition * len(rows) // num_partitions : (partition + 1) * len(rows) // num_partitions
        ]
    return slices


def partition_lines(folder: str, num_partitions: int, partition: int) -> list[str]:
    return [line for rows in partition_slices(folder, num_partitions, partition).values() for line in rows]


def stream_positions(folder: str, num_partitions: int, partition: int, stream) -> list[int]:
    """Where each row of the stream is in `partition_lines` (a language's rows come in file order)."""
    offsets, offset = {}, 0
    for lang, rows in partition_slices(folder, num_partitions, partition).items():
        offsets[lang] = offset
        offset += len(rows)
    positions = []
    for row in stream:
        positions.append(offsets[row["lang"]])
        offsets[row["lang"]] += 1
    return positions


if __name__ == "__main__":
    main()
