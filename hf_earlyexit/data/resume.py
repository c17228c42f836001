"""Exact, cheap resume of a streamed corpus inside the Trainer.

The Trainer's default resume replays the stream from the start and throws away the batches already trained on;
at 27 GB that is hours of reading and tokenising. Instead, every checkpoint gets the stream position
(`IterableDataset.state_dict()`) of the last example the model was trained on, and resuming loads it, with
`TrainingArguments(ignore_data_skip=True)` so the Trainer skips nothing.

The position cannot simply be read from the dataset when the checkpoint is written: accelerate's data loader
fetches one batch ahead (and the Trainer fetches a whole gradient-accumulation window), so the dataset is always
a little ahead of the model. `ResumableStream` therefore records the dataset's state at every step boundary (counted
over the whole run, so a new pass over the data does not restart the count) and the callback picks the one matching
the number of examples the Trainer actually consumed.

Under several processes (`accelerate launch`), the main process's stream always sees every example of a step: with
batch dispatching (accelerate's default for iterable datasets) it alone reads the stream and sends each process its
slice; without it (`accelerator_config: {dispatch_batches: false}`) every process reads the whole stream and keeps
its slice (`IterableDatasetShard`). Either way one step takes per-device batch x accumulation x processes examples
from the stream, and the main process writes the position.

A seeded masking collator (`SeededMaskingCollator`) given to the callback is put back at the same position: its
masks depend on the seed, the process and the batch's index in the run, not on how many batches were masked before
in this process (the data loader masks ahead, and a resumed run would otherwise repeat the first run's masks).

Usage (`dataloader_num_workers=0`):

    callback = StreamCheckpointCallback(packed_dataset, collator)
    if checkpoint:
        callback.load_checkpoint(checkpoint)
    trainer = Trainer(..., args=TrainingArguments(..., ignore_data_skip=True), train_dataset=callback.stream,
                      data_collator=collator, callbacks=[callback])
    trainer.train(resume_from_checkpoint=checkpoint)
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from types import SimpleNamespace

import numpy as np
import torch
from transformers import Trainer, TrainerCallback

from .packing import SeededMaskingCollator

STREAM_STATE_NAME = "stream_state.json"
KEPT_STATES = 8  # the data loader is never more than one accumulation window + one batch ahead


class ResumableStream(torch.utils.data.IterableDataset):
    """A datasets IterableDataset that remembers its state at every multiple of `examples_per_step` examples handed
    out since the start of training (over every pass, see `start_counting`)."""

    def __init__(self, dataset, examples_per_step: int = 1):
        self.dataset = dataset
        self.examples_per_step = examples_per_step
        self.epoch = 0
        self._iterations = 0
        self._start_state = None
        self._yielded = 0
        self._states: OrderedDict[int, dict] = OrderedDict()

    def start_counting(self, examples_per_step: int) -> None:
        """Count examples from zero (at the start of training), in steps of `examples_per_step`."""
        self.examples_per_step = examples_per_step
        self._yielded = 0
        self._states.clear()

    def state_dict(self) -> dict:
        """Position after the last example handed out (what the dataset itself reports)."""
        return {"epoch": self.epoch, "dataset": self.dataset.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.epoch = state["epoch"]
        self._start_state = state

    def state_at(self, examples: int) -> dict:
        """The position after `examples` examples since `start_counting`; must be a recorded step boundary."""
        if examples == 0 and self._start_state is not None:
            return self._start_state
        if examples not in self._states:
            raise ValueError(
                f"no stream state recorded after {examples} examples (have {list(self._states)}): expected a "
                f"multiple of examples_per_step={self.examples_per_step} among the last {KEPT_STATES} steps"
            )
        return self._states[examples]

    def __iter__(self):
        if self._iterations > 0:
            # The Trainer asks for a new pass when the stream ends: a new epoch from the start, not the resume point.
            self.epoch += 1
            self._start_state = None
        self._iterations += 1
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(self.epoch)
        self.dataset.load_state_dict(self._start_state["dataset"] if self._start_state else None)
        for example in self.dataset:
            self._yielded += 1
            if self._yielded % self.examples_per_step == 0:
                # Recorded before handing the example out: the state right after it, i.e. resume at the next one.
                self._states[self._yielded] = {"epoch": self.epoch, "dataset": self.dataset.state_dict()}
                while len(self._states) > KEPT_STATES:
                    self._states.popitem(last=False)
            yield example


class StreamCheckpointCallback(TrainerCallback):
    """Writes the stream position of the last trained example into each checkpoint (`stream_state.json`), and puts
    a `SeededMaskingCollator` at the matching batch when training (re)starts."""

    def __init__(self, dataset, collator: SeededMaskingCollator | None = None):
        self.stream = dataset if isinstance(dataset, ResumableStream) else ResumableStream(dataset)
        self.collator = collator
        self._restored_from = None
        self._first_step = 0

    def load_checkpoint(self, checkpoint_dir: str) -> None:
        """Continue the stream where the checkpoint's training stopped (call before `trainer.train`)."""
        path = os.path.join(checkpoint_dir, STREAM_STATE_NAME)
        if not os.path.isfile(path):
            raise ValueError(f"{path} does not exist: expected a checkpoint written with StreamCheckpointCallback")
        with open(path, encoding="utf-8") as handle:
            self.stream.load_state_dict(json.load(handle))
        self._restored_from = checkpoint_dir

    def on_train_begin(self, args, state, control, **kwargs):
        if args.dataloader_num_workers:
            raise ValueError(
                f"dataloader_num_workers={args.dataloader_num_workers}: expected 0 with StreamCheckpointCallback "
                "(the stream position lives in the main process)"
            )
        if self._restored_from is not None and not args.ignore_data_skip:
            raise ValueError(
                f"resuming the stream from {self._restored_from} with ignore_data_skip=False would skip data twice: "
                "expected TrainingArguments(ignore_data_skip=True)"
            )
        # Dispatched or not, one optimizer step takes this many examples from the main process's stream.
        self.stream.start_counting(
            args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
        )
        self._first_step = state.global_step
        if self.collator is not None:
            # Batches masked per optimizer step by a process: its own per-device batches, or, when the main process
            # dispatches (accelerate's default for an iterable dataset), every process's batch on the main process.
            dispatched = args.world_size > 1 and args.accelerator_config.dispatch_batches is not False
            per_step = args.gradient_accumulation_steps * (args.world_size if dispatched else 1)
            self.collator.set_position(state.global_step * per_step, args.process_index)

    def on_step_begin(self, args, state, control, **kwargs):
        if self._restored_from is not None and state.global_step == self._first_step:
            # The Trainer restores the checkpoint's RNG states (dropout) before it creates the data loader's iterator,
            # and creating it draws a seed from the global RNG: without this second restore every step after a
            # resume drops out differently than in the uninterrupted run. The Trainer's own loader, for each process.
            Trainer._load_rng_state(SimpleNamespace(args=args), self._restored_from)

    def on_save(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return  # with dispatched batches, only the main process reads the stream
        consumed = (state.global_step - self._first_step) * self.stream.examples_per_step
        stream_state = self.stream.state_at(consumed)
        folder = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, STREAM_STATE_NAME), "w", encoding="utf-8") as handle:
            json.dump(stream_state, handle, default=_json_scalar)


def _json_scalar(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot store {type(value).__name__} in {STREAM_STATE_NAME}")
