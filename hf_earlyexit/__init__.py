"""hf_earlyexit: intermediate-layer distillation and batched early exit for multilingual encoders.

Importing the package registers the early-exit configs and models with the transformers Auto classes and the
early-exit pipelines with ``transformers.pipeline``.
"""

from .deploy import OnnxEarlyExitRunner, export_onnx
from .distillation import DistillationArguments, DistillationTrainer
from .evaluation.flops import flops_per_example, flops_token_exit, mean_flops
from .hub import EarlyExitCardData, HubPushError, create_model_card, push_to_hub
from .modeling import (
    BertEarlyExitConfig,
    BertForEarlyExit,
    BertForEarlyExitTokenClassification,
    EarlyExitSequenceClassifierOutput,
    EarlyExitTokenClassifierOutput,
    XLMRobertaEarlyExitConfig,
    XLMRobertaForEarlyExit,
    XLMRobertaForEarlyExitTokenClassification,
    max_probability,
    normalized_entropy,
    select_exits,
)
from .pipelines import (
    EarlyExitTextClassificationPipeline,
    EarlyExitTokenClassificationPipeline,
    register_pipelines,
    save_pretrained_with_pipeline,
)
from .training import EarlyExitTrainer, EarlyExitTrainingArguments
from .vocab import trim_vocabulary

# Loaded on first use: `python -m hf_earlyexit.weights` must find the module not yet imported (runpy warns and runs
# a second copy otherwise).
_LAZY = {"WeightsError": ".weights", "multilingual_e5_small": ".weights"}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__version__ = "0.1.0"

__all__ = [
    "BertEarlyExitConfig",
    "BertForEarlyExit",
    "BertForEarlyExitTokenClassification",
    "DistillationArguments",
    "DistillationTrainer",
    "EarlyExitCardData",
    "EarlyExitSequenceClassifierOutput",
    "EarlyExitTextClassificationPipeline",
    "EarlyExitTokenClassificationPipeline",
    "EarlyExitTokenClassifierOutput",
    "EarlyExitTrainer",
    "EarlyExitTrainingArguments",
    "HubPushError",
    "OnnxEarlyExitRunner",
    "WeightsError",
    "XLMRobertaEarlyExitConfig",
    "XLMRobertaForEarlyExit",
    "XLMRobertaForEarlyExitTokenClassification",
    "__version__",
    "create_model_card",
    "export_onnx",
    "flops_per_example",
    "flops_token_exit",
    "max_probability",
    "mean_flops",
    "multilingual_e5_small",
    "normalized_entropy",
    "push_to_hub",
    "register_pipelines",
    "save_pretrained_with_pipeline",
    "select_exits",
    "trim_vocabulary",
]
