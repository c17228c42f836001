"""Tokenise and pack corpus text into fixed-length MLM blocks; count tokens per language."""

from __future__ import annotations

import os
from collections import Counter
from itertools import chain

import numpy as np
import torch
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


class SeededMaskingCollator(DataCollatorForLanguageModeling):
    """Masked-LM masking whose random draws for a batch come from (seed, process, batch index in the run) alone.

    `DataCollatorForLanguageModeling(seed=...)` draws from one generator that only moves forward: a resumed run
    starts it again and repeats the first run's masks, and the generator's state cannot be saved with a checkpoint
    because the data loader masks batches ahead of training. `StreamCheckpointCallback` sets the position."""

    def __init__(self, *args, seed: int, **kwargs):
        super().__init__(*args, seed=seed, **kwargs)
        self.batch_index = 0
        self.process_index = 0

    def set_position(self, batch_index: int, process_index: int) -> None:
        self.batch_index, self.process_index = batch_index, process_index

    def torch_call(self, examples):
        entropy = np.random.SeedSequence([self.seed, self.process_index, self.batch_index]).generate_state(2)
        self.generator = torch.Generator().manual_seed(int(entropy[0]) << 32 | int(entropy[1]))
        self._generator_pid = os.getpid()  # the parent's check would otherwise replace the generator
        self.batch_index += 1
        return super().torch_call(examples)


def mlm_data_collator(tokenizer, mlm_probability: float = MLM_PROBABILITY, seed: int | None = None):
    """The masking the distillation examples use on packed blocks (uses their `special_tokens_mask`); with a seed,
    a `SeededMaskingCollator`, whose masks a resumed run continues instead of repeating."""
    if not 0 < mlm_probability < 1:
        raise ValueError(f"mlm_probability={mlm_probability}: expected a value in (0, 1)")
    if seed is None:
        return DataCollatorForLanguageModeling(tokenizer, mlm=True, mlm_probability=mlm_probability)
    return SeededMaskingCollator(tokenizer, mlm=True, mlm_probability=mlm_probability, seed=seed)


def count_trained_tokens(
    dataset, tokenizer, block_size: int, blocks_per_step: int, max_steps: int | None = None, batch_size: int = 1000
) -> tuple[int, dict[str, int]]:
    """(blocks `pack_for_mlm` makes of `dataset`, counted up to `max_steps` x `blocks_per_step`; the tokens per
    language inside the blocks of the whole optimizer steps of `blocks_per_step` blocks among them).

    One tokenizer pass over the same `batch_size`-row batches the packing map sees, so both numbers are exact: the
    tokens counted are the ones trained on (a batch's tail shorter than a block and the blocks after the last whole
    step are not), each credited to the language of the row it came from. Stops reading once `max_steps` are found.
    """
    limit = None if max_steps is None else max_steps * blocks_per_step
    blocks, trained, pending = 0, Counter(), Counter()  # pending: tokens of blocks after the last step boundary
    for batch in dataset.iter(batch_size=batch_size):
        if limit is not None and blocks >= limit:
            break
        lengths = np.array(tokenizer(batch["text"], add_special_tokens=True, return_length=True)["length"])
        made = int(lengths.sum()) // block_size
        if limit is not None:
            made = min(made, limit - blocks)
        ends = np.cumsum(lengths)
        boundary = (blocks + made) // blocks_per_step * blocks_per_step - blocks  # in this batch's blocks
        if boundary > 0:
            trained += pending
            pending = Counter()
            _credit(trained, batch["lang"], ends, lengths, 0, boundary * block_size)
            _credit(pending, batch["lang"], ends, lengths, boundary * block_size, made * block_size)
        else:
            _credit(pending, batch["lang"], ends, lengths, 0, made * block_size)
        blocks += made
    return blocks, dict(sorted(trained.items()))


def _credit(counter: Counter, langs, ends: np.ndarray, lengths: np.ndarray, start: int, stop: int) -> None:
    """Add each row's tokens that fall in [start, stop) of the batch's concatenated tokens to its language."""
    kept = np.clip(ends, start, stop) - np.clip(ends - lengths, start, stop)
    for lang, count in zip(langs, kept.tolist()):
        if count:
            counter[lang] += count


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
