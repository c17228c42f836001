"""Data: the multilingual distillation corpus (partitions, sampling, packing, resume) and the XNLI / WikiANN loaders."""

from .corpus import (
    DEFAULT_CORPUS,
    CorpusPlan,
    count_tokens_by_language,
    load_distillation_corpus,
    mlm_data_collator,
    pack_for_mlm,
    plan_corpus,
    sampling_probabilities,
)
from .resume import ResumableStream, StreamCheckpointCallback
from .tasks import (
    EVAL_LANGUAGES,
    WIKIANN_TAGS,
    XNLI_LABELS,
    load_wikiann,
    load_xnli,
    tokenize_and_align_labels,
    tokenize_xnli,
)
from .tokenizer import train_tokenizer

__all__ = [
    "DEFAULT_CORPUS",
    "EVAL_LANGUAGES",
    "WIKIANN_TAGS",
    "XNLI_LABELS",
    "CorpusPlan",
    "ResumableStream",
    "StreamCheckpointCallback",
    "count_tokens_by_language",
    "load_distillation_corpus",
    "load_wikiann",
    "load_xnli",
    "mlm_data_collator",
    "pack_for_mlm",
    "plan_corpus",
    "sampling_probabilities",
    "tokenize_and_align_labels",
    "tokenize_xnli",
    "train_tokenizer",
]
