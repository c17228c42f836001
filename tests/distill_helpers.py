"""Tiny teacher/student pairs and batches shared by the distillation tests and the DDP driver script."""

import torch
from datasets import Dataset
from transformers import BertConfig, BertForMaskedLM, XLMRobertaConfig, XLMRobertaForMaskedLM

VOCAB = 100
PAD = 1


def tiny_config(layers: int, width: int, heads: int, family: str = "xlm-roberta", **overrides):
    config_class = XLMRobertaConfig if family == "xlm-roberta" else BertConfig
    values = dict(
        vocab_size=VOCAB,
        hidden_size=width,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=2 * width,
        max_position_embeddings=40,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        pad_token_id=PAD,
    )
    values.update(overrides)
    return config_class(**values)


def tiny_pair(family: str = "xlm-roberta", seed: int = 0, **overrides):
    """Teacher 4 layers x 64 wide x 4 heads, student 2 x 48 x 3: the Large -> Base situation in miniature
    (wider teacher, more heads, twice the depth). A larger initializer range gives peaked attention maps."""
    model_class = XLMRobertaForMaskedLM if family == "xlm-roberta" else BertForMaskedLM
    torch.manual_seed(seed)
    teacher = model_class(tiny_config(4, 64, 4, family, initializer_range=0.2, **overrides))
    student = model_class(tiny_config(2, 48, 3, family, **overrides))
    return teacher, student


def mlm_batch(num_examples: int = 8, seq: int = 12, seed: int = 0, masked=(3, 5)) -> dict[str, torch.Tensor]:
    """Rows with different amounts of padding (so token counts differ between micro-batches) and masked positions."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(4, VOCAB - 1, (num_examples, seq), generator=generator)
    input_ids[:, 0] = 0
    attention_mask = torch.ones_like(input_ids)
    for row in range(num_examples):
        attention_mask[row, seq - (row % 4) * 2 :] = 0
    input_ids[attention_mask == 0] = PAD
    labels = torch.full_like(input_ids, -100)
    for position in masked:
        labels[:, position] = input_ids[:, position]
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def as_dataset(batch: dict[str, torch.Tensor]) -> Dataset:
    return Dataset.from_dict({k: v.tolist() for k, v in batch.items()})
