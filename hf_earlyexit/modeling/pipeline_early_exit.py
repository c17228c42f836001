"""Early-exit pipelines: transformers' text and token classification pipelines, plus ``exit_threshold`` per call and
``exit_layer`` in every result.

Batched calls (``batch_size=``) hand the padded batch to the model once, so it goes through the model's batched exit
loop. ``Pipeline.save_pretrained`` copies this file next to the weights (``custom_pipelines`` in config.json), so,
like the rest of this folder, it imports only same-folder modules and transformers. Registration with
``transformers.pipeline`` and the save helper live in ``hf_earlyexit/pipelines.py``.
"""

from __future__ import annotations

from transformers import TextClassificationPipeline, TokenClassificationPipeline
from transformers.pipelines.token_classification import AggregationStrategy

from .criteria import per_exit_thresholds

# Keys the token pipeline's preprocess adds for its postprocess; everything else in a chunk is a model input.
TOKEN_PIPELINE_KEYS = ("special_tokens_mask", "offset_mapping", "sentence", "is_last", "word_ids", "word_to_chars_map")


class EarlyExitPipelineMixin:
    """What both early-exit pipelines add to their transformers parent (put it first in the bases)."""

    def check_model_type(self, supported_models):
        # The parents check against transformers' built-in model list, which cannot name early-exit models (they
        # only log); what this pipeline really needs is a model that accepts `exit_threshold` and reports exits.
        config = self.model.config
        if getattr(config, "exit_layers", None) is None:
            raise ValueError(
                f"{type(self).__name__} got {type(self.model).__name__} (model_type={config.model_type!r}); "
                "expected an early-exit model (a config with exit_layers)"
            )

    def _sanitize_parameters(self, exit_threshold=None, **kwargs):
        preprocess_params, forward_params, postprocess_params = super()._sanitize_parameters(**kwargs)
        if exit_threshold is not None:
            # Validated here so a bad value fails before any input is tokenized or any layer runs.
            per_exit_thresholds(exit_threshold, len(self.model.config.exit_layers))
            forward_params["exit_threshold"] = exit_threshold
        return preprocess_params, forward_params, postprocess_params


class EarlyExitTextClassificationPipeline(EarlyExitPipelineMixin, TextClassificationPipeline):
    """``TextClassificationPipeline`` (single texts, ``{"text": ..., "text_pair": ...}`` pairs, ``top_k``,
    ``function_to_apply``) whose results also carry ``exit_layer`` (1-based layer where the input left).

    ``exit_threshold`` (float or one per exit layer) overrides ``config.exit_threshold`` per call or per pipeline:
    ``0.0`` runs full depth, a value above 1 leaves at the first exit.
    """

    def _forward(self, model_inputs, exit_threshold=None):
        return super()._forward({**model_inputs, "exit_threshold": exit_threshold})

    def postprocess(self, model_outputs, **postprocess_params):
        result = super().postprocess(model_outputs, **postprocess_params)
        exit_layer = int(model_outputs["exit_layer"][0])
        if isinstance(result, dict):
            return {**result, "exit_layer": exit_layer}
        return [{**label_score, "exit_layer": exit_layer} for label_score in result]


class EarlyExitTokenClassificationPipeline(EarlyExitPipelineMixin, TokenClassificationPipeline):
    """``TokenClassificationPipeline`` (``aggregation_strategy``, ``ignore_labels``, ``stride``, pre-split words)
    whose tokens / entities also carry ``exit_layer``: a token's own exit layer, and for an entity grouped from
    several tokens the deepest of theirs (the depth its decision needed).
    """

    def _forward(self, model_inputs, exit_threshold=None):
        pipeline_fields = {key: model_inputs.pop(key, None) for key in TOKEN_PIPELINE_KEYS}
        output = self.model(**model_inputs, exit_threshold=exit_threshold)
        return {"logits": output.logits, "exit_layer": output.exit_layer, **pipeline_fields, **model_inputs}

    def postprocess(self, all_outputs, aggregation_strategy=AggregationStrategy.NONE, ignore_labels=None):
        # The parent's postprocess per chunk, so entities are built while that chunk's exit layers are known;
        # merging the chunks' entities afterwards is what the parent does for several chunks (stride) anyway.
        first = all_outputs[0]
        entities = []
        for chunk in all_outputs:
            # Only the first chunk carries the sentence and the word map; the parent reads them from there.
            chunk = {**chunk, "sentence": first["sentence"], "word_to_chars_map": first.get("word_to_chars_map")}
            self._token_exit_layers = chunk["exit_layer"][0].tolist()
            try:
                chunk_entities = super().postprocess([chunk], aggregation_strategy, ignore_labels)
                for entity in chunk_entities:
                    entity.setdefault("exit_layer", self._exit_layer_of(entity))
            finally:
                del self._token_exit_layers
            entities.extend(chunk_entities)
        return self.aggregate_overlapping_entities(entities) if len(all_outputs) > 1 else entities

    # The parent builds words (`aggregate_word`) and entity groups (`group_sub_entities`) as new dicts from the token
    # dicts they merge; these hooks carry the deepest exit layer of the merged tokens into them.
    def aggregate_word(self, entities: list[dict], aggregation_strategy: AggregationStrategy) -> dict:
        word = super().aggregate_word(entities, aggregation_strategy)
        word["exit_layer"] = max(self._exit_layer_of(entity) for entity in entities)
        return word

    def group_sub_entities(self, entities: list[dict]) -> dict:
        group = super().group_sub_entities(entities)
        group["exit_layer"] = max(self._exit_layer_of(entity) for entity in entities)
        return group

    def _exit_layer_of(self, entity: dict) -> int:
        """A token's exit layer from its index in the current chunk, or the one already merged into a word."""
        return entity["exit_layer"] if "exit_layer" in entity else self._token_exit_layers[entity["index"]]
