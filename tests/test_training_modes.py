"""Exit training modes: which parameters each step trains, gradient accumulation, logging, and real learning."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import HfArgumentParser, Trainer, TrainerCallback, TrainingArguments

from hf_earlyexit import XLMRobertaEarlyExitConfig, XLMRobertaForEarlyExit, XLMRobertaForEarlyExitTokenClassification
from hf_earlyexit.training import EarlyExitTrainer, EarlyExitTrainingArguments, step_plan

VOCAB, PAD, WIDTH, LAYERS = 64, 1, 10, 3


def tiny_model(task="sequence", seed=0, **overrides):
    torch.manual_seed(seed)
    config = XLMRobertaEarlyExitConfig(
        **{
            "vocab_size": VOCAB,
            "hidden_size": 32,
            "num_hidden_layers": LAYERS,
            "num_attention_heads": 4,
            "intermediate_size": 64,
            "max_position_embeddings": 64,
            "pad_token_id": PAD,
            "num_labels": 3,
            "hidden_dropout_prob": 0.0,
            "attention_probs_dropout_prob": 0.0,
            "classifier_dropout": 0.0,
            **overrides,
        }
    )
    cls = XLMRobertaForEarlyExitTokenClassification if task == "token" else XLMRobertaForEarlyExit
    return cls(config)


def random_examples(task, count, seed=0, labelled=True):
    """Right-padded examples of uneven length; token labels are -100 on pads, <s> and a few "sub-tokens", so the
    micro-batches of an accumulated batch hold different numbers of labelled items."""
    generator = torch.Generator().manual_seed(seed)
    examples = []
    for index in range(count):
        length = 3 + (index * 5) % (WIDTH - 2)
        input_ids = torch.full((WIDTH,), PAD)
        input_ids[:length] = torch.randint(3, VOCAB, (length,), generator=generator)
        input_ids[0] = 0
        example = {"input_ids": input_ids, "attention_mask": (torch.arange(WIDTH) < length).long()}
        if labelled and task == "token":
            labels = torch.randint(0, 3, (WIDTH,), generator=generator)
            labels[length:] = -100
            labels[0] = -100
            labels[torch.rand(WIDTH, generator=generator) < 0.3] = -100
            example["labels"] = labels
        elif labelled:
            example["labels"] = torch.randint(0, 3, (), generator=generator)
        examples.append(example)
    return examples


def training_args(tmp_path, cls=EarlyExitTrainingArguments, **overrides):
    values = {
        "output_dir": str(tmp_path),
        "max_steps": 1,
        "per_device_train_batch_size": 8,
        "learning_rate": 0.5,
        "optim": "sgd",
        "lr_scheduler_type": "constant",
        # Frozen parameters must get no .grad at all, else weight decay would still move them.
        "weight_decay": 0.01,
        # Clipping would hide a wrongly scaled gradient.
        "max_grad_norm": 0.0,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": "none",
        "use_cpu": True,
        "disable_tqdm": True,
        "seed": 0,
    }
    values.update(overrides)
    return cls(**values)


class GradientRecorder(TrainerCallback):
    """Per optimizer step, the names of the parameters holding a gradient."""

    def __init__(self):
        self.steps = []

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        self.steps.append({name for name, p in model.named_parameters() if p.grad is not None})


def snapshot(model):
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def is_exit_head(name):
    return name.startswith("exit_heads.")


def below_last_exit(name):
    """Backbone parameters under the intermediate exits (layers 1..LAYERS-1 and the embeddings)."""
    return name.startswith("roberta.embeddings.") or any(
        name.startswith(f"roberta.encoder.layer.{i}.") for i in range(LAYERS - 1)
    )


EVERYTHING = ("everything", lambda name: True)
EXITS_ONLY = ("exit heads only", is_exit_head)
ALL_BUT_EXITS = ("backbone + final head", lambda name: not is_exit_head(name))
EXITS_AND_LOWER_BACKBONE = ("exit heads + backbone under them", lambda n: is_exit_head(n) or below_last_exit(n))

# (mode, argument overrides, labelled data, expected trained group per optimizer step, backbone output has a graph)
PARAMETER_CASES = {
    "joint": ("joint", {}, True, [EVERYTHING], True),
    "two_stage_1": ("two_stage", {"first_stage_steps": 1}, True, [ALL_BUT_EXITS], True),
    "two_stage_2": ("two_stage", {"first_stage_steps": 0}, True, [EXITS_ONLY], False),
    "two_stage_fraction": ("two_stage", {"first_stage_fraction": 0.5, "max_steps": 2}, True,
                           [ALL_BUT_EXITS, EXITS_ONLY], None),
    "alternating": ("alternating", {"max_steps": 2}, True, [ALL_BUT_EXITS, EVERYTHING], True),
    "self_distillation_labelled": ("self_distillation", {}, True, [EVERYTHING], True),
    "self_distillation_unlabelled": ("self_distillation", {}, False, [EXITS_ONLY], False),
    "self_distillation_unlabelled_backbone": (
        "self_distillation", {"distillation_trains_backbone": True}, False, [EXITS_AND_LOWER_BACKBONE], True
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(PARAMETER_CASES))
def test_each_mode_updates_exactly_the_parameters_it_should(tmp_path, case):
    mode, overrides, labelled, expected_steps, backbone_graph = PARAMETER_CASES[case]
    model = tiny_model()
    recorder = GradientRecorder()
    backbone_outputs = []
    model.roberta.register_forward_hook(lambda module, args, out: backbone_outputs.append(out.last_hidden_state))
    args = training_args(tmp_path, exit_training_mode=mode, **overrides)
    trainer = EarlyExitTrainer(model=model, args=args, train_dataset=random_examples("sequence", 8, labelled=labelled))
    trainer.add_callback(recorder)
    names = [name for name, _ in model.named_parameters()]

    before = snapshot(model)
    trainer.train()
    after = snapshot(model)

    assert len(recorder.steps) == len(expected_steps)
    for step, ((group, in_group), with_grad) in enumerate(zip(expected_steps, recorder.steps), start=1):
        expected = {name for name in names if in_group(name)}
        assert with_grad == expected, f"step {step} should train {group}; extra {with_grad - expected}, missing " + str(
            expected - with_grad
        )
    trained = set().union(*recorder.steps)
    for name in names:
        if name in trained:
            assert not torch.equal(before[name], after[name]), f"{name} should have changed"
        else:
            assert torch.equal(before[name], after[name]), f"{name} should be bit-identical"
    if backbone_graph is not None:
        # Frozen backbone: its output carries no autograd graph, so no backward pass can run through it.
        assert all(out.requires_grad == backbone_graph for out in backbone_outputs)
        assert all((out.grad_fn is not None) == backbone_graph for out in backbone_outputs)
    # The trainer hands the model back fully trainable whatever the last stage froze.
    assert all(p.requires_grad for p in model.parameters())


def test_two_stage_second_stage_runs_no_backward_through_the_backbone_and_costs_a_third(tmp_path):
    batch = {k: torch.stack([e[k] for e in random_examples("sequence", 8)]) for k in ("input_ids", "attention_mask")}
    batch["labels"] = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    flops = {}
    for stage, first_stage_steps in (("stage 1", 10), ("stage 2", 0)):
        args = training_args(tmp_path, exit_training_mode="two_stage", first_stage_steps=first_stage_steps)
        trainer = EarlyExitTrainer(model=tiny_model(), args=args)
        counter = FlopCounterMode(display=False)
        with counter:
            trainer.training_step(trainer.model, dict(batch))
        flops[stage] = counter.get_total_flops()
    # Stage 1 = forward + backward (~2x forward) through the backbone; stage 2 = forward + the heads' backward.
    assert flops["stage 2"] < 0.4 * flops["stage 1"], flops


ACCUMULATION_CASES = {
    "joint": ("joint", {}, True),
    "two_stage_1": ("two_stage", {"first_stage_steps": 1}, True),
    "two_stage_2": ("two_stage", {"first_stage_steps": 0}, True),
    "alternating": ("alternating", {"max_steps": 2}, True),
    "self_distillation_labelled": ("self_distillation", {"distillation_trains_backbone": True}, True),
    "self_distillation_unlabelled": ("self_distillation", {"distillation_trains_backbone": True}, False),
}


def train_once(tmp_path, task, labelled, batch, accumulation, trainer_cls=EarlyExitTrainer, **overrides):
    model = tiny_model(task)
    args_cls = TrainingArguments if trainer_cls is Trainer else EarlyExitTrainingArguments
    args = training_args(
        tmp_path, args_cls, per_device_train_batch_size=batch, gradient_accumulation_steps=accumulation, **overrides
    )
    before = snapshot(model)
    trainer_cls(model=model, args=args, train_dataset=random_examples(task, 8, labelled=labelled)).train()
    return before, snapshot(model)


def assert_same_step(reference, other):
    before, expected = reference
    _, got = other
    assert any(not torch.equal(before[n], expected[n]) for n in expected), "nothing trained"
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("task", ["sequence", "token"])
@pytest.mark.parametrize("case", list(ACCUMULATION_CASES))
def test_gradient_accumulation_2x4_equals_batch_8(tmp_path, task, case):
    mode, overrides, labelled = ACCUMULATION_CASES[case]
    common = {"exit_training_mode": mode, **overrides}
    big = train_once(tmp_path, task, labelled, 8, 1, **common)
    accumulated = train_once(tmp_path, task, labelled, 4, 2, **common)
    assert_same_step(big, accumulated)


@pytest.mark.parametrize("task", ["sequence", "token"])
def test_plain_trainer_trains_the_joint_loss_like_early_exit_trainer(tmp_path, task):
    """The model's own loss is the joint loss: a plain Trainer with 2 x 4 accumulation takes EarlyExitTrainer's step."""
    early_exit = train_once(tmp_path, task, True, 8, 1, exit_training_mode="joint")
    plain_big = train_once(tmp_path, task, True, 8, 1, trainer_cls=Trainer)
    plain_accumulated = train_once(tmp_path, task, True, 4, 2, trainer_cls=Trainer)
    assert_same_step(early_exit, plain_big)
    assert_same_step(early_exit, plain_accumulated)


def logged(trainer):
    return [entry for entry in trainer.state.log_history if "loss" in entry]


def test_joint_log_splits_the_loss_into_final_and_exit_components(tmp_path):
    model = tiny_model()
    args = training_args(tmp_path, exit_training_mode="joint", max_steps=2, learning_rate=0.01)
    trainer = EarlyExitTrainer(model=model, args=args, train_dataset=random_examples("sequence", 8))
    trainer.train()
    # Linear weights 1, 2, 3: the final exit carries 3/6 of the joint loss.
    for entry in logged(trainer):
        assert entry["loss"] == pytest.approx(0.5 * entry["loss/final"] + 0.5 * entry["loss/exits"], abs=2e-4)
        assert "loss/distill" not in entry


def test_alternating_logs_exit_loss_only_on_even_steps(tmp_path):
    args = training_args(tmp_path, exit_training_mode="alternating", max_steps=3, learning_rate=0.01)
    trainer = EarlyExitTrainer(model=tiny_model(), args=args, train_dataset=random_examples("sequence", 8))
    trainer.train()
    entries = logged(trainer)
    assert [("loss/exits" in entry) for entry in entries] == [False, True, False]
    assert entries[0]["loss"] == pytest.approx(entries[0]["loss/final"], abs=1e-4)


def test_component_logs_average_over_the_logging_interval(tmp_path):
    """Two identical alternating runs, logging every step and every 2 steps: each interval logs the mean over the
    steps whose loss held the component (loss/exits exists on even steps only)."""
    runs = {}
    for logging_steps in (1, 2):
        args = training_args(
            tmp_path, exit_training_mode="alternating", max_steps=4, logging_steps=logging_steps, learning_rate=0.01
        )
        trainer = EarlyExitTrainer(model=tiny_model(), args=args, train_dataset=random_examples("sequence", 8))
        trainer.train()
        runs[logging_steps] = logged(trainer)
    every, pairs = runs[1], runs[2]
    assert len(every) == 4 and len(pairs) == 2
    for interval, entry in enumerate(pairs):
        steps = every[2 * interval : 2 * interval + 2]
        assert entry["loss/final"] == pytest.approx((steps[0]["loss/final"] + steps[1]["loss/final"]) / 2, rel=1e-5)
        assert entry["loss/exits"] == pytest.approx(steps[1]["loss/exits"], rel=1e-5)


def test_self_distillation_without_labels_logs_only_the_weighted_kl(tmp_path):
    args = training_args(tmp_path, exit_training_mode="self_distillation", distillation_weight=0.5, learning_rate=0.01)
    with pytest.raises(ValueError, match="not an early-exit model"):
        EarlyExitTrainer(model=torch.nn.Linear(2, 2), args=args)
    trainer = EarlyExitTrainer(
        model=tiny_model("token"), args=args, train_dataset=random_examples("token", 8, labelled=False)
    )
    trainer.train()
    (entry,) = logged(trainer)
    assert set(k for k in entry if k.startswith("loss/")) == {"loss/distill"}
    assert entry["loss"] == pytest.approx(0.5 * entry["loss/distill"], abs=1e-4)
    assert entry["loss/distill"] > 0


def test_labels_required_outside_self_distillation_and_bad_arguments_fail_in_one_line(tmp_path):
    args = training_args(tmp_path, exit_training_mode="alternating")
    trainer = EarlyExitTrainer(
        model=tiny_model(), args=args, train_dataset=random_examples("sequence", 8, labelled=False)
    )
    with pytest.raises(ValueError, match=r"exit_training_mode='alternating' \(loss 'final'\) needs labels"):
        trainer.train()
    bad = {
        "exit_training_mode": ("distil", r"exit_training_mode='distil'; expected one of"),
        "first_stage_fraction": (1.0, r"first_stage_fraction=1.0; expected a float in \(0, 1\)"),
        "first_stage_steps": (-1, r"first_stage_steps=-1; expected None or an int >= 0"),
        "distillation_temperature": (0.0, r"distillation_temperature=0.0; expected a float > 0"),
        "distillation_weight": (-1.0, r"distillation_weight=-1.0; expected a float > 0"),
    }
    for name, (value, message) in bad.items():
        with pytest.raises(ValueError, match=message) as error:
            EarlyExitTrainingArguments(output_dir=str(tmp_path), **{name: value})
        assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match=r"exit_training_mode='two_stage' trains intermediate exits, but exit_layers"):
        EarlyExitTrainer(
            model=tiny_model(exit_layers=[LAYERS]), args=training_args(tmp_path, exit_training_mode="two_stage")
        )
    # Modes that freeze parameters per step need DDP's unused-parameter search (and non-reentrant checkpointing).
    with pytest.raises(ValueError, match=r"ddp_find_unused_parameters=False with exit_training_mode='alternating'"):
        EarlyExitTrainer(
            model=tiny_model(),
            args=training_args(tmp_path, ddp_find_unused_parameters=False, exit_training_mode="alternating"),
        )
    reentrant = {"activation_checkpointing": True, "activation_checkpointing_kwargs": {"use_reentrant": True}}
    with pytest.raises(ValueError, match=r"expected use_reentrant=False"):
        EarlyExitTrainer(model=tiny_model(), args=training_args(tmp_path, exit_training_mode="two_stage", **reentrant))
    searched = training_args(tmp_path, exit_training_mode="two_stage", activation_checkpointing=True)
    assert EarlyExitTrainer(model=tiny_model(), args=searched).args.ddp_find_unused_parameters is True
    with pytest.raises(ValueError, match="args must be EarlyExitTrainingArguments"):
        EarlyExitTrainer(model=tiny_model(), args=TrainingArguments(output_dir=str(tmp_path)))


def test_evaluate_reports_the_modes_loss_and_predicts_like_a_plain_evaluation(tmp_path):
    model = tiny_model("token")
    examples = random_examples("token", 8)
    args = training_args(tmp_path, exit_training_mode="joint", per_device_eval_batch_size=8)
    trainer = EarlyExitTrainer(model=model, args=args, eval_dataset=examples)
    metrics = trainer.evaluate()
    batch = {k: torch.stack([e[k] for e in examples]) for k in examples[0]}
    with torch.no_grad():
        joint = model.train()(**batch).loss  # no dropout in the tiny model: the joint loss of these weights
        expected = model.eval()(**batch, output_exit_logits=True)
    assert metrics["eval_loss"] == pytest.approx(float(joint), rel=1e-5)
    predictions = trainer.predict(examples).predictions
    torch.testing.assert_close(torch.as_tensor(predictions), expected.logits)
    logits, exit_layer = trainer.predict(examples, ignore_keys=[]).predictions  # exit layers on request
    torch.testing.assert_close(torch.as_tensor(logits), expected.logits)
    assert torch.equal(torch.as_tensor(exit_layer), expected.exit_layer)


@pytest.mark.parametrize(
    "mode,overrides,steps",
    [("alternating", {}, (0, 1)), ("two_stage", {"first_stage_steps": 1}, (0, 1)), ("self_distillation", {}, (0, 3))],
)
def test_eval_loss_depends_on_the_weights_not_on_where_the_schedule_stands(tmp_path, mode, overrides, steps):
    model = tiny_model()
    examples = random_examples("sequence", 8)
    args = training_args(tmp_path, exit_training_mode=mode, per_device_eval_batch_size=4, max_steps=4, **overrides)
    trainer = EarlyExitTrainer(model=model, args=args, eval_dataset=examples)
    trainer.state.max_steps = 4
    metrics = []
    for step in steps:  # different plans: final vs joint, stage 1 vs stage 2
        trainer.state.global_step = step
        metrics.append(trainer.evaluate())
    batch = {k: torch.stack([e[k] for e in examples]) for k in examples[0]}
    with torch.no_grad():
        joint = model.train()(**batch).loss
    for result in metrics:
        assert result["eval_loss"] == pytest.approx(float(joint), rel=1e-5)
        # Linear weights 1, 2, 3: the final exit carries half of the joint loss; per-batch means averaged.
        assert result["eval_loss"] == pytest.approx(0.5 * result["eval_loss/final"] + 0.5 * result["eval_loss/exits"])
        assert ("eval_loss/distill" in result) == (mode == "self_distillation")
        assert {k: v for k, v in result.items() if "loss" in k} == {k: v for k, v in metrics[0].items() if "loss" in k}


@pytest.mark.parametrize("task", ["sequence", "token"])
def test_plain_trainer_predictions_are_the_logits_so_a_standard_compute_metrics_works(tmp_path, task):
    examples = random_examples(task, 8)
    model = tiny_model(task, exit_threshold=0.9)

    def compute_metrics(prediction):
        predicted = np.argmax(prediction.predictions, axis=-1)
        labelled = prediction.label_ids != -100
        return {"accuracy": float((predicted == prediction.label_ids)[labelled].mean())}

    args = training_args(tmp_path, TrainingArguments, per_device_eval_batch_size=4)
    trainer = Trainer(model=model, args=args, eval_dataset=examples, compute_metrics=compute_metrics)
    metrics = trainer.evaluate()
    batch = {k: torch.stack([e[k] for e in examples]) for k in examples[0]}
    with torch.no_grad():
        expected = model.eval()(**batch)
    labelled = batch["labels"] != -100
    accuracy = (expected.logits.argmax(-1) == batch["labels"])[labelled].float().mean()
    assert metrics["eval_accuracy"] == pytest.approx(float(accuracy))
    trainer.compute_metrics = None  # predictions with exit layers are a tuple, which this metric does not take
    exit_layer = trainer.predict(examples, ignore_keys=[]).predictions[1]
    assert torch.equal(torch.as_tensor(exit_layer), expected.exit_layer)


# The driver each process runs: every case trains from the same initial model; rank 0 saves the parameters.
DDP_DRIVER = """
import sys

import torch

sys.path.insert(0, sys.argv[3])
from test_training_modes import DDP_CASES, random_examples, tiny_model, training_args

from hf_earlyexit.training import EarlyExitTrainer

output_dir, per_device = sys.argv[1], int(sys.argv[2])
params = {}
for case, (mode, overrides, labelled) in DDP_CASES.items():
    model = tiny_model("token")
    args = training_args(
        f"{output_dir}/{case}", exit_training_mode=mode, per_device_train_batch_size=per_device, **overrides
    )
    trainer = EarlyExitTrainer(model=model, args=args, train_dataset=random_examples("token", 8, labelled=labelled))
    trainer.train()
    params[case] = {name: p.detach().clone() for name, p in model.named_parameters()}
if trainer.accelerator.is_main_process:
    torch.save({"world_size": trainer.accelerator.num_processes, "params": params}, f"{output_dir}/params.pt")
"""
DDP_MODE_CASES = {
    "joint": ("joint", {}, True),
    "two_stage_2": ("two_stage", {"first_stage_steps": 0}, True),
    "two_stage_switch": ("two_stage", {"first_stage_steps": 1, "max_steps": 2}, True),
    "alternating": ("alternating", {"max_steps": 2}, True),
    "self_distillation_unlabelled": ("self_distillation", {}, False),
}
# Every mode also with gradient checkpointing: the Trainer then builds DDP without find_unused_parameters unless told.
DDP_CASES = {
    **DDP_MODE_CASES,
    **{
        f"{case}_checkpointed": (mode, {**overrides, "gradient_checkpointing": True}, labelled)
        for case, (mode, overrides, labelled) in DDP_MODE_CASES.items()
    },
}


def run_driver(tmp_path, name, per_device, launcher):
    output_dir = tmp_path / name
    output_dir.mkdir()
    driver = tmp_path / "ddp_driver.py"
    driver.write_text(DDP_DRIVER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1])}
    command = [*launcher, str(driver), str(output_dir), str(per_device), str(Path(__file__).parent)]
    completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return torch.load(output_dir / "params.pt")


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_process_ddp_takes_the_single_process_batch_8_step(tmp_path):
    """2 processes x 4 (gloo, CPU) equal one process x 8 for token classification with uneven label counts; the
    parameters a step freezes stay bit-identical under DDP too."""
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    launch += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    launch += ["--main_process_port", "29533"]
    ddp = run_driver(tmp_path, "ddp", 4, launch)
    single = run_driver(tmp_path, "single", 8, [sys.executable])
    assert ddp["world_size"] == 2 and single["world_size"] == 1
    initial = snapshot(tiny_model("token"))
    for case in DDP_CASES:
        assert_same_step((initial, single["params"][case]), (initial, ddp["params"][case]))
    for name, value in initial.items():
        if not is_exit_head(name):
            for frozen in ("two_stage_2", "self_distillation_unlabelled"):
                assert torch.equal(ddp["params"][frozen][name], value), name
                assert torch.equal(ddp["params"][f"{frozen}_checkpointed"][name], value), name


def test_arguments_parse_from_flags_and_dicts():
    parser = HfArgumentParser(EarlyExitTrainingArguments)
    flags = ["--output_dir", "x", "--exit_training_mode", "two_stage", "--first_stage_steps", "5"]
    (args,) = parser.parse_args_into_dataclasses([*flags, "--distillation_trains_backbone", "true"])
    assert (args.exit_training_mode, args.first_stage_steps, args.distillation_trains_backbone) == (
        "two_stage",
        5,
        True,
    )
    (args,) = parser.parse_dict(
        {"output_dir": "x", "exit_training_mode": "self_distillation", "distillation_weight": 2}
    )
    assert args.distillation_weight == 2 and args.first_stage_steps is None


def test_step_plan_schedules():
    alternating = [step_plan("alternating", step, 0, True, False).loss for step in range(4)]
    assert alternating == ["final", "joint", "final", "joint"]
    two_stage = [step_plan("two_stage", step, 2, True, False).loss for step in range(4)]
    assert two_stage == ["final", "final", "exits", "exits"]
    assert EarlyExitTrainingArguments(output_dir="x", first_stage_fraction=0.3).first_stage_end(10) == 3
    assert EarlyExitTrainingArguments(output_dir="x", first_stage_steps=7).first_stage_end(10) == 7


# ---- learning: an easy task the first exit can solve ----


def block_examples(count, seed, labelled=True):
    """Label c: the 6 words come from id block c (ids 4+10c .. 13+10c). One attention layer can read that off."""
    generator = torch.Generator().manual_seed(seed)
    examples = []
    for _ in range(count):
        label = int(torch.randint(0, 3, (), generator=generator))
        words = 4 + 10 * label + torch.randint(0, 10, (6,), generator=generator)
        example = {
            "input_ids": torch.cat([torch.tensor([0]), words, torch.tensor([2])]),
            "attention_mask": torch.ones(8),
        }
        example["attention_mask"] = example["attention_mask"].long()
        if labelled:
            example["labels"] = torch.tensor(label)
        examples.append(example)
    return examples


@torch.no_grad()
def exit_accuracies(model, examples):
    model.eval()
    input_ids = torch.stack([e["input_ids"] for e in examples])
    labels = torch.stack([e["labels"] for e in examples])
    exit_logits = model(input_ids, output_exit_logits=True).exit_logits
    return [float((logits.argmax(-1) == labels).float().mean()) for logits in exit_logits]


def learning_args(tmp_path, **overrides):
    values = {"optim": "adamw_torch", "learning_rate": 3e-3, "weight_decay": 0.0, "max_grad_norm": 1.0}
    values.update(logging_steps=50, per_device_train_batch_size=16)
    return training_args(tmp_path, **{**values, **overrides})


def test_joint_training_makes_the_first_exit_accurate(tmp_path):
    model = tiny_model(seed=1)
    held_out = block_examples(96, seed=99)
    before = exit_accuracies(model, held_out)
    args = learning_args(tmp_path, exit_training_mode="joint", max_steps=100)
    EarlyExitTrainer(model=model, args=args, train_dataset=block_examples(480, seed=0)).train()
    after = exit_accuracies(model, held_out)
    assert max(before) < 0.6  # chance is 1/3
    assert min(after) > 0.9, after


def test_self_distillation_on_unlabelled_text_teaches_the_exits_the_final_head(tmp_path):
    model = tiny_model(seed=1)
    held_out = block_examples(96, seed=99)
    # Stage 1 of two_stage: only the final head learns the task; the exits stay at chance.
    stage_one = learning_args(tmp_path, exit_training_mode="two_stage", first_stage_steps=80, max_steps=80)
    EarlyExitTrainer(model=model, args=stage_one, train_dataset=block_examples(480, seed=0)).train()
    *exits, final = exit_accuracies(model, held_out)
    assert final > 0.9 and max(exits) < 0.6, (exits, final)
    # Unlabelled text: the exits learn the final head's predictions, the final head does not move.
    distill = learning_args(tmp_path, exit_training_mode="self_distillation", max_steps=60)
    EarlyExitTrainer(model=model, args=distill, train_dataset=block_examples(480, seed=1, labelled=False)).train()
    *exits, final_after = exit_accuracies(model, held_out)
    assert final_after == final
    assert min(exits) > 0.9, exits
