"""Vocabulary trimming side by side: parameters, checkpoint bytes, load time, peak inference memory and latency at
batch 32, before and after `trim_vocabulary`, for XLM-R Base- and Large-shaped models and the real
multilingual-e5-small.

The map is every piece the real XLM-R tokenizer (250,002 pieces, from `hf_earlyexit.multilingual_e5_small()`)
produces on the six evaluation languages' text in ``../shared/data``: `text/news`, Tatoeba, XNLI dev (premises and
hypotheses) and PAN-X train + dev (sentences joined by spaces). Base and Large have random weights (only their
shapes matter here: 12 x 768, FFN 3072 and 24 x 1024, FFN 4096, `XLMRobertaForEarlyExit`, 3 labels); e5-small is
the real converted checkpoint loaded into the same class. Each model and its trimmed twin are measured in the same
process, their repetitions interleaved (untrimmed, trimmed, untrimmed, ...), medians reported, wall and CPU time:

- parameters: all, and the embedding share;
- checkpoint bytes: `model.safetensors` as `save_pretrained` writes it;
- load: `AutoModelForSequenceClassification.from_pretrained` of that folder (wall seconds, median of `--load-repeats`);
- peak inference memory: `measure_peak_memory_mb` (resident weights + the forward's allocator peak) at batch 32;
- latency: one full-depth forward (threshold 0) of 32 real XNLI dev sentences (en ru hi tr sw ur, cycled) truncated
  or padded to `--seq-len` tokens. Trimming does not touch the encoder, so this ratio should be ~1; it is measured
  to show that nothing else got slower.

Usage: python bench/vocab_trim.py [--models base large e5] [--seq-len 64] [--repeats 5] [--output FILE]
(``--tokenizer DIR`` uses another Unigram tokenizer folder and skips e5 unless given ``--e5 DIR``.)
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from transformers import AutoModelForSequenceClassification, AutoTokenizer  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from hf_earlyexit import XLMRobertaEarlyExitConfig, XLMRobertaForEarlyExit, trim_vocabulary  # noqa: E402
from hf_earlyexit.data.tasks import EVAL_LANGUAGES  # noqa: E402
from hf_earlyexit.evaluation.efficiency import count_parameters, fixed_length_batch, measure_peak_memory_mb  # noqa: E402

DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data"
TATOEBA_CODES = {"en": "eng", "ru": "rus", "hi": "hin", "tr": "tur", "sw": "swh", "ur": "urd"}
SHAPES = {
    "base": {"num_hidden_layers": 12, "hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12},
    "large": {"num_hidden_layers": 24, "hidden_size": 1024, "intermediate_size": 4096, "num_attention_heads": 16},
}
MIB = 2**20


def lines(path: Path) -> list[str]:
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def xnli_sentences(path: Path) -> list[str]:
    rows = [line.split("\t") for line in lines(path)[1:]]
    return [field for row in rows for field in row[:2]]


def conll_sentences(path: Path) -> list[str]:
    sentences, words = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            words.append(line.split("\t")[0])
        elif words:
            sentences.append(" ".join(words))
            words = []
    return sentences


def six_language_texts(data: Path) -> list[str]:
    """Every sentence of the six evaluation languages in ../shared/data."""
    texts = []
    for lang in EVAL_LANGUAGES:
        texts += lines(data / "text" / "news" / f"{lang}.txt") + lines(
            data / "text" / "tatoeba" / f"{TATOEBA_CODES[lang]}.txt"
        )
        texts += xnli_sentences(data / "xnli" / f"{lang}.dev.tsv")
        for split in ("train", "dev"):
            texts += conll_sentences(data / "panx" / f"{lang}.{split}.conll")
    return texts


def random_model(shape: str, tokenizer) -> XLMRobertaForEarlyExit:
    config = XLMRobertaEarlyExitConfig(
        vocab_size=len(tokenizer),
        max_position_embeddings=514,
        type_vocab_size=1,
        pad_token_id=tokenizer.pad_token_id,
        num_labels=3,
        **SHAPES[shape],
    )
    torch.manual_seed(0)
    return XLMRobertaForEarlyExit(config).eval()


def forward_times(model, inputs) -> tuple[float, float]:
    with torch.inference_mode():
        wall, cpu = time.perf_counter(), time.process_time()
        model(**inputs, exit_threshold=0.0)
        return (time.perf_counter() - wall) * 1000, (time.process_time() - cpu) * 1000


def checkpoint(model, folder: Path, load_repeats: int) -> tuple[int, float]:
    """(bytes of model.safetensors, median seconds to load the folder)."""
    model.save_pretrained(folder)
    size = (folder / "model.safetensors").stat().st_size
    times = []
    for _ in range(load_repeats):
        start = time.perf_counter()
        loaded = AutoModelForSequenceClassification.from_pretrained(folder)
        times.append(time.perf_counter() - start)
        del loaded
        gc.collect()
    return size, statistics.median(times)


def measure_pair(name: str, model, tokenizer, map_texts, sentences, args) -> dict:
    """Everything for `model` and its trimmed twin, the two measured alternately in this process."""
    start = time.perf_counter()
    trimmed, trimmed_tokenizer = trim_vocabulary(copy.deepcopy(model), tokenizer, map_texts)
    trim_seconds = time.perf_counter() - start
    arms = {"untrimmed": (model, tokenizer), "trimmed": (trimmed, trimmed_tokenizer)}
    result = {"trim_seconds": trim_seconds}
    inputs = {}
    for arm, (arm_model, arm_tokenizer) in arms.items():
        examples = [arm_tokenizer(text) for text in sentences]
        inputs[arm] = fixed_length_batch(examples, args.batch_size, args.seq_len, arm_tokenizer.pad_token_id)
        total, without_embeddings = count_parameters(arm_model)
        result[arm] = {
            "vocabulary": len(arm_tokenizer),
            "parameters": total,
            "embedding_parameters": total - without_embeddings,
        }
    # Same tokens in both arms: the map holds these sentences, so their pieces are identical.
    assert torch.equal(inputs["untrimmed"]["attention_mask"], inputs["trimmed"]["attention_mask"])
    with tempfile.TemporaryDirectory() as folder:
        for arm, (arm_model, _) in arms.items():
            size, load = checkpoint(arm_model, Path(folder) / arm, args.load_repeats)
            result[arm].update(checkpoint_bytes=size, load_seconds=load)
    for arm, (arm_model, _) in arms.items():
        result[arm]["peak_memory_mib"] = measure_peak_memory_mb(arm_model, inputs[arm], 0.0)
    samples = {arm: [] for arm in arms}
    for arm, (arm_model, _) in arms.items():
        forward_times(arm_model, inputs[arm])  # warm-up
    for repeat in range(args.repeats):
        order = list(arms) if repeat % 2 == 0 else list(reversed(arms))
        for arm in order:
            samples[arm].append(forward_times(arms[arm][0], inputs[arm]))
    for arm in arms:
        result[arm]["latency_ms"] = statistics.median(wall for wall, _ in samples[arm])
        result[arm]["latency_cpu_ms"] = statistics.median(cpu for _, cpu in samples[arm])
    before, after = result["untrimmed"], result["trimmed"]
    result["ratios"] = {
        key: after[key] / before[key]
        for key in ("parameters", "checkpoint_bytes", "load_seconds", "peak_memory_mib", "latency_ms", "latency_cpu_ms")
    }
    print_pair(name, result)
    return result


def print_pair(name: str, result: dict) -> None:
    before, after, ratio = result["untrimmed"], result["trimmed"], result["ratios"]
    print(f"\n## {name} (trim took {result['trim_seconds']:.1f} s)")
    rows = [
        ("vocabulary", f"{before['vocabulary']:,}", f"{after['vocabulary']:,}", ""),
        ("parameters", f"{before['parameters'] / 1e6:.1f} M", f"{after['parameters'] / 1e6:.1f} M", ratio["parameters"]),
        ("embedding parameters", f"{before['embedding_parameters'] / 1e6:.1f} M",
         f"{after['embedding_parameters'] / 1e6:.1f} M", ""),
        ("checkpoint", f"{before['checkpoint_bytes'] / MIB:.0f} MiB", f"{after['checkpoint_bytes'] / MIB:.0f} MiB",
         ratio["checkpoint_bytes"]),
        ("load (from_pretrained)", f"{before['load_seconds']:.2f} s", f"{after['load_seconds']:.2f} s",
         ratio["load_seconds"]),
        ("peak inference memory, batch 32", f"{before['peak_memory_mib']:.0f} MiB", f"{after['peak_memory_mib']:.0f} MiB",
         ratio["peak_memory_mib"]),
        ("latency, batch 32 (wall)", f"{before['latency_ms']:.0f} ms", f"{after['latency_ms']:.0f} ms",
         ratio["latency_ms"]),
        ("latency, batch 32 (CPU)", f"{before['latency_cpu_ms']:.0f} ms", f"{after['latency_cpu_ms']:.0f} ms",
         ratio["latency_cpu_ms"]),
    ]  # fmt: skip
    print("| measure | untrimmed | trimmed | ratio |\n| --- | --- | --- | --- |")
    for label, old, new, value in rows:
        print(f"| {label} | {old} | {new} | {value if value == '' else f'{value:.3f}'} |")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["base", "large", "e5"], choices=["base", "large", "e5"])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--tokenizer", type=Path, default=None, help="Unigram tokenizer folder (default: e5-small's)")
    parser.add_argument("--e5", type=Path, default=None, help="e5-small folder (default: multilingual_e5_small())")
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--load-repeats", type=int, default=3)
    parser.add_argument("--output", type=Path, default=REPO_ROOT / "outputs" / "vocab_trim.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))

    e5_folder = args.e5
    if e5_folder is None and (args.tokenizer is None or "e5" in args.models):
        from hf_earlyexit import multilingual_e5_small

        e5_folder = multilingual_e5_small()
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer or e5_folder)
    map_texts = six_language_texts(args.data)
    sentences = [s for lang in EVAL_LANGUAGES for s in xnli_sentences(args.data / "xnli" / f"{lang}.dev.tsv")[:12]]
    results = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_average": os.getloadavg(),
        "threads": torch.get_num_threads(),
        "seq_len": args.seq_len,
        "batch_size": args.batch_size,
        "map_texts": len(map_texts),
        "models": {},
    }
    print(f"map: {len(map_texts):,} sentences of {', '.join(EVAL_LANGUAGES)}; load {os.getloadavg()}")
    for name in args.models:
        if name == "e5":
            if e5_folder is None:
                continue
            model = XLMRobertaForEarlyExit.from_pretrained(e5_folder, num_labels=3).eval()
            model_tokenizer = AutoTokenizer.from_pretrained(e5_folder)
        else:
            model, model_tokenizer = random_model(name, tokenizer), tokenizer
        results["models"][name] = measure_pair(name, model, model_tokenizer, map_texts, sentences, args)
        del model
        gc.collect()
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(results, indent=2), encoding="utf-8")
    results["load_average_end"] = os.getloadavg()
    args.output.write_text(json.dumps(results, indent=2), encoding="utf-8")
    print(f"\nwrote {args.output}; load at the end {os.getloadavg()}")
    return results


if __name__ == "__main__":
    main()
