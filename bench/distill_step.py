"""Cost of one distillation step, XLM-R Large-shaped teacher -> Base-shaped student, random weights.

Prints, side by side in one run (repetitions interleaved, medians; ratios of process CPU time, which other jobs on
a shared machine disturb far less than wall time; one intra-op thread by default, so CPU time is compute time):
  (a) a full DistillationTrainer step (hidden MSE + head-mean attention KL on the uniform map, logit KL and CE at
      masked positions, backward, AdamW step) against a bare teacher forward plus a bare student MLM training step;
  (b) the same step with and without the attention loss: time and peak memory;
  (c) peak memory against the eager way of getting maps (eager attention, output_attentions=True on both models).

Peak memory: the process's peak resident set size during the step (kernel VmHWM, reset before each step by writing
5 to /proc/self/clear_refs, after malloc_trim has returned freed heap memory to the OS; blocks of 1 MiB and more are
mmapped, see serve_large_blocks_by_mmap) minus the resident size just before it: what the step adds on top of
weights and optimizer state. The vocabulary is reduced to 8000 (the 250k embedding matrices would only add constant memory; the
LM head runs on masked positions only either way).

    python bench/distill_step.py [--reps 3] [--configs 128x2 512x1] [--threads 1] [--layers 24 12]
                                 [--attention-layer-map last]
"""

import argparse
import ctypes
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import XLMRobertaConfig, XLMRobertaForMaskedLM

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hf_earlyexit.distillation import DistillationArguments, DistillationTrainer  # noqa: E402
from hf_earlyexit.distillation.losses import attention_kl_head_mean, hidden_mse, logits_kl  # noqa: E402
from hf_earlyexit.distillation.module import mlm_head  # noqa: E402
from hf_earlyexit.distillation.projections import project  # noqa: E402

VOCAB = 8000


def config(layers, width, heads):
    return XLMRobertaConfig(
        vocab_size=VOCAB,
        hidden_size=width,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=4 * width,
        max_position_embeddings=514,
    )


def rss_mb() -> float:
    return int(re.search(r"VmRSS:\s+(\d+)", Path("/proc/self/status").read_text()).group(1)) / 1024


def peak_rss_mb() -> float:
    return int(re.search(r"VmHWM:\s+(\d+)", Path("/proc/self/status").read_text()).group(1)) / 1024


_LIBC = ctypes.CDLL("libc.so.6")
_M_MMAP_THRESHOLD = -3


def serve_large_blocks_by_mmap() -> None:
    """Fix glibc's mmap threshold at 1 MiB. Otherwise it rises to the size of the largest block freed (up to 32 MiB),
    later blocks below it come from the heap and fragment it, and the peak RSS then depends on the order in which
    variants ran rather than on the tensors each step holds."""
    _LIBC.mallopt(_M_MMAP_THRESHOLD, 1 << 20)


def measure(step) -> tuple[float, float, float]:
    """(CPU seconds of this process, wall seconds, MB the step adds at its peak above the resident size before it)."""
    # Hand memory freed by earlier steps back to the OS, or this step would reuse it without raising the RSS.
    _LIBC.malloc_trim(0)
    Path("/proc/self/clear_refs").write_text("5")
    before = rss_mb()
    cpu_start, wall_start = time.process_time(), time.perf_counter()
    step()
    cpu, wall = time.process_time() - cpu_start, time.perf_counter() - wall_start
    return cpu, wall, peak_rss_mb() - before


def make_batch(batch, seq):
    generator = torch.Generator().manual_seed(seq)
    input_ids = torch.randint(4, VOCAB, (batch, seq), generator=generator)
    input_ids[:, 0] = 0
    labels = torch.full_like(input_ids, -100)
    masked = torch.rand(batch, seq, generator=generator) < 0.15
    labels[masked] = input_ids[masked]
    return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "labels": labels}


def make_trainer(teacher, student, output_dir, attention_loss, attention_layer_map=None):
    args = DistillationArguments(
        output_dir=output_dir,
        report_to=[],
        use_cpu=True,
        attention_loss=attention_loss,
        attention_layer_map=attention_layer_map,
        logit_loss="kl",
        hard_label_weight=1.0,
        per_device_train_batch_size=1,
    )
    trainer = DistillationTrainer(model=student, teacher_model=teacher, args=args)
    trainer.create_optimizer()
    return trainer


def trainer_step(trainer, inputs):
    def step():
        trainer.training_step(trainer.model, inputs)
        trainer.optimizer.step()
        trainer.model.zero_grad()

    return step


def bare_teacher_forward(teacher, inputs):
    rows = inputs["labels"] != -100

    @torch.no_grad()
    def step():
        hidden = teacher.base_model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
        mlm_head(teacher)(hidden.last_hidden_state[rows])

    return step


def bare_student_step(student, optimizer, inputs):
    rows = inputs["labels"] != -100

    def step():
        hidden = student.base_model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
        logits = mlm_head(student)(hidden.last_hidden_state[rows])
        F.cross_entropy(logits, inputs["labels"][rows]).backward()
        optimizer.step()
        optimizer.zero_grad()

    return step


def eager_maps_step(trainer, inputs):
    """The usual way: eager attention and output_attentions=True on both models, losses from the returned maps."""
    teacher, module = trainer.teacher, trainer.model
    student = module.student
    rows, mask = inputs["labels"] != -100, inputs["attention_mask"].bool()
    encoder_inputs = {"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"]}

    def step():
        for model in (teacher, student):
            model.config._attn_implementation = "eager"
        try:
            with torch.no_grad():
                t_out = teacher.base_model(**encoder_inputs, output_attentions=True, output_hidden_states=True)
                t_logits = mlm_head(teacher)(t_out.last_hidden_state[rows])
            s_out = student.base_model(**encoder_inputs, output_attentions=True, output_hidden_states=True)
            s_logits = mlm_head(student)(s_out.last_hidden_state[rows])
            pairs = trainer.hidden_pairs
            hidden = torch.stack(
                [
                    hidden_mse(project(module.projections, s, t, s_out.hidden_states[s]), t_out.hidden_states[t], mask)
                    for s, t in pairs
                ]
            ).mean()
            attention = torch.stack(
                [
                    attention_kl_head_mean(
                        s_out.attentions[s - 1].clamp_min(1e-30).log(),
                        t_out.attentions[t - 1].clamp_min(1e-30).log(),
                        mask,
                    )
                    for s, t in pairs
                ]
            ).mean()
            loss = (
                hidden + attention + logits_kl(s_logits, t_logits) + F.cross_entropy(s_logits, inputs["labels"][rows])
            )
            loss.backward()
            trainer.optimizer.step()
            module.zero_grad()
        finally:
            for model in (teacher, student):
                model.config._attn_implementation = "sdpa"

    return step


def run_config(batch, seq, reps, teacher, student, workdir, attention_layer_map=None):
    inputs = make_batch(batch, seq)
    full = make_trainer(teacher, student, f"{workdir}/full", "kl_head_mean", attention_layer_map)
    no_attention = make_trainer(teacher, student, f"{workdir}/noatt", "none")
    student_optimizer = torch.optim.AdamW(student.parameters(), lr=1e-5)
    variants = {
        "teacher forward": bare_teacher_forward(full.teacher, inputs),
        "student step": bare_student_step(student, student_optimizer, inputs),
        "distil step": trainer_step(full, inputs),
        "distil step, no attention loss": trainer_step(no_attention, inputs),
        "distil step, eager maps": eager_maps_step(full, inputs),
    }
    for name in ("student step", "distil step", "distil step, no attention loss"):
        variants[name]()  # warm-up: allocates the optimizer state, which later steps keep
    names = list(variants)
    samples = {name: [] for name in names}
    for rep in range(reps):
        for name in names[rep % len(names) :] + names[: rep % len(names)]:  # rotate the order
            samples[name].append(measure(variants[name]))
    median_time, median_wall, median_memory = (
        {name: statistics.median(sample[i] for sample in samples[name]) for name in names} for i in range(3)
    )
    print(f"\n== seq {seq}, batch {batch}, {reps} interleaved repetitions (medians) ==")
    for name in names:
        print(
            f"  {name:34s} {median_time[name]:8.2f} s CPU  {median_wall[name]:8.2f} s wall"
            f"   peak +{median_memory[name]:6.0f} MB"
        )
    bare = median_time["teacher forward"] + median_time["student step"]
    ratios = {
        "(a) distil step / (teacher fwd + student step)": median_time["distil step"] / bare,
        "(b) time with / without attention loss": median_time["distil step"]
        / median_time["distil step, no attention loss"],
        "(b) peak memory with / without attention loss": median_memory["distil step"]
        / median_memory["distil step, no attention loss"],
        "(c) peak memory captured Q/K / eager maps": median_memory["distil step"]
        / median_memory["distil step, eager maps"],
        "(c) time captured Q/K / eager maps": median_time["distil step"] / median_time["distil step, eager maps"],
    }
    targets = {"(a)": 1.10, "(b) time": 1.10, "(b) peak": 1.10}
    for label, value in ratios.items():
        target = next((t for key, t in targets.items() if label.startswith(key)), None)
        verdict = "" if target is None else f"  (target <= {target:.2f}: {'met' if value <= target else 'MISSED'})"
        print(f"  {label:50s} {value:6.3f}{verdict}")
    return ratios


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--configs", nargs="+", default=["128x2", "512x1"], help="SEQxBATCH")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--layers",
        nargs=2,
        type=int,
        default=[24, 12],
        metavar=("TEACHER", "STUDENT"),
        help="depths (fewer for a quick look; the uniform map then pairs every student layer with a teacher layer)",
    )
    parser.add_argument(
        "--attention-layer-map",
        default=None,
        help="attention_layer_map of the attention loss, e.g. last (MiniLM: one upper layer); default: the layer map",
    )
    options = parser.parse_args()
    torch.set_num_threads(options.threads)
    serve_large_blocks_by_mmap()
    torch.manual_seed(0)
    teacher_layers, student_layers = options.layers
    teacher = XLMRobertaForMaskedLM(config(teacher_layers, 1024, 16))
    student = XLMRobertaForMaskedLM(config(student_layers, 768, 12))
    print(
        f"teacher {teacher_layers}x1024x16, student {student_layers}x768x12, vocab {VOCAB} (reduced), random weights, "
        f"attention_layer_map {options.attention_layer_map or 'as layer_map'}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    with tempfile.TemporaryDirectory() as workdir:
        for spec in options.configs:
            seq, batch = (int(x) for x in spec.split("x"))
            run_config(batch, seq, options.reps, teacher, student, workdir, options.attention_layer_map)


if __name__ == "__main__":
    main()
