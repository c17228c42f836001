"""``export_onnx``: an early-exit sequence classifier as one ONNX graph per segment, plus tokenizer and manifest.

The folder holds ``manifest.json`` (see ``manifest.py``), the tokenizer files and one ``<segment>.onnx`` per segment
of ``segments.plan_segments``. It is written into a hidden sibling folder first and renamed into place only after
the fp32 graphs matched PyTorch, so a failed export leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import statistics
import tempfile
import warnings
from contextlib import nullcontext
from pathlib import Path

import torch

from .manifest import (
    DEFAULT_OPSET,
    MANIFEST_NAME,
    QUANTIZATIONS,
    SUPPORTED_OPSETS,
    build_manifest,
    require_onnxruntime,
    write_manifest,
)
from .segments import (
    ATTENTION_MASK,
    INPUT_IDS,
    LOGITS,
    TOKEN_TYPE_IDS,
    fusable_attention,
    plan_segments,
    segment_module,
)

# fp32 ORT against PyTorch on the validation batch; measured ~1e-6 on the package's models and the real e5-small.
VALIDATION_ATOL = 1e-4

# The int8 recipe (onnxruntime.quantization.quantize_dynamic keyword arguments) applied to the layer runs; the
# embeddings and the heads stay fp32. Measured on the real multilingual-e5-small (bench/onnx_runner.py --levers,
# docs/benchmarks.md): per-channel weight scales lift the mean-pooled embedding cosine to fp32 from 0.991 (the
# per-tensor default, the naive recipe) to 0.997 at the same ~2.2x speed; keeping the FFN down-projection or
# the attention in fp32 gains little more cosine for a third less speed; static QDQ calibrated on other XNLI rows is
# worse (cosine 0.980 at 1.9x).
#
# reduce_range (7-bit weights) depends on the CPU that serves the graphs, as in Optimum's per-target quantization
# configs (avx2: on, avx512_vnni: off): without VNNI (AVX2 only) ONNX Runtime's u8 x s8 kernel sums pairs of products
# in int16 and saturates with 8-bit weights (e5-small cosine 0.9957, a tiny test model's logits off by 0.56), where
# 7-bit weights do not (0.9971). With VNNI the products accumulate in int32 and 8-bit weights are the more accurate
# (fine-tuned e5-small teacher, XNLI dev 6 x 600: -0.25 / -0.19 points at full depth / chosen threshold with 8-bit
# weights and layer 5's FFN down-projection fp32, -0.72 / -0.67 with 7-bit). export_onnx's reduce_range=None picks it
# for the exporting CPU (see cpu_has_vnni) and the manifest records it; the runner warns when 8-bit graphs are loaded
# on a CPU without VNNI.
INT8_RECIPE = {"per_channel": True, "op_types_to_quantize": ["MatMul"]}
# /proc/cpuinfo flags of int8 dot products that accumulate in int32 (AVX512-VNNI, AVX-VNNI, AMX-INT8).
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")

# Dynamic int8 quantizes each activation tensor with one range, so a matrix whose input carries outlier channels
# coarsens the step for all its others. In e5-small one such matrix dominates the int8 loss: layer 5's FFN
# down-projection (the input after GELU) reaches max |x| 68 on real text where the other layers' median is 12 (47
# against 12 on the export's random-token validation batch). Kept fp32 (one of 72 matrices), the fine-tuned e5-small's
# XNLI loss under int8 fell from -0.61 / -0.75 points (full depth / chosen threshold) to -0.28 / -0.42, at ~1 % of
# the speed (docs/benchmarks.md). The exporter measures every layer's FFN down-projection input on a calibration
# batch and keeps fp32 the layers above OUTLIER_FACTOR times the median over layers.
OUTLIER_FACTOR = 3.0


class ExportError(ValueError):
    """A model, folder or option that cannot be exported; the message is one line naming it."""


def export_onnx(
    model,
    output_dir: str | os.PathLike,
    quantize: str | None = None,
    opset: int = DEFAULT_OPSET,
    tokenizer=None,
    fuse: bool = False,
    fp32_ffn_down="auto",
    calibration_texts=None,
    reduce_range: bool | None = None,
) -> Path:
    """Export an early-exit sequence classifier for ONNX Runtime (run it with ``OnnxEarlyExitRunner``).

    Args:
        model: an early-exit sequence classification model, or the path of a folder holding one (and its
            tokenizer).
        output_dir: a new or empty folder, or a previous export (replaced only once the new one is complete).
        quantize: ``None`` (fp32) or ``"int8"`` (the layer runs' weights quantized with ONNX Runtime's dynamic
            quantizer; embeddings and heads stay fp32).
        opset: ONNX opset, one of ``SUPPORTED_OPSETS``.
        tokenizer: saved with the graphs so the runner takes texts; defaults to the one in the model's folder.
        fuse: trace the layers with ``FUSABLE_ATTENTION`` and rewrite the layer runs with ONNX Runtime's
            transformer fusions (``fuse_transformer_graph``) before the validation and the quantization; the fused
            operator counts go into the manifest. Off by default: on the real e5-small the fused graphs ran slower
            on CPU than the session's own optimisation of the plain graphs, fp32 and int8 (docs/benchmarks.md).
        fp32_ffn_down: with ``quantize="int8"``, the layers (1-based) whose FFN down-projection stays fp32:
            ``"auto"`` (those whose input's max |x| on the calibration batch exceeds ``OUTLIER_FACTOR`` times the
            median over layers; measured ranges and choice go into the manifest) or a list of layers (``[]``: none).
        calibration_texts: with ``quantize="int8"`` and ``fp32_ffn_down="auto"``, the texts (or ``(text,
            text_pair)`` pairs) the ranges are measured on; default: the validation batch of random tokens.
        reduce_range: with ``quantize="int8"``, 7-bit weights (for CPUs without VNNI, which saturate with 8-bit
            ones) or 8-bit (VNNI CPUs); ``None``: 8-bit when the exporting CPU has VNNI (``cpu_has_vnni``), else
            7-bit. Export on (or for) the kind of CPU that serves the graphs.

    Returns the folder. The fp32 graphs are checked against PyTorch on a padded batch before anything is written
    (max |logit difference| <= 1e-4 at every exit, else ``ExportError``).
    """
    if quantize not in QUANTIZATIONS:
        raise ExportError(f"quantize={quantize!r}; expected one of {QUANTIZATIONS}")
    if not isinstance(fuse, bool):
        raise ExportError(f"fuse={fuse!r}; expected True or False")
    if not (isinstance(opset, int) and opset in SUPPORTED_OPSETS):
        raise ExportError(f"opset={opset!r}; expected an int in {SUPPORTED_OPSETS.start}..{SUPPORTED_OPSETS.stop - 1}")
    if quantize is None and (fp32_ffn_down != "auto" or calibration_texts is not None or reduce_range is not None):
        raise ExportError(
            "fp32_ffn_down, calibration_texts and reduce_range choose the int8 recipe; expected quantize='int8' with them"
        )
    if reduce_range not in (None, True, False):
        raise ExportError(f"reduce_range={reduce_range!r}; expected None (this CPU decides), True or False")
    require_onnxruntime("export_onnx")
    output_dir = Path(output_dir)
    check_output_dir(output_dir)
    model, tokenizer = resolve_model(model, tokenizer)
    check_exportable(model)
    check_fp32_ffn_down(fp32_ffn_down, model.config.num_hidden_layers)
    calibration = None
    if calibration_texts is not None:
        calibration = calibration_batch(tokenizer, calibration_texts, max_length(model, tokenizer))

    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.partial-", dir=output_dir.parent))
    try:
        write_export(model, tokenizer, staging, quantize, opset, fuse, fp32_ffn_down, calibration, reduce_range)
        if output_dir.exists():
            shutil.rmtree(output_dir)
        staging.rename(output_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return output_dir


def check_output_dir(output_dir: Path) -> None:
    if output_dir.exists() and not output_dir.is_dir():
        raise ExportError(f"output_dir {str(output_dir)!r} is a file; expected a folder")
    if output_dir.is_dir() and any(output_dir.iterdir()) and not (output_dir / MANIFEST_NAME).is_file():
        raise ExportError(
            f"output_dir {str(output_dir)!r} is not empty and holds no {MANIFEST_NAME}; expected a new or empty "
            "folder or a previous export"
        )


def check_fp32_ffn_down(value, num_layers: int) -> None:
    if value == "auto":
        return
    if not (isinstance(value, (list, tuple)) and all(isinstance(layer, int) and 1 <= layer <= num_layers
                                                     for layer in value)):
        raise ExportError(f"fp32_ffn_down={value!r}; expected 'auto' or a list of layers in 1..{num_layers}")


def calibration_batch(tokenizer, texts, length: int) -> dict[str, torch.Tensor]:
    """The calibration texts (or pairs) tokenized as the runner does: padded, truncated to the graphs' limit."""
    from .runner import split_inputs

    if isinstance(texts, (str, bytes)) or not texts:
        raise ExportError(f"calibration_texts={texts!r:.60}; expected a non-empty list of texts or text pairs")
    try:
        first, second = split_inputs(texts)
    except ValueError as error:
        raise ExportError(f"calibration_texts: {error}") from None
    encoded = tokenizer(first, second, padding=True, truncation=True, max_length=length, return_tensors="pt")
    encoded.setdefault(TOKEN_TYPE_IDS, torch.zeros_like(encoded[INPUT_IDS]))
    return {name: encoded[name] for name in (INPUT_IDS, ATTENTION_MASK, TOKEN_TYPE_IDS)}


def resolve_model(model, tokenizer):
    """A model object and its tokenizer, loading either from a folder when given as a path."""
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    folder = None
    if isinstance(model, (str, os.PathLike)):
        folder = Path(model)
        if not (folder / "config.json").is_file():
            raise ExportError(f"checkpoint {str(folder)!r} has no config.json; expected a saved early-exit model folder")
        config = AutoConfig.from_pretrained(folder)
        if getattr(config, "exit_layers", None) is None:
            raise ExportError(
                f"checkpoint {str(folder)!r} has no exit heads (model_type={config.model_type!r}); expected an "
                "early-exit checkpoint (fine-tune it with exits first, e.g. examples/run_xnli.py)"
            )
        if any("TokenClassification" in name for name in config.architectures or []):
            raise ExportError(
                f"checkpoint {str(folder)!r} is a token classifier ({config.architectures[0]}); the ONNX runner "
                "serves sequence classification only (one label per input)"
            )
        model, info = AutoModelForSequenceClassification.from_pretrained(folder, output_loading_info=True)
        untrained = sorted(info["missing_keys"])
        if untrained:
            # from_pretrained would fill them with fresh random weights: an export of those is never wanted.
            heads = "exit heads" if all(key.startswith("exit_heads.") for key in untrained) else "weights"
            raise ExportError(
                f"checkpoint {str(folder)!r} has no trained {heads} (missing {untrained[:2]}...); expected a "
                "fine-tuned early-exit sequence classifier"
            )
    elif getattr(model, "name_or_path", None) and Path(model.name_or_path).is_dir():
        folder = Path(model.name_or_path)
    if tokenizer is None:
        if folder is None or not any((folder / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json")):
            raise ExportError("export_onnx needs the model's tokenizer; pass tokenizer= (none found beside the model)")
        tokenizer = AutoTokenizer.from_pretrained(folder)
    return model.eval(), tokenizer


def check_exportable(model) -> None:
    config = model.config
    exit_layers = getattr(config, "exit_layers", None)
    if exit_layers is None or not hasattr(model, "exit_heads"):
        raise ExportError(
            f"{type(model).__name__} (model_type={config.model_type!r}) has no exit heads; expected an early-exit "
            "model (a config with exit_layers)"
        )
    if len(exit_layers) < 2:
        raise ExportError(
            f"{type(model).__name__} has exit_layers={list(exit_layers)}: no intermediate exit to leave at; expected "
            "at least one exit layer below the last"
        )
    if getattr(model, "per_token", False):
        raise ExportError(
            f"{type(model).__name__} is a token classifier (exit_granularity={config.exit_granularity!r}); the ONNX "
            "runner serves sequence classification only (one label per input); export a sequence classifier"
        )


def state_dict_sha256(model) -> str:
    """sha256 over the model's parameters and buffers (names and raw bytes, in name order): identifies the source
    checkpoint whether it came from a folder or from memory."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def max_length(model, tokenizer) -> int:
    """Longest input the graphs take: the tokenizer's limit, capped by the position table (XLM-R positions start
    after its padding index)."""
    embeddings = model.base_model.embeddings
    offset = embeddings.padding_idx + 1 if getattr(embeddings, "padding_idx", None) is not None else 0
    positions = model.config.max_position_embeddings - offset
    limit = getattr(tokenizer, "model_max_length", positions) or positions
    return int(min(limit, positions))


def validation_batch(model, length: int = 16) -> dict[str, torch.Tensor]:
    """A padded batch of random tokens (rows of decreasing real length, the last one heavily padded)."""
    config = model.config
    generator = torch.Generator().manual_seed(0)
    lengths = [length, length // 2, 3]
    input_ids = torch.randint(config.pad_token_id + 1, config.vocab_size, (len(lengths), length), generator=generator)
    attention_mask = torch.zeros_like(input_ids)
    for row, real in enumerate(lengths):
        attention_mask[row, :real] = 1
    input_ids = input_ids.masked_fill(attention_mask == 0, config.pad_token_id)
    return {INPUT_IDS: input_ids, ATTENTION_MASK: attention_mask, TOKEN_TYPE_IDS: torch.zeros_like(input_ids)}


def export_segment(module, example: tuple[torch.Tensor, ...], names: tuple[str, ...], output: str, path: Path, opset):
    dynamic = {name: {0: "batch", 1: "sequence"} for name in names}
    dynamic[output] = {0: "batch"} if output == LOGITS else {0: "batch", 1: "sequence"}
    with torch.no_grad(), warnings.catch_warnings():
        # The TorchScript exporter: it needs no extra package (the dynamo one needs onnxscript) and traces the
        # encoder layers exactly (their Python branches depend on shapes and config only, which its tracer warnings
        # flag but which hold for every batch; the fp32 validation below checks it at other shapes).
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            module,
            example,
            str(path),
            dynamo=False,
            input_names=list(names),
            output_names=[output],
            dynamic_axes=dynamic,
            opset_version=opset,
        )


def ffn_down_input_ranges(model, batch: dict[str, torch.Tensor]) -> list[float]:
    """Per layer, max |x| of the FFN down-projection's input (``layer.output.dense``) over the real tokens of
    ``batch`` (PyTorch forward at full depth, every row through every layer; padding does not count)."""
    layers = model.base_model.encoder.layer
    real = batch[ATTENTION_MASK].bool()
    ranges = [0.0] * len(layers)

    def recorder(index):
        def hook(module, inputs):
            ranges[index] = float(inputs[0][real].abs().max())

        return hook

    handles = [layer.output.dense.register_forward_pre_hook(recorder(index)) for index, layer in enumerate(layers)]
    try:
        with torch.no_grad():
            model(**batch, exit_threshold=0.0)
    finally:
        for handle in handles:
            handle.remove()
    return ranges


def outlier_layers(ranges: list[float], factor: float = OUTLIER_FACTOR) -> list[int]:
    """The layers (1-based) whose range exceeds ``factor`` times the median over layers."""
    median = statistics.median(ranges)
    return [layer for layer, value in enumerate(ranges, 1) if value > factor * median]


def choose_fp32_ffn_down(model, batch, fp32_ffn_down, calibration) -> dict:
    """The manifest's record of the matrices kept fp32 (and, for ``"auto"``, what chose them)."""
    if fp32_ffn_down != "auto":
        return {"ffn_down_layers": sorted(fp32_ffn_down), "rule": "given"}
    ranges = ffn_down_input_ranges(model, batch if calibration is None else calibration)
    source = "the validation batch (random tokens)" if calibration is None else f"{len(calibration[INPUT_IDS])} texts"
    return {
        "ffn_down_layers": outlier_layers(ranges),
        "rule": f"FFN down-projection input max |x| > {OUTLIER_FACTOR:g} x the median over layers",
        "ffn_down_input_max_abs": [round(value, 4) for value in ranges],
        "calibration": source,
    }


def cpu_has_vnni() -> bool | None:
    """Whether this CPU has int8 dot products accumulating in int32 (``VNNI_FLAGS`` in /proc/cpuinfo); None where
    that cannot be read (not Linux)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return bool(set(line.split(":", 1)[1].split()) & set(VNNI_FLAGS))
    except OSError:
        return None
    return None


def choose_reduce_range(reduce_range: bool | None) -> dict:
    if reduce_range is not None:
        return {"reduce_range": reduce_range, "reduce_range_rule": "given"}
    vnni = cpu_has_vnni()
    reason = {True: "the exporting CPU has VNNI", False: "the exporting CPU has no VNNI",
              None: "the exporting CPU's flags are unknown"}[vnni]  # fmt: skip
    return {"reduce_range": vnni is not True, "reduce_range_rule": f"auto: {reason}"}


def write_export(model, tokenizer, folder: Path, quantize: str | None, opset: int, fuse: bool = False,
                 fp32_ffn_down="auto", calibration=None, reduce_range: bool | None = None) -> None:
    from .runner import OnnxEarlyExitRunner

    batch = validation_batch(model, min(16, max_length(model, tokenizer)))
    with torch.no_grad():
        reference = model(**batch, output_exit_logits=True).exit_logits
        hidden = model.base_model.embeddings(input_ids=batch[INPUT_IDS], token_type_ids=batch[TOKEN_TYPE_IDS])
    segments = plan_segments(model.config.exit_layers)
    with fusable_attention(model) if fuse else nullcontext():
        for segment in segments:
            module = segment_module(model, segment)
            if segment.kind == "embeddings":
                example = (batch[INPUT_IDS], batch[TOKEN_TYPE_IDS])
            else:
                example = (hidden, batch[ATTENTION_MASK])
            export_segment(module, example, segment.inputs, segment.output, folder / f"{segment.name}.onnx", opset)
            if segment.kind == "layers":
                with torch.no_grad():
                    hidden = module(hidden, batch[ATTENTION_MASK])
    tokenizer.save_pretrained(folder)
    extra = {"source_sha256": state_dict_sha256(model), "max_length": max_length(model, tokenizer)}
    if fuse:
        fused = [fuse_transformer_graph(folder / f"{s.name}.onnx", model.config) for s in segments if s.kind == "layers"]
        extra["fusions"] = {op: sum(counts.get(op, 0) for counts in fused) for op in sorted(set().union(*fused))}
    write_manifest(folder, build_manifest(model, segments, folder, opset, None, extra))

    worst = max_exit_difference(OnnxEarlyExitRunner(folder, num_threads=1), batch, reference)
    if not worst <= VALIDATION_ATOL:
        raise ExportError(
            f"ONNX fp32 logits differ from PyTorch by {worst:.3g} on a padded batch; expected <= {VALIDATION_ATOL}"
        )
    extra["validation"] = {"fp32_max_abs_diff": worst, "atol": VALIDATION_ATOL, "batch": list(batch[INPUT_IDS].shape)}
    quantization = None
    if quantize == "int8":
        quantization = {**int8_manifest_entry(), **choose_reduce_range(reduce_range),
                        "fp32": choose_fp32_ffn_down(model, batch, fp32_ffn_down, calibration)}  # fmt: skip
        recipe = {**INT8_RECIPE, "reduce_range": quantization["reduce_range"]}
        for segment in segments:
            if segment.kind == "layers":
                graph = folder / f"{segment.name}.onnx"
                quantize_int8(graph, recipe, nodes_to_exclude=ffn_down_nodes(graph, segment, quantization["fp32"]))
        write_manifest(folder, build_manifest(model, segments, folder, opset, quantization, extra))
        # Informative only (int8 is lossy by design); the accuracy it costs is measured in docs/benchmarks.md.
        extra["validation"]["int8_max_abs_diff"] = max_exit_difference(OnnxEarlyExitRunner(folder, 1), batch, reference)
    write_manifest(folder, build_manifest(model, segments, folder, opset, quantization, extra))


def max_exit_difference(runner, batch: dict[str, torch.Tensor], reference) -> float:
    arrays = {name: tensor.numpy() for name, tensor in batch.items()}
    exits = runner.exit_logits(arrays)
    return max(float(abs(got - want.numpy()).max()) for got, want in zip(exits, reference))


def ffn_down_node(layer: int, segment) -> str:
    """The graph node of layer ``layer``'s (1-based, global) FFN down-projection in its layer run's graph."""
    return f"/layers.{layer - segment.first}/output/dense/MatMul"


def ffn_down_nodes(graph: Path, segment, fp32: dict) -> list[str]:
    import onnx

    wanted = [ffn_down_node(layer, segment) for layer in fp32["ffn_down_layers"] if segment.first <= layer <= segment.last]
    names = {node.name for node in onnx.load(graph, load_external_data=False).graph.node}
    missing = [name for name in wanted if name not in names]
    if missing:
        raise ExportError(f"{graph.name} has no node {missing[0]!r}; expected the FFN down-projection MatMul there")
    return wanted


def quantize_int8(graph: Path, recipe: dict | None = None, nodes_to_exclude: list[str] = ()) -> None:
    """Replace one layer-run graph by its dynamic int8 version (int8 weights, activations quantized at run time),
    with ONNX Runtime's own quantizer; ``nodes_to_exclude`` stay fp32; ``recipe`` overrides ``INT8_RECIPE``
    (bench/onnx_runner.py compares recipes)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    options = dict(INT8_RECIPE if recipe is None else recipe)
    if nodes_to_exclude:
        options["nodes_to_exclude"] = [*options.get("nodes_to_exclude", []), *nodes_to_exclude]
    # The fused ops (com.microsoft Attention, SkipLayerNormalization, BiasGelu) have no ONNX shape inference, so the
    # quantizer cannot type their outputs; every activation here is float32.
    options["extra_options"] = {"DefaultTensorType": onnx.TensorProto.FLOAT, **options.get("extra_options", {})}
    staged = graph.with_name(graph.stem + ".int8.onnx")
    root = logging.getLogger()
    level = root.level
    # The quantizer logs "consider to run pre-processing" on the root logger for every graph; that pre-pass (shape
    # inference, graph optimisation) is not used here: the session optimises each graph when it loads it.
    root.setLevel(max(level, logging.ERROR))
    try:
        quantize_dynamic(graph, staged, weight_type=QuantType.QInt8, **options)
    finally:
        root.setLevel(level)
    os.replace(staged, graph)


def fuse_transformer_graph(graph: Path, config) -> dict[str, int]:
    """Rewrite one layer-run graph with ONNX Runtime's transformer fusions (``onnxruntime.transformers.optimizer``,
    BERT rules: Attention, SkipLayerNormalization, BiasGelu); returns the fused operator counts."""
    from onnxruntime.transformers.fusion_options import AttentionMaskFormat, FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    options = FusionOptions("bert")
    # The 2-D 0/1 mask as is (not reduced to per-row lengths, which assumes right padding).
    options.attention_mask_format = AttentionMaskFormat.AttentionMask
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.ERROR))
    try:
        optimized = optimize_model(
            str(graph),
            model_type="bert",
            num_heads=config.num_attention_heads,
            hidden_size=config.hidden_size,
            optimization_options=options,
        )
    finally:
        root.setLevel(level)
    staged = graph.with_name(graph.stem + ".fused.onnx")
    optimized.save_model_to_file(str(staged))
    os.replace(staged, graph)
    return {op: count for op, count in optimized.get_fused_operator_statistics().items() if count}


def int8_manifest_entry() -> dict:
    return {"method": "quantize_dynamic", "weight_type": "QInt8", "segments": "layers", **INT8_RECIPE}


__all__ = ["INT8_RECIPE", "OUTLIER_FACTOR", "ExportError", "cpu_has_vnni", "export_onnx", "quantize_int8"]
