"""Exact, cheap resume of a streamed corpus inside the Trainer.

The Trainer's default resume replays the stream from the start and throws away the batches already trained on;
at 27 GB that is hours of reading and tokenising. Instead, every checkpoint gets the stream position
(`IterableDataset.state_dict()`) of the last example the model was trained on, and resuming loads it, with
`TrainingArguments(ignore_data_skip=True)` so the Trainer skips nothing.

The position cannot simply be read from the dataset when the checkpoint is written: accelerate's data loader
fetches one batch ahead (and the Trainer fetches a whole gradient-accumulation window), so the dataset is always
a little ahead of the model. `ResumableStream` therefore records the dataset's state at every step boundary and the
callback picks the one matching the number of examples the Trainer actually consumed.

Usage (single process; `dataloader_num_workers=0`):

    callback = StreamCheckpointCallback(packed_dataset)
    if checkpoint:
        callback.load_checkpoint(checkpoint)
    trainer = Trainer(..., args=TrainingArguments(..., ignore_data_skip=True), train_dataset=callback.stream,
                      callbacks=[callback])
    trainer.train(resume_from_checkpoint=checkpoint)
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict

import numpy as np
import torch
from transformers import TrainerCallback

STREAM_STATE_NAME = "stream_state.json"
KEPT_STATES = 8  # the data loader is never more than one accumulation window + one batch ahead


class ResumableStream(torch.utils.data.IterableDataset):
    """A datasets IterableDataset that remembers its state at every multiple of `examples_per_step` examples."""

    def __init__(self, dataset, examples_per_step: int = 1):
        self.dataset = dataset
        self.examples_per_step = examples_per_step
        self.epoch = 0
        self._iterations = 0
        self._start_state = None
        self._states: OrderedDict[int, dict] = OrderedDict()

    def state_dict(self) -> dict:
        """Position after the last example handed out (what the dataset itself reports)."""
        return {"epoch": self.epoch, "dataset": self.dataset.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.epoch = state["epoch"]
        self._start_state = state

    def state_at(self, examples: int) -> dict:
        """The position after `examples` examples of the current pass; must be a recorded step boundary."""
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
        self._states.clear()
        yielded = 0
        for example in self.dataset:
            yielded += 1
            if yielded % self.examples_per_step == 0:
                # Recorded before handing the example out: the state right after it, i.e. resume at the next one.
                self._states[yielded] = {"epoch": self.epoch, "dataset": self.dataset.state_dict()}
                while len(self._states) > KEPT_STATES:
                    self._states.popitem(last=False)
            yield example


class StreamCheckpointCallback(TrainerCallback):
    """Writes the stream position of the last trained example into each checkpoint (`stream_state.json`)."""

    def __init__(self, dataset):
        self.stream = dataset if isinstance(dataset, ResumableStream) else ResumableStream(dataset)
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
        dispatched = args.world_size > 1 and args.accelerator_config.dispatch_batches is not False
        processes = args.world_size if dispatched else 1
        self.stream.examples_per_step = args.per_device_train_batch_size * args.gradient_accumulation_steps * processes
        self._first_step = state.global_step

    def on_save(self, args, state, control, **kwargs):
        consumed = (state.global_step - self._first_step) * self.stream.examples_per_step
        stream_state = self.stream.state_at(consumed)
        if state.is_world_process_zero:
            folder = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
            os.makedirs(folder, exist_ok=True)
            with open(os.path.join(folder, STREAM_STATE_NAME), "w", encoding="utf-8") as handle:
                json.dump(stream_state, handle, default=_json_scalar)


def _json_scalar(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot store {type(value).__name__} in {STREAM_STATE_NAME}")
