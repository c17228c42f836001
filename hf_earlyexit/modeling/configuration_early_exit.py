"""Early-exit configurations: the encoder's own config plus the exit fields, validated when the config is built."""

from __future__ import annotations

from dataclasses import dataclass

from transformers import BertConfig, XLMRobertaConfig

from .criteria import EXIT_CRITERIA, per_exit_thresholds

EXIT_GRANULARITIES = ("sequence", "token")
EXIT_HEADS = ("pooler", "linear")
EXIT_LOSS_WEIGHTS = ("linear", "uniform")
POOLINGS = ("first", "mean")


@dataclass(repr=False)
class EarlyExitConfigMixin:
    """Exit fields shared by every early-exit config (put it before the encoder config in the bases).

    Attributes:
        exit_layers: 1-based layers carrying an exit, increasing; ``None`` means every layer. The last layer is
            always an exit (appended when missing) and uses the encoder's standard classification head.
        exit_criterion: ``"entropy"``, ``"patience"`` or ``"max_prob"`` (see ``criteria.py`` for the semantics).
        exit_threshold: one float, or one per exit layer; an example leaves at the first exit where its
            uncertainty is strictly below it. ``0.0`` never leaves early; above 1 leaves at the first exit.
        exit_patience: PABEE patience (consecutive exits with an unchanged prediction), >= 1.
        exit_head: intermediate head design, ``"pooler"`` (dense + tanh + linear, like the final XLM-R head) or
            ``"linear"``; ``None`` picks per task: ``"pooler"`` for sequences (it runs on one token, ~0.06% of a
            layer) and ``"linear"`` for tokens (a per-token dense would cost ~8% of a layer at 128 tokens).
        exit_loss_weights: weights of the joint loss over exits: ``"linear"`` (PABEE: weight = layer number),
            ``"uniform"``, or an explicit list of one non-negative float per exit.
        exit_granularity: ``"sequence"`` (a whole sequence leaves) or ``"token"`` (each token leaves on its own, token classification only; see ``token_exit.py``).
        exit_window: context window for per-token exit (token granularity), >= 1.
        pooling: what the sequence heads (every exit head and the final head) read: ``"first"`` (the ``<s>`` /
            ``[CLS]`` token, as XLM-R and BERT classifiers do) or ``"mean"`` (the mean over the real tokens, by the
            attention mask: the sentence representation of encoders trained with mean pooling, such as e5, whose
            first token does not summarise the input, least of all in early layers). Sequence models only: token
            heads read each token.
    """

    # What `Trainer.predict` / `evaluate` leave out of `predictions`, so that they are the logits alone and a standard
    # `compute_metrics` (`np.argmax(p.predictions, -1)`) works; `predict(..., ignore_keys=[])` adds `exit_layer`.
    keys_to_ignore_at_inference = ["exit_layer", "exit_logits", "hidden_states", "attentions"]

    exit_layers: list[int] | None = None
    exit_criterion: str = "entropy"
    exit_threshold: float | list[float] = 0.0
    exit_patience: int = 1
    exit_head: str | None = None
    exit_loss_weights: str | list[float] = "linear"
    exit_granularity: str = "sequence"
    exit_window: int = 1
    pooling: str = "first"

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if hasattr(self.exit_threshold, "tolist"):  # numpy / torch values: stored as Python numbers, as JSON needs
            self.exit_threshold = self.exit_threshold.tolist()
        self.exit_layers = resolve_exit_layers(self.exit_layers, self.num_hidden_layers)
        validate_exit_fields(self)


def resolve_exit_layers(exit_layers: list[int] | None, num_hidden_layers: int) -> list[int]:
    if exit_layers is None:
        return list(range(1, num_hidden_layers + 1))
    if not isinstance(exit_layers, (list, tuple)) or not all(
        isinstance(x, int) and not isinstance(x, bool) for x in exit_layers
    ):
        raise ValueError(f"exit_layers={exit_layers!r}; expected a list of 1-based layer numbers (ints)")
    layers = list(exit_layers)
    bad = [x for x in layers if not 1 <= x <= num_hidden_layers]
    if bad:
        raise ValueError(f"exit_layers={layers} has layers {bad} outside 1..{num_hidden_layers} (num_hidden_layers)")
    if len(set(layers)) != len(layers):
        raise ValueError(f"exit_layers={layers} has duplicates; expected each layer once")
    if layers != sorted(layers):
        raise ValueError(f"exit_layers={layers} is not sorted; expected increasing layer numbers")
    if not layers or layers[-1] != num_hidden_layers:
        layers.append(num_hidden_layers)
    return layers


def fit_exit_layers(config) -> None:
    """Re-resolve ``exit_layers`` for the config's current depth: ``from_pretrained(..., num_hidden_layers=k)`` sets
    the depth after the saved exit layers were resolved for the old one. Exits deeper than the model are dropped (the
    last layer stays an exit); fields that then no longer fit (a per-exit list) fail in one line."""
    if config.exit_layers and config.exit_layers[-1] == config.num_hidden_layers:
        return
    config.exit_layers = resolve_exit_layers(
        [layer for layer in config.exit_layers or () if layer <= config.num_hidden_layers] or None,
        config.num_hidden_layers,
    )
    validate_exit_fields(config)


def validate_exit_fields(config) -> None:
    """One-line ValueErrors for every exit field; ``config.exit_layers`` must already be resolved."""
    num_exits = len(config.exit_layers)
    if config.exit_criterion not in EXIT_CRITERIA:
        raise ValueError(f"exit_criterion={config.exit_criterion!r}; expected one of {EXIT_CRITERIA}")
    per_exit_thresholds(config.exit_threshold, num_exits)
    patience = config.exit_patience
    if not isinstance(patience, int) or isinstance(patience, bool) or patience < 1:
        raise ValueError(f"exit_patience={patience!r}; expected an int >= 1")
    if config.num_labels < 2:
        raise ValueError(
            f"num_labels={config.num_labels}; early exit (criterion {config.exit_criterion!r}) needs a "
            "classification head with num_labels >= 2"
        )
    if config.exit_head is not None and config.exit_head not in EXIT_HEADS:
        raise ValueError(f"exit_head={config.exit_head!r}; expected None (task default) or one of {EXIT_HEADS}")
    if config.exit_granularity not in EXIT_GRANULARITIES:
        raise ValueError(f"exit_granularity={config.exit_granularity!r}; expected one of {EXIT_GRANULARITIES}")
    window = config.exit_window
    if not isinstance(window, int) or isinstance(window, bool) or window < 1:
        raise ValueError(f"exit_window={window!r}; expected an int >= 1")
    if config.pooling not in POOLINGS:
        raise ValueError(f"pooling={config.pooling!r}; expected one of {POOLINGS}")
    exit_loss_weights(config)


def exit_loss_weights(config) -> list[float]:
    """The joint-loss weight of each exit (not normalised), in exit_layers order."""
    weights = config.exit_loss_weights
    if weights == "linear":
        return [float(layer) for layer in config.exit_layers]
    if weights == "uniform":
        return [1.0] * len(config.exit_layers)
    if isinstance(weights, str) or not isinstance(weights, (list, tuple)):
        raise ValueError(f"exit_loss_weights={weights!r}; expected one of {EXIT_LOSS_WEIGHTS} or a list of floats")
    if len(weights) != len(config.exit_layers) or not all(w >= 0 for w in weights) or not sum(weights) > 0:
        raise ValueError(
            f"exit_loss_weights={list(weights)}; expected {len(config.exit_layers)} non-negative floats (one per exit "
            f"layer {config.exit_layers}) with a positive sum"
        )
    return [float(w) for w in weights]


class XLMRobertaEarlyExitConfig(EarlyExitConfigMixin, XLMRobertaConfig):
    """`XLMRobertaConfig` plus the exit fields of `EarlyExitConfigMixin`."""

    model_type = "xlm-roberta-early-exit"


class BertEarlyExitConfig(EarlyExitConfigMixin, BertConfig):
    """`BertConfig` plus the exit fields of `EarlyExitConfigMixin`."""

    model_type = "bert-early-exit"
