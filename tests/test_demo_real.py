"""A few steps of the real-weights demo chain (examples/configs/demo) on the converted multilingual-e5-small: the
configs parse and run, the student is the teacher's layers 2, 4, ..., 12 with its lexicon kept, and the saved task
models are real (no random-weights label), load through the Auto classes and answer through their pipelines."""

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from test_examples import load_example
from transformers import (
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    pipeline,
)

import hf_earlyexit  # noqa: F401  (registers the Auto classes and pipelines)

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "examples" / "configs" / "demo"
LANGUAGES = ["en", "ru", "hi", "tr", "sw", "ur"]

pytestmark = [pytest.mark.real_weights, pytest.mark.real_data, pytest.mark.slow]


@pytest.fixture(scope="module")
def student(e5_small_dir, tmp_path_factory, monkeypatch_module):
    monkeypatch_module.chdir(REPO)  # the demo configs name ../shared/data relative to the repository root
    out = tmp_path_factory.mktemp("student")
    summary = load_example("run_distil").main(
        [str(DEMO / "distil.yaml"), "--teacher_name_or_path", str(e5_small_dir), "--output_dir", str(out),
         "--partitions", "0", "1", "--steps_per_partition", "2", "--warmup_steps", "1"]
    )  # fmt: skip
    return out, summary


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def test_the_student_is_teacher_layers_2_to_12_trained_with_the_teachers_lexicon(student, e5_small_dir):
    out, summary = student
    assert [entry["partition"] for entry in summary["partitions"]] == [0, 1]
    for entry in summary["partitions"]:
        assert set(entry["tokens_by_language"]) == set(LANGUAGES)
        assert all(count > 0 for count in entry["tokens_by_language"].values())
    teacher = AutoModelForMaskedLM.from_pretrained(e5_small_dir)
    trained = AutoModelForMaskedLM.from_pretrained(out)
    assert trained.config.num_hidden_layers == 6 and trained.config.hidden_size == 384
    # The stage trains the layers only: the 250k-row word embeddings stay the teacher's, bit for bit.
    assert torch.equal(trained.get_input_embeddings().weight, teacher.get_input_embeddings().weight)
    first = trained.roberta.encoder.layer[0].output.dense.weight
    assert not torch.equal(first, teacher.roberta.encoder.layer[1].output.dense.weight)  # distillation moved it
    # ... from the teacher's layer 2: still far closer to it than to the teacher's layer 1.
    distance = {n: float((first - teacher.roberta.encoder.layer[n - 1].output.dense.weight).norm()) for n in (1, 2)}
    assert distance[2] < 0.5 * distance[1], distance
    with safe_open(out / "model.safetensors", "pt") as weights:
        assert not [key for key in weights.keys() if "projection" in key or key.startswith("roberta.pooler")]


@pytest.mark.parametrize("task", ["xnli", "wikiann"])
def test_a_short_task_run_writes_real_results_and_a_model_that_loads_and_answers(task, student, tmp_path):
    out = tmp_path / task
    results = load_example(f"run_{task}").main(
        [str(DEMO / f"{task}.yaml"), "--model_name_or_path", str(student[0]), "--output_dir", str(out),
         "--distillation_summary", str(student[0] / "distillation.json"), "--max_train_samples", "64",
         "--max_eval_samples", "24", "--measure_efficiency", "false", "--thresholds", "0.0", "0.5", "1.01"]
    )  # fmt: skip
    assert results["random_weights"] is False and set(results["languages"]) == set(LANGUAGES)
    assert "mechanics" not in (out / "report.md").read_text()
    assert all(entry["num_examples"] == 24 for entry in results["languages"].values())
    saved = json.loads((out / "config.json").read_text())
    assert saved["pooling"] == ("mean" if task == "xnli" else "first")
    assert saved["num_hidden_layers"] == 6 and saved["exit_threshold"] == results["chosen_global"]["threshold"]
    student_model = AutoModelForMaskedLM.from_pretrained(student[0])
    auto_class = AutoModelForSequenceClassification if task == "xnli" else AutoModelForTokenClassification
    model = auto_class.from_pretrained(out).eval()
    assert type(model).__name__ == (
        "XLMRobertaForEarlyExit" if task == "xnli" else "XLMRobertaForEarlyExitTokenClassification"
    )
    # Word embeddings were frozen for fine-tuning: the student's lexicon reached the task model unchanged.
    assert torch.equal(model.get_input_embeddings().weight, student_model.get_input_embeddings().weight)
    pipeline_task = "early-exit-text-classification" if task == "xnli" else "early-exit-token-classification"
    run = pipeline(pipeline_task, model=str(out), trust_remote_code=True)
    if task == "xnli":
        answer = run({"text": "A man sleeps.", "text_pair": "A man is awake."})
    else:  # every token, "O" included: a briefly trained tagger may well find no entity
        answer = run("Maria works at Google in London .", ignore_labels=[])
    answers = answer if isinstance(answer, list) else [answer]
    assert answers and all(1 <= item["exit_layer"] <= 6 for item in answers)
