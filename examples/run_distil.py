#!/usr/bin/env python
"""Distil a masked-LM teacher into a student over the corpus partitions (XLM-R Large → Base by default).

    accelerate launch examples/run_distil.py examples/configs/xlmr-large-to-base/distil.yaml [--flag value ...]
    python examples/run_distil.py examples/configs/demo/distil.yaml

Writes the final student into --output_dir, the student after each partition into partition-<k>/, and
distillation.json (recipe, steps and tokens per partition, per-partition metrics when eval_task_config is set).
"""

from hf_earlyexit.cli import main_guard, parse_config
from hf_earlyexit.distil import DISTIL_ARGUMENTS, run_distillation


def main(argv=None):
    return run_distillation(*parse_config(DISTIL_ARGUMENTS, argv, prog="run_distil.py"))


if __name__ == "__main__":
    main_guard(main)()
