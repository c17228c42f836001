"""hf_earlyexit: intermediate-layer distillation and batched early exit for multilingual encoders.

Importing the package registers the early-exit configs and models with the transformers Auto classes.
"""

from .evaluation.flops import flops_per_example, mean_flops
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

__version__ = "0.1.0"

__all__ = [
    "BertEarlyExitConfig",
    "BertForEarlyExit",
    "BertForEarlyExitTokenClassification",
    "EarlyExitSequenceClassifierOutput",
    "EarlyExitTokenClassifierOutput",
    "XLMRobertaEarlyExitConfig",
    "XLMRobertaForEarlyExit",
    "XLMRobertaForEarlyExitTokenClassification",
    "__version__",
    "flops_per_example",
    "max_probability",
    "mean_flops",
    "normalized_entropy",
    "select_exits",
]
