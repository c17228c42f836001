"""Corpus pipeline throughput vs the bare fast tokenizer, and resume-from-state vs replay, side by side in one run.

pipeline = load_distillation_corpus (per-language streams, partition slicing, sampling/interleaving) + pack_for_mlm
(batched tokenisation + packing into fixed blocks); bare = the same tokenizer called in batches of 1000 on the same
texts already in memory. Both arms tokenise exactly the same text, so tokens/s ratio = bare time / pipeline time.
Resume: the time to continue the packed stream from a saved state_dict() at a deep position vs the time to replay
the stream to that position (what the Trainer's default skip does, before it even collates).

    python bench/corpus_throughput.py [--corpus DIR] [--tokenizer PATH] [--repeats 3]
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

from hf_earlyexit.data.corpus import load_distillation_corpus, pack_for_mlm  # noqa: E402
from hf_earlyexit.data.tokenizer import train_tokenizer  # noqa: E402

DEFAULT_CORPUS = Path(__file__).resolve().parents[2] / "shared" / "data" / "text" / "tatoeba"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default=str(DEFAULT_CORPUS))
    parser.add_argument("--tokenizer", default=None, help="a saved fast tokenizer; default: train one on the corpus")
    parser.add_argument("--num-partitions", type=int, default=5)
    parser.add_argument("--partition", type=int, default=0)
    parser.add_argument("--block-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--resume-fraction", type=float, default=0.9, help="how deep into the partition to resume")
    args = parser.parse_args()

    def corpus():
        return load_distillation_corpus(args.corpus, num_partitions=args.num_partitions, partition=args.partition)

    texts = [row["text"] for row in corpus()]
    if args.tokenizer:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    else:
        tokenizer = train_tokenizer(texts[::5], vocab_size=8000)
    total_tokens = sum(len(ids) for ids in tokenizer(texts)["input_ids"])
    print(
        f"corpus: {args.corpus} partition {args.partition}/{args.num_partitions}: {len(texts)} texts, "
        f"{total_tokens} tokens; tokenizer vocab {len(tokenizer)}; TOKENIZERS_PARALLELISM="
        f"{os.environ['TOKENIZERS_PARALLELISM']}"
    )

    def bare():
        for start in range(0, len(texts), 1000):
            tokenizer(texts[start : start + 1000], add_special_tokens=True, return_attention_mask=False)

    def pipeline():
        return sum(1 for _ in pack_for_mlm(corpus(), tokenizer, args.block_size))

    num_blocks = pipeline()
    deep = int(num_blocks * args.resume_fraction)
    packed = pack_for_mlm(corpus(), tokenizer, args.block_size)
    iterator = iter(packed)
    for _ in range(deep):
        next(iterator)
    deep_state = packed.state_dict()
    del iterator

    def replay():
        iterator = iter(pack_for_mlm(corpus(), tokenizer, args.block_size))
        for _ in range(deep + 1):
            next(iterator)

    def resume():
        stream = pack_for_mlm(corpus(), tokenizer, args.block_size)
        stream.load_state_dict(deep_state)
        next(iter(stream))

    arms = {"bare": bare, "pipeline": pipeline, "replay": replay, "resume": resume}
    times = {name: [] for name in arms}
    for _ in range(args.repeats):  # interleaved, so load from other processes hits every arm alike
        for name, arm in arms.items():
            start = time.perf_counter()
            arm()
            times[name].append(time.perf_counter() - start)
    median = {name: statistics.median(values) for name, values in times.items()}
    print(f"bare tokenizer : {total_tokens / median['bare']:12.0f} tokens/s  ({median['bare']:.2f} s)")
    print(f"whole pipeline : {total_tokens / median['pipeline']:12.0f} tokens/s  ({median['pipeline']:.2f} s)")
    print(f"ratio pipeline / bare tokens/s: {median['bare'] / median['pipeline']:.2f}  (target >= 0.9)")
    print(
        f"resume at block {deep}/{num_blocks}: {median['resume']:.2f} s; replay to it: {median['replay']:.2f} s; "
        f"replay / resume = {median['replay'] / median['resume']:.1f}x"
    )


if __name__ == "__main__":
    main()
