"""Does trimming the vocabulary change accuracy, and does it make fine-tuning faster? The real multilingual-e5-small
fine-tuned on English NLI, evaluated zero-shot on XNLI dev in en ru hi tr sw ur.

Three models, all from one starting point (the e5-small folder, classification head initialised with seed 0):

- **untrimmed**: fine-tuned with all 250,002 embedding rows trainable;
- **trimmed before fine-tuning**: `trim_vocabulary` on the six languages' text in ``../shared/data`` (`text/news`,
  Tatoeba, XNLI dev, PAN-X; as in ``bench/vocab_trim.py``) plus the NLI training pairs, then fine-tuned on exactly the
  same batches in the same order, with the same dropout masks. Every text it sees tokenises exactly as before, so it should score the same;
- **untrimmed, trimmed after fine-tuning to news + Tatoeba only**: XNLI dev is then held-out text, partly
  re-segmented from the kept pieces (see docs/vocab_trimming.md), which is where accuracy could move.

The two fine-tuning runs alternate step by step (untrimmed step, trimmed step, ...) so the machine's load hits both
alike; the median wall and CPU seconds per step are reported. AdamW (lr 3e-5, weight decay 0.01) over every
parameter; the embedding's gradient and optimizer state are dense, which is what trimming shrinks.

Usage: python bench/vocab_trim_accuracy.py [--steps 60] [--batch-size 16] [--max-length 64] [--eval-stride 8]
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from transformers import AutoModelForSequenceClassification, AutoTokenizer  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "bench"))

from vocab_trim import DEFAULT_DATA, TATOEBA_CODES, lines, six_language_texts  # noqa: E402

from hf_earlyexit import multilingual_e5_small, trim_vocabulary  # noqa: E402
from hf_earlyexit.data.tasks import EVAL_LANGUAGES, XNLI_LABELS  # noqa: E402


def pairs(path: Path) -> list[tuple[str, str, int]]:
    rows = [line.split("\t") for line in lines(path)[1:]]
    return [(premise, hypothesis, XNLI_LABELS.index(label)) for premise, hypothesis, label in rows]


def batch(tokenizer, rows, max_length: int):
    encoded = tokenizer(
        [r[0] for r in rows], [r[1] for r in rows], truncation=True, max_length=max_length,
        padding=True, return_tensors="pt",
    )  # fmt: skip
    return dict(encoded), torch.tensor([r[2] for r in rows])


def train_step(model, optimizer, tokenizer, rows, max_length: int) -> tuple[float, float, float]:
    inputs, labels = batch(tokenizer, rows, max_length)
    wall, cpu = time.perf_counter(), time.process_time()
    loss = model(**inputs, labels=labels).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - wall, time.process_time() - cpu, float(loss)


@torch.inference_mode()
def accuracy(model, tokenizer, rows, max_length: int, batch_size: int = 64) -> float:
    model.eval()
    correct = 0
    for start in range(0, len(rows), batch_size):
        inputs, labels = batch(tokenizer, rows[start : start + batch_size], max_length)
        correct += int((model(**inputs).logits.argmax(-1) == labels).sum())
    model.train()
    return 100.0 * correct / len(rows)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--eval-stride", type=int, default=8, help="every n-th XNLI dev pair of each language")
    parser.add_argument("--output", type=Path, default=REPO_ROOT / "outputs" / "vocab_trim_accuracy.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    load_start = os.getloadavg()

    folder = multilingual_e5_small()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    generator = torch.Generator().manual_seed(0)
    nli = pairs(args.data / "nli" / "mnli_taxinli.tsv")
    order = torch.randperm(len(nli), generator=generator)[: args.steps * args.batch_size].tolist()
    train_rows = [nli[i] for i in order]
    xnli = {lang: pairs(args.data / "xnli" / f"{lang}.dev.tsv")[:: args.eval_stride] for lang in EVAL_LANGUAGES}

    torch.manual_seed(0)
    untrimmed = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=3).train()
    map_texts = six_language_texts(args.data) + [text for row in train_rows for text in row[:2]]
    trimmed, trimmed_tokenizer = trim_vocabulary(copy.deepcopy(untrimmed), tokenizer, map_texts)
    arms = {"untrimmed": (untrimmed, tokenizer), "trimmed_before": (trimmed, trimmed_tokenizer)}
    optimizers = {
        arm: torch.optim.AdamW(model.parameters(), lr=3e-5, weight_decay=0.01) for arm, (model, _) in arms.items()
    }
    times = {arm: [] for arm in arms}
    # One RNG stream per arm, so both draw the same dropout masks although their steps alternate.
    rng_states = {arm: torch.random.get_rng_state() for arm in arms}
    for step in range(args.steps):
        rows = train_rows[step * args.batch_size : (step + 1) * args.batch_size]
        for arm in arms if step % 2 == 0 else reversed(list(arms)):
            model, arm_tokenizer = arms[arm]
            torch.random.set_rng_state(rng_states[arm])
            times[arm].append(train_step(model, optimizers[arm], arm_tokenizer, rows, args.max_length))
            rng_states[arm] = torch.random.get_rng_state()
        if step % 10 == 0:
            print(f"step {step}: " + ", ".join(f"{a} {times[a][-1][0]:.2f}s loss {times[a][-1][2]:.3f}" for a in arms))
    del optimizers

    news_tatoeba = itertools.chain(
        *(lines(args.data / "text" / "news" / f"{lang}.txt") for lang in EVAL_LANGUAGES),
        *(lines(args.data / "text" / "tatoeba" / f"{TATOEBA_CODES[lang]}.txt") for lang in EVAL_LANGUAGES),
    )
    after, after_tokenizer = trim_vocabulary(copy.deepcopy(untrimmed), tokenizer, news_tatoeba)
    arms["trimmed_after_news_tatoeba"] = (after, after_tokenizer)

    results = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_average_start": load_start,
        "threads": torch.get_num_threads(),
        "steps": args.steps,
        "batch_size": args.batch_size,
        "max_length": args.max_length,
        "eval_pairs_per_language": {lang: len(rows) for lang, rows in xnli.items()},
        "vocabulary": {arm: len(arm_tokenizer) for arm, (_, arm_tokenizer) in arms.items()},
        "parameters": {arm: model.num_parameters() for arm, (model, _) in arms.items()},
        "step_seconds": {
            arm: {
                "wall_median": statistics.median(t[0] for t in samples[1:]),
                "cpu_median": statistics.median(t[1] for t in samples[1:]),
            }
            for arm, samples in times.items()
        },
        "final_loss": {arm: samples[-1][2] for arm, samples in times.items()},
        "accuracy": {},
    }
    for arm, (model, arm_tokenizer) in arms.items():
        results["accuracy"][arm] = {
            lang: accuracy(model, arm_tokenizer, rows, args.max_length) for lang, rows in xnli.items()
        }
        print(arm, {lang: round(value, 2) for lang, value in results["accuracy"][arm].items()})
    results["load_average_end"] = os.getloadavg()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2), encoding="utf-8")
    print(json.dumps({k: v for k, v in results.items() if k != "accuracy"}, indent=2))
    print(f"wrote {args.output}")
    return results


if __name__ == "__main__":
    main()
