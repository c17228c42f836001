"""Driver for the DDP test: a tiny distillation run whose loss curve is written to <output_dir>/curve.json.

Run it under `accelerate launch --multi_gpu --num_processes 2 ...` with --per_device 4, or as plain python with
--per_device 8: both see the same 8 examples per optimizer step, so their curves must agree.
"""

import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from distill_helpers import as_dataset, mlm_batch, tiny_pair  # noqa: E402

from hf_earlyexit.distillation import DistillationArguments, DistillationTrainer  # noqa: E402

# Stage 1 freezes all but the top layer: under DDP that needs every parameter registered while still trainable.
STAGES = [
    {"name": "top", "losses": ["hidden", "attention"], "train": ["top:1"], "steps": 2},
    {"name": "all", "losses": ["hidden", "attention", "logits", "ce"]},
]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--per_device", type=int, required=True)
    options = parser.parse_args()
    torch.set_num_threads(1)
    teacher, student = tiny_pair()
    args = DistillationArguments(
        output_dir=options.output_dir,
        per_device_train_batch_size=options.per_device,
        max_steps=6,
        learning_rate=3e-3,
        lr_scheduler_type="constant",
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        disable_tqdm=True,
        seed=0,
        logit_loss="kl",
        hard_label_weight=0.5,
        stages=STAGES,
        dataloader_pin_memory=False,
        use_cpu=True,  # on a CPU-only machine TrainingArguments only sets up DDP (gloo) with use_cpu
    )
    trainer = DistillationTrainer(
        model=student, teacher_model=teacher, args=args, train_dataset=as_dataset(mlm_batch())
    )
    trainer.train()
    if trainer.is_world_process_zero():
        curve = [entry for entry in trainer.state.log_history if "loss" in entry]
        weights = {k: v.double().sum().item() for k, v in trainer.student.state_dict().items()}
        result = {"world_size": trainer.accelerator.num_processes, "curve": curve, "weight_sums": weights}
        with open(os.path.join(options.output_dir, "curve.json"), "w") as f:
            json.dump(result, f)


if __name__ == "__main__":
    main()
