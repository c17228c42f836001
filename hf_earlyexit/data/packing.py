"""Tokenise and pack corpus text into fixed-length MLM blocks; count tokens per language."""

from __future__ import annotations

from collections import Counter
from itertools import chain

import numpy as np
from datasets import Features, List, Value
from transformers import DataCollatorForLanguageModeling

PACKED_FEATURES = Features({"input_ids": List(Value("int32")), "special_tokens_mask": List(Value("int8"))})
MLM_PROBABILITY = 0.15  # BERT / XLM-R: 15% of tokens chosen, of those 80% <mask>, 10% random, 10% unchanged


def pack_for_mlm(dataset, tokenizer, block_size: int, batch_size: int = 1000):
    """Blocks of exactly `block_size` token ids, no padding: the texts of each batch of `batch_size` rows are
    tokenised (`<s> text </s>` each, as XLM-R saw documents), concatenated, and cut; the tail of a batch shorter than
    a block is dropped (at most block_size - 1 tokens per batch, as in transformers' run_mlm `group_texts`).

    Blocks may span texts of different languages. A stateless batched map, so `state_dict()` resume stays exact.
    """
    if not isinstance(block_size, int) or block_size < 2:
        raise ValueError(f"block_size={block_size!r}: expected an int >= 2")
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"{type(tokenizer).__name__} is not a fast tokenizer: expected a tokenizers-backed one")
    is_special = np.zeros(max(len(tokenizer), *tokenizer.all_special_ids) + 1, dtype=np.int8)
    is_special[tokenizer.all_special_ids] = 1

    def pack(batch):
        ids = tokenizer(batch["text"], add_special_tokens=True, return_attention_mask=False)["input_ids"]
        flat = list(chain.from_iterable(ids))
        kept = len(flat) // block_size * block_size
        # Plain list slices for the ids (they leave as lists anyway); numpy only for the mask lookup.
        return {
            "input_ids": [flat[start : start + block_size] for start in range(0, kept, block_size)],
            "special_tokens_mask": is_special[np.array(flat[:kept], dtype=np.int64)].reshape(-1, block_size).tolist(),
        }

    return dataset.map(
        pack, batched=True, batch_size=batch_size, remove_columns=["text", "lang"], features=PACKED_FEATURES
    )


def mlm_data_collator(tokenizer, mlm_probability: float = MLM_PROBABILITY, seed: int | None = None):
    """The masking the distillation examples use on packed blocks (uses their `special_tokens_mask`)."""
    if not 0 < mlm_probability < 1:
        raise ValueError(f"mlm_probability={mlm_probability}: expected a value in (0, 1)")
    return DataCollatorForLanguageModeling(tokenizer, mlm=True, mlm_probability=mlm_probability, seed=seed)


def count_tokens_by_language(dataset, tokenizer, batch_size: int = 1000) -> dict[str, int]:
    """Tokens per language of a {"text", "lang"} dataset, special tokens included, as `pack_for_mlm` sees them.

    A tokenizer-only pass (no packing, no model): the data-size axis of the model card, per partition.
    """
    counts: Counter[str] = Counter()
    for batch in dataset.iter(batch_size=batch_size):
        lengths = tokenizer(batch["text"], add_special_tokens=True, return_length=True)["length"]
        for lang, length in zip(batch["lang"], lengths):
            counts[lang] += length
    return dict(sorted(counts.items()))
