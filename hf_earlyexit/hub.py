"""Model cards filled from results.json, and pushing a saved folder to the Hub.

The card is `EarlyExitCardData` (what goes into it) rendered through `MODEL_CARD_TEMPLATE` (a `string.Template`:
`$name` placeholders, so the Python and YAML in the card need no escaping). Its YAML front matter is
`huggingface_hub.ModelCardData` with a model-index: one result per task and language, holding the metric at full
depth and at the language's chosen exit threshold.
"""

from __future__ import annotations

import logging
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Any

from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData, get_token
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

from .evaluation.plots import METRIC_VS_FLOPS_PNG
from .evaluation.report import (
    RANDOM_WEIGHTS_NOTE,
    TASK_TITLES,
    deployment_line,
    distillation_table,
    efficiency_table,
    language_table,
    metric_title,
    partition_eval_lines,
    pooling_clause,
    recipe_lines,
    threshold_table,
)
from .evaluation.results import RESULTS_FILENAME, load_results, validate_results

CARD_FILENAME = "README.md"
YOUR_NAMESPACE = "your-username"
# The Trainer's own convention for what not to push: its resumable checkpoints and private scratch files.
DEFAULT_IGNORE_PATTERNS = ("checkpoint-*", "_*")
# run_distil's per-partition evaluations (partition-k/eval-xnli/): fine-tuned models of their own, not the student.
DISTILLATION_IGNORE_PATTERNS = (*DEFAULT_IGNORE_PATTERNS, "partition-*/eval-*")

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TaskInfo:
    dataset_id: str
    dataset_title: str
    pipeline_tag: str
    task_name: str
    auto_class: str
    pipeline_task: str
    example_input: str
    pipeline_input: str


TASKS = {
    "xnli": TaskInfo(
        "facebook/xnli",
        "XNLI",
        "text-classification",
        "Natural Language Inference",
        "AutoModelForSequenceClassification",
        "early-exit-text-classification",
        'tokenizer("A man is playing a guitar.", "Someone makes music.", return_tensors="pt")',
        '{"text": "A man is playing a guitar.", "text_pair": "Someone makes music."}',
    ),
    "wikiann": TaskInfo(
        "unimelb-nlp/wikiann",
        "WikiANN",
        "token-classification",
        "Named Entity Recognition",
        "AutoModelForTokenClassification",
        "early-exit-token-classification",
        'tokenizer("Barack Obama visited Nairobi.", return_tensors="pt")',
        '"Barack Obama visited Nairobi."',
    ),
}

MODEL_CARD_TEMPLATE = """---
$metadata
---

# $title

$summary

$random_weights_note

## Results per language

$results_section

## Efficiency

$efficiency_section

## Threshold sweep

Each cell is the metric in % with the FLOPs saving against full depth in brackets, on the evaluation split.

$threshold_section

## Training recipe

$recipe_section

## How to use

The model runs its early-exit forward from the checkpoint's own code (`trust_remote_code=True`); `exit_threshold`
can be changed per call (0 = full depth, larger = earlier exits). Every output carries `exit_layer`.

```python
$usage_code
```

With the `hf_earlyexit` package installed, the pipelines give labels, scores and exit layers:

```python
$pipeline_code
```

## Limitations

$limitations
"""


@dataclass
class EarlyExitCardData:
    """What the card says. `results`: results.json dicts (XNLI and/or WikiANN); `recipe`: the training recipe
    (teacher, layer map, losses, partitions, fine-tuning settings) as a flat or nested mapping."""

    model_name: str
    results: list[dict[str, Any]]
    recipe: dict[str, Any] = field(default_factory=dict)
    repo_id: str | None = None
    base_model: str | None = None
    license: str | None = None
    plot_files: dict[str, list[str]] = field(default_factory=dict)  # task -> paths relative to the card

    def __post_init__(self):
        if not self.results:
            raise ValueError("results is empty; expected at least one results.json (XNLI and/or WikiANN)")
        for results in self.results:
            validate_results(results)
        tasks = [results["task"] for results in self.results]
        if len(set(tasks)) != len(tasks):
            raise ValueError(f"results has tasks {tasks}; expected at most one results.json per task")

    @property
    def languages(self) -> list[str]:
        return sorted({lang for results in self.results for lang in results["languages"]})

    def eval_results(self) -> list[EvalResult]:
        evals = []
        for results in self.results:
            task = TASKS[results["task"]]
            for lang, entry in results["languages"].items():
                chosen = entry["chosen"]["threshold"]
                common = {
                    "task_type": task.pipeline_tag,
                    "task_name": task.task_name,
                    "dataset_type": task.dataset_id,
                    "dataset_name": f"{task.dataset_title} ({lang})",
                    "dataset_config": lang,
                    "dataset_split": results.get("eval_rows", results["split"]),
                    "metric_type": results["metric"],
                }
                evals.append(
                    EvalResult(
                        **common,
                        metric_value=entry["full_depth"]["metric"],
                        metric_name=f"{metric_title(results)} (full depth)",
                    )
                )
                evals.append(
                    EvalResult(
                        **common,
                        metric_value=entry["chosen"]["metric"],
                        metric_name=f"{metric_title(results)} (early exit, threshold {chosen:g})",
                        metric_args={"exit_threshold": chosen},
                    )
                )
        return evals

    def to_card_data(self) -> ModelCardData:
        tasks = [TASKS[results["task"]] for results in self.results]
        return ModelCardData(
            model_name=self.model_name,
            base_model=self.base_model,
            license=self.license,
            language=self.languages,
            library_name="transformers",
            pipeline_tag=tasks[0].pipeline_tag,
            datasets=[task.dataset_id for task in tasks],
            metrics=sorted({results["metric"] for results in self.results}),
            tags=["early-exit", "knowledge-distillation", "xlm-roberta", "multilingual", "hf_earlyexit"],
            eval_results=self.eval_results(),
        )


def render_model_card(card: EarlyExitCardData) -> str:
    """The card's full text (YAML front matter + markdown); every template placeholder must be filled."""
    # A repo id without a namespace would not load from the Hub: show where the user's namespace goes.
    repo = (
        card.repo_id if card.repo_id and "/" in card.repo_id else f"{YOUR_NAMESPACE}/{card.repo_id or card.model_name}"
    )
    random = any(results["random_weights"] for results in card.results)
    values = {
        "metadata": card.to_card_data().to_yaml(),
        "title": card.model_name,
        "summary": _summary(card),
        "random_weights_note": f"> {RANDOM_WEIGHTS_NOTE}" if random else "",
        "results_section": _per_task(card, _results_section),
        "efficiency_section": _per_task(
            card, lambda _, results: "\n\n".join(filter(None, [efficiency_table(results), deployment_line(results)]))
        ),
        "threshold_section": _per_task(card, lambda _, results: threshold_table(results)),
        "recipe_section": _recipe_section(card),
        "usage_code": _usage_code(card, repo),
        "pipeline_code": _pipeline_code(card, repo),
        "limitations": _limitations(random),
    }
    # substitute (not safe_substitute): a missing value must fail here, not ship as "$name" on the Hub.
    return Template(MODEL_CARD_TEMPLATE).substitute(values)


def _per_task(card: EarlyExitCardData, section) -> str:
    """`section(card, results)` once per task, with a task heading when the card covers several."""
    if len(card.results) == 1:
        return section(card, card.results[0])
    return "\n\n".join(f"### {TASK_TITLES[results['task']]}\n\n{section(card, results)}" for results in card.results)


def _results_section(card: EarlyExitCardData, results: Mapping[str, Any]) -> str:
    parts = [
        f"{TASK_TITLES[results['task']]} {metric_title(results)} on `{results.get('eval_rows', results['split'])}` "
        f"({_rows_used(results)}), fine-tuned on "
        f"`{results['train_language']}` only (other languages are zero-shot). The chosen threshold per language "
        f"is the largest FLOPs saving within {100 * results['max_drop']:.2f} points of full depth; the global "
        f"threshold keeps every language within that.",
        language_table(results),
    ]
    parts += [f"![{Path(plot).stem}]({plot})" for plot in card.plot_files.get(results["task"], [])]
    return "\n\n".join(parts)


def _rows_used(results: Mapping[str, Any]) -> str:
    counts = sorted({entry["num_examples"] for entry in results["languages"].values()})
    shown = str(counts[0]) if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
    return f"{shown} rows per language"


def _summary(card: EarlyExitCardData) -> str:
    model = card.results[0]["model"]
    tasks = " and ".join(TASK_TITLES[results["task"]] for results in card.results)
    return (
        f"An early-exit `{model['model_type']}` model with {model['num_layers']} layers and exits after layers "
        f"{model['exit_layers']} (criterion `{model['exit_criterion']}`, {model['exit_granularity']}-level exits"
        f"{pooling_clause(model)}), "
        f"evaluated per language on {tasks} ({', '.join(card.languages)}). Each example leaves at the first exit "
        "where it is confident enough, so easy inputs cost fewer layers."
    ) + _trimming_sentence(model.get("vocabulary_trimming"))


def _trimming_sentence(trimming) -> str:
    if not trimming:
        return ""
    before, after = trimming["before"], trimming["after"]
    return (
        f" Its vocabulary was trimmed to the pieces its languages use: {before['vocabulary']:,} -> "
        f"{after['vocabulary']:,} pieces, {before['parameters'] / 1e6:.1f} M -> {after['parameters'] / 1e6:.1f} M "
        f"parameters, checkpoint {before['checkpoint_bytes'] / 2**20:.0f} -> {after['checkpoint_bytes'] / 2**20:.0f} MiB."
    )


def _recipe_section(card: EarlyExitCardData) -> str:
    recipe = card.recipe
    if "teacher" in recipe:  # results.json's distillation record passed as the recipe itself
        recipe = {"distillation": recipe}
    distillation = recipe.get("distillation") or next(
        (results["distillation"] for results in card.results if results.get("distillation")), None
    )
    lines = recipe_lines(distillation)
    lines += [f"- {key.replace('_', ' ')}: `{value}`" for key, value in recipe.items() if key != "distillation"]
    parts = ["\n".join(lines) if lines else "No distillation recipe was recorded for this model."]
    if distillation:
        table = distillation_table({**card.results[0], "distillation": distillation})
        if table:
            parts += ["Data per distillation partition (the checkpoint after each partition, evaluated):"]
            parts += [*partition_eval_lines(distillation), table]
    return "\n\n".join(parts)


def _usage_code(card: EarlyExitCardData, repo: str) -> str:
    task = TASKS[card.results[0]["task"]]
    threshold = card.results[0]["chosen_global"]["threshold"]
    return "\n".join(
        [
            f"from transformers import AutoTokenizer, {task.auto_class}",
            "",
            f'tokenizer = AutoTokenizer.from_pretrained("{repo}")',
            f'model = {task.auto_class}.from_pretrained("{repo}", trust_remote_code=True).eval()',
            f"inputs = {task.example_input}",
            f"outputs = model(**inputs, exit_threshold={threshold:g})",
            "print(outputs.logits.argmax(-1), outputs.exit_layer)",
        ]
    )


def _pipeline_code(card: EarlyExitCardData, repo: str) -> str:
    lines = ["import hf_earlyexit  # registers the early-exit pipelines", "from transformers import pipeline", ""]
    for results in card.results:
        task = TASKS[results["task"]]
        threshold = results["chosen_global"]["threshold"]
        lines.append(f'{results["task"]} = pipeline("{task.pipeline_task}", model="{repo}", trust_remote_code=True)')
        lines.append(f"print({results['task']}({task.pipeline_input}, exit_threshold={threshold:g}))")
    return "\n".join(lines)


def _limitations(random: bool) -> str:
    items = [
        "- Exit thresholds are calibrated per language: the same threshold saves different amounts of compute and "
        "costs different amounts of accuracy in different languages (low-resource languages usually lose more). "
        "Re-check the threshold table above for your language before changing the default.",
        "- Thresholds were chosen on the evaluation split shown; they are not tuned on held-out test data.",
        "- FLOPs are analytic forward FLOPs (2 x multiply-adds) at each example's real length; latency and memory "
        "were measured on the device and thread count named in the efficiency table and will differ on other hardware.",
        "- Batched early exit saves compute per example; latency gains at batch size 1 depend on how early examples "
        "leave.",
    ]
    if random:
        items.append(
            "- These numbers come from a random-weights demo model: they show the mechanics, not model quality."
        )
    return "\n".join(items)


def find_plot_files(output_dir: str | Path, results: Sequence[Mapping[str, Any]]) -> dict[str, list[str]]:
    """The accuracy-against-FLOPs plots `write_plots` saved in `output_dir`, by task (relative paths)."""
    output_dir = Path(output_dir)
    found = {}
    for result in results:
        name = f"{result['task']}_{METRIC_VS_FLOPS_PNG}"
        if (output_dir / name).is_file():
            found[result["task"]] = [name]
    return found


def create_model_card(
    output_dir: str | Path,
    results: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
    recipe: Mapping[str, Any] | None = None,
    model_name: str | None = None,
    repo_id: str | None = None,
    base_model: str | None = None,
    license: str | None = None,
    plot_files: Mapping[str, Sequence[str]] | None = None,
) -> Path:
    """Write `output_dir/README.md`. `results` defaults to `output_dir/results.json`; `plot_files` (task ->
    paths relative to output_dir) defaults to the accuracy-against-FLOPs plots found in output_dir."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        raise ValueError(f"output_dir={str(output_dir)!r} is not a directory; expected the saved model folder")
    if results is None:
        results = [load_results(output_dir / RESULTS_FILENAME)]
    elif isinstance(results, Mapping):
        results = [results]
    results = [dict(r) for r in results]
    if plot_files is None:
        plot_files = find_plot_files(output_dir, results)
    missing = [p for paths in plot_files.values() for p in paths if not (output_dir / p).is_file()]
    if missing:
        raise ValueError(f"plot files {missing} are not in {str(output_dir)!r}; expected paths relative to it")
    card = EarlyExitCardData(
        model_name=model_name or (repo_id.split("/")[-1] if repo_id else output_dir.resolve().name),
        results=results,
        recipe=dict(recipe or {}),
        repo_id=repo_id,
        base_model=base_model,
        license=license,
        plot_files={task: list(paths) for task, paths in plot_files.items()},
    )
    text = render_model_card(card)
    ModelCard(text)  # parse back before writing: a card the Hub cannot read must not replace a good one
    path = output_dir / CARD_FILENAME
    path.write_text(text, encoding="utf-8")
    return path


class HubPushError(RuntimeError):
    """The push failed; the message says where the files are and the command to push them later."""


def push_command(
    repo_id: str,
    output_dir: str | Path,
    private: bool | None = None,
    revision: str | None = None,
    ignore_patterns: Sequence[str] = DEFAULT_IGNORE_PATTERNS,
) -> str:
    """The `hf` CLI command (huggingface_hub >= 1.0) that uploads the folder later; it reads the token from
    `hf auth login` or HF_TOKEN, never from the command line."""
    parts = ["hf", "upload", repo_id, str(output_dir), "."]
    if private:
        parts.append("--private")
    if revision:
        parts += ["--revision", revision]
    for pattern in ignore_patterns:
        parts += ["--exclude", pattern]
    return shlex.join(parts)


def push_to_hub(
    output_dir: str | Path,
    repo_id: str,
    token: str | None = None,
    private: bool | None = None,
    revision: str | None = None,
    commit_message: str = "Upload early-exit model (hf_earlyexit)",
    api: HfApi | None = None,
    ignore_patterns: Sequence[str] = DEFAULT_IGNORE_PATTERNS,
):
    """Upload `output_dir` as saved (weights, config with auto_map, remote code, tokenizer, card, plots, results)
    to `repo_id`, creating the repo if needed (`private` as given; None = the account's default) and the branch
    `revision` when one is given. Returns the commit info. On failure raises `HubPushError`; the local folder is never
    modified and no token (given, from HF_TOKEN or from `hf auth login`) appears in the message."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir() or not any(output_dir.iterdir()):
        raise ValueError(f"output_dir={str(output_dir)!r} is missing or empty; expected the saved model folder")
    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise ValueError(
            f"repo_id={repo_id!r} is invalid; expected 'namespace/name' of letters, digits, -, _, ."
        ) from None
    api = api if api is not None else HfApi(token=token)
    try:
        api.create_repo(repo_id, token=token, private=private, exist_ok=True)
        if revision:
            api.create_branch(repo_id, branch=revision, token=token, exist_ok=True)
        return api.upload_folder(
            folder_path=str(output_dir),
            repo_id=repo_id,
            token=token,
            revision=revision,
            commit_message=commit_message,
            ignore_patterns=list(ignore_patterns),
        )
    except Exception as error:  # the network boundary: offline, auth, HTTP, DNS all mean "push later"
        reason = f"{type(error).__name__}: {error}"
        for secret in {token, get_token()} - {None, ""}:
            reason = reason.replace(secret, "***")
        reason = reason.splitlines()[0] if reason else type(error).__name__
        message = (
            f"push to {repo_id} failed ({reason}); everything is saved in {output_dir}; push it later with: "
            f"{push_command(repo_id, output_dir, private, revision, ignore_patterns)}"
        )
        raise HubPushError(message) from None


@dataclass(frozen=True)
class PushSettings:
    """The Hub settings of a run, kept out of the TrainingArguments (see `take_push_settings`)."""

    push: bool = False
    repo_id: str | None = None
    token: str | None = field(default=None, repr=False)  # never shown in logs or reprs
    private: bool | None = None
    revision: str | None = None


def take_push_settings(args) -> PushSettings:
    """Take the push settings out of TrainingArguments before a Trainer is built.

    The Trainer would create the Hub repo at init and push checkpoints while training; the example scripts push
    the finished folder once, at the end, with ``push_finished_folder``. The token is removed from ``args`` too:
    the Trainer pickles its arguments into ``training_args.bin`` in every saved folder, and that file is pushed.
    The way to pass a token is HF_TOKEN or ``hf auth login`` (huggingface_hub reads both at push time)."""
    settings = PushSettings(
        args.push_to_hub, args.hub_model_id, args.hub_token, args.hub_private_repo, args.hub_revision
    )
    args.push_to_hub = False
    args.hub_token = None
    return settings


def push_finished_folder(
    output_dir: str | Path, settings: PushSettings, ignore_patterns: Sequence[str] = DEFAULT_IGNORE_PATTERNS
) -> str | None:
    """Push ``output_dir`` to ``settings.repo_id`` (default: the folder's name), without ``ignore_patterns``; on
    failure log and return the one-line ``HubPushError`` message (everything stays saved; it says how to push
    later), else None."""
    output_dir = Path(output_dir)
    try:
        push_to_hub(
            output_dir,
            settings.repo_id or output_dir.name,
            token=settings.token,
            private=settings.private,
            revision=settings.revision,
            ignore_patterns=ignore_patterns,
        )
    except HubPushError as error:
        logger.error("%s", error)
        return str(error)
    return None
