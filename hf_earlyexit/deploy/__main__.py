"""``python -m hf_earlyexit.deploy export CHECKPOINT OUTPUT_DIR [--quantize int8] [--opset N] [--fuse]
[--fp32-ffn-down auto|none|L,L] [--calibration-file FILE] [--reduce-range auto|on|off]`` and
``python -m hf_earlyexit.deploy run OUTPUT_DIR TEXT [TEXT ...] [--exit-threshold T] [--num-threads N]``.

A bad checkpoint, option or folder ends with its one-line message and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys

from .export import export_onnx
from .manifest import DEFAULT_OPSET


def layer_list(value: str):
    """``auto``, ``none`` (an empty list) or comma-separated layer numbers."""
    if value in ("auto", "none"):
        return "auto" if value == "auto" else []
    try:
        return [int(part) for part in value.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r}; expected auto, none or layer numbers like 5 or 4,5") from None


def read_calibration_file(path: str) -> list:
    """One input per non-empty line; a tab splits a (text, text_pair) pair."""
    with open(path, encoding="utf-8") as handle:
        lines = [line.rstrip("\n") for line in handle if line.strip()]
    return [tuple(line.split("\t", 1)) if "\t" in line else line for line in lines]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hf_earlyexit.deploy", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    export = commands.add_parser("export", help="export an early-exit checkpoint folder to ONNX")
    export.add_argument("checkpoint", help="folder with an early-exit sequence classifier and its tokenizer")
    export.add_argument("output_dir")
    export.add_argument("--quantize", choices=["int8"], default=None, help="int8 weights for the layer runs")
    export.add_argument("--opset", type=int, default=DEFAULT_OPSET)
    export.add_argument("--fuse", action="store_true",
                        help="ONNX Runtime transformer fusions on the layer runs (measured slower on CPU; off)")
    export.add_argument("--fp32-ffn-down", default="auto", type=layer_list, metavar="auto|none|L,L",
                        help="int8: layers whose FFN down-projection stays fp32 (auto: the outlier layers)")
    export.add_argument("--reduce-range", choices=["auto", "on", "off"], default="auto",
                        help="int8: 7-bit weights (on: CPUs without VNNI) or 8-bit (off: VNNI); auto: this CPU")
    export.add_argument("--calibration-file", default=None,
                        help="int8 auto: texts to measure the ranges on, one per line (a tab separates a pair)")
    run = commands.add_parser("run", help="classify texts with an export; prints one JSON result per line")
    run.add_argument("output_dir")
    run.add_argument("texts", nargs="+")
    run.add_argument("--exit-threshold", type=float, default=None)
    run.add_argument("--num-threads", type=int, default=None)
    args = parser.parse_args(argv)
    try:
        if args.command == "export":
            options = {}
            if args.fp32_ffn_down != "auto":
                options["fp32_ffn_down"] = args.fp32_ffn_down
            if args.reduce_range != "auto":
                options["reduce_range"] = args.reduce_range == "on"
            if args.calibration_file is not None:
                options["calibration_texts"] = read_calibration_file(args.calibration_file)
            print(export_onnx(args.checkpoint, args.output_dir, quantize=args.quantize, opset=args.opset,
                              fuse=args.fuse, **options))
        else:
            from .runner import OnnxEarlyExitRunner

            runner = OnnxEarlyExitRunner(args.output_dir, num_threads=args.num_threads)
            for result in runner(args.texts, exit_threshold=args.exit_threshold):
                print(json.dumps(result, ensure_ascii=False))
    except (ValueError, ImportError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
