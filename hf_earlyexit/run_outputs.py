"""The output folder of an example run: refuse to write over an earlier run, resume from its checkpoints.

A re-run into the same ``output_dir`` would overwrite the earlier checkpoints and results without notice, and a
second task written into the folder of a first would push the first task's plots with the second model. So a
non-empty ``output_dir`` is refused unless ``overwrite_output_dir`` (its contents are removed first) or
``resume_from_checkpoint`` (a ``checkpoint-N`` folder, or ``last`` for the newest one in ``output_dir``) is asked.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from transformers.trainer_utils import get_last_checkpoint

LAST_CHECKPOINT = ("last", "true", "True")


@dataclass
class OutputDirArguments:
    """Mixed into the examples' training arguments (TrainingArguments dropped this field in transformers 5)."""

    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Replace the contents of a non-empty output_dir (removed before the run); without it, and "
            "without resume_from_checkpoint, a non-empty output_dir is refused"
        },
    )


def prepare_output_dir(args) -> None:
    """Check ``args.output_dir`` and ``args.resume_from_checkpoint`` before anything runs (ValueError, one line);
    resolve ``resume_from_checkpoint: last`` to the newest checkpoint; empty the folder for ``overwrite_output_dir``
    (main process only: the others write nothing before the Trainer synchronises them)."""
    output_dir = Path(args.output_dir)
    resume = args.resume_from_checkpoint
    if resume in LAST_CHECKPOINT:
        last = get_last_checkpoint(output_dir) if output_dir.is_dir() else None
        if last is None:
            raise ValueError(
                f"resume_from_checkpoint={resume!r} but output_dir={str(output_dir)!r} holds no checkpoint-N folder; "
                "expected a folder written with save_strategy steps or epoch"
            )
        args.resume_from_checkpoint = last
    elif resume:
        if not (Path(resume) / "trainer_state.json").is_file():
            raise ValueError(
                f"resume_from_checkpoint={resume!r} is not a checkpoint (no trainer_state.json there); expected a "
                f"checkpoint-N folder or 'last'"
            )
    elif output_dir.is_dir() and any(output_dir.iterdir()):
        if not args.overwrite_output_dir:
            held = sorted(p.name for p in output_dir.iterdir())
            shown = ", ".join(held[:5]) + (f" and {len(held) - 5} more" if len(held) > 5 else "")
            raise ValueError(
                f"output_dir={str(output_dir)!r} is not empty (holds {shown}); expected a new or empty folder, "
                "overwrite_output_dir: true to replace it, or resume_from_checkpoint (a checkpoint-N folder or last)"
            )
        if args.process_index == 0:
            for path in output_dir.iterdir():
                shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
