"""``OnnxEarlyExitRunner``: batched per-example early exit on ONNX Runtime over the graphs of ``export_onnx``.

The loop is the model's batched exit loop (``EarlyExitMixin._forward_batched_exit``) with the host doing the
compaction: after each layer run that ends at an active exit, that exit's head scores the running rows, the
package's own ``criteria.exit_step`` (on zero-copy torch views of the ONNX outputs) decides which rows leave, their
logits are written out and they are removed from the hidden states, the attention mask and the patience state
before the next run. Exits whose threshold makes them unreachable are skipped (``criteria.exits_needing_heads``),
so ``exit_threshold=0`` runs the layers and the final head only, like the model's full-depth path.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from ..modeling.criteria import exit_step, exits_needing_heads, per_exit_thresholds
from .export import cpu_has_vnni
from .manifest import ManifestError, read_manifest, require_onnxruntime
from .segments import ATTENTION_MASK, INPUT_IDS, TOKEN_TYPE_IDS, Segment


class OnnxEarlyExitRunner:
    """Classify texts (or text pairs) with an exported early-exit model; each result carries ``exit_layer``.

    Args:
        output_dir: a folder written by ``export_onnx``.
        num_threads: ONNX Runtime intra-op threads per graph (None: ONNX Runtime's default, one per core).
    """

    def __init__(self, output_dir: str | os.PathLike, num_threads: int | None = None):
        require_onnxruntime("OnnxEarlyExitRunner")
        import onnxruntime
        from transformers import AutoTokenizer

        if num_threads is not None and not (isinstance(num_threads, int) and num_threads >= 1):
            raise ValueError(f"num_threads={num_threads!r}; expected None or an int >= 1")
        self.folder = Path(output_dir)
        self.manifest = manifest = read_manifest(self.folder)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = num_threads or 0
        options.inter_op_num_threads = 1
        self.sessions = {}
        for entry in manifest["segments"]:
            segment = Segment(entry["kind"], entry["first"], entry["last"])
            session = onnxruntime.InferenceSession(
                str(self.folder / entry["file"]), options, providers=["CPUExecutionProvider"]
            )
            inputs = [node.name for node in session.get_inputs()]
            outputs = [node.name for node in session.get_outputs()]
            if not set(inputs) <= set(segment.inputs) or outputs != [segment.output]:
                raise ManifestError(
                    f"{entry['file']!r} has inputs {inputs} and outputs {outputs}; expected inputs among "
                    f"{list(segment.inputs)} and output {[segment.output]} for a {segment.kind} segment"
                )
            self.sessions[segment] = (session, inputs)
        quantization = manifest.get("quantization") or {}
        if quantization.get("reduce_range") is False and cpu_has_vnni() is False:
            warnings.warn(
                f"{str(self.folder)!r} holds 8-bit int8 weights (exported for a VNNI CPU) but this CPU has no VNNI: "
                "ONNX Runtime's int8 kernel can saturate and lose accuracy here; re-export with reduce_range=True",
                stacklevel=2,
            )
        self.exit_layers = list(manifest["exit_layers"])
        self.criterion = manifest["exit_criterion"]
        self.patience = manifest["exit_patience"]
        self.id2label = {int(index): label for index, label in manifest["id2label"].items()}
        self.tokenizer = AutoTokenizer.from_pretrained(self.folder)

    # ------------------------------------------------------------------------------------------------ texts
    def __call__(
        self,
        inputs: str | Sequence[str | Sequence[str] | Mapping[str, str]],
        exit_threshold: float | Sequence[float] | None = None,
        batch_size: int = 32,
    ) -> list[dict]:
        """One ``{"label", "score", "exit_layer"}`` per input (``score``: softmax probability of the label), in
        order. ``inputs``: texts, ``(text, text_pair)`` pairs or ``{"text", "text_pair"}`` dicts (as the
        early-exit text-classification pipeline takes them). ``exit_threshold`` overrides the exported
        threshold for this call (one float or one per exit layer)."""
        thresholds = self.thresholds(exit_threshold)
        if not (isinstance(batch_size, int) and batch_size >= 1):
            raise ValueError(f"batch_size={batch_size!r}; expected an int >= 1")
        texts, pairs = split_inputs(inputs)
        results = []
        for start in range(0, len(texts), batch_size):
            chunk = slice(start, start + batch_size)
            encoded = self.tokenizer(
                texts[chunk],
                pairs[chunk] if pairs is not None else None,
                padding=True,
                truncation=True,
                max_length=self.manifest["max_length"],
                return_tensors="np",
            )
            logits, exit_layer = self.forward(dict(encoded), thresholds)
            probabilities = softmax(logits)
            for row, layer in zip(probabilities, exit_layer):
                best = int(row.argmax())
                results.append({"label": self.id2label[best], "score": float(row[best]), "exit_layer": int(layer)})
        return results

    def thresholds(self, exit_threshold=None) -> list[float]:
        value = self.manifest["exit_threshold"] if exit_threshold is None else exit_threshold
        return per_exit_thresholds(value, len(self.exit_layers))

    # ----------------------------------------------------------------------------------------------- arrays
    def forward(
        self, batch: Mapping[str, np.ndarray], exit_threshold: float | Sequence[float] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Early exit over one tokenized batch (``input_ids``, ``attention_mask``, optional ``token_type_ids``):
        ``(logits (batch, num_labels) float32, exit_layer (batch,) int64)``, as the model's forward returns them."""
        thresholds = self.thresholds(exit_threshold)
        active = exits_needing_heads(self.criterion, thresholds)
        hidden, mask = self._embed(batch)
        rows = np.arange(hidden.shape[0])  # original row of each running row
        logits_out = np.empty((hidden.shape[0], len(self.id2label)), dtype=np.float32)
        exit_layer_out = np.full(hidden.shape[0], self.exit_layers[-1], dtype=np.int64)
        state = None
        for index, (layers, head) in enumerate(self._stages()):
            hidden = self._run(layers, hidden, mask)
            if head.kind == "final_head":
                logits_out[rows] = self._run(head, hidden, mask)
                break
            if not active[index]:
                continue
            head_logits = self._run(head, hidden, mask)
            leave, state = exit_step(
                self.criterion, torch.from_numpy(head_logits), thresholds[index], self.patience, state
            )
            leave = leave.numpy()
            if not leave.any():
                continue
            logits_out[rows[leave]] = head_logits[leave]
            exit_layer_out[rows[leave]] = head.last
            if leave.all():
                break
            stay = ~leave
            rows, hidden, mask = rows[stay], hidden[stay], mask[stay]
            keep = torch.from_numpy(np.flatnonzero(stay))
            state = tuple(part[keep] for part in state) if state is not None else None
        return logits_out, exit_layer_out

    def exit_logits(self, batch: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Every exit's logits for every row (no exit taken), like the model's ``output_exit_logits=True``."""
        hidden, mask = self._embed(batch)
        outputs = []
        for layers, head in self._stages():
            hidden = self._run(layers, hidden, mask)
            outputs.append(self._run(head, hidden, mask))
        return outputs

    def _stages(self) -> list[tuple[Segment, Segment]]:
        """(layer run, head at its end) pairs, in depth order."""
        segments = list(self.sessions)[1:]
        return list(zip(segments[0::2], segments[1::2]))

    def _embed(self, batch: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        input_ids = np.asarray(batch[INPUT_IDS], dtype=np.int64)
        mask = np.asarray(batch.get(ATTENTION_MASK, np.ones_like(input_ids)), dtype=np.int64)
        token_type_ids = batch.get(TOKEN_TYPE_IDS)
        token_type_ids = np.zeros_like(input_ids) if token_type_ids is None else np.asarray(token_type_ids, np.int64)
        embeddings = next(iter(self.sessions))
        return self._run(embeddings, input_ids, token_type_ids), mask

    def _run(self, segment: Segment, first: np.ndarray, second: np.ndarray) -> np.ndarray:
        session, inputs = self.sessions[segment]
        feed = dict(zip(segment.inputs, (first, second)))
        return session.run(None, {name: feed[name] for name in inputs})[0]


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def split_inputs(inputs) -> tuple[list[str], list[str] | None]:
    """Texts and (when any input is a pair) their second texts; a one-line ValueError naming a bad input."""
    if isinstance(inputs, (str, Mapping)):
        inputs = [inputs]
    texts, pairs = [], []
    for position, item in enumerate(inputs):
        if isinstance(item, Mapping) and isinstance(item.get("text"), str):
            first, second = item["text"], item.get("text_pair")
        elif isinstance(item, str):
            first, second = item, None
        elif isinstance(item, Sequence) and len(item) == 2 and all(isinstance(part, str) for part in item):
            first, second = item
        else:
            raise ValueError(
                f"inputs[{position}] is {item!r}; expected a str, a (text, text_pair) pair or "
                "{'text': ..., 'text_pair': ...}"
            )
        texts.append(first)
        pairs.append(second)
    has_pairs = [second is not None for second in pairs]
    if any(has_pairs) and not all(has_pairs):
        raise ValueError("inputs mix single texts and text pairs; expected all of one kind in a call")
    return texts, (pairs if any(has_pairs) else None)
