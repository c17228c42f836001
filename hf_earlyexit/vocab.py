"""Vocabulary trimming: cut an XLM-R-style model and its SentencePiece-Unigram tokenizer down to the pieces a set of
texts uses.

XLM-R's 250,002-row embedding is most of a Base model's parameters; a deployment for a handful of languages never
touches most rows. `trim_vocabulary` keeps

- every special / added token,
- every piece the original tokenizer produces on `texts` (at least `min_count` times),
- every piece listed in `keep`,
- the single-character piece of every character that occurs in those pieces, so that held-out text written in the
  same characters is re-segmented from kept pieces instead of becoming `<unk>`,
- the original lowest-scoring piece: the Unigram model scores `<unk>` relative to its vocabulary's minimum score,
  and keeping that minimum keeps `<unk>`'s score, hence every segmentation of the kept pieces, exactly as before;

in their original order (so `<s> <pad> </s> <unk>` keep ids 0-3 and `<mask>` stays last), and builds a new
`tokenizers` Unigram model over them with their original scores. Normaliser, pre-tokeniser, post-processor,
decoder, padding and truncation settings are the original ones; only token ids are renumbered.

Why the texts tokenise identically: Unigram picks the highest-scoring segmentation (Viterbi) of each pre-token. The
original best segmentation uses only kept pieces and the kept pieces are a subset of the original ones, so the best
segmentation is still available and nothing better can have appeared. Held-out text whose best segmentation used a
dropped piece is re-segmented from the kept pieces (the best segmentation among them); a character with no kept
piece (one never seen in `texts`) becomes `<unk>`, as an unknown character does in the original tokenizer.

The model's input embedding rows (and an MLM head's decoder rows and bias) are gathered in the same order. Weights
are swapped by identity, so tied weights (MLM decoder = input embedding, decoder bias = head bias) stay tied.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Mapping, Sequence
from itertools import islice
from typing import Any

import numpy as np
import torch
from tokenizers import Tokenizer

ENCODE_BATCH = 1000


def trim_vocabulary(
    model: torch.nn.Module | Sequence[torch.nn.Module],
    tokenizer,
    texts: Iterable[str] | Iterable[Mapping[str, Any]],
    min_count: int = 1,
    keep: Iterable[str] | None = None,
):
    """(model, tokenizer) restricted to the pieces `texts` use; see the module docstring for what is kept and why.

    `texts`: strings, or rows with a ``"text"`` field (a `datasets.Dataset` / `IterableDataset`, e.g. the stream
    of `hf_earlyexit.data.load_distillation_corpus` for a language selection). `model` may also be a list of models
    read by this tokenizer (a teacher and its student): all get the same map, so their vocabularies stay identical,
    and a list is returned. Models are changed in place and returned (with `config.vocab_size` and the special-token
    ids updated; embedding rows past the tokenizer's last id are dropped); the tokenizer is a new object. Every check
    runs, and the texts are counted, before anything is changed.
    """
    models = list(model) if isinstance(model, (list, tuple)) else [model]
    state = _unigram_state(tokenizer)
    for each in models:
        _check_embedding_size(each, tokenizer)
    if isinstance(min_count, bool) or not isinstance(min_count, int) or min_count < 1:
        raise ValueError(f"min_count={min_count!r}: expected an integer >= 1")
    vocab = state["model"]["vocab"]
    piece_ids = {piece: index for index, (piece, _) in enumerate(vocab)}
    keep_ids = _ids_of(keep, piece_ids)
    counts = count_pieces(tokenizer, texts)

    kept = set(np.flatnonzero(counts >= min_count).tolist()) | keep_ids
    kept |= {index for index in range(len(vocab), len(tokenizer))}  # added tokens outside the Unigram model
    kept |= {token_id for token_id in tokenizer.added_tokens_decoder}
    seen_chars = {char for index in np.flatnonzero(counts).tolist() if index < len(vocab) for char in vocab[index][0]}
    kept |= {piece_ids[char] for char in seen_chars if char in piece_ids}
    kept.add(min(range(len(vocab)), key=lambda index: vocab[index][1]))
    kept_ids = sorted(kept)

    new_tokenizer = _trimmed_tokenizer(tokenizer, state, kept_ids)
    for each in models:
        _gather_vocabulary_rows(each, torch.tensor(kept_ids))
        _update_config(each.config, tokenizer, new_tokenizer)
    return (models if isinstance(model, (list, tuple)) else model), new_tokenizer


def vocabulary_summary(model: torch.nn.Module, tokenizer) -> dict[str, int]:
    """Vocabulary size, parameters and checkpoint bytes: the tensor bytes `save_pretrained` writes into
    model.safetensors (the state dict, tied tensors once; the file adds a small JSON header)."""
    tensors = {t.data_ptr(): t for t in model.state_dict().values()}
    return {
        "vocabulary": len(tokenizer),
        "parameters": sum(p.numel() for p in model.parameters()),
        "checkpoint_bytes": sum(t.numel() * t.element_size() for t in tensors.values()),
    }


def count_pieces(tokenizer, texts) -> np.ndarray:
    """How often the tokenizer produces each id on `texts` (special tokens of the templates not counted)."""
    if isinstance(texts, (str, bytes)) or not isinstance(texts, Iterable):
        raise ValueError(
            f"texts={_preview(texts)}: expected an iterable of strings or of rows with a 'text' field, not "
            f"{type(texts).__name__}"
        )
    backend = tokenizer.backend_tokenizer
    counts = np.zeros(len(tokenizer), dtype=np.int64)
    rows = iter(texts)
    while batch := [_text_of(row) for row in islice(rows, ENCODE_BATCH)]:
        encodings = backend.encode_batch([text for text in batch if text.strip()], add_special_tokens=False)
        ids = [token_id for encoding in encodings for token_id in encoding.ids]
        counts += np.bincount(np.asarray(ids, dtype=np.int64), minlength=len(counts))[: len(counts)]
    if not counts.any():
        raise ValueError("texts has no non-empty text: expected strings (or rows with a 'text' field) to count")
    return counts


def _text_of(row) -> str:
    text = row["text"] if isinstance(row, Mapping) and "text" in row else row
    if not isinstance(text, str):
        raise ValueError(f"a row of texts is {_preview(row)}: expected a string or a row with a string 'text' field")
    return text


def _preview(value, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _unigram_state(tokenizer) -> dict:
    """The backend tokenizer's serialised state; refuses anything that is not a fast SentencePiece-Unigram tokenizer."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if not isinstance(backend, Tokenizer):
        raise ValueError(
            f"tokenizer {type(tokenizer).__name__} has no `tokenizers` backend: expected a fast SentencePiece-Unigram "
            "tokenizer such as XLM-R's"
        )
    state = json.loads(backend.to_str())
    model_type = state["model"].get("type")
    if model_type != "Unigram":
        raise ValueError(
            f"tokenizer {type(tokenizer).__name__} uses a {model_type} model: trim_vocabulary needs a "
            "SentencePiece-Unigram tokenizer (XLM-R's); other vocabularies cannot be trimmed"
        )
    return state


def _check_embedding_size(model, tokenizer) -> None:
    embedding = model.get_input_embeddings()
    if not isinstance(embedding, torch.nn.Embedding):
        raise ValueError(
            f"{type(model).__name__}'s input embedding is {type(embedding).__name__}: expected nn.Embedding"
        )
    # More rows than tokens is common (multilingual-e5-small keeps 250,037 rows for 250,002 pieces; tables padded to a
    # multiple of 8): the extra rows are unreachable and are dropped. Fewer rows means ids would index past the table.
    if embedding.num_embeddings < len(tokenizer):
        raise ValueError(
            f"{type(model).__name__} has {embedding.num_embeddings} embedding rows but the tokenizer has "
            f"{len(tokenizer)} tokens: expected at least one row per token (the tokenizer the model was trained with)"
        )


def _ids_of(pieces, piece_ids: Mapping[str, int]) -> set[int]:
    if pieces is None:
        return set()
    if isinstance(pieces, str):
        raise ValueError(f"keep={pieces!r}: expected a list of pieces, not one string")
    pieces = list(pieces)
    missing = [piece for piece in pieces if piece not in piece_ids]
    if missing:
        raise ValueError(
            f"keep lists {len(missing)} piece(s) not in the vocabulary: {missing[:5]}; expected pieces as the "
            "tokenizer spells them (e.g. '▁word')"
        )
    return {piece_ids[piece] for piece in pieces}


def _trimmed_tokenizer(tokenizer, state: dict, kept_ids: list[int]):
    """A copy of `tokenizer` whose backend holds only `kept_ids`, renumbered in order; everything else unchanged."""
    vocab = state["model"]["vocab"]
    old_to_new = {old: new for new, old in enumerate(kept_ids)}
    trimmed_state = copy.deepcopy({key: value for key, value in state.items() if key != "model"})
    trimmed_state["model"] = {**state["model"], "vocab": [vocab[old] for old in kept_ids if old < len(vocab)]}
    if state["model"].get("unk_id") is not None:
        trimmed_state["model"]["unk_id"] = old_to_new[state["model"]["unk_id"]]
    for token in trimmed_state["added_tokens"]:
        token["id"] = old_to_new[token["id"]]
    token_ids = {token: old_to_new[tokenizer.convert_tokens_to_ids(token)] for token in _special_strings(state)}
    _renumber_special_ids(trimmed_state.get("post_processor"), token_ids)
    if trimmed_state.get("padding"):
        trimmed_state["padding"]["pad_id"] = old_to_new[trimmed_state["padding"]["pad_id"]]

    backend = Tokenizer.from_str(json.dumps(trimmed_state))
    # The memo puts the new backend wherever the old one was, without deep-copying the old (large) one first.
    trimmed = copy.deepcopy(tokenizer, memo={id(tokenizer.backend_tokenizer): backend})
    # The original sentencepiece model file describes the old vocabulary: the trimmed one saves tokenizer.json only.
    for key in ("vocab_file", "tokenizer_file"):
        trimmed.init_kwargs.pop(key, None)
    trimmed.vocab_file = None
    return trimmed


def _special_strings(state: dict) -> set[str]:
    """Token strings the post-processor refers to by id."""
    found: set[str] = set()

    def visit(node):
        if isinstance(node, dict):
            if isinstance(node.get("tokens"), list):
                found.update(node["tokens"])
            for key in ("sep", "cls"):
                if isinstance(node.get(key), list):
                    found.add(node[key][0])
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    visit(state.get("post_processor"))
    return found


def _renumber_special_ids(node, token_ids: Mapping[str, int]) -> None:
    """Template / Roberta / Bert processors name their special tokens by string and id: rewrite the ids."""
    if isinstance(node, dict):
        if isinstance(node.get("tokens"), list) and isinstance(node.get("ids"), list):
            node["ids"] = [token_ids[token] for token in node["tokens"]]
        for key in ("sep", "cls"):
            if isinstance(node.get(key), list):
                node[key][1] = token_ids[node[key][0]]
        for value in node.values():
            _renumber_special_ids(value, token_ids)
    elif isinstance(node, list):
        for value in node:
            _renumber_special_ids(value, token_ids)


def _gather_vocabulary_rows(model: torch.nn.Module, index: torch.Tensor) -> None:
    """Keep rows `index` of every vocabulary-sized parameter (input embedding, output decoder weight and bias).

    Each old parameter gets one replacement, swapped in wherever it is registered, so parameters that were tied
    (shared by identity) are still one parameter afterwards.
    """
    embedding = model.get_input_embeddings()
    output = model.get_output_embeddings()
    old = [embedding.weight]
    if output is not None:
        old += [output.weight] + ([output.bias] if output.bias is not None else [])
    replacement = {
        id(p): torch.nn.Parameter(p.detach()[index.to(p.device)].clone(), requires_grad=p.requires_grad) for p in old
    }
    for module in model.modules():
        for name, parameter in list(module._parameters.items()):
            if parameter is not None and id(parameter) in replacement:
                module._parameters[name] = replacement[id(parameter)]
    embedding.num_embeddings = len(index)
    if embedding.padding_idx is not None:
        embedding.padding_idx = int((index == embedding.padding_idx).nonzero()[0, 0])
    if output is not None:
        output.out_features = len(index)


def _update_config(config, old_tokenizer, new_tokenizer) -> None:
    config.vocab_size = len(new_tokenizer)
    for key in ("pad_token_id", "bos_token_id", "eos_token_id", "sep_token_id", "cls_token_id", "mask_token_id"):
        old_id = getattr(config, key, None)
        if isinstance(old_id, int):
            setattr(config, key, new_tokenizer.convert_tokens_to_ids(old_tokenizer.convert_ids_to_tokens(old_id)))
