"""finetune.py's data set-up and refusals (the example scripts' shared body), on the demo files."""

from pathlib import Path

import pytest

from hf_earlyexit.data.tasks import load_xnli
from hf_earlyexit.finetune import TaskDataArguments, load_task_data

REPO = Path(__file__).resolve().parents[1]
DEMO_XNLI = REPO / "examples" / "configs" / "demo-tiny" / "data" / "xnli"


def _rows(dataset):
    return [(row["premise"], row["hypothesis"], row["label"]) for row in dataset]


@pytest.mark.parametrize("train_split, eval_split", [("validation", "dev"), ("dev", "validation"), ("dev", "dev")])
def test_dev_and_validation_are_one_split_so_the_holdout_applies(train_split, eval_split):
    args = TaskDataArguments(
        data_dir=str(DEMO_XNLI), train_split=train_split, eval_split=eval_split, eval_languages=["en", "ru"], holdout=20
    )
    assert (args.train_split, args.eval_split) == ("validation", "validation")
    train, evals = load_task_data("xnli", args)
    dev = _rows(load_xnli(["en"], "validation", DEMO_XNLI)["en"])
    held_out_premises = {premise for premise, _, _ in dev[-20:]}
    assert _rows(train) == [row for row in dev[:-20] if row[0] not in held_out_premises]
    assert _rows(evals["en"]) == dev[-20:]
    assert len(evals["ru"]) == 20


def test_the_holdout_never_splits_a_premise_group(tmp_path):
    # XNLI: one premise, three hypotheses. A holdout of 4 rows used to train on two pairs of a held-out premise.
    rows = [f"P{p}.\tH{p}{h}.\t{label}" for p in range(4) for h, label in enumerate(("entailment", "neutral", "contradiction"))]
    (tmp_path / "en.dev.tsv").write_text("premise\thypothesis\tlabel\n" + "\n".join(rows) + "\n")
    args = TaskDataArguments(data_dir=str(tmp_path), train_split="dev", eval_split="dev", eval_languages=["en"], holdout=4)
    train, evals = load_task_data("xnli", args)
    assert len(evals["en"]) == 4 and set(evals["en"]["premise"]) == {"P2.", "P3."}
    assert train["premise"] == ["P0."] * 3 + ["P1."] * 3  # rows 7 and 8 (premise P2) are not trained on


def test_two_split_names_reading_the_same_file_are_refused(tmp_path):
    for lang in ("en", "ru"):
        (tmp_path / f"{lang}.dev.tsv").symlink_to(DEMO_XNLI / f"{lang}.dev.tsv")
    (tmp_path / "en.train.tsv").symlink_to(DEMO_XNLI / "en.dev.tsv")
    args = TaskDataArguments(data_dir=str(tmp_path), eval_languages=["en", "ru"])
    with pytest.raises(ValueError, match=r"train_split='train' and eval_split='validation' read the same file"):
        load_task_data("xnli", args)


# ---- output folder, resume, reproducibility ---------------------------------------------------------------------


def test_output_dir_is_refused_when_not_empty_unless_overwriting_or_resuming(tmp_path):
    from hf_earlyexit.run_outputs import prepare_output_dir
    from hf_earlyexit.training import EarlyExitTrainingArguments

    out = tmp_path / "out"
    (out / "checkpoint-4").mkdir(parents=True)
    (out / "checkpoint-4" / "trainer_state.json").write_text("{}")
    (out / "checkpoint-12").mkdir()
    (out / "checkpoint-12" / "trainer_state.json").write_text("{}")
    (out / "xnli_metric_vs_flops.png").write_bytes(b"a plot of the first task")

    def args(**kwargs):
        return EarlyExitTrainingArguments(output_dir=str(out), use_cpu=True, report_to=[], **kwargs)

    with pytest.raises(ValueError, match=r"is not empty \(holds checkpoint-12, checkpoint-4, xnli_metric_vs_flops"):
        prepare_output_dir(args())
    with pytest.raises(ValueError, match=r"resume_from_checkpoint='/no/such' is not a checkpoint"):
        prepare_output_dir(args(resume_from_checkpoint="/no/such"))
    resumed = args(resume_from_checkpoint="last")
    prepare_output_dir(resumed)
    assert resumed.resume_from_checkpoint == str(out / "checkpoint-12")  # the newest, by step
    assert (out / "xnli_metric_vs_flops.png").is_file()
    prepare_output_dir(args(overwrite_output_dir=True))
    assert list(out.iterdir()) == []  # nothing of the earlier run is left to be pushed with the next one
    with pytest.raises(ValueError, match=r"resume_from_checkpoint='last' but output_dir=.* holds no checkpoint-N"):
        prepare_output_dir(args(resume_from_checkpoint="last"))


@pytest.fixture(scope="module")
def plain_model(tmp_path_factory):
    """A tiny plain XLM-R masked-LM checkpoint with a tokenizer trained on the demo XNLI text."""
    import torch
    from transformers import XLMRobertaConfig, XLMRobertaForMaskedLM

    from hf_earlyexit.data.tokenizer import train_tokenizer

    path = tmp_path_factory.mktemp("plain")
    texts = [line for file in sorted(DEMO_XNLI.glob("*.tsv")) for line in file.read_text("utf-8").splitlines()]
    tokenizer = train_tokenizer(texts, vocab_size=300)
    torch.manual_seed(0)
    config = XLMRobertaConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=140, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    XLMRobertaForMaskedLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _run_xnli(model, out, *flags):
    from hf_earlyexit.cli import parse_config
    from hf_earlyexit.finetune import TASK_ARGUMENTS, run_task

    config = REPO / "examples" / "configs" / "demo-tiny" / "xnli.yaml"
    argv = [str(config), "--model_name_or_path", str(model), "--output_dir", str(out), "--distillation_summary",
            "None", "--measure_efficiency", "false", "--num_train_epochs", "1", "--per_device_train_batch_size", "8",
            "--thresholds", "0.0", "0.5", "1.01", "--disable_tqdm", "true", *flags]  # fmt: skip
    return run_task("xnli", *parse_config(TASK_ARGUMENTS, argv))


@pytest.mark.slow
def test_same_config_and_seed_give_the_same_weights_and_results(plain_model, tmp_path):
    from safetensors.torch import load_file

    first, second = _run_xnli(plain_model, tmp_path / "a"), _run_xnli(plain_model, tmp_path / "b")
    assert first == second
    assert (tmp_path / "a" / "results.json").read_bytes() == (tmp_path / "b" / "results.json").read_bytes()
    a, b = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert all(a[k].equal(b[k]) for k in a)
    other = load_file(_run_xnli(plain_model, tmp_path / "c", "--seed", "1") and tmp_path / "c" / "model.safetensors")
    assert any(not a[k].equal(other[k]) for k in a)  # the seed reaches the new heads' initialisation


@pytest.mark.slow
def test_run_xnli_resumes_from_a_checkpoint_and_refuses_a_second_run_into_the_same_folder(plain_model, tmp_path):
    from safetensors.torch import load_file

    from hf_earlyexit.cli import ConfigError

    steps = ["--save_strategy", "steps", "--save_steps", "6", "--max_steps", "12", "--warmup_steps", "0"]
    _run_xnli(plain_model, tmp_path / "full", *steps)
    with pytest.raises(ConfigError, match=r"output_dir=.* is not empty"):
        _run_xnli(plain_model, tmp_path / "full", *steps)
    checkpoint = tmp_path / "full" / "checkpoint-6"
    _run_xnli(plain_model, tmp_path / "resumed", *steps, "--resume_from_checkpoint", str(checkpoint))
    state = (tmp_path / "resumed" / "checkpoint-12" / "trainer_state.json").read_text()
    assert '"global_step": 12' in state
    a, b = load_file(tmp_path / "full" / "model.safetensors"), load_file(tmp_path / "resumed" / "model.safetensors")
    assert all(a[k].equal(b[k]) for k in a)  # continued from step 6, not restarted at step 0


# ---- checks that used to run only after training ------------------------------------------------------------------


def test_thresholds_and_partitions_that_results_would_refuse_are_refused_up_front():
    from hf_earlyexit.distil import CorpusArguments
    from hf_earlyexit.finetune import SweepArguments

    for bad in ([0.0, float("inf")], [0.5, float("nan")]):
        with pytest.raises(ValueError, match=r"thresholds=.*expected a non-empty list of finite values >= 0"):
            SweepArguments(thresholds=bad)
    with pytest.raises(ValueError, match=r"partitions=\[2, 0\]; expected distinct partition indices in increasing"):
        CorpusArguments(partitions=[2, 0])


def test_a_bad_distillation_summary_is_refused_before_the_model_loads(tmp_path, monkeypatch):
    import json

    import hf_earlyexit.finetune as finetune
    from hf_earlyexit.cli import ConfigError

    monkeypatch.setattr(finetune, "load_early_exit_model", lambda *a, **k: pytest.fail("model loaded"))
    summary = tmp_path / "distillation.json"
    entry = {"tokens_by_language": {}, "metric_by_language": {}}
    parts = [{"partition": 2, **entry}, {"partition": 0, **entry}]
    summary.write_text(json.dumps({"teacher": "t", "student_init": "s", "partitions": parts}))
    with pytest.raises(ConfigError, match=r"distillation_summary=.*partitions\[1\]\.partition=0 is invalid"):
        _run_xnli(tmp_path, tmp_path / "out", "--distillation_summary", str(summary))


@pytest.mark.slow
def test_the_model_is_saved_even_when_the_results_check_fails(plain_model, tmp_path, monkeypatch):
    import hf_earlyexit.finetune as finetune

    def broken(**kwargs):
        raise ValueError("results.json field languages.en.metric=nan is invalid")

    monkeypatch.setattr(finetune, "build_results", broken)
    with pytest.raises(ValueError, match="is invalid"):
        _run_xnli(plain_model, tmp_path / "out")
    assert (tmp_path / "out" / "model.safetensors").is_file() and (tmp_path / "out" / "config.json").is_file()


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        ({}, "validation"),
        ({"max_eval_samples": 48}, "validation[:48]"),
        ({"train_split": "validation", "holdout": 490}, "validation[-490:]"),
        ({"train_split": "validation", "holdout": 490, "max_eval_samples": 48}, "validation[-490:-442]"),
        ({"train_split": "dev", "holdout": 40, "max_eval_samples": 48}, "validation[-40:]"),
    ],
)
def test_the_rows_evaluated_are_recorded_as_a_split_slice(kwargs, expected):
    from hf_earlyexit.finetune import eval_rows_slice

    assert eval_rows_slice(TaskDataArguments(**kwargs)) == expected
