"""Loss-only micro-benchmark of the block-wise attention losses (issue 12): one mapped layer pair, forward + backward.

Shapes of the real recipe: a Large-shaped teacher (16 heads x 64) and a Base-shaped student (12 heads x 64), captured
query/key (and value, for the relation loss) projections of `--batch` examples of `--seq` tokens. Each step holds `--pairs` pairs. Each variant (a
block size, or another copy of `attention_loss.py` given with `--module`, e.g. the previous commit's, for a
side-by-side comparison) is timed in CPU seconds, interleaved over `--reps` rounds; medians and ratios to the first
variant are printed.

    OMP_NUM_THREADS=1 python bench/attention_loss_micro.py [--seq 512] [--batch 1] [--reps 7] [--pairs 4] \
        [--kind kl] [--elements 1048576 2097152] [--module old=/path/to/attention_loss.py]
"""

import argparse
import ctypes
import importlib.util
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from hf_earlyexit.distillation import attention_loss  # noqa: E402

S_HEADS, T_HEADS, HEAD_DIM = 12, 16, 64


def load_module(path: str):
    spec = importlib.util.spec_from_file_location(f"attention_loss_{abs(hash(path))}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def projections(kind: str, batch: int, seq: int):
    generator = torch.Generator().manual_seed(0)
    count = 3 if kind == "relation" else 2
    student = [torch.randn(batch, seq, S_HEADS * HEAD_DIM, generator=generator) for _ in range(count)]
    teacher = [torch.randn(batch, seq, T_HEADS * HEAD_DIM, generator=generator) for _ in range(count)]
    return student, teacher


def make_step(module, kind, elements, student, teacher, mask, pairs):
    """`pairs` mapped layer pairs of one step (the same projections), sharing a workspace where the module has one,
    as the trainer's pairs do; the mean of their losses is differentiated once."""

    def step():
        extra = {"workspace": module.BlockWorkspace()} if hasattr(module, "BlockWorkspace") else {}
        losses = []
        for _ in range(pairs):
            leaves = [x.detach().requires_grad_() for x in student]
            if kind == "relation":
                losses.append(
                    module.relation_attention_loss(leaves, teacher, mask, 64, elements=elements or None, **extra)
                )
            else:
                losses.append(
                    module.head_mean_attention_loss(
                        leaves, teacher, mask, S_HEADS, T_HEADS, kind, elements=elements or None, **extra
                    )
                )
        loss = torch.stack(losses).mean()
        loss.backward()
        return loss.item()

    return step


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--kind", default="kl", choices=["kl", "mse", "relation"])
    parser.add_argument("--elements", type=int, nargs="+", default=[0], help="block sizes; 0: the default")
    parser.add_argument("--module", action="append", default=[], help="NAME=PATH of another attention_loss.py")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--pairs", type=int, default=4, help="mapped layer pairs per timed step")
    options = parser.parse_args()
    # As bench/distill_step.py: blocks above 1 MiB come from mmap (fresh pages each time), as in the step it measures.
    ctypes.CDLL("libc.so.6").mallopt(-3, 1 << 20)
    torch.set_num_threads(options.threads)
    student, teacher = projections(options.kind, options.batch, options.seq)
    mask = torch.ones(options.batch, options.seq, dtype=torch.bool)
    modules = [("current", attention_loss)] + [
        (name, load_module(path)) for name, path in (item.split("=", 1) for item in options.module)
    ]
    variants = {
        f"{name} " + (f"2^{elements.bit_length() - 1}" if elements else "default"): make_step(
            module, options.kind, elements, student, teacher, mask, options.pairs
        )
        for name, module in modules
        for elements in options.elements
    }
    values = {name: step() for name, step in variants.items()}  # warm-up, and the values side by side
    times = {name: [] for name in variants}
    for _ in range(options.reps):
        for name, step in variants.items():
            start = time.process_time()
            step()
            times[name].append(time.process_time() - start)
    print(
        f"{options.kind} loss, {options.batch} x {options.seq} tokens, teacher {T_HEADS}x{HEAD_DIM}, student "
        f"{S_HEADS}x{HEAD_DIM}, {options.pairs} pairs a step, {torch.get_num_threads()} thread(s), "
        f"{options.reps} interleaved reps, "
        f"load {os.getloadavg()[0]:.2f}"
    )
    first = statistics.median(next(iter(times.values())))
    for name, samples in times.items():
        median = statistics.median(samples)
        print(
            f"{name:>24}: {median * 1000 / options.pairs:8.1f} ms CPU a pair  ratio {median / first:.3f}  loss {values[name]:.6f}"
        )


if __name__ == "__main__":
    main()
