"""Does batched early exit make a batch faster in proportion to the FLOPs it saves?

An XLM-R-Base-shaped ``XLMRobertaForEarlyExit`` (12 layers x 768, 12 heads, FFN 3072, vocabulary 250,002, an exit
after every layer, random weights, eval mode, ``torch.inference_mode``) classifies batches of 32 and of 1 sequence
of 128 real tokens. Variants, timed side by side in one run with interleaved repetitions (the order rotates each
repetition) and summarised by medians of per-repetition ratios:

* ``plain``: ``XLMRobertaForSequenceClassification`` with the same weights (the reference for the overhead);
* ``full depth``: the early-exit model with threshold 0 (exits off);
* ``forced``: the early-exit model with ``forced_exit_layer`` fixing each example's exit layer. Batch 32: the widest
  linear spread of exit layers (``round(linspace(lo, hi, 32))``) whose analytic FLOPs ratio is closest to 2.0;
  batch 1: the single layer whose ratio is closest to 2.0 (layer 6);
* ``threshold``: the real criterion path (entropy, one threshold per exit layer) with thresholds calibrated from one
  all-exits pass so that as many examples leave at each layer as in ``forced`` (its analytic ratio is computed from
  the exit layers it actually returned).

Analytic FLOPs come from ``flops_per_example`` / ``mean_flops``: full depth without exit heads (the exits-off path
skips them), early exit with every exit head evaluated on the way. Printed: analytic ratio, wall-clock speed-up
against full depth, their quotient (target >= 0.9 at batch 32) and the exits-off overhead against plain (target
<= 3 %). The same ratios from process CPU time (all threads) are printed beside them: on a machine shared with
other jobs, CPU time is far less disturbed than wall-clock (it does not count time spent waiting for a core).

Usage: python bench/early_exit_speed.py [--threads 2] [--repeats 5] [--batch1-repeats 25] [--profile]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from transformers import XLMRobertaForSequenceClassification

from hf_earlyexit import XLMRobertaEarlyExitConfig, XLMRobertaForEarlyExit, flops_per_example, mean_flops
from hf_earlyexit.modeling.criteria import normalized_entropy

SEQ_LEN = 128
TARGET_RATIO = 2.0


def xlmr_base_config() -> XLMRobertaEarlyExitConfig:
    return XLMRobertaEarlyExitConfig(
        vocab_size=250_002,
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        max_position_embeddings=514,
        type_vocab_size=1,
        num_labels=3,
        exit_criterion="entropy",
        exit_threshold=0.0,
    )


def analytic_ratio(config, exit_layers: torch.Tensor) -> float:
    full = flops_per_example(config, SEQ_LEN, task="sequence", include_exit_heads=False)
    lengths = torch.full((exit_layers.numel(),), SEQ_LEN)
    return full / mean_flops(config, lengths, exit_layers, task="sequence")


def spread_exit_layers(config, batch: int) -> torch.Tensor:
    """Exit layers ``round(linspace(lo, hi, batch))`` with the ratio closest to the target; widest spread wins ties
    (to the 3rd decimal), so the batch exercises row removal at as many layers as possible."""
    depth = config.num_hidden_layers
    best_key, best = None, None
    for lo in range(1, depth + 1):
        for hi in range(lo, depth + 1):
            layers = torch.linspace(lo, hi, batch).round().long()
            key = (round(abs(analytic_ratio(config, layers) - TARGET_RATIO), 3), -(hi - lo))
            if best_key is None or key < best_key:
                best_key, best = key, layers
    return best


@torch.inference_mode()
def calibrated_thresholds(model, input_ids, target_layers: torch.Tensor) -> list[float]:
    """Per-exit entropy thresholds that make as many examples leave at each layer as ``target_layers`` does: at each
    exit, among the rows still running, the threshold falls midway between the n-th and (n+1)-th lowest entropy."""
    exit_logits = model(input_ids, output_exit_logits=True).exit_logits
    running = torch.ones(input_ids.shape[0], dtype=torch.bool)
    thresholds = []
    for layer, logits in zip(model.config.exit_layers[:-1], exit_logits[:-1]):
        entropy = normalized_entropy(logits)
        leaving = int((target_layers == layer).sum())
        remaining = entropy[running].sort().values
        if leaving == 0:
            threshold = 0.0 if remaining.numel() == 0 else float(remaining[0]) / 2
        elif leaving == remaining.numel():
            threshold = 1.0 + 1e-6
        else:
            threshold = float(remaining[leaving - 1] + remaining[leaving]) / 2
        thresholds.append(threshold)
        running &= entropy >= threshold
    return [*thresholds, 0.0]


def time_call(fn) -> tuple[float, float]:
    """Wall-clock and process CPU seconds (all threads) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def measure(variants: dict, repeats: int) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Every variant once per repetition, in an order rotated each repetition; one untimed warm-up each.
    Returns wall-clock and CPU times per variant."""
    names = list(variants)
    for name in names:
        variants[name]()
    wall, cpu = {name: [] for name in names}, {name: [] for name in names}
    for repetition in range(repeats):
        shift = repetition % len(names)
        for name in names[shift:] + names[:shift]:
            wall_seconds, cpu_seconds = time_call(variants[name])
            wall[name].append(wall_seconds)
            cpu[name].append(cpu_seconds)
    return wall, cpu


def median_ratio(numerator: list[float], denominator: list[float]) -> float:
    return statistics.median(n / d for n, d in zip(numerator, denominator))


def run_batch(early_exit, plain, batch: int, repeats: int) -> dict:
    config = early_exit.config
    generator = torch.Generator().manual_seed(batch)
    input_ids = torch.randint(3, config.vocab_size, (batch, SEQ_LEN), generator=generator)
    input_ids[:, 0], input_ids[:, -1] = 0, 2  # <s> ... </s>, no padding: every example has 128 real tokens
    forced = spread_exit_layers(config, batch)
    thresholds = calibrated_thresholds(early_exit, input_ids, forced)

    with torch.inference_mode():
        reached = early_exit(input_ids, exit_threshold=thresholds).exit_layer
        forced_out = early_exit(input_ids, forced_exit_layer=forced).exit_layer
    assert torch.equal(forced_out, forced), "forced_exit_layer was not honoured"

    def forward(model, **kwargs):
        def call():
            with torch.inference_mode():
                model(input_ids, **kwargs)

        return call

    variants = {
        "plain": forward(plain),
        "full_depth": forward(early_exit, exit_threshold=0.0),
        "forced": forward(early_exit, forced_exit_layer=forced),
        "threshold": forward(early_exit, exit_threshold=thresholds),
    }
    wall, cpu = measure(variants, repeats)
    ratios = {"forced": analytic_ratio(config, forced), "threshold": analytic_ratio(config, reached)}
    result = {
        "batch": batch,
        "repeats": repeats,
        "forced_layers": forced.tolist(),
        "threshold_layers": reached.tolist(),
        "median_ms": {name: 1000 * statistics.median(values) for name, values in wall.items()},
        "overhead": median_ratio(wall["full_depth"], wall["plain"]) - 1.0,
        "cpu_overhead": median_ratio(cpu["full_depth"], cpu["plain"]) - 1.0,
    }
    for path, ratio in ratios.items():
        speedup, cpu_speedup = median_ratio(wall["full_depth"], wall[path]), median_ratio(cpu["full_depth"], cpu[path])
        result[path] = (ratio, speedup, speedup / ratio, cpu_speedup / ratio)
    return result


# Ops of the exit bookkeeping in the batched loop (deciding, writing out and removing rows), as the profiler names them.
BOOKKEEPING_OPS = ("aten::argsort", "aten::sort", "aten::index_copy_", "aten::index_fill_", "aten::index", "aten::item")


def profile_forced(early_exit, batch: int) -> None:
    """Where the time of one forced-exit forward goes: top ops by self CPU time and the bookkeeping share."""
    from torch.profiler import ProfilerActivity, profile

    config = early_exit.config
    input_ids = torch.randint(3, config.vocab_size, (batch, SEQ_LEN), generator=torch.Generator().manual_seed(batch))
    forced = spread_exit_layers(config, batch)
    with torch.inference_mode():
        early_exit(input_ids, forced_exit_layer=forced)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            early_exit(input_ids, forced_exit_layer=forced)
    events = prof.key_averages()
    total = sum(event.self_cpu_time_total for event in events)
    bookkeeping = sum(event.self_cpu_time_total for event in events if event.key in BOOKKEEPING_OPS)
    print(f"\nprofile, batch {batch}, forced exits: bookkeeping ops {100 * bookkeeping / total:.2f} % of self CPU time")
    print(events.table(sort_by="self_cpu_time_total", row_limit=12))


def layer_histogram(layers: list[int]) -> str:
    counts = {layer: layers.count(layer) for layer in sorted(set(layers))}
    return " ".join(f"{layer}:{count}" for layer, count in counts.items())


def print_table(results: list[dict]) -> None:
    print()
    print(
        "| batch | path | exit layers (layer:count) | analytic FLOPs ratio | wall-clock speed-up | quotient "
        "| quotient by CPU time |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in results:
        for path, layers in (("forced", r["forced_layers"]), ("threshold", r["threshold_layers"])):
            ratio, speedup, quotient, cpu_quotient = r[path]
            print(
                f"| {r['batch']} | {path} | {layer_histogram(layers)} | {ratio:.3f}x | {speedup:.3f}x | {quotient:.3f} "
                f"| {cpu_quotient:.3f} |"
            )
    print()
    print(
        "| batch | repeats | plain ms | full depth ms | forced ms | threshold ms | exits-off overhead vs plain "
        "| same by CPU time |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        ms = r["median_ms"]
        print(
            f"| {r['batch']} | {r['repeats']} | {ms['plain']:.1f} | {ms['full_depth']:.1f} | {ms['forced']:.1f} | "
            f"{ms['threshold']:.1f} | {100 * r['overhead']:+.2f} % | {100 * r['cpu_overhead']:+.2f} % |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repetitions per variant at batch 32")
    parser.add_argument("--batch1-repeats", type=int, default=25, help="timed repetitions per variant at batch 1")
    parser.add_argument("--batches", type=int, nargs="+", default=[32, 1], help="batch sizes (default 32 1)")
    parser.add_argument("--profile", action="store_true", help="also profile one forced-exit forward per batch size")
    args = parser.parse_args()
    for name in ("threads", "repeats", "batch1_repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')}={getattr(args, name)}; expected an int >= 1")
    if any(batch < 1 for batch in args.batches):
        parser.error(f"--batches={args.batches}; expected ints >= 1")
    torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    config = xlmr_base_config()
    early_exit = XLMRobertaForEarlyExit(config).eval()
    plain = XLMRobertaForSequenceClassification(config).eval()
    missing, unexpected = plain.load_state_dict(early_exit.state_dict(), strict=False)
    assert not missing and all(key.startswith("exit_heads.") for key in unexpected), (missing, unexpected)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, attention {config._attn_implementation}, "
        f"XLM-R Base shape, seq {SEQ_LEN}, {sum(p.numel() for p in early_exit.parameters()) / 1e6:.1f}M parameters"
    )
    results = []
    for batch in args.batches:
        repeats = args.repeats if batch > 1 else args.batch1_repeats
        started = time.perf_counter()
        results.append(run_batch(early_exit, plain, batch, repeats))
        print(f"batch {batch}: {repeats} repetitions in {time.perf_counter() - started:.0f} s", flush=True)
    print_table(results)
    if args.profile:
        for batch in args.batches:
            profile_forced(early_exit, batch)


if __name__ == "__main__":
    main()
