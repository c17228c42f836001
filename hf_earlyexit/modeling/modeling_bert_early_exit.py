"""BERT early-exit models: the generic machinery of ``early_exit.py`` on ``BertModel``.

Parameter names match ``BertForSequenceClassification`` (backbone and its pooler under ``bert.``, ``classifier.``)
and ``BertForTokenClassification``, so their checkpoints load with only ``exit_heads.*`` new.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.models.bert.modeling_bert import BertModel, BertPreTrainedModel

from .configuration_early_exit import BertEarlyExitConfig
from .early_exit import (
    EarlyExitForSequenceClassificationMixin,
    EarlyExitForTokenClassificationMixin,
    classifier_dropout,
    link_auto_classes,
)


class BertForEarlyExit(EarlyExitForSequenceClassificationMixin, BertPreTrainedModel):
    """BERT sequence classifier with per-example batched early exit (final head: pooler + dropout + linear)."""

    config_class = BertEarlyExitConfig

    def __init__(self, config: BertEarlyExitConfig):
        super().__init__(config)
        self.bert = BertModel(config)
        self.dropout = nn.Dropout(classifier_dropout(config))
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.init_heads(config)
        self.post_init()

    def final_head(self, last_hidden_state: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.bert.pooler(last_hidden_state)))

    def final_logits(self, backbone_outputs, attention_mask: torch.Tensor | None) -> torch.Tensor:
        # `BertModel`'s forward already ran the pooler on the first token: with pooling="first" that is the head's
        # input, used as `BertForSequenceClassification` uses it (one pooler call, the same numbers). With
        # pooling="mean" the pooler must read the mean vector, so it runs again on it; the backbone's call on the
        # first token (one H×H product per example, ~0.06% of a layer) is then spent for nothing.
        if self.config.pooling == "first" and backbone_outputs.pooler_output is not None:
            return self.classifier(self.dropout(backbone_outputs.pooler_output))
        return super().final_logits(backbone_outputs, attention_mask)


class BertForEarlyExitTokenClassification(EarlyExitForTokenClassificationMixin, BertPreTrainedModel):
    """BERT token classifier with per-sequence batched early exit (final head: dropout + linear)."""

    config_class = BertEarlyExitConfig

    def __init__(self, config: BertEarlyExitConfig):
        super().__init__(config)
        self.bert = BertModel(config, add_pooling_layer=False)
        self.init_heads(config)
        self.post_init()


link_auto_classes(BertEarlyExitConfig, BertForEarlyExit, BertForEarlyExitTokenClassification)
