"""Linear probe of a frozen encoder on XNLI: the cheap, real per-partition evaluation of distillation.

Premise and hypothesis are encoded separately by the frozen checkpoint (its last layer pooled as the task config's
``pooling`` says: the mean over the real tokens for e5-style encoders), the pair becomes ``[u, v, |u - v|, u * v]``
(the SentEval / InferSent pair features) and a multinomial scikit-learn logistic regression (its regulariser chosen by cross-validation on the training pairs)
is fitted on the
English NLI training pairs of the config, then scored zero-shot on XNLI dev per language. Nothing of the encoder
trains, so the accuracy measures the representation each partition's distillation left behind, at a few seconds of
encoding instead of a fine-tune (scikit-learn is already installed: seqeval depends on it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoModel, AutoTokenizer

from ..modeling.early_exit import pool_sequence

# Regulariser strengths tried by 3-fold cross-validation on the English training pairs (never on XNLI dev): with
# 1,536 features and ~1,000 pairs an unregularised fit learns the training pairs by heart.
PROBE_CS = (0.001, 0.01, 0.1, 1.0)


@torch.inference_mode()
def encode_texts(encoder, tokenizer, texts: list[str], pooling: str, max_length: int, batch_size: int) -> np.ndarray:
    """One pooled last-layer vector per text, ``(len(texts), hidden)``; batched by length so padding stays small."""
    order = np.argsort([len(text) for text in texts], kind="stable")
    vectors = np.empty((len(texts), encoder.config.hidden_size), dtype=np.float32)
    for start in range(0, len(texts), batch_size):
        index = order[start : start + batch_size]
        batch = tokenizer(
            [texts[i] for i in index], truncation=True, max_length=max_length, padding=True, return_tensors="pt"
        )
        hidden = encoder(**batch).last_hidden_state
        vectors[index] = pool_sequence(hidden, batch["attention_mask"], pooling)[:, 0].float().numpy()
    return vectors


def pair_features(encoder, tokenizer, dataset, pooling: str, max_length: int, batch_size: int) -> np.ndarray:
    """``[u, v, |u - v|, u * v]`` of each (premise, hypothesis) row."""
    premises, hypotheses = list(dataset["premise"]), list(dataset["hypothesis"])
    vectors = encode_texts(encoder, tokenizer, premises + hypotheses, pooling, max_length, batch_size)
    u, v = vectors[: len(premises)], vectors[len(premises) :]
    return np.concatenate([u, v, np.abs(u - v), u * v], axis=1)


def linear_probe_xnli(checkpoint: str | Path, config_path: str | Path) -> dict[str, Any]:
    """Probe ``checkpoint`` with the XNLI task config ``config_path`` (train_files / max_train_samples for the
    probe's training pairs, eval_languages / max_eval_samples / eval_sample_seed for the evaluated rows, pooling,
    max_seq_length, per_device_eval_batch_size, seed); fine-tuning fields are ignored. Returns
    ``{"metric_by_language": {lang: accuracy}, "train_accuracy": float, "num_train": int, "num_eval": int}``."""
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from ..cli import parse_config
    from ..finetune import TASK_ARGUMENTS, load_task_data

    model_args, data_args, _, training_args = parse_config(
        TASK_ARGUMENTS,
        [str(config_path), "--model_name_or_path", str(checkpoint), "--output_dir", str(Path(checkpoint) / "probe")],
    )
    train_raw, eval_raw = load_task_data("xnli", data_args)
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    encoder = AutoModel.from_pretrained(checkpoint, add_pooling_layer=False).eval()
    pooling = model_args.pooling or "first"
    encode = dict(
        encoder=encoder,
        tokenizer=tokenizer,
        pooling=pooling,
        max_length=data_args.max_seq_length,
        batch_size=training_args.per_device_eval_batch_size,
    )
    train_x, train_y = pair_features(dataset=train_raw, **encode), np.asarray(train_raw["label"])
    probe = make_pipeline(
        StandardScaler(), LogisticRegressionCV(Cs=list(PROBE_CS), cv=3, max_iter=2000, random_state=training_args.seed)
    )
    probe.fit(train_x, train_y)
    accuracy = {
        lang: float(probe.score(pair_features(dataset=dataset, **encode), np.asarray(dataset["label"])))
        for lang, dataset in eval_raw.items()
    }
    return {
        "metric_by_language": accuracy,
        "train_accuracy": float(probe.score(train_x, train_y)),
        "C": float(probe[-1].C_[0]),
        "num_train": len(train_raw),
        "num_eval": min(len(dataset) for dataset in eval_raw.values()),
        "pooling": pooling,
    }
