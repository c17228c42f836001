#!/usr/bin/env python
"""Fine-tune an early-exit model on English XNLI, evaluate zero-shot per language, sweep the exit threshold.

    accelerate launch examples/run_xnli.py examples/configs/xlmr-large-to-base/xnli.yaml [--flag value ...]
    python examples/run_xnli.py examples/configs/demo/xnli.yaml

Writes the model, results.json, report.md, plots and the model card (README.md) into --output_dir.
"""

from hf_earlyexit.cli import main_guard, parse_config
from hf_earlyexit.finetune import TASK_ARGUMENTS, run_task


def main(argv=None):
    return run_task("xnli", *parse_config(TASK_ARGUMENTS, argv, prog="run_xnli.py"))


if __name__ == "__main__":
    main_guard(main)()
