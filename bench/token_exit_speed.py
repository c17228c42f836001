"""Does per-token early exit make a batch faster in proportion to the FLOPs it saves?

An XLM-R-Base-shaped ``XLMRobertaForEarlyExitTokenClassification`` (12 layers x 768, 12 heads, FFN 3072, vocabulary
250,002, 7 labels, a linear exit head after every layer, random weights, eval mode, ``torch.inference_mode``,
``exit_granularity="token"``) labels a batch of 32 sequences of 128 real tokens. Variants, timed side by side in
one run with interleaved repetitions (the order rotates each repetition), summarised by medians of
per-repetition ratios:

* ``full depth``: threshold 0 (exits off: the plain encoder forward, no exit head);
* ``token, nobody leaves``: every token forced to the last layer, so the token path runs with every exit head and
  the packing at every layer but saves nothing: its overhead against full depth;
* ``forced, same in every row``: each row holds the same multiset of per-token exit layers, geometric over the
  layers (share of layer l proportional to ``decay ** (l - 1)``: most tokens leave early and a tail goes deep, the
  shape TokEE reports for NER), in a random order per row, the decay bisected so that the analytic FLOPs ratio is
  closest to 2.0;
* ``forced, i.i.d. tokens``: every token draws its exit layer independently from that multiset, so rows differ in
  how many tokens stay active (the per-row query padding of the attention then costs something) and rows finish at
  different layers.

Analytic FLOPs: full depth ``flops_per_example(..., include_exit_heads=False)``; token exit ``flops_token_exit`` per
row (K/V for every token of a running row, Q/O/FFN/scores only for active tokens, every exit head on the tokens it
sees), averaged over the batch. Printed: analytic ratio, wall-clock speed-up against full depth, their quotient
(target >= 0.8), and the same with process CPU time (all threads; less sensitive to other processes competing for
the cores than wall time).

Usage: python bench/token_exit_speed.py [--threads 2] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from early_exit_speed import measure, median_ratio, xlmr_base_config  # same folder: the sequence-level benchmark

from hf_earlyexit import XLMRobertaEarlyExitConfig, XLMRobertaForEarlyExitTokenClassification, flops_per_example
from hf_earlyexit.data.tasks import WIKIANN_TAGS
from hf_earlyexit.evaluation.flops import token_exit_flops_per_row

SEQ_LEN = 128
BATCH = 32
TARGET_RATIO = 2.0


def xlmr_base_token_config() -> XLMRobertaEarlyExitConfig:
    config = xlmr_base_config()  # the sequence benchmark's XLM-R Base shape
    config.num_labels = len(WIKIANN_TAGS)
    config.exit_granularity = "token"
    return config


def analytic_ratio(config, exit_layer: torch.Tensor) -> float:
    full = flops_per_example(config, SEQ_LEN, task="token", include_exit_heads=False)
    return full / float(token_exit_flops_per_row(config, exit_layer, torch.ones_like(exit_layer)).mean())


def geometric_counts(depth: int, decay: float) -> torch.Tensor:
    """Tokens per exit layer 1..depth (of ``SEQ_LEN``), shares proportional to ``decay ** (layer - 1)``
    (largest-remainder rounding)."""
    shares = decay ** torch.arange(depth, dtype=torch.float64)
    exact = SEQ_LEN * shares / shares.sum()
    counts = exact.floor().long()
    counts[(exact - counts).argsort(descending=True)[: SEQ_LEN - int(counts.sum())]] += 1
    return counts


def geometric_token_layers(config, generator: torch.Generator) -> torch.Tensor:
    """``(BATCH, SEQ_LEN)``: every row the same multiset of exit layers, geometric over the layers (most tokens
    leave early, a tail goes deep, as TokEE reports for NER), in a random order per row; the decay is bisected so
    that the analytic FLOPs ratio is closest to the target."""
    depth = config.num_hidden_layers

    def row_for(decay: float) -> torch.Tensor:
        return torch.repeat_interleave(torch.arange(1, depth + 1), geometric_counts(depth, decay))

    low, high = 0.01, 1.0  # the ratio falls as the decay grows (1.0: uniform over the layers)
    best = row_for(high)
    for _ in range(40):
        middle = (low + high) / 2
        row = row_for(middle)
        ratio = analytic_ratio(config, row[None])
        if abs(ratio - TARGET_RATIO) < abs(analytic_ratio(config, best[None]) - TARGET_RATIO):
            best = row
        low, high = (middle, high) if ratio > TARGET_RATIO else (low, middle)
    return torch.stack([best[torch.randperm(SEQ_LEN, generator=generator)] for _ in range(BATCH)])


def histogram(layers: torch.Tensor) -> str:
    values, counts = layers.flatten().unique(return_counts=True)
    share = counts.double() / layers.numel()
    return " ".join(f"{v}:{100 * s:.0f}%" for v, s in zip(values.tolist(), share.tolist()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repetitions per variant")
    args = parser.parse_args()
    for name in ("threads", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name}={getattr(args, name)}; expected an int >= 1")
    torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    config = xlmr_base_token_config()
    model = XLMRobertaForEarlyExitTokenClassification(config).eval()
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(3, config.vocab_size, (BATCH, SEQ_LEN), generator=generator)
    input_ids[:, 0], input_ids[:, -1] = 0, 2  # <s> ... </s>, no padding: every row has 128 real tokens
    same_rows = geometric_token_layers(config, generator)
    iid = same_rows.flatten()[torch.randint(0, same_rows.numel(), (BATCH, SEQ_LEN), generator=generator)]
    nobody = torch.full((BATCH, SEQ_LEN), config.num_hidden_layers)
    forced = {"token, nobody leaves": nobody, "forced, same in every row": same_rows, "forced, i.i.d. tokens": iid}

    with torch.inference_mode():
        for name, layers in forced.items():
            assert torch.equal(model(input_ids, forced_exit_layer=layers).exit_layer, layers), name

    def forward(**kwargs):
        def call():
            with torch.inference_mode():
                model(input_ids, **kwargs)

        return call

    variants = {"full depth": forward(exit_threshold=0.0)}
    variants.update({name: forward(forced_exit_layer=layers) for name, layers in forced.items()})
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, attention {config._attn_implementation}, "
        f"XLM-R Base shape, batch {BATCH}, seq {SEQ_LEN}, {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M "
        f"parameters, {args.repeats} repetitions",
        flush=True,
    )
    started = time.perf_counter()
    wall, cpu = measure(variants, args.repeats)
    print(f"timed in {time.perf_counter() - started:.0f} s")
    print()
    print(
        "| variant | token exit layers (layer:share) | analytic FLOPs ratio | wall-clock speed-up | quotient | "
        "CPU-time speed-up | quotient (CPU) | median wall ms |"
    )
    print("|---|---|---|---|---|---|---|---|")
    full_ms = 1000 * statistics.median(wall["full depth"])
    print(f"| full depth | 12:100% | 1.000x | 1.000x | 1.000 | 1.000x | 1.000 | {full_ms:.0f} |")
    for name, layers in forced.items():
        ratio = analytic_ratio(config, layers)
        speedup = median_ratio(wall["full depth"], wall[name])
        cpu_speedup = median_ratio(cpu["full depth"], cpu[name])
        print(
            f"| {name} | {histogram(layers)} | {ratio:.3f}x | {speedup:.3f}x | {speedup / ratio:.3f} | "
            f"{cpu_speedup:.3f}x | {cpu_speedup / ratio:.3f} | {1000 * statistics.median(wall[name]):.0f} |"
        )


if __name__ == "__main__":
    main()
