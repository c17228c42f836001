"""Fine-tune an early-exit model on English and evaluate it zero-shot per language: the body of
``examples/run_xnli.py`` and ``examples/run_wikiann.py``.

One flow for both tasks: load and check the data (before any model), load the tokenizer and the model (a plain
encoder checkpoint gets exit heads; an early-exit checkpoint loads as is), train with the chosen exit training mode,
sweep the exit threshold per language, measure latency and memory, then write the model, ``results.json``, a
markdown report, plots and the model card into ``output_dir`` and push it when asked.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import (
    AutoConfig,
    AutoTokenizer,
    DataCollatorForTokenClassification,
    DataCollatorWithPadding,
    set_seed,
)

from .cli import check_local_or_hub_id, refusing_bad_input
from .data.corpus import load_distillation_corpus
from .data.tasks import (
    EVAL_LANGUAGES,
    WIKIANN_TAGS,
    XNLI_LABELS,
    load_wikiann,
    load_xnli,
    local_task_file,
    normalize_split,
    read_wikiann_files,
    read_xnli_files,
    tokenize_and_align_labels,
    tokenize_xnli,
)
from .evaluation.efficiency import describe_model, full_depth_flops, measure_efficiency
from .evaluation.plots import write_plots
from .evaluation.report import write_report
from .evaluation.results import build_results, save_results, validate_distillation
from .evaluation.sweep import DEFAULT_THRESHOLDS, check_sweepable, evaluate_languages
from .hub import create_model_card, push_finished_folder, take_push_settings
from .modeling import EARLY_EXIT_FAMILIES
from .pipelines import save_pretrained_with_pipeline
from .run_outputs import prepare_output_dir
from .training import EarlyExitTrainer, EarlyExitTrainingArguments
from .vocab import trim_vocabulary, vocabulary_summary

logger = logging.getLogger(__name__)

TASKS = {
    "xnli": {
        "labels": XNLI_LABELS,
        "load": load_xnli,
        "read_files": read_xnli_files,
        "tokenize": tokenize_xnli,
        "token_level": False,
    },
    "wikiann": {
        "labels": WIKIANN_TAGS,
        "load": load_wikiann,
        "read_files": read_wikiann_files,
        "tokenize": tokenize_and_align_labels,
        "token_level": True,
    },
}


@dataclass
class ModelArguments:
    model_name_or_path: str = field(
        default="FacebookAI/xlm-roberta-base",
        metadata={
            "help": "Hub id or folder: a plain encoder (XLM-R, BERT; exit heads are added) or an early-exit model"
        },
    )
    tokenizer_name_or_path: str | None = field(default=None, metadata={"help": "Defaults to model_name_or_path"})
    # Exit fields left at None keep the checkpoint's own values (an early-exit checkpoint) or the config defaults.
    exit_layers: list[int] | None = field(default=None, metadata={"help": "1-based exit layers; default every layer"})
    exit_criterion: str | None = field(default=None, metadata={"help": "entropy (default) | patience | max_prob"})
    exit_patience: int | None = field(default=None, metadata={"help": "PABEE patience for the patience criterion"})
    exit_head: str | None = field(default=None, metadata={"help": "pooler | linear; default per task"})
    exit_granularity: str | None = field(
        default=None, metadata={"help": "sequence (default) | token (token classification)"}
    )
    exit_window: int | None = field(default=None, metadata={"help": "token granularity: neighbour window"})
    pooling: str | None = field(
        default=None,
        metadata={"help": "first | mean: what the sequence heads read (mean over real tokens for mean-pooled encoders)"},
    )
    freeze_word_embeddings: bool = field(
        default=False,
        metadata={
            "help": "Keep the word-embedding table fixed while fine-tuning: XLM-R's 250k rows and their optimizer "
            "state dominate a small model's step, and zero-shot transfer needs the shared lexicon kept anyway"
        },
    )
    random_weights: bool = field(
        default=False,
        metadata={"help": "The model descends from random weights (the demo): results are labelled as mechanics"},
    )
    trim_vocabulary: bool = field(
        default=False,
        metadata={
            "help": "Before fine-tuning, keep only the vocabulary pieces of the task's train and eval texts and of "
            "trim_corpus (hf_earlyexit.trim_vocabulary; SentencePiece-Unigram tokenizers such as XLM-R's)"
        },
    )
    trim_corpus: list[str] | None = field(
        default=None,
        metadata={"help": "More text for the trimming map: corpus sources as load_distillation_corpus reads them"},
    )

    def exit_overrides(self) -> dict[str, Any]:
        """The exit fields given by the user; the others stay as the checkpoint or the config defaults have them."""
        names = (
            "exit_layers",
            "exit_criterion",
            "exit_patience",
            "exit_head",
            "exit_granularity",
            "exit_window",
            "pooling",
        )
        return {name: getattr(self, name) for name in names if getattr(self, name) is not None}


@dataclass
class TaskDataArguments:
    data_dir: str | None = field(
        default=None,
        metadata={"help": "Folder of local files ({lang}.{split}.tsv / .conll, split train|dev); None = the Hub"},
    )
    train_language: str = field(default="en", metadata={"help": "Language fine-tuned on (zero-shot to the rest)"})
    train_files: list[str] | None = field(
        default=None,
        metadata={
            "help": "Local training files in the task's layout but of any name (e.g. ../shared/data/nli/*.tsv), "
            "concatenated and shuffled (seed 0, so max_train_samples takes a mix); then train_split is not read and "
            "no holdout is cut"
        },
    )
    eval_languages: list[str] = field(default_factory=lambda: list(EVAL_LANGUAGES), metadata={"help": "Evaluated"})
    train_split: str = field(default="train", metadata={"help": "train | validation (= dev) | test"})
    eval_split: str = field(default="validation", metadata={"help": "train | validation (= dev) | test"})
    holdout: int = field(
        default=500,
        metadata={
            "help": "When train_split == eval_split: the last `holdout` rows of every language are evaluated and "
            "never trained on (XNLI rows are translations of each other, so the same rows are held out everywhere)"
        },
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Truncate training data (debug, demo)"})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Truncate each language's eval data"})
    eval_sample_seed: int | None = field(
        default=None,
        metadata={
            "help": "With max_eval_samples: take a random subset drawn with this seed instead of the first rows (the "
            "same seed draws the same rows of equally long files, so XNLI's aligned translations stay aligned)"
        },
    )
    max_seq_length: int = field(default=128, metadata={"help": "Truncation length in tokens"})

    def __post_init__(self):
        # One name per split ("dev" is "validation"), so the same split given two ways is recognised as the same.
        self.train_split = normalize_split(self.train_split)
        self.eval_split = normalize_split(self.eval_split)
        for name in ("holdout", "max_train_samples", "max_eval_samples"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name}={value}; expected a positive number of rows")
        if self.max_seq_length < 8:
            raise ValueError(f"max_seq_length={self.max_seq_length}; expected >= 8 tokens")
        if not self.eval_languages:
            raise ValueError("eval_languages is empty; expected at least one language code")
        if self.data_dir is not None and not Path(self.data_dir).is_dir():
            raise ValueError(f"data_dir={self.data_dir!r} is not a folder; expected local task files or None (Hub)")


@dataclass
class SweepArguments:
    thresholds: list[float] = field(
        default_factory=lambda: list(DEFAULT_THRESHOLDS), metadata={"help": "Exit thresholds swept per language"}
    )
    max_drop: float = field(
        default=0.01, metadata={"help": "Largest metric drop (fraction) a chosen threshold may cost"}
    )
    measure_efficiency: bool = field(default=True, metadata={"help": "Latency at batch 1/32 and peak memory"})
    efficiency_seq_len: int = field(default=128, metadata={"help": "Tokens per example for latency and FLOPs tables"})
    latency_repeats: int = field(default=10, metadata={"help": "Timed repetitions per setting (median reported)"})
    compare_token_exit: bool = field(
        default=True,
        metadata={
            "help": "Token classification with sequence-level exits: also sweep token-level exits of the same model "
            "(results' sweep_token, the sequence-vs-token plot)"
        },
    )
    token_thresholds: list[float] | None = field(
        default=None,
        metadata={
            "help": "Thresholds of that token-level sweep (default: thresholds). Each costs one forward pass over every "
            "eval language (a token-level exit cannot be replayed from stored logits, unlike the sequence sweep)"
        },
    )
    distillation_summary: str | None = field(
        default=None, metadata={"help": "distillation.json written by run_distil.py, recorded in results and card"}
    )
    onnx_export: str | None = field(
        default=None,
        metadata={
            "help": "Also export the model for ONNX Runtime into output_dir/onnx: 'fp32' or 'int8' (needs the onnx "
            "extra; sequence classification only). Recorded in results, report and model card"
        },
    )

    def __post_init__(self):
        if self.onnx_export not in (None, "fp32", "int8"):
            raise ValueError(f"onnx_export={self.onnx_export!r}; expected None, 'fp32' or 'int8'")
        if not self.thresholds or any(not 0 <= t < math.inf for t in self.thresholds):
            raise ValueError(f"thresholds={self.thresholds}; expected a non-empty list of finite values >= 0")
        if self.token_thresholds is not None and (
            not self.token_thresholds or any(not 0 <= t < math.inf for t in self.token_thresholds)
        ):
            raise ValueError(
                f"token_thresholds={self.token_thresholds}; expected None or a non-empty list of finite values >= 0"
            )
        if not 0 <= self.max_drop < 1:
            raise ValueError(f"max_drop={self.max_drop}; expected a fraction in [0, 1)")
        if self.latency_repeats < 1 or self.efficiency_seq_len < 8:
            raise ValueError(
                f"latency_repeats={self.latency_repeats}, efficiency_seq_len={self.efficiency_seq_len}; "
                "expected >= 1 and >= 8"
            )
        if self.distillation_summary is not None and not Path(self.distillation_summary).is_file():
            raise ValueError(f"distillation_summary={self.distillation_summary!r} does not exist; expected a JSON file")


TASK_ARGUMENTS = (ModelArguments, TaskDataArguments, SweepArguments, EarlyExitTrainingArguments)


def early_exit_classes(model_type: str) -> tuple[type, type, type]:
    """(config class, sequence model, token model) for an encoder family or its early-exit type."""
    for config_class, sequence_class, token_class in EARLY_EXIT_FAMILIES:
        base_type = config_class.model_type.removesuffix("-early-exit")
        if model_type in (config_class.model_type, base_type):
            return config_class, sequence_class, token_class
    supported = [c.model_type.removesuffix("-early-exit") for c, _, _ in EARLY_EXIT_FAMILIES]
    raise ValueError(f"model_type={model_type!r} has no early-exit twin; expected one of {supported}")


def load_early_exit_model(name_or_path: str, token_level: bool, labels, exit_overrides: dict[str, Any]):
    """Any supported encoder checkpoint as an early-exit model: backbone and (when present) final head loaded, the
    exit heads new. The exit fields go through the config's constructor, so they are validated."""
    base = AutoConfig.from_pretrained(name_or_path)
    config_class, sequence_class, token_class = early_exit_classes(base.model_type)
    values = base.to_dict()
    for key in ("model_type", "architectures", "auto_map", "transformers_version"):
        values.pop(key, None)
    values.update(exit_overrides)
    values.update(
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )
    config = config_class(**values)
    model_class = token_class if token_level else sequence_class
    return model_class.from_pretrained(name_or_path, config=config)


def task_texts(*datasets) -> Iterator[str]:
    """The raw text of XNLI rows (premise, hypothesis) or WikiANN rows (tokens joined by spaces)."""
    for dataset in datasets:
        if "tokens" in dataset.column_names:
            yield from (" ".join(tokens) for tokens in dataset["tokens"])
        else:
            yield from (text for pair in zip(dataset["premise"], dataset["hypothesis"]) for text in pair)


def trim_for_task(model, tokenizer, train_raw, eval_raw: dict, corpora: list[str] | None):
    """trim_vocabulary on the task's own text (and `corpora`); returns (model, tokenizer, before/after summary)."""
    texts = [task_texts(train_raw, *eval_raw.values())]
    texts += [load_distillation_corpus(source, num_partitions=1, partition=0) for source in corpora or []]
    before = vocabulary_summary(model, tokenizer)
    model, tokenizer = trim_vocabulary(model, tokenizer, itertools.chain(*texts))
    return model, tokenizer, {"before": before, "after": vocabulary_summary(model, tokenizer)}


def _split_rows(datasets: dict, holdout: int, keep: str):
    """Train on the head, evaluate on the tail, for every language alike."""
    out = {}
    for lang, dataset in datasets.items():
        if len(dataset) <= holdout:
            raise ValueError(f"{lang}: {len(dataset)} rows, not more than holdout={holdout}; lower holdout")
        cut = len(dataset) - holdout
        if keep == "tail":
            out[lang] = dataset.select(range(cut, len(dataset)))
        elif "premise" in dataset.column_names:
            # XNLI pairs come in premise groups (one premise, three hypotheses): a premise of the held-out rows
            # keeps all of its pairs out of training, so the cut never splits a group.
            held_out = set(dataset["premise"][cut:])
            out[lang] = dataset.select([i for i, premise in enumerate(dataset["premise"][:cut]) if premise not in held_out])
        else:
            out[lang] = dataset.select(range(cut))
    return out


def _truncate(dataset, limit: int | None):
    return dataset if limit is None or len(dataset) <= limit else dataset.select(range(limit))


def _refuse_shared_files(task: str, data_args: TaskDataArguments, languages) -> None:
    """Two split names that read the same local file would train on the evaluation rows."""
    lang = data_args.train_language
    if data_args.data_dir is None or data_args.train_split == data_args.eval_split or lang not in languages:
        return
    train_file, eval_file = (
        local_task_file(task, data_args.data_dir, lang, split)
        for split in (data_args.train_split, data_args.eval_split)
    )
    if train_file.samefile(eval_file):
        raise ValueError(
            f"train_split={data_args.train_split!r} and eval_split={data_args.eval_split!r} read the same file for "
            f"{lang!r} ({train_file} is {eval_file}): expected disjoint rows; give both the same split to hold out "
            "its last `holdout` rows"
        )


def eval_rows_slice(data_args: TaskDataArguments) -> str:
    """The evaluated rows of each language in `datasets` split-slice notation: `validation[-490:]` for a holdout,
    `validation[:48]` for max_eval_samples, `validation[-490:-442]` for both (the first 48 of the last 490)."""
    start = -data_args.holdout if data_args.train_split == data_args.eval_split else None
    stop = data_args.max_eval_samples
    if stop is not None and start is not None:
        stop = start + stop if start + stop < 0 else None
    if start is None and stop is None:
        return data_args.eval_split
    return f"{data_args.eval_split}[{'' if start is None else start}:{'' if stop is None else stop}]"


def load_task_data(task: str, data_args: TaskDataArguments):
    """(train dataset, {lang: eval dataset}) as raw rows; every file problem surfaces here, before any model."""
    spec = TASKS[task]
    languages = list(dict.fromkeys(data_args.eval_languages))
    evals = spec["load"](languages, data_args.eval_split, data_args.data_dir)
    if data_args.train_files:
        # Files gathered from several sources come grouped by source: shuffled, a truncation still mixes them.
        train_dataset = spec["read_files"](data_args.train_files).shuffle(seed=0)
    else:
        train = spec["load"]([data_args.train_language], data_args.train_split, data_args.data_dir)
        _refuse_shared_files(task, data_args, languages)
        if data_args.train_split == data_args.eval_split:
            train = _split_rows(train, data_args.holdout, keep="head")
            evals = _split_rows(evals, data_args.holdout, keep="tail")
        train_dataset = train[data_args.train_language]
    train_dataset = _truncate(train_dataset, data_args.max_train_samples)
    if data_args.eval_sample_seed is not None:
        evals = {lang: dataset.shuffle(seed=data_args.eval_sample_seed) for lang, dataset in evals.items()}
    evals = {lang: _truncate(dataset, data_args.max_eval_samples) for lang, dataset in evals.items()}
    return train_dataset, evals


def export_deployment(model, tokenizer, output_dir: Path, precision: str) -> dict[str, Any]:
    """Export into ``output_dir/onnx`` (see ``hf_earlyexit.export_onnx``); the results' ``deployment`` entry."""
    from .deploy import export_onnx

    folder = export_onnx(model, output_dir / "onnx", quantize=None if precision == "fp32" else "int8", tokenizer=tokenizer)
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    entry = {"onnx_dir": folder.name, "precision": precision, "opset": manifest["opset"],
             "fp32_max_abs_diff": manifest["validation"]["fp32_max_abs_diff"]}
    if precision == "int8":
        entry["fp32_ffn_down_layers"] = manifest["quantization"]["fp32"]["ffn_down_layers"]
    return entry


def run_task(
    task: str,
    model_args: ModelArguments,
    data_args: TaskDataArguments,
    sweep_args: SweepArguments,
    training_args: EarlyExitTrainingArguments,
) -> dict[str, Any] | None:
    """Train, evaluate and write everything into ``training_args.output_dir``; returns results.json's content
    (None on processes other than the main one)."""
    # Everything up to the trainer is set-up: bad input there is refused in one line, before any training.
    with refusing_bad_input(f"run_{task}"):
        check_local_or_hub_id("model_name_or_path", model_args.model_name_or_path)
        check_local_or_hub_id("tokenizer_name_or_path", model_args.tokenizer_name_or_path)
        prepare_output_dir(training_args)
        spec = TASKS[task]
        if not spec["token_level"] and model_args.exit_granularity not in (None, "sequence"):
            raise ValueError(f"exit_granularity={model_args.exit_granularity!r}; {task} classifies whole sequences")
        if spec["token_level"] and model_args.pooling not in (None, "first"):
            raise ValueError(
                f"pooling={model_args.pooling!r}; {task} classifies each token, so there is nothing to pool"
            )
        train_raw, eval_raw = load_task_data(task, data_args)
        distillation = None
        if sweep_args.distillation_summary:
            distillation = json.loads(Path(sweep_args.distillation_summary).read_text(encoding="utf-8"))
            try:
                validate_distillation(distillation)  # now, not in results validation after training
            except ValueError as error:
                raise ValueError(f"distillation_summary={sweep_args.distillation_summary!r}: {error}") from None

        tokenizer = AutoTokenizer.from_pretrained(model_args.tokenizer_name_or_path or model_args.model_name_or_path)
        # Seeded before the new heads are initialised: the Trainer seeds only when it is built, after the model.
        set_seed(training_args.seed)
        model = load_early_exit_model(
            model_args.model_name_or_path, spec["token_level"], spec["labels"], model_args.exit_overrides()
        )
        trimming = None
        if model_args.trim_vocabulary:
            model, tokenizer, trimming = trim_for_task(model, tokenizer, train_raw, eval_raw, model_args.trim_corpus)
        if model_args.freeze_word_embeddings:
            # Before the trainer is built: the trainer and its exit modes only ever switch what was trainable then.
            model.get_input_embeddings().weight.requires_grad_(False)
        check_sweepable(model.config)  # before any training: the run ends with a threshold sweep
        max_length = data_args.max_seq_length
        train_dataset = spec["tokenize"](train_raw, tokenizer, max_length)
        eval_datasets = spec["tokenize"](eval_raw, tokenizer, max_length)
        collator = (
            DataCollatorForTokenClassification(tokenizer) if spec["token_level"] else DataCollatorWithPadding(tokenizer)
        )

        hub = take_push_settings(training_args)
        trainer = EarlyExitTrainer(
            model=model,
            args=training_args,
            train_dataset=train_dataset,
            data_collator=collator,
            processing_class=tokenizer,
        )
    if training_args.do_train:
        trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    if not trainer.is_world_process_zero():
        return None

    model.eval()
    output_dir = Path(training_args.output_dir)
    languages, chosen_global = evaluate_languages(
        model,
        eval_datasets,
        collator,
        thresholds=sweep_args.thresholds,
        max_drop=sweep_args.max_drop,
        batch_size=training_args.per_device_eval_batch_size,
        compare_token_exit=spec["token_level"]
        and model.config.exit_granularity == "sequence"
        and sweep_args.compare_token_exit,
        token_thresholds=sweep_args.token_thresholds,
    )
    # Saved before efficiency and results: a check failing there must not throw the trained model away.
    # The chosen global threshold becomes the saved model's default, so the published model exits as measured.
    model.config.exit_threshold = chosen_global["threshold"]
    # Weights, tokenizer, remote code for the model and its pipelines: loads with or without this package.
    save_pretrained_with_pipeline(model, tokenizer, output_dir)
    efficiency = None
    if sweep_args.measure_efficiency:
        # Every evaluated language, drawn by a seeded hash of the tokens (not the first rows of the first one).
        efficiency = measure_efficiency(
            model,
            {language: eval_datasets[language] for language in data_args.eval_languages},
            chosen_threshold=chosen_global["threshold"],
            seq_len=sweep_args.efficiency_seq_len,
            repeats=sweep_args.latency_repeats,
            seed=training_args.seed,
        )
    model_info = describe_model(model, model_args.model_name_or_path)
    if trimming is not None:
        model_info["vocabulary_trimming"] = trimming
    results = build_results(
        task=task,
        languages=languages,
        model_info=model_info,
        seq_len=sweep_args.efficiency_seq_len,
        full_depth_flops=full_depth_flops(model, sweep_args.efficiency_seq_len),
        max_drop=sweep_args.max_drop,
        chosen_global=chosen_global,
        efficiency=efficiency,
        distillation=distillation,
        split=data_args.eval_split,
        train_language=data_args.train_language,
        random_weights=model_args.random_weights,
        eval_rows=eval_rows_slice(data_args),
    )
    if sweep_args.onnx_export:
        results["deployment"] = export_deployment(model, tokenizer, output_dir, sweep_args.onnx_export)
    save_results(results, output_dir)
    plots = write_plots(results, output_dir)
    write_report(results, output_dir, plots)
    # A Hub id (not a local folder) is the model this one was fine-tuned from.
    base_model = None if Path(model_args.model_name_or_path).exists() else model_args.model_name_or_path
    create_model_card(output_dir, results, recipe=distillation, repo_id=hub.repo_id, base_model=base_model)
    logger.info("wrote model, results.json, report, plots and model card to %s", output_dir)
    if hub.push:
        results["push_error"] = push_finished_folder(output_dir, hub)
    return results
