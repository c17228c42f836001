"""A few steps of the real-weights demo chain (examples/configs/demo) on the converted multilingual-e5-small: the
configs parse and run, the student is the teacher's layers 2, 4, ..., 12 with its lexicon kept, and the saved task
models are real (no random-weights label), load through the Auto classes and answer through their pipelines."""

import inspect
import json
import os
import subprocess
import sys
import textwrap
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
    # The demo's partition probe, on fewer rows: 60 English NLI pairs, 12 XNLI dev pairs per language.
    probe = tmp_path_factory.mktemp("probe") / "xnli_probe.yaml"
    probe.write_text(
        (DEMO / "xnli_probe.yaml").read_text().replace("max_train_samples: 800", "max_train_samples: 60")
        .replace("max_eval_samples: 120", "max_eval_samples: 12")
    )  # fmt: skip
    summary = load_example("run_distil").main(
        [str(DEMO / "distil.yaml"), "--teacher_name_or_path", str(e5_small_dir), "--output_dir", str(out),
         "--partitions", "0", "1", "--steps_per_partition", "2", "--warmup_steps", "1",
         "--eval_task_config", str(probe), "--eval_method", "linear_probe"]
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
        # the linear probe's zero-shot accuracy per language (12 pairs each, so a multiple of 1/12)
        assert set(entry["metric_by_language"]) == set(LANGUAGES)
        assert all(round(12 * acc, 6).is_integer() for acc in entry["metric_by_language"].values())
    assert summary["partition_eval"].startswith("linear probe of the frozen student: mean-pooled last layer")
    assert "60 English NLI pairs" in summary["partition_eval"] and "12 pairs per language" in summary["partition_eval"]
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


TASKS = ("xnli", "wikiann")
PAIR = {"text": "A man sleeps.", "text_pair": "A man is awake."}
SENTENCE = "Maria works at Google in London ."


@pytest.fixture(scope="module")
def task_runs(student, tmp_path_factory):
    """Short demo-config runs of both tasks on the real student: {task: (output folder, results)}."""
    runs = {}
    for task in TASKS:
        out = tmp_path_factory.mktemp(task)
        runs[task] = out, load_example(f"run_{task}").main(
            [str(DEMO / f"{task}.yaml"), "--model_name_or_path", str(student[0]), "--output_dir", str(out),
             "--distillation_summary", str(student[0] / "distillation.json"), "--max_train_samples", "64",
             "--max_eval_samples", "24", "--measure_efficiency", "false", "--thresholds", "0.0", "0.5", "1.01"]
        )  # fmt: skip
    return runs


def demo_answers(text_pipe, token_pipe) -> dict:
    """The pipeline calls compared between this process and one without hf_earlyexit (the source runs there too):
    a pair at the saved threshold and at full depth, and every token ("O" included: a briefly trained tagger may
    well find no entity)."""
    answers = {
        "pair": text_pipe(PAIR),
        "pair_full_depth": text_pipe(PAIR, exit_threshold=0.0),
        "tokens": token_pipe(SENTENCE, ignore_labels=[]),
    }
    return json.loads(json.dumps(answers, default=float))


@pytest.mark.parametrize("task", TASKS)
def test_a_short_task_run_writes_real_results_and_a_model_that_loads_and_answers(task, student, task_runs):
    out, results = task_runs[task]
    assert results["random_weights"] is False and set(results["languages"]) == set(LANGUAGES)
    report = (out / "report.md").read_text()
    assert "mechanics" not in report
    assert "Each partition's checkpoint evaluated by linear probe of the frozen student" in report
    assert all(entry["num_examples"] == 24 for entry in results["languages"].values())
    saved = json.loads((out / "config.json").read_text())
    assert saved["pooling"] == results["model"]["pooling"] == ("mean" if task == "xnli" else "first")
    assert saved["num_hidden_layers"] == 6 and saved["exit_threshold"] == results["chosen_global"]["threshold"]
    student_model = AutoModelForMaskedLM.from_pretrained(student[0])
    auto_class = AutoModelForSequenceClassification if task == "xnli" else AutoModelForTokenClassification
    model = auto_class.from_pretrained(out).eval()
    assert type(model).__name__ == (
        "XLMRobertaForEarlyExit" if task == "xnli" else "XLMRobertaForEarlyExitTokenClassification"
    )
    # Word embeddings were frozen for fine-tuning: the student's lexicon reached the task model unchanged.
    assert torch.equal(model.get_input_embeddings().weight, student_model.get_input_embeddings().weight)


CLEAN_PROCESS = """
import importlib.abc, json, sys

class BlockPackage(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "hf_earlyexit":
            raise ImportError(f"{name} is blocked: this process checks the folders work without the package")

sys.meta_path.insert(0, BlockPackage())
try:
    import hf_earlyexit  # noqa: F401
except ImportError:
    pass
else:
    raise SystemExit("hf_earlyexit is still importable")

from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification, pipeline

text_dir, token_dir = sys.argv[1:3]
for auto_class, folder in ((AutoModelForSequenceClassification, text_dir), (AutoModelForTokenClassification, token_dir)):
    module = type(auto_class.from_pretrained(folder, trust_remote_code=True)).__module__
    assert module.startswith("transformers_modules"), module
text_pipe = pipeline("early-exit-text-classification", model=text_dir, trust_remote_code=True)
token_pipe = pipeline("early-exit-token-classification", model=token_dir, trust_remote_code=True)
"""


def test_the_demo_models_load_with_remote_code_and_answer_alike_in_a_process_without_the_package(task_runs, tmp_path):
    """The saved demo-shaped models (the real e5-derived 6-layer student with exits, sequence and token) in a clean
    interpreter that cannot import hf_earlyexit: their remote code loads them and their pipelines give this
    process's answers, exit_layer included."""
    text_dir, token_dir = (str(task_runs[task][0]) for task in TASKS)
    script = CLEAN_PROCESS + textwrap.dedent(inspect.getsource(demo_answers)) + textwrap.dedent(
        """
        PAIR, SENTENCE = json.loads(sys.argv[3])
        answers = demo_answers(text_pipe, token_pipe)
        assert not [name for name in sys.modules if name.split(".")[0] == "hf_earlyexit"]
        print("ANSWERS " + json.dumps(answers))
        """
    )
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTHON")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"))
    process = subprocess.run(
        [sys.executable, "-I", "-c", script, text_dir, token_dir, json.dumps([PAIR, SENTENCE])],
        cwd=tmp_path,  # not the repository, so the package cannot come from the working directory either
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert process.returncode == 0, process.stderr[-3000:]
    line = next(line for line in process.stdout.splitlines() if line.startswith("ANSWERS "))
    clean = json.loads(line.removeprefix("ANSWERS "))
    text_pipe = pipeline("early-exit-text-classification", model=text_dir, trust_remote_code=True)
    token_pipe = pipeline("early-exit-token-classification", model=token_dir, trust_remote_code=True)
    expected = demo_answers(text_pipe, token_pipe)
    for key in expected:
        answers = clean[key] if isinstance(clean[key], list) else [clean[key]]
        reference = expected[key] if isinstance(expected[key], list) else [expected[key]]
        assert [a["exit_layer"] for a in answers] == [a["exit_layer"] for a in reference], key
        assert all(1 <= a["exit_layer"] <= 6 for a in answers)
        assert [a.get("label", a.get("entity")) for a in answers] == [
            a.get("label", a.get("entity")) for a in reference
        ], key
        for a, b in zip(answers, reference):
            assert a["score"] == pytest.approx(b["score"], abs=1e-4), key
    assert clean["pair_full_depth"]["exit_layer"] == 6
