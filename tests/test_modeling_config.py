"""Early-exit configs: defaults, resolution and one-line errors at config time."""

import pytest

from hf_earlyexit import BertEarlyExitConfig, XLMRobertaEarlyExitConfig

SIZES = dict(vocab_size=50, hidden_size=32, num_hidden_layers=4, num_attention_heads=4, intermediate_size=64)


@pytest.mark.parametrize("config_class", [XLMRobertaEarlyExitConfig, BertEarlyExitConfig])
def test_defaults_exit_at_every_layer_and_never_early(config_class):
    config = config_class(**SIZES)
    assert config.exit_layers == [1, 2, 3, 4]
    assert (config.exit_criterion, config.exit_threshold, config.exit_patience) == ("entropy", 0.0, 1)
    assert (config.exit_head, config.exit_loss_weights, config.exit_granularity, config.exit_window) == (
        None,
        "linear",
        "sequence",
        1,
    )
    assert config.pooling == "first"  # the classifiers' own first token, as before the option existed
    assert config.model_type in ("xlm-roberta-early-exit", "bert-early-exit")


def test_the_last_layer_is_always_an_exit_and_per_layer_thresholds_count_it():
    config = XLMRobertaEarlyExitConfig(**SIZES, exit_layers=[1, 3], exit_threshold=[0.2, 0.3, 0.0])
    assert config.exit_layers == [1, 3, 4]
    assert XLMRobertaEarlyExitConfig(**SIZES, exit_layers=[2, 4]).exit_layers == [2, 4]


def test_config_round_trips_through_a_dict():
    config = XLMRobertaEarlyExitConfig(
        **SIZES, exit_layers=[2, 4], exit_criterion="patience", exit_threshold=[0.5, 0.0], exit_patience=2,
        pooling="mean",
    )
    again = XLMRobertaEarlyExitConfig.from_dict(config.to_dict())
    assert (again.exit_layers, again.exit_criterion, again.exit_threshold, again.exit_patience, again.pooling) == (
        [2, 4],
        "patience",
        [0.5, 0.0],
        2,
        "mean",
    )


@pytest.mark.parametrize(
    "fields,message",
    [
        (dict(exit_layers=[0, 2]), r"exit_layers=\[0, 2\] has layers \[0\] outside 1..4 \(num_hidden_layers\)"),
        (dict(exit_layers=[2, 5]), r"exit_layers=\[2, 5\] has layers \[5\] outside 1..4"),
        (dict(exit_layers=[2, 2, 4]), r"exit_layers=\[2, 2, 4\] has duplicates; expected each layer once"),
        (dict(exit_layers=[3, 1]), r"exit_layers=\[3, 1\] is not sorted; expected increasing layer numbers"),
        (dict(exit_layers="all"), r"exit_layers='all'; expected a list of 1-based layer numbers"),
        (dict(exit_threshold=-0.5), r"exit_threshold=-0.5; expected values >= 0"),
        (
            dict(exit_threshold=[0.1, 0.2]),
            r"exit_threshold has 2 values \[0.1, 0.2\]; expected one float or one per exit layer \(4\)",
        ),
        (
            dict(exit_criterion="margin"),
            r"exit_criterion='margin'; expected one of \('entropy', 'patience', 'max_prob'\)",
        ),
        (dict(exit_patience=0), r"exit_patience=0; expected an int >= 1"),
        (
            dict(num_labels=1),
            r"num_labels=1; early exit \(criterion 'entropy'\) needs a classification head with num_labels >= 2",
        ),
        (dict(exit_head="mlp"), r"exit_head='mlp'; expected None \(task default\) or one of \('pooler', 'linear'\)"),
        (dict(exit_granularity="word"), r"exit_granularity='word'; expected one of \('sequence', 'token'\)"),
        (dict(exit_window=0), r"exit_window=0; expected an int >= 1"),
        (dict(pooling="cls"), r"pooling='cls'; expected one of \('first', 'mean'\)"),
        (
            dict(exit_loss_weights="deep"),
            r"exit_loss_weights='deep'; expected one of \('linear', 'uniform'\) or a list",
        ),
        (dict(exit_loss_weights=[1.0, 2.0]), r"exit_loss_weights=\[1.0, 2.0\]; expected 4 non-negative floats"),
    ],
)
def test_bad_exit_fields_get_one_line_value_errors_at_config_time(fields, message):
    with pytest.raises(ValueError, match=message) as error:
        XLMRobertaEarlyExitConfig(**SIZES, **fields)
    assert "\n" not in str(error.value)
