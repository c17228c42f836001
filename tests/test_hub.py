"""Model card rendering and parse-back, and push to the Hub up to the network boundary."""

import hashlib
import json
import logging
import re
from fnmatch import fnmatch
from pathlib import Path

import pytest
from huggingface_hub import HfApi, ModelCard
from test_report import LANGS, make_results

from hf_earlyexit.evaluation.plots import write_plots
from hf_earlyexit.evaluation.results import save_results
from hf_earlyexit.hub import (
    EarlyExitCardData,
    HubPushError,
    create_model_card,
    push_finished_folder,
    push_to_hub,
    render_model_card,
    take_push_settings,
)

SECRET = "hf_TESTtokenNEVERshownABC123"
RECIPE = {
    "distillation": {
        "teacher": "FacebookAI/xlm-roberta-large",
        "student_init": "FacebookAI/xlm-roberta-base",
        "layer_map": [[12, 24]],
        "losses": {"hidden_mse": 1.0},
    },
    "exit_training": "joint",
    "learning_rate": 3e-5,
}


def saved_folder(tmp_path: Path) -> Path:
    """A folder shaped like what the examples save (contents are placeholders: push must not care)."""
    folder = tmp_path / "model"
    folder.mkdir()
    for name in (
        "model.safetensors",
        "config.json",
        "configuration_early_exit.py",
        "modeling_xlm_roberta_early_exit.py",
        "tokenizer.json",
        "tokenizer_config.json",
        "xnli_metric_vs_flops.png",
        "report.md",
    ):
        (folder / name).write_bytes(name.encode() * 3)
    save_results(make_results(), folder)
    (folder / "checkpoint-10").mkdir()
    (folder / "checkpoint-10" / "optimizer.pt").write_bytes(b"optimizer state")
    return folder


def snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()
    }


class RecordingHubApi:
    """Stands in for HfApi at the network boundary: records the repo it creates and the files upload_folder would
    send (the folder's files minus ignore_patterns, matched as huggingface_hub does), with their bytes."""

    def __init__(self):
        self.created = []
        self.uploaded = {}
        self.calls = []

    def create_repo(self, repo_id, token=None, private=None, exist_ok=False, **kwargs):
        self.created.append({"repo_id": repo_id, "private": private, "exist_ok": exist_ok})

    def create_branch(self, repo_id, branch, token=None, exist_ok=False, **kwargs):
        self.calls.append({"repo_id": repo_id, "branch": branch, "exist_ok": exist_ok})

    def upload_folder(
        self, folder_path, repo_id, token=None, revision=None, commit_message=None, ignore_patterns=None, **kwargs
    ):
        self.calls.append({"repo_id": repo_id, "revision": revision, "commit_message": commit_message})
        root = Path(folder_path)
        for path in sorted(root.rglob("*")):
            relative = path.relative_to(root).as_posix()
            if path.is_file() and not any(fnmatch(relative, pattern) for pattern in ignore_patterns or ()):
                self.uploaded[relative] = hashlib.sha256(path.read_bytes()).hexdigest()
        return f"https://huggingface.co/{repo_id}/commit/abc"


class FailingHubApi:
    def create_repo(self, *args, **kwargs):
        raise OSError(f"401 Unauthorized for token {SECRET}\nresponse body: invalid credentials")


class EchoingTokenHubApi:
    """Fails with the token huggingface_hub found by itself (HF_TOKEN / `hf auth login`) in the message."""

    def create_repo(self, *args, **kwargs):
        from huggingface_hub import get_token

        raise OSError(f"403 Forbidden for token {get_token()}")


# ---- card ------------------------------------------------------------------------------------------------------


def card_folder(tmp_path: Path) -> tuple[Path, list[dict]]:
    folder = tmp_path / "card"
    folder.mkdir()
    results = [make_results("xnli", partitions=2), make_results("wikiann", languages=("en", "hi", "ur"))]
    for result in results:
        write_plots(result, folder)
    return folder, results


def test_card_parses_back_with_every_language_metric(tmp_path):
    folder, results = card_folder(tmp_path)
    path = create_model_card(folder, results=results, recipe=RECIPE, repo_id="someone/xlmr-base-early-exit")
    assert path == folder / "README.md"
    card = ModelCard.load(path)
    evals = card.data.eval_results
    assert card.data.model_name == "xlmr-base-early-exit"
    for result in results:
        dataset = {"xnli": "facebook/xnli", "wikiann": "unimelb-nlp/wikiann"}[result["task"]]
        for lang, entry in result["languages"].items():
            mine = [e for e in evals if e.dataset_type == dataset and e.dataset_config == lang]
            assert {e.metric_type for e in mine} == {result["metric"]}
            assert {e.dataset_split for e in mine} == {"validation"}
            values = {e.metric_name.split("(")[1].split(",")[0].rstrip(")"): e.metric_value for e in mine}
            assert values == {"full depth": entry["full_depth"]["metric"], "early exit": entry["chosen"]["metric"]}
    assert len(evals) == 2 * (len(results[0]["languages"]) + len(results[1]["languages"]))
    assert set(card.data.language) == {"en", "ru", "sw", "hi", "ur"}
    assert card.data.datasets == ["facebook/xnli", "unimelb-nlp/wikiann"]


def test_card_has_every_section_filled_and_no_placeholders_left(tmp_path):
    folder, results = card_folder(tmp_path)
    text = create_model_card(folder, results=results, recipe=RECIPE, repo_id="someone/model").read_text()
    assert not re.search(r"\$\{?[A-Za-z_]", text)
    assert "{{" not in text and "}}" not in text
    assert not re.search(r"\{[a-z_]+\}", text)
    for heading in ("## Results per language", "## Efficiency", "## Threshold sweep", "## Training recipe"):
        assert heading in text
    assert "![xnli_metric_vs_flops](xnli_metric_vs_flops.png)" in text
    assert "![wikiann_metric_vs_flops](wikiann_metric_vs_flops.png)" in text
    assert "teacher: `FacebookAI/xlm-roberta-large`" in text and "exit training: `joint`" in text
    assert "| parameters | parameters outside embeddings | FLOPs per 128-token example (full depth) |" in text
    assert "| 2.50 M | 400,000 | 2.50 GFLOPs |" in text
    assert 'AutoModelForSequenceClassification.from_pretrained("someone/model", trust_remote_code=True)' in text
    assert 'pipeline("early-exit-token-classification", model="someone/model", trust_remote_code=True)' in text
    assert "calibrated per language" in text
    assert "random-weights demo" not in text.lower()
    # the usage snippet is valid Python
    code = text.split("```python\n")[1].split("```")[0]
    compile(code, "usage", "exec")


def test_card_defaults_to_results_json_and_found_plots(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    results = make_results("wikiann", random_weights=True)
    save_results(results, folder)
    write_plots(results, folder)
    text = create_model_card(folder).read_text()
    assert "![wikiann_metric_vs_flops](wikiann_metric_vs_flops.png)" in text
    assert "Random-weights demo" in text
    assert ModelCard(text).data.model_name == "out"


def test_bad_card_input_fails_before_writing(tmp_path):
    folder, results = card_folder(tmp_path)
    (folder / "README.md").write_text("previous card")
    with pytest.raises(ValueError, match="plot files \\['missing.png'\\]"):
        create_model_card(folder, results=results, plot_files={"xnli": ["missing.png"]})
    with pytest.raises(ValueError, match="at most one results.json per task"):
        create_model_card(folder, results=[results[0], results[0]])
    bad = json.loads(json.dumps(results[0]))
    bad["languages"]["en"]["chosen"]["metric"] = 2.0
    with pytest.raises(ValueError, match="languages.en.chosen.metric"):
        create_model_card(folder, results=bad)
    assert (folder / "README.md").read_text() == "previous card"
    with pytest.raises(ValueError, match="results.json"):
        create_model_card(tmp_path / "card" / "..", results=None)


def test_card_takes_the_distillation_record_as_recipe(tmp_path):
    folder, results = card_folder(tmp_path)
    record = make_results(partitions=2)["distillation"]
    record["partition_eval"] = "a linear probe of the frozen student"
    text = create_model_card(folder, results=results[1], recipe=record).read_text()
    assert "- teacher: `FacebookAI/xlm-roberta-large`" in text
    assert "Each partition's checkpoint evaluated by a linear probe of the frozen student." in text
    assert "-level exits, heads read the mean over the real tokens)" in text  # model.pooling of make_results
    assert "- partition 1 tokens: en 1.00 M, ru 1.00 M, sw 1.00 M" in text
    assert "| 1 | 6.00 M |" in text  # cumulative tokens of the checkpoint after partition 1
    assert "partitions:" not in text  # not dumped raw


def test_render_single_task_card_from_card_data():
    card = EarlyExitCardData(model_name="m", results=[make_results()])
    text = render_model_card(card)
    assert "### XNLI" not in text  # one task: no per-task headings
    assert "No distillation recipe was recorded" in text
    assert "| threshold 0.2 | 9.25 | 210.00 | 44.2 |" in text
    for lang in LANGS:
        assert f"| {lang} | 100 |" in text


# ---- push ------------------------------------------------------------------------------------------------------


def test_push_uploads_the_saved_folder_complete_and_unchanged(tmp_path):
    folder = saved_folder(tmp_path)
    create_model_card(folder, recipe=RECIPE, repo_id="someone/model")
    before = snapshot(folder)
    api = RecordingHubApi()
    result = push_to_hub(folder, "someone/model", token=SECRET, private=True, api=api)
    assert result == "https://huggingface.co/someone/model/commit/abc"
    assert api.created == [{"repo_id": "someone/model", "private": True, "exist_ok": True}]
    expected = {name: digest for name, digest in before.items() if not name.startswith("checkpoint-")}
    assert api.uploaded == expected
    assert {"README.md", "results.json", "model.safetensors", "config.json", "tokenizer.json"} <= set(api.uploaded)
    assert snapshot(folder) == before


def test_failed_push_says_how_to_push_later_and_hides_the_token(tmp_path, caplog):
    folder = saved_folder(tmp_path)
    before = snapshot(folder)
    with caplog.at_level(logging.DEBUG), pytest.raises(HubPushError) as error:
        push_to_hub(folder, "someone/model", token=SECRET, api=FailingHubApi())
    message = str(error.value)
    assert SECRET not in message and SECRET not in caplog.text
    assert "\n" not in message
    assert f"everything is saved in {folder}" in message
    assert f"hf upload someone/model {folder} . --exclude 'checkpoint-*' --exclude '_*'" in message
    assert error.value.__cause__ is None and error.value.__suppress_context__
    assert snapshot(folder) == before


def test_offline_push_with_the_real_client_fails_cleanly(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    folder = saved_folder(tmp_path)
    before = snapshot(folder)
    with pytest.raises(HubPushError, match="OfflineModeIsEnabled") as error:
        push_to_hub(folder, "someone/model", token=SECRET, api=HfApi(token=SECRET))
    assert SECRET not in str(error.value) and "hf upload someone/model" in str(error.value)
    assert snapshot(folder) == before


def test_push_passes_private_and_revision_through(tmp_path):
    folder = saved_folder(tmp_path)
    api = RecordingHubApi()
    push_to_hub(folder, "someone/model", private=True, revision="v2", api=api)
    assert api.created == [{"repo_id": "someone/model", "private": True, "exist_ok": True}]
    assert api.calls[0] == {"repo_id": "someone/model", "branch": "v2", "exist_ok": True}
    assert api.calls[1]["revision"] == "v2"
    with pytest.raises(HubPushError) as error:
        push_to_hub(folder, "someone/model", private=True, revision="v2", api=FailingHubApi())
    assert "--private --revision v2" in str(error.value)


def test_the_run_settings_reach_the_push_and_the_token_no_saved_file(tmp_path, monkeypatch):
    from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments

    args = TrainingArguments(
        output_dir=str(tmp_path / "run"), push_to_hub=True, hub_model_id="someone/model", hub_token=SECRET,
        hub_private_repo=True, hub_revision="v2", report_to=[], use_cpu=True,
    )  # fmt: skip
    settings = take_push_settings(args)
    assert (settings.push, settings.repo_id, settings.token) == (True, "someone/model", SECRET)
    assert (settings.private, settings.revision) == (True, "v2")
    assert SECRET not in repr(settings)
    assert args.hub_token is None and args.push_to_hub is False
    config = BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=1, num_attention_heads=1, intermediate_size=8)
    trainer = Trainer(model=BertForSequenceClassification(config), args=args)
    out = tmp_path / "run"
    trainer.save_model(str(out))
    assert (out / "training_args.bin").is_file()
    for path in out.rglob("*"):  # training_args.bin is a pickle of the arguments, and it is pushed
        assert not path.is_file() or SECRET.encode() not in path.read_bytes(), path
    api = RecordingHubApi()
    monkeypatch.setattr("hf_earlyexit.hub.HfApi", lambda token=None: api)
    assert push_finished_folder(out, settings) is None
    assert api.created[0]["private"] is True and api.calls[-1]["revision"] == "v2"


def test_a_token_from_the_environment_never_shows_in_the_message(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", SECRET)
    folder = saved_folder(tmp_path)
    with pytest.raises(HubPushError) as error:
        push_to_hub(folder, "someone/model", api=EchoingTokenHubApi())
    assert SECRET not in str(error.value) and "***" in str(error.value)


def test_push_rejects_bad_input_before_any_call(tmp_path):
    folder = saved_folder(tmp_path)
    api = RecordingHubApi()
    for repo_id in ("no namespace", "a/b/c", "-model"):
        with pytest.raises(ValueError, match="repo_id="):
            push_to_hub(folder, repo_id, api=api)
    with pytest.raises(ValueError, match="missing or empty"):
        push_to_hub(tmp_path / "nowhere", "someone/model", api=api)
    assert api.created == [] and api.calls == []
    push_to_hub(folder, "model-only", api=api)  # the Hub puts a bare name under the token's user
    assert api.created[0]["repo_id"] == "model-only"


# ---- the whole flow the example scripts run, on real WikiANN data --------------------------------------------


@pytest.mark.real_data
def test_full_evaluation_flow_on_real_wikiann(tmp_path, shared_data):
    import torch
    from transformers import DataCollatorForTokenClassification

    from hf_earlyexit.data.tasks import WIKIANN_TAGS, load_wikiann, tokenize_and_align_labels
    from hf_earlyexit.data.tokenizer import train_tokenizer
    from hf_earlyexit.evaluation.efficiency import describe_model, full_depth_flops, measure_efficiency
    from hf_earlyexit.evaluation.report import write_report
    from hf_earlyexit.evaluation.results import build_results, load_results
    from hf_earlyexit.evaluation.sweep import evaluate_languages
    from hf_earlyexit.modeling import XLMRobertaEarlyExitConfig, XLMRobertaForEarlyExitTokenClassification

    raw = {
        lang: ds.select(range(48))
        for lang, ds in load_wikiann(["en", "sw"], "validation", shared_data / "panx").items()
    }
    tokenizer = train_tokenizer([" ".join(row["tokens"]) for ds in raw.values() for row in ds], vocab_size=400)
    tokenized = tokenize_and_align_labels(raw, tokenizer, max_length=48)
    torch.manual_seed(0)
    config = XLMRobertaEarlyExitConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        pad_token_id=tokenizer.pad_token_id,
        num_labels=len(WIKIANN_TAGS),
        id2label=dict(enumerate(WIKIANN_TAGS)),
        label2id={tag: i for i, tag in enumerate(WIKIANN_TAGS)},
        initializer_range=0.3,
    )
    model = XLMRobertaForEarlyExitTokenClassification(config).eval()

    languages, chosen_global = evaluate_languages(
        model, tokenized, DataCollatorForTokenClassification(tokenizer), max_drop=0.02, batch_size=16
    )
    efficiency = measure_efficiency(model, tokenized["en"], chosen_global["threshold"], seq_len=32, repeats=2)
    results = build_results(
        task="wikiann",
        languages=languages,
        model_info=describe_model(model, "tiny-random"),
        seq_len=32,
        full_depth_flops=full_depth_flops(model, 32),
        max_drop=0.02,
        chosen_global=chosen_global,
        efficiency=efficiency,
        random_weights=True,
    )
    out = tmp_path / "out"
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    save_results(results, out)
    plots = write_plots(results, out)
    write_report(results, out, plots)
    create_model_card(out, recipe={"exit_training": "none (random weights)"}, repo_id="someone/tiny")

    loaded = load_results(out)
    assert set(loaded["languages"]) == {"en", "sw"}
    for lang in ("en", "sw"):
        entry = loaded["languages"][lang]
        assert entry["num_examples"] == 48 and entry["exit_check"]["num_mismatched_exits"] == 0
        assert entry["full_depth"]["metric"] - entry["chosen"]["metric"] <= 0.02 + 1e-9
    evals = ModelCard.load(out / "README.md").data.eval_results
    assert {(e.dataset_type, e.dataset_config) for e in evals} == {
        ("unimelb-nlp/wikiann", "en"),
        ("unimelb-nlp/wikiann", "sw"),
    }
    assert json.loads((out / "config.json").read_text())["auto_map"]

    api = RecordingHubApi()
    push_to_hub(out, "someone/tiny", api=api)
    assert set(api.uploaded) == set(snapshot(out))
    assert {"model.safetensors", "config.json", "README.md", "report.md", "wikiann_metric_vs_flops.png"} <= set(
        api.uploaded
    )
    assert any(name.endswith(".py") for name in api.uploaded)  # the remote code travels with the weights


def test_card_qualifies_the_rows_evaluated_and_gives_the_usage_code_a_namespace(tmp_path):
    folder = tmp_path / "card"
    folder.mkdir()
    results = {**make_results(), "eval_rows": "validation[-490:-442]"}
    text = render_model_card(
        EarlyExitCardData(model_name="tiny-xnli", results=[results], base_model="FacebookAI/xlm-roberta-base")
    )
    card = ModelCard(text)
    assert {r.dataset_split for r in card.data.eval_results} == {"validation[-490:-442]"}
    assert "on `validation[-490:-442]` (100 rows per language)" in text
    assert card.data.base_model == "FacebookAI/xlm-roberta-base"
    # no hub_model_id: a bare name would not load from the Hub
    assert 'from_pretrained("your-username/tiny-xnli"' in text and 'from_pretrained("tiny-xnli"' not in text
    with_repo = render_model_card(EarlyExitCardData(model_name="x", results=[results], repo_id="someone/x"))
    assert 'from_pretrained("someone/x"' in with_repo


def test_the_distillation_push_leaves_out_the_per_partition_evaluation_models(tmp_path, monkeypatch):
    from hf_earlyexit.hub import DISTILLATION_IGNORE_PATTERNS, PushSettings

    folder = saved_folder(tmp_path)
    (folder / "partition-0" / "eval-xnli").mkdir(parents=True)
    (folder / "partition-0" / "model.safetensors").write_bytes(b"student after partition 0")
    (folder / "partition-0" / "eval-xnli" / "model.safetensors").write_bytes(b"a fine-tuned evaluation model")
    api = RecordingHubApi()
    monkeypatch.setattr("hf_earlyexit.hub.HfApi", lambda token=None: api)
    assert push_finished_folder(folder, PushSettings(True, "someone/student"), DISTILLATION_IGNORE_PATTERNS) is None
    assert "partition-0/model.safetensors" in api.uploaded
    assert not [name for name in api.uploaded if "/eval-" in name]
    with pytest.raises(HubPushError, match=r"--exclude 'partition-\*/eval-\*'"):
        push_to_hub(folder, "someone/student", api=FailingHubApi(), ignore_patterns=DISTILLATION_IGNORE_PATTERNS)
