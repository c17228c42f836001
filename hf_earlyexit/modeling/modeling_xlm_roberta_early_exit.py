"""XLM-R early-exit models: the generic machinery of ``early_exit.py`` on ``XLMRobertaModel``.

Parameter names match ``XLMRobertaForSequenceClassification`` / ``XLMRobertaForTokenClassification`` (backbone under
``roberta.``, final head under ``classifier.``), so their checkpoints load with only ``exit_heads.*`` new.
"""

from __future__ import annotations

import torch
from transformers.models.xlm_roberta.modeling_xlm_roberta import (
    XLMRobertaClassificationHead,
    XLMRobertaModel,
    XLMRobertaPreTrainedModel,
)

from .configuration_early_exit import XLMRobertaEarlyExitConfig
from .early_exit import EarlyExitForSequenceClassificationMixin, EarlyExitForTokenClassificationMixin, link_auto_classes


class XLMRobertaForEarlyExit(EarlyExitForSequenceClassificationMixin, XLMRobertaPreTrainedModel):
    """XLM-R sequence classifier with per-example batched early exit (final head: ``XLMRobertaClassificationHead``)."""

    config_class = XLMRobertaEarlyExitConfig

    def __init__(self, config: XLMRobertaEarlyExitConfig):
        super().__init__(config)
        self.roberta = XLMRobertaModel(config, add_pooling_layer=False)
        self.classifier = XLMRobertaClassificationHead(config)
        self.init_heads(config)
        self.post_init()

    def final_head(self, last_hidden_state: torch.Tensor) -> torch.Tensor:
        return self.classifier(last_hidden_state)


class XLMRobertaForEarlyExitTokenClassification(EarlyExitForTokenClassificationMixin, XLMRobertaPreTrainedModel):
    """XLM-R token classifier with per-sequence batched early exit (final head: dropout + linear)."""

    config_class = XLMRobertaEarlyExitConfig

    def __init__(self, config: XLMRobertaEarlyExitConfig):
        super().__init__(config)
        self.roberta = XLMRobertaModel(config, add_pooling_layer=False)
        self.init_heads(config)
        self.post_init()


link_auto_classes(XLMRobertaEarlyExitConfig, XLMRobertaForEarlyExit, XLMRobertaForEarlyExitTokenClassification)
