"""The early-exit pipelines registered with ``transformers.pipeline``, and saving a folder that carries them.

Importing this module (``import hf_earlyexit`` does) registers
``pipeline("early-exit-text-classification", ...)`` and ``pipeline("early-exit-token-classification", ...)``.
The pipeline classes live in ``modeling/pipeline_early_exit.py`` because they are saved as remote code with the
model: ``save_pretrained_with_pipeline`` writes a folder that ``pipeline(task, model=folder_or_hub_id,
trust_remote_code=True)`` runs with or without this package installed.
"""

from __future__ import annotations

import os

from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification, pipeline
from transformers.pipelines import PIPELINE_REGISTRY, Pipeline

from .modeling.pipeline_early_exit import (
    EarlyExitPipelineMixin,
    EarlyExitTextClassificationPipeline,
    EarlyExitTokenClassificationPipeline,
)

TEXT_CLASSIFICATION_TASK = "early-exit-text-classification"
TOKEN_CLASSIFICATION_TASK = "early-exit-token-classification"

# The Auto classes, not the early-exit classes, are recorded: a folder's `custom_pipelines` names its model classes
# as attributes of `transformers`, and the Auto classes resolve to the early-exit ones (registered or remote code).
EARLY_EXIT_PIPELINES = (
    (TEXT_CLASSIFICATION_TASK, EarlyExitTextClassificationPipeline, AutoModelForSequenceClassification),
    (TOKEN_CLASSIFICATION_TASK, EarlyExitTokenClassificationPipeline, AutoModelForTokenClassification),
)


def register_pipelines() -> None:
    """Register both early-exit tasks with transformers' pipeline registry; calling it again changes nothing."""
    for task, pipeline_class, auto_model_class in EARLY_EXIT_PIPELINES:
        if PIPELINE_REGISTRY.supported_tasks.get(task, {}).get("impl") is pipeline_class:
            continue  # re-registering would only log an "overwriting" warning
        PIPELINE_REGISTRY.register_pipeline(task, pipeline_class=pipeline_class, pt_model=auto_model_class, type="text")


def early_exit_task(model) -> str:
    """The early-exit pipeline task of a model: token classification for per-token models, else text."""
    if getattr(model.config, "exit_layers", None) is None:
        raise ValueError(
            f"model is {type(model).__name__} (model_type={model.config.model_type!r}); expected an early-exit model "
            "(a config with exit_layers)"
        )
    return TOKEN_CLASSIFICATION_TASK if getattr(model, "per_token", False) else TEXT_CLASSIFICATION_TASK


def save_pretrained_with_pipeline(model, tokenizer, save_directory: str | os.PathLike, **kwargs) -> Pipeline:
    """Save model, tokenizer, remote code and the early-exit pipeline of the model's task into ``save_directory``.

    The folder then loads with ``pipeline(task, model=save_directory, trust_remote_code=True)`` with or without
    hf_earlyexit installed (transformers takes the pipeline saved in a folder's ``custom_pipelines`` over a registered
    one, and asks for ``trust_remote_code=True`` for it even when the same class is installed). ``kwargs`` go to the
    model's and tokenizer's ``save_pretrained``. Returns the pipeline that was saved.
    """
    task = early_exit_task(model)
    early_exit_pipeline = pipeline(task, model=model, tokenizer=tokenizer)
    early_exit_pipeline.save_pretrained(save_directory, **kwargs)
    return early_exit_pipeline


register_pipelines()

__all__ = [
    "EARLY_EXIT_PIPELINES",
    "EarlyExitPipelineMixin",
    "EarlyExitTextClassificationPipeline",
    "EarlyExitTokenClassificationPipeline",
    "TEXT_CLASSIFICATION_TASK",
    "TOKEN_CLASSIFICATION_TASK",
    "early_exit_task",
    "register_pipelines",
    "save_pretrained_with_pipeline",
]
