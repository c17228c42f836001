"""DistillationTrainer end to end on tiny models: convergence, accumulation, stages, resume, export, task heads."""

import copy
import os

import pytest
import torch
from distill_helpers import as_dataset, mlm_batch, tiny_config, tiny_pair
from safetensors import safe_open
from transformers import (
    AutoModel,
    AutoModelForMaskedLM,
    TrainerCallback,
    XLMRobertaForSequenceClassification,
    XLMRobertaForTokenClassification,
)

from hf_earlyexit.distillation import DistillationArguments, DistillationTrainer
from hf_earlyexit.distillation.projections import project
from hf_earlyexit.distillation.trainer import PROJECTIONS_NAME


def make_trainer(output_dir, teacher, student, dataset, **overrides):
    values = dict(
        output_dir=str(output_dir),
        per_device_train_batch_size=8,
        learning_rate=3e-3,
        lr_scheduler_type="constant",
        max_steps=10,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        disable_tqdm=True,
        seed=0,
        use_cpu=True,
    )
    values.update(overrides)
    return DistillationTrainer(
        model=student, teacher_model=teacher, args=DistillationArguments(**values), train_dataset=dataset
    )


def components(trainer, name):
    return [entry[f"loss/{name}"] for entry in trainer.state.log_history if f"loss/{name}" in entry]


@torch.no_grad()
def mapped_hidden_distance(trainer, batch):
    """Per mapped pair, the MSE between the student's (projected) hidden state and the teacher's."""
    from hf_earlyexit.distillation.capture import EncoderCapture

    module = trainer.accelerator.unwrap_model(trainer.model)
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    mask = batch["attention_mask"].bool()
    layers_s = [s for s, _ in trainer.hidden_pairs]
    layers_t = [t for _, t in trainer.hidden_pairs]
    with EncoderCapture(module.student, hidden_layers=layers_s) as s_cap:
        module.student.base_model(**inputs)
    with EncoderCapture(trainer.teacher, hidden_layers=layers_t) as t_cap:
        trainer.teacher.base_model(**inputs)
    distances = []
    for s, t in trainer.hidden_pairs:
        difference = project(module.projections, s, t, s_cap.hidden[s]) - t_cap.hidden[t]
        distances.append(difference.pow(2).mean(-1)[mask].mean().item())
    return distances


@pytest.mark.parametrize("attention_loss", ["kl_head_mean", "mse_head_mean", "relation"])
def test_training_halves_every_component_and_moves_hidden_states_to_teacher(tmp_path, attention_loss):
    teacher, student = tiny_pair()
    batch = mlm_batch()
    trainer = make_trainer(
        tmp_path,
        teacher,
        student,
        as_dataset(batch),
        max_steps=40,
        attention_loss=attention_loss,
        relation_heads=4,
        logit_loss="kl",
        layer_map="uniform_with_embeddings",
    )
    before = mapped_hidden_distance(trainer, batch)
    trainer.train()
    after = mapped_hidden_distance(trainer, batch)
    for name in ("hidden", "attention", "logits"):
        values = components(trainer, name)
        assert len(values) == 40, name
        assert values[-1] <= 0.5 * values[0], (name, values[0], values[-1])
    assert all(a < 0.5 * b for a, b in zip(after, before)), (before, after)
    assert len(before) == 3  # embeddings plus both student layers
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())


def _final_weights(trainer):
    return {k: v.detach().clone() for k, v in trainer.accelerator.unwrap_model(trainer.model).state_dict().items()}


def test_gradient_accumulation_2x4_equals_batch_8(tmp_path):
    batch = mlm_batch()  # rows differ in padding and so in token counts
    common = dict(max_steps=3, logit_loss="kl", hard_label_weight=0.5, attention_loss="relation", relation_heads=4)
    teacher, student = tiny_pair()
    whole = make_trainer(tmp_path / "a", teacher, student, as_dataset(batch), per_device_train_batch_size=8, **common)
    whole.train()
    teacher, student = tiny_pair()
    accumulated = make_trainer(
        tmp_path / "b",
        teacher,
        student,
        as_dataset(batch),
        per_device_train_batch_size=4,
        gradient_accumulation_steps=2,
        **common,
    )
    accumulated.train()
    a, b = _final_weights(whole), _final_weights(accumulated)
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=2e-6, rtol=1e-5, msg=key)
    initial = tiny_pair()[1].state_dict()
    assert any(not torch.equal(a[f"student.{k}"], v) for k, v in initial.items())  # training did move the weights
    for name in ("hidden", "attention", "logits", "ce"):
        torch.testing.assert_close(components(whole, name), components(accumulated, name), rtol=1e-5, atol=1e-6)


STAGES = [
    {"name": "top", "losses": ["hidden", "attention"], "train": ["top:1"], "steps": 3},
    {"name": "all", "losses": ["hidden", "attention", "logits"]},
]


class Snapshot(TrainerCallback):
    def __init__(self, model, step):
        self.model, self.step, self.weights = model, step, None

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            self.weights = copy.deepcopy(self.model.state_dict())


def test_stage_freezes_and_switches_losses(tmp_path):
    teacher, student = tiny_pair()
    initial = copy.deepcopy(student.state_dict())
    trainer = make_trainer(
        tmp_path, teacher, student, as_dataset(mlm_batch()), max_steps=5, logit_loss="kl", stages=STAGES
    )
    snapshot = Snapshot(student, 3)
    trainer.add_callback(snapshot)
    trainer.train()
    changed = {k for k, v in snapshot.weights.items() if not torch.equal(v, initial[k])}
    assert changed and all(k.startswith("roberta.encoder.layer.1.") for k in changed), sorted(changed)
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert ["loss/logits" in entry for entry in logs] == [False, False, False, True, True]
    assert trainer.current_stage_index() == 1
    assert not torch.equal(
        student.state_dict()["roberta.embeddings.word_embeddings.weight"],
        initial["roberta.embeddings.word_embeddings.weight"],
    )


class StopAt(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True


def test_interrupted_run_resumes_to_identical_weights(tmp_path):
    batch = mlm_batch(16)
    common = dict(
        max_steps=8,
        per_device_train_batch_size=4,
        save_strategy="steps",
        save_steps=4,
        logit_loss="kl",
        stages=STAGES,
        lr_scheduler_type="linear",
    )
    teacher, student = tiny_pair(hidden_dropout_prob=0.1)
    straight = make_trainer(tmp_path / "straight", teacher, student, as_dataset(batch), **common)
    straight.train()

    teacher, student = tiny_pair(hidden_dropout_prob=0.1)
    interrupted = make_trainer(tmp_path / "resumed", teacher, student, as_dataset(batch), **common)
    interrupted.add_callback(StopAt(4))
    interrupted.train()
    checkpoint = tmp_path / "resumed" / "checkpoint-4"
    assert (checkpoint / PROJECTIONS_NAME).is_file()

    teacher, student = tiny_pair(hidden_dropout_prob=0.1, seed=1)  # different init: everything must come from disk
    resumed = make_trainer(tmp_path / "resumed", teacher, student, as_dataset(batch), **common)
    resumed.teacher.load_state_dict(straight.teacher.state_dict())
    resumed.train(resume_from_checkpoint=str(checkpoint))
    assert resumed.state.global_step == 8 and resumed.current_stage_index() == 1
    a, b = _final_weights(straight), _final_weights(resumed)
    assert any(k.startswith("projections.") for k in a)
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-6, rtol=1e-5, msg=key)


def test_exported_student_is_a_plain_checkpoint(tmp_path):
    teacher, student = tiny_pair()
    trainer = make_trainer(tmp_path, teacher, student, as_dataset(mlm_batch()), max_steps=2)
    trainer.train()
    export = tmp_path / "export"
    trainer.save_model(str(export))
    assert not (export / PROJECTIONS_NAME).exists()
    with safe_open(str(export / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert keys and not any("projection" in k for k in keys)
    loaded = AutoModelForMaskedLM.from_pretrained(str(export))
    for key, value in student.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value, msg=key)
    encoder = AutoModel.from_pretrained(str(export))
    assert encoder.config.hidden_size == 48 and encoder.config.num_hidden_layers == 2
    metrics = trainer.evaluate(as_dataset(mlm_batch(4, seed=1)))
    assert torch.isfinite(torch.tensor(metrics["eval_loss"])) and metrics["eval_loss"] > 0


def test_bert_pair_with_bf16_teacher(tmp_path):
    teacher, student = tiny_pair("bert")
    batch = mlm_batch()
    batch["token_type_ids"] = torch.zeros_like(batch["input_ids"])
    trainer = make_trainer(
        tmp_path, teacher, student, as_dataset(batch), max_steps=20, logit_loss="mse", teacher_dtype="bfloat16"
    )
    trainer.train()
    assert trainer.teacher.bert.embeddings.word_embeddings.weight.dtype == torch.bfloat16
    for name in ("hidden", "attention", "logits"):
        values = components(trainer, name)
        assert values[-1] < 0.7 * values[0], (name, values)


@pytest.mark.parametrize("model_class", [XLMRobertaForSequenceClassification, XLMRobertaForTokenClassification])
def test_task_distillation_with_classification_heads(tmp_path, model_class):
    torch.manual_seed(0)
    teacher = model_class(tiny_config(4, 64, 4, num_labels=3, initializer_range=0.2))
    student = model_class(tiny_config(2, 48, 3, num_labels=3))
    batch = mlm_batch()
    if model_class is XLMRobertaForSequenceClassification:
        batch["labels"] = torch.arange(8) % 3
    else:
        batch["labels"] = torch.where(batch["attention_mask"].bool(), batch["input_ids"] % 3, -100)
    trainer = make_trainer(
        tmp_path,
        teacher,
        student,
        as_dataset(batch),
        max_steps=25,
        logit_loss="kl",
        hard_label_weight=1.0,
        temperature=2.0,
    )
    trainer.train()
    for name in ("hidden", "attention", "logits", "ce"):
        values = components(trainer, name)
        assert values[-1] < values[0], (name, values)
    metrics = trainer.evaluate(as_dataset(batch))
    assert metrics["eval_loss"] > 0


def test_remove_unused_columns_keeps_what_losses_need(tmp_path):
    teacher, student = tiny_pair()
    dataset = as_dataset(mlm_batch()).add_column("lang", ["en"] * 8)
    trainer = make_trainer(tmp_path, teacher, student, dataset, max_steps=1, hard_label_weight=1.0)
    batch = next(iter(trainer.get_train_dataloader()))
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    trainer.train()
    assert "loss/ce" in trainer.state.log_history[0]
    assert os.path.isdir(tmp_path)


def test_evaluation_of_a_token_exit_student_runs_it_at_full_depth_whatever_its_exit_settings(tmp_path):
    """In eval the token-exit path would call the Q/K/V modules again on packed tokens; the capture must not see it."""
    from transformers import XLMRobertaForTokenClassification

    from hf_earlyexit import XLMRobertaEarlyExitConfig, XLMRobertaForEarlyExitTokenClassification

    torch.manual_seed(0)
    teacher = XLMRobertaForTokenClassification(tiny_config(4, 64, 4, num_labels=3, initializer_range=0.2))
    config = XLMRobertaEarlyExitConfig(**tiny_config(2, 48, 3, num_labels=3).to_dict())
    student = XLMRobertaForEarlyExitTokenClassification(config)
    batch = mlm_batch()
    batch["labels"] = torch.where(batch["attention_mask"].bool(), batch["input_ids"] % 3, -100)
    trainer = make_trainer(tmp_path, teacher, student, as_dataset(batch), logit_loss="kl", hard_label_weight=1.0)
    results = {}
    for granularity, threshold in (("sequence", 0.0), ("token", 0.0), ("token", 2.0)):  # 2.0: every token exits at 1
        student.config.exit_granularity, student.config.exit_threshold = granularity, threshold
        results[(granularity, threshold)] = trainer.evaluate(as_dataset(batch))["eval_loss"]
    assert len(set(results.values())) == 1 and results[("token", 2.0)] > 0, results


def test_early_exit_student_distils_and_exports(tmp_path):
    from transformers import AutoModelForSequenceClassification

    from hf_earlyexit import XLMRobertaEarlyExitConfig, XLMRobertaForEarlyExit

    torch.manual_seed(0)
    teacher = XLMRobertaForSequenceClassification(tiny_config(4, 64, 4, num_labels=3, initializer_range=0.2))
    config = XLMRobertaEarlyExitConfig(**tiny_config(2, 48, 3, num_labels=3).to_dict())
    student = XLMRobertaForEarlyExit(config)
    batch = mlm_batch()
    batch["labels"] = torch.arange(8) % 3
    trainer = make_trainer(
        tmp_path, teacher, student, as_dataset(batch), max_steps=20, logit_loss="kl", hard_label_weight=1.0
    )
    trainer.train()
    for name in ("hidden", "attention"):
        values = components(trainer, name)
        assert values[-1] < 0.7 * values[0], (name, values)
    assert len(components(trainer, "logits")) == len(components(trainer, "ce")) == 20
    assert trainer.evaluate(as_dataset(batch))["eval_loss"] > 0  # eval mode: every layer still runs for the hooks
    trainer.save_model(str(tmp_path / "export"))
    loaded = AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "export"))
    assert type(loaded) is XLMRobertaForEarlyExit
    for key, value in student.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value, msg=key)


def test_activation_checkpointing_gives_the_same_step(tmp_path):
    common = dict(max_steps=2, logit_loss="kl", attention_loss="relation", relation_heads=4)
    results = []
    for checkpointing in (False, True):
        teacher, student = tiny_pair()
        trainer = make_trainer(
            tmp_path / str(checkpointing),
            teacher,
            student,
            as_dataset(mlm_batch()),
            activation_checkpointing=checkpointing,
            **common,
        )
        trainer.train()
        assert trainer.student.is_activation_checkpointing == checkpointing
        results.append(_final_weights(trainer))
    assert results[1].keys() == results[0].keys()
    for key in results[0]:
        torch.testing.assert_close(results[1][key], results[0][key], atol=1e-6, rtol=1e-5, msg=key)
