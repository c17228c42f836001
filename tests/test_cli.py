"""Config files and flags through HfArgumentParser's types: conversion, refusals in one line, --help defaults."""

import re
from pathlib import Path

import pytest

from hf_earlyexit.cli import ConfigError, parse_config
from hf_earlyexit.distil import DISTIL_ARGUMENTS
from hf_earlyexit.finetune import TASK_ARGUMENTS

DEMO = Path(__file__).resolve().parents[1] / "examples" / "configs" / "demo-tiny"


def _parse(tmp_path, text: str, *flags, types=TASK_ARGUMENTS):
    path = tmp_path / "config.yaml"
    path.write_text(f"output_dir: {tmp_path / 'out'}\n{text}\n", encoding="utf-8")
    return parse_config(types, [str(path), *flags])


def test_config_values_are_converted_to_their_field_types(tmp_path):
    model, data, sweep, training = _parse(
        tmp_path,
        'learning_rate: 2e-5\npush_to_hub: "false"\ndo_train: "false"\neval_languages: en\nthresholds: 0.5\n'
        'exit_layers: 2\nmax_drop: "0.02"\nseed: 7.0',
    )
    assert training.learning_rate == 2e-5 and isinstance(training.learning_rate, float)  # YAML 1.1 reads a str
    assert training.push_to_hub is False and training.do_train is False
    assert data.eval_languages == ["en"] and sweep.thresholds == [0.5] and model.exit_layers == [2]
    assert sweep.max_drop == 0.02 and training.seed == 7 and isinstance(training.seed, int)


def test_none_resets_a_nullable_field_from_the_file_or_a_flag(tmp_path):
    model, data, _, _ = _parse(
        tmp_path, "exit_layers: [1, 2]\nmax_eval_samples: 10", "--exit_layers", "None", "--max_eval_samples", "None"
    )
    assert model.exit_layers is None and data.max_eval_samples is None
    model, _, _, _ = _parse(tmp_path, "tokenizer_name_or_path: null\nexit_criterion: None")
    assert model.tokenizer_name_or_path is None and model.exit_criterion is None


@pytest.mark.parametrize(
    "text, message",
    [
        ("learning_rate: fast", r"learning_rate='fast': expected a number"),
        ("max_steps: 1.5", r"max_steps=1\.5: expected an integer"),
        ("do_train: 3", r"do_train=3: expected true or false"),
        ("eval_languages: [en, no]", r"eval_languages\[1\]=False: expected a string \(quote it in YAML"),
        ("thresholds: [0.1, x]", r"thresholds\[1\]='x': expected a number"),
        ("max_drop: null", r"max_drop=None: expected a number \(the field cannot be null\)"),
        ("seed: [1]", r"seed=\[1\]: expected an integer"),
        ("save_strategy: sometimes", r"save_strategy='sometimes': expected one of no, steps, epoch, best"),
    ],
)
def test_values_that_do_not_convert_are_refused_naming_the_field(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message) as error:
        _parse(tmp_path, text)
    assert "\n" not in str(error.value)


def test_help_shows_each_default(capsys):
    with pytest.raises(SystemExit):
        parse_config(DISTIL_ARGUMENTS, ["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: 128)" in text and "(default: 'FacebookAI/xlm-roberta-large')" in text


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--eval_languages", "en", "xx"], r"run_xnli: unknown XNLI language code 'xx'"),
        (["--model_name_or_path", "./no/such/model"], r"model_name_or_path='\./no/such/model' does not exist"),
        (["--data_dir", "."], r"run_xnli: en\.(dev|train)\.tsv does not exist: expected \{data_dir\}/\{lang\}\.(dev|train)\.tsv"),
    ],
)
def test_bad_task_input_is_one_line_before_any_model_loads(tmp_path, monkeypatch, capsys, flags, message):
    import hf_earlyexit.finetune as finetune
    from hf_earlyexit.cli import main_guard
    from hf_earlyexit.finetune import run_task

    monkeypatch.setattr(finetune, "load_early_exit_model", lambda *a, **k: pytest.fail("model loaded"))
    data = DEMO / "data" / "xnli"

    def main(argv):
        return run_task("xnli", *parse_config(TASK_ARGUMENTS, argv))

    argv = ["--output_dir", str(tmp_path / "out"), "--data_dir", str(data), "--model_name_or_path", str(tmp_path)]
    with pytest.raises(SystemExit) as stop:
        main_guard(main)([*argv, *flags])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert re.search(message, err[0]), err[0]


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--corpus", "./missing/corpus"], r"corpus='\./missing/corpus' does not exist"),
        (["--languages", "en", "zz"], r"unknown language code 'zz'"),
        (["--teacher_name_or_path", "/no/teacher"], r"teacher_name_or_path='/no/teacher' does not exist"),
    ],
)
def test_bad_distillation_input_is_one_line(tmp_path, capsys, flags, message):
    from hf_earlyexit.cli import main_guard
    from hf_earlyexit.distil import run_distillation

    corpus = DEMO / "data" / "corpus"

    def main(argv):
        return run_distillation(*parse_config(DISTIL_ARGUMENTS, argv))

    argv = ["--output_dir", str(tmp_path / "out"), "--corpus", str(corpus), "--student_init", "compact"]
    with pytest.raises(SystemExit) as stop:
        main_guard(main)([*argv, *flags])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.search(message, err[0]), err


def test_a_layer_map_out_of_range_is_one_line_before_the_teacher_weights_load(tmp_path, capsys):
    from transformers import XLMRobertaConfig

    from hf_earlyexit.cli import main_guard
    from hf_earlyexit.data.tokenizer import train_tokenizer
    from hf_earlyexit.distil import run_distillation

    teacher = tmp_path / "teacher"  # a config and a tokenizer, no weights: loading them would fail
    corpus = DEMO / "data" / "corpus"
    train_tokenizer((corpus / "en.txt").read_text("utf-8").splitlines(), vocab_size=200).save_pretrained(teacher)
    XLMRobertaConfig(num_hidden_layers=4, hidden_size=32, num_attention_heads=2).save_pretrained(teacher)

    def main(argv):
        return run_distillation(*parse_config(DISTIL_ARGUMENTS, argv))

    argv = ["--output_dir", str(tmp_path / "out"), "--corpus", str(corpus), "--teacher_name_or_path", str(teacher),
            "--student_init", "compact", "--compact_num_layers", "2", "--layer_map", "[[1, 9]]", "--block_size", "16",
            "--per_device_train_batch_size", "2", "--num_partitions", "1"]  # fmt: skip
    with pytest.raises(SystemExit) as stop:
        main_guard(main)(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: run_distil: layer_map teacher layer 9 is out of range; the teacher has layers 0..4"]
