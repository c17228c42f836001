"""Train a small XLM-R-style tokenizer offline (no Hub access): tests, the demo and pipelines all use it."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, pre_tokenizers, trainers
from tokenizers.models import Unigram
from transformers import XLMRobertaTokenizer

# XLM-R's fairseq order: <s>=0, <pad>=1, </s>=2, <unk>=3, ..., <mask>=last id.
LEADING_SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>")
MASK_TOKEN = "<mask>"
CHARACTER_COVERAGE = 0.9995  # sentencepiece's default for large alphabets
REQUIRED_CHAR_SCORE_STEP = 1e-4  # the Unigram trainer's score step between the characters it adds unscored
UNSCORED_SPAN = 0.5  # ... all of them within this much of the lowest score (0.5 below the lowest scored piece)


def train_tokenizer(texts: Iterable[str], vocab_size: int = 1000) -> XLMRobertaTokenizer:
    """A SentencePiece-Unigram tokenizer trained on `texts`, wrapped as transformers' fast XLM-R tokenizer.

    Same pre-tokenisation (whitespace split + Metaspace "▁"), special tokens and ids, and pair template
    `<s> A </s></s> B </s>` as `xlm-roberta-base`, so everything downstream treats it like the real one.
    `vocab_size` is an upper bound: Unigram stops earlier when a small corpus has fewer useful pieces.
    """
    if vocab_size < len(LEADING_SPECIAL_TOKENS) + 2:
        raise ValueError(f"vocab_size={vocab_size} is too small: expected at least {len(LEADING_SPECIAL_TOKENS) + 2}")
    texts = [text for text in texts if text and not text.isspace()]
    if not texts:
        raise ValueError("train_tokenizer got no non-empty text: expected an iterable of strings")
    texts = _restrict_to_alphabet(texts, max_chars=vocab_size // 2)
    backend = Tokenizer(Unigram())
    # Same pre-tokenizer as XLMRobertaTokenizer builds, so pieces learnt here are the pieces it will look up.
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")]
    )
    backend.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(
        vocab_size=vocab_size - 1,  # <mask> is appended last, as in XLM-R
        special_tokens=list(LEADING_SPECIAL_TOKENS),
        unk_token="<unk>",
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer=trainer)
    # The Unigram scores (log-probabilities) are only reachable through the serialised model.
    vocab = [(piece, score) for piece, score in json.loads(backend.to_str())["model"]["vocab"]]
    return XLMRobertaTokenizer(vocab=_stable_order(vocab) + [(MASK_TOKEN, 0.0)], model_max_length=512)


def _stable_order(vocab: list[tuple[str, float]]) -> list[tuple[str, float]]:
    """The learnt pieces in an order that does not change run to run: the specials first, then by score, then piece.

    The trainer returns the same pieces every run, but in orders taken from hash sets and maps that Rust seeds
    afresh in every process: (1) it sums scores in that order, so they differ in the last bits and ties fall either
    way; (2) the characters it must keep but did not score get made-up scores below every scored piece (the lowest
    score, then steps of 1e-4 up from it), dealt out in that order. Scores rounded to float32 precision (what
    SentencePiece stores) fix (1); dealing the made-up scores out in code-point order fixes (2). Same texts, same ids.
    """
    specials = len(LEADING_SPECIAL_TOKENS)
    pieces = [(piece, float(f"{score:.7g}")) for piece, score in vocab[specials:]]
    if pieces:
        lowest = min(score for _, score in pieces)
        unscored = [
            index
            for index, (piece, score) in enumerate(pieces)
            if len(piece) == 1 and score < lowest + UNSCORED_SPAN and _on_step(score - lowest)
        ]
        characters = sorted(pieces[index][0] for index in unscored)
        scores = sorted((pieces[index][1] for index in unscored), reverse=True)
        for index, character, score in zip(unscored, characters, scores):
            pieces[index] = (character, score)
    return vocab[:specials] + sorted(pieces, key=lambda item: (-item[1], item[0]))


def _on_step(offset: float) -> bool:
    steps = offset / REQUIRED_CHAR_SCORE_STEP
    return abs(steps - round(steps)) < 1e-2


def _restrict_to_alphabet(texts: list[str], max_chars: int) -> list[str]:
    """Blank out rare characters before training, like sentencepiece's character_coverage.

    The Unigram trainer must fit every training character into the vocabulary, which a 1000-piece vocabulary over
    100+ scripts cannot; characters left out are encoded as <unk> later, as in XLM-R.
    """
    counts = Counter(char for text in texts for char in text if not char.isspace())
    total = sum(counts.values())
    kept, covered = set(), 0
    for char, count in counts.most_common(max_chars):
        if covered >= CHARACTER_COVERAGE * total:
            break
        kept.add(char)
        covered += count
    dropped = {ord(char): " " for char in counts if char not in kept}
    return [text.translate(dropped) for text in texts] if dropped else texts
