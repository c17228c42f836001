"""Early-exit configurations, models, outputs and criteria; importing this registers them with the Auto classes.

The files here import each other only with same-folder relative imports and otherwise only torch / transformers,
because ``save_pretrained`` copies them next to the weights as remote code.
"""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
)

from .configuration_early_exit import BertEarlyExitConfig, EarlyExitConfigMixin, XLMRobertaEarlyExitConfig
from .criteria import max_probability, normalized_entropy, select_exits
from .early_exit import (
    EarlyExitForSequenceClassificationMixin,
    EarlyExitForTokenClassificationMixin,
    EarlyExitMixin,
    EarlyExitSequenceClassifierOutput,
    EarlyExitTokenClassifierOutput,
    ExitHead,
)
from .modeling_bert_early_exit import BertForEarlyExit, BertForEarlyExitTokenClassification
from .modeling_xlm_roberta_early_exit import XLMRobertaForEarlyExit, XLMRobertaForEarlyExitTokenClassification

EARLY_EXIT_FAMILIES = (
    (XLMRobertaEarlyExitConfig, XLMRobertaForEarlyExit, XLMRobertaForEarlyExitTokenClassification),
    (BertEarlyExitConfig, BertForEarlyExit, BertForEarlyExitTokenClassification),
)


def register_auto_classes() -> None:
    """AutoConfig; AutoModelForSequenceClassification → sequence model, AutoModelForTokenClassification → token twin;
    AutoModel → the task class the checkpoint was saved from (transformers picks among a tuple by
    ``config.architectures``; a fresh config, which has none, gets the sequence model)."""
    for config_class, sequence_class, token_class in EARLY_EXIT_FAMILIES:
        AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
        AutoModel.register(config_class, (sequence_class, token_class), exist_ok=True)
        AutoModelForSequenceClassification.register(config_class, sequence_class, exist_ok=True)
        AutoModelForTokenClassification.register(config_class, token_class, exist_ok=True)


register_auto_classes()

__all__ = [
    "BertEarlyExitConfig",
    "BertForEarlyExit",
    "BertForEarlyExitTokenClassification",
    "EARLY_EXIT_FAMILIES",
    "EarlyExitConfigMixin",
    "EarlyExitForSequenceClassificationMixin",
    "EarlyExitForTokenClassificationMixin",
    "EarlyExitMixin",
    "EarlyExitSequenceClassifierOutput",
    "EarlyExitTokenClassifierOutput",
    "ExitHead",
    "XLMRobertaEarlyExitConfig",
    "XLMRobertaForEarlyExit",
    "XLMRobertaForEarlyExitTokenClassification",
    "max_probability",
    "normalized_entropy",
    "register_auto_classes",
    "select_exits",
]
