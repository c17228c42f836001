"""run_distil under two processes (gloo, CPU) with checkpoints: saving works in both accelerate dispatch modes, and a
run resumed from a checkpoint ends with the same weights, and the same per-partition exports, as an uninterrupted
run (dropout on, masking seeded)."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "examples" / "configs" / "demo"


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    spec = importlib.util.spec_from_file_location("make_demo_teacher", REPO / "examples" / "make_demo_teacher.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    path = tmp_path_factory.mktemp("teacher")
    return module.build_teacher(
        str(DEMO / "data" / "corpus"), str(path), vocab_size=300, steps=2, block_size=32, seed=0
    )


def _run_distil(teacher, output_dir, dispatch: bool, port: int, *flags):
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines",
        "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(port),
        str(REPO / "examples" / "run_distil.py"), str(DEMO / "distil.yaml"), "--teacher_name_or_path", str(teacher),
        "--output_dir", str(output_dir), "--num_partitions", "2", "--steps_per_partition", "3", "--block_size", "32",
        "--per_device_train_batch_size", "2", "--save_strategy", "steps", "--save_steps", "2", "--warmup_steps", "0",
        "--logging_steps", "1", "--use_cpu", "true", "--disable_tqdm", "true", "--dataloader_pin_memory", "false",
        "--accelerator_config", json.dumps({"dispatch_batches": dispatch}), *flags,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert completed.returncode == 0, completed.stderr[-4000:]


@pytest.mark.slow
@pytest.mark.multiprocess
@pytest.mark.parametrize("dispatch", [True, False], ids=["dispatch", "no-dispatch"])
def test_two_process_resume_ends_with_the_uninterrupted_weights(teacher, tmp_path, dispatch):
    port = 29531 if dispatch else 29533
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    _run_distil(teacher, full, dispatch, port)
    assert {p.name for p in full.glob("checkpoint-*")} == {"checkpoint-2", "checkpoint-4", "checkpoint-6"}
    # Resumed before the partition boundary (step 3): it must train the rest of partition 0, then partition 1.
    _run_distil(teacher, resumed, dispatch, port, "--resume_from_checkpoint", str(full / "checkpoint-2"))
    for name in ("model.safetensors", "partition-0/model.safetensors", "partition-1/model.safetensors"):
        expected, got = load_file(full / name), load_file(resumed / name)
        assert expected.keys() == got.keys()
        worst = max((expected[k] - got[k]).abs().max().item() for k in expected)
        assert worst <= 1e-6, (name, worst)
    first, last = load_file(full / "partition-0/model.safetensors"), load_file(full / "model.safetensors")
    assert any(not torch.equal(first[k], last[k]) for k in first)  # the steps after the boundary did train
