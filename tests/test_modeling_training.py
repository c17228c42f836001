"""Joint exit training with a plain transformers.Trainer: gradient accumulation equals the big batch."""

import pytest
import torch
from test_modeling import padded_batch, tiny_model
from transformers import Trainer, TrainingArguments, default_data_collator

from hf_earlyexit import XLMRobertaForEarlyExitTokenClassification


class ListDataset(torch.utils.data.Dataset):
    def __init__(self, rows):
        self.rows = rows

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, index):
        return self.rows[index]


def training_rows(task):
    # Lengths and labelled-token counts differ between examples, so micro-batches hold different numbers of
    # labelled items: a per-micro-batch mean would weigh them wrongly.
    lengths = [3, 11, 5, 12, 4, 9, 12, 6]
    input_ids, attention_mask = padded_batch(lengths, seed=5)
    generator = torch.Generator().manual_seed(5)
    if task == "sequence":
        labels = torch.randint(0, 3, (8,), generator=generator)
    else:
        labels = torch.randint(0, 3, input_ids.shape, generator=generator)
        labels[attention_mask == 0] = -100
        labels[torch.rand(input_ids.shape, generator=generator) < 0.4] = -100  # sub-tokens without a label
    return [{"input_ids": input_ids[i], "attention_mask": attention_mask[i], "labels": labels[i]} for i in range(8)]


def parameters_after_one_step(model, rows, batch_size, accumulation, output_dir):
    args = TrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=accumulation,
        max_steps=1,
        learning_rate=0.5,
        optim="sgd",
        lr_scheduler_type="constant",
        weight_decay=0.0,
        max_grad_norm=0.0,
        report_to=[],
        save_strategy="no",
        logging_strategy="no",
        use_cpu=True,
        seed=0,
        disable_tqdm=True,
    )
    Trainer(model=model, args=args, train_dataset=ListDataset(rows), data_collator=default_data_collator).train()
    return {name: parameter.detach().clone() for name, parameter in model.named_parameters()}


def untrained(task, model_class=None):
    no_dropout = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, classifier_dropout=0.0)
    model = tiny_model("xlm-roberta", task, seed=7, exit_layers=[2, 3], **no_dropout)
    if model_class is not None:
        model.__class__ = model_class
    return model


class TokenModelWithoutLossKwargs(XLMRobertaForEarlyExitTokenClassification):
    """Control: a model that averages its own loss but does not say so (the pre-`num_items_in_batch` behaviour)."""

    accepts_loss_kwargs = False


@pytest.mark.slow
@pytest.mark.parametrize("task", ["sequence", "token"])
def test_gradient_accumulation_2x4_equals_batch_8(task, tmp_path):
    rows = training_rows(task)
    initial = {name: p.detach().clone() for name, p in untrained(task).named_parameters()}
    big = parameters_after_one_step(untrained(task), rows, 8, 1, tmp_path / "big")
    accumulated = parameters_after_one_step(untrained(task), rows, 2, 4, tmp_path / "accumulated")
    for name in big:
        assert not torch.equal(big[name], initial[name]), f"{name} did not move"
        torch.testing.assert_close(accumulated[name], big[name], atol=1e-6, rtol=1e-5, msg=name)
    if task == "token":
        control = parameters_after_one_step(
            untrained(task, TokenModelWithoutLossKwargs), rows, 2, 4, tmp_path / "control"
        )
        assert any(not torch.allclose(control[name], big[name], atol=1e-6, rtol=1e-5) for name in big)
