"""The manifest of an ONNX export (``manifest.json``): what the runner needs besides the graphs, and a check that a
folder's graphs are the ones its manifest describes.

Fields: ``format`` / ``version``; the exit settings (``exit_layers``, ``exit_criterion``, ``exit_threshold``,
``exit_patience``, ``pooling``); ``id2label``; ``opset``; ``quantization`` (None, or the int8 recipe); the source
checkpoint's ``source_sha256`` (see ``export.state_dict_sha256``); ``max_length``; one entry per segment (``name``,
``kind``, layers, ``file``, ``sha256``); ``validation`` (fp32 / int8 max |logit difference| against PyTorch); the
library versions that wrote it.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from .segments import Segment, plan_segments

MANIFEST_NAME = "manifest.json"
FORMAT = "hf_earlyexit-onnx"
VERSION = 1
QUANTIZATIONS = (None, "int8")
# 14: the first opset with the ops torch's exporter needs for scaled_dot_product_attention; 20: the highest opset
# of torch's TorchScript exporter.
SUPPORTED_OPSETS = range(14, 21)
DEFAULT_OPSET = 17


class ManifestError(ValueError):
    """A folder whose manifest is missing, malformed or does not match its graphs; one line."""


def require_onnxruntime(what: str) -> None:
    """One-line ImportError when the optional ONNX packages are missing."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as error:
        raise ImportError(
            f"{what} needs onnx and onnxruntime (missing {error.name!r}); install them with "
            "pip install 'hf_earlyexit[onnx]'"
        ) from None


def file_sha256(path: Path) -> str:
    # The package's one file hash; imported here, not at module level, so `import hf_earlyexit` (which imports this
    # module) does not import `weights` eagerly (`python -m hf_earlyexit.weights` must find it not yet imported).
    from ..weights import sha256_file

    return sha256_file(path)


def build_manifest(model, segments: list[Segment], folder: Path, opset: int, quantization, extra: dict) -> dict:
    import onnx
    import onnxruntime
    import torch

    from .. import __version__

    config = model.config
    return {
        "format": FORMAT,
        "version": VERSION,
        "architecture": type(model).__name__,
        "model_type": config.model_type,
        "num_hidden_layers": config.num_hidden_layers,
        "exit_layers": list(config.exit_layers),
        "exit_criterion": config.exit_criterion,
        "exit_threshold": config.exit_threshold,
        "exit_patience": config.exit_patience,
        "pooling": getattr(config, "pooling", "first"),
        "id2label": {str(index): label for index, label in config.id2label.items()},
        "opset": opset,
        "quantization": quantization,
        **extra,
        "segments": [
            {**asdict(segment), "name": segment.name, "file": f"{segment.name}.onnx",
             "sha256": file_sha256(folder / f"{segment.name}.onnx")}
            for segment in segments
        ],
        "versions": {"hf_earlyexit": __version__, "torch": torch.__version__, "onnx": onnx.__version__,
                     "onnxruntime": onnxruntime.__version__},
    }


def write_manifest(folder: Path, manifest: dict) -> None:
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def read_manifest(folder: Path) -> dict:
    """The manifest of an export folder, checked against the folder's graphs (files present, sha256 equal, the
    segments those of its exit layers)."""
    path = folder / MANIFEST_NAME
    if not path.is_file():
        raise ManifestError(f"{str(folder)!r} has no {MANIFEST_NAME}; expected a folder written by export_onnx")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ManifestError(f"{str(path)!r} is not valid JSON: {error}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise ManifestError(f"{str(path)!r} is not a {FORMAT} manifest version {VERSION}")
    try:
        expected = [segment.name for segment in plan_segments(list(manifest["exit_layers"]))]
        listed = [entry["name"] for entry in manifest["segments"]]
        if listed != expected:
            raise ManifestError(
                f"{str(path)!r} lists segments {listed}; expected {expected} for exit_layers {manifest['exit_layers']}"
            )
        for entry in manifest["segments"]:
            graph = folder / entry["file"]
            if not graph.is_file():
                raise ManifestError(f"{str(path)!r} names {entry['file']!r}, which is missing from the folder")
            if file_sha256(graph) != entry["sha256"]:
                raise ManifestError(
                    f"{str(graph)!r} does not match its manifest (sha256 differs); expected the graph export_onnx "
                    "wrote (re-export the folder)"
                )
    except (KeyError, TypeError) as error:
        raise ManifestError(f"{str(path)!r} is missing field {error}; expected a manifest written by export_onnx") from None
    return manifest
