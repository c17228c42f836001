"""Deployment of early-exit sequence classifiers on ONNX Runtime: ``export_onnx`` writes one graph per segment
(embeddings, each run of layers between exits, each exit head, the final head) plus tokenizer and manifest, and
``OnnxEarlyExitRunner`` runs them with per-example early exit. Needs the optional ``onnx`` extra
(``pip install 'hf_earlyexit[onnx]'``); importing this module does not.

Command line: ``python -m hf_earlyexit.deploy export CHECKPOINT OUTPUT_DIR [--quantize int8] [--opset 17]`` and
``python -m hf_earlyexit.deploy run OUTPUT_DIR TEXT [TEXT ...] [--exit-threshold 0.3]``.
"""

from .export import INT8_RECIPE, ExportError, export_onnx
from .manifest import DEFAULT_OPSET, SUPPORTED_OPSETS, ManifestError
from .runner import OnnxEarlyExitRunner

__all__ = [
    "DEFAULT_OPSET",
    "INT8_RECIPE",
    "SUPPORTED_OPSETS",
    "ExportError",
    "ManifestError",
    "OnnxEarlyExitRunner",
    "export_onnx",
]
