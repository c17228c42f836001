"""Task-agnostic (masked-LM) distillation over corpus partitions: the body of ``examples/run_distil.py``.

The partitions of the corpus are trained in order as ONE run (one optimizer, one set of projections, one stage
schedule): the stream is partition 0's packed blocks, then partition 1's, and so on, each cut to a whole number of
optimizer steps, and the student is exported after each partition's last step. So ``partition-k/`` is the student
after the first k + 1 fifths of the data, which is what "how much data is enough" curves need.
"""

from __future__ import annotations

import itertools
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from datasets import concatenate_datasets
from transformers import AutoConfig, AutoModelForMaskedLM, AutoTokenizer, TrainerCallback, set_seed

from .cli import check_local_or_hub_id, refusing_bad_input
from .data.corpus import DEFAULT_CORPUS, load_distillation_corpus
from .data.packing import count_trained_tokens, mlm_data_collator, pack_for_mlm
from .data.resume import StreamCheckpointCallback
from .distillation import DistillationArguments, DistillationTrainer
from .distillation.layer_maps import resolve_layer_map
from .distillation.student_init import compact_student, student_from_teacher_layers
from .evaluation.probe import linear_probe_xnli
from .hub import DISTILLATION_IGNORE_PATTERNS, push_finished_folder, take_push_settings
from .run_outputs import prepare_output_dir
from .vocab import trim_vocabulary, vocabulary_summary

logger = logging.getLogger(__name__)

STUDENT_INITS = ("pretrained", "teacher_layers", "compact")


@dataclass
class DistilModelArguments:
    teacher_name_or_path: str = field(
        default="FacebookAI/xlm-roberta-large", metadata={"help": "Masked-LM teacher (Hub id or folder)"}
    )
    student_init: str = field(
        default="pretrained",
        metadata={
            "help": "pretrained: load student_name_or_path as is (thesis default); teacher_layers: copy "
            "student_layers of the teacher (widths equal, DistilBERT-style); compact: a narrow student whose "
            "embeddings are the teacher's projected on their principal directions"
        },
    )
    student_name_or_path: str | None = field(
        default="FacebookAI/xlm-roberta-base", metadata={"help": "Student for student_init=pretrained"}
    )
    student_layers: list[int] | None = field(
        default=None, metadata={"help": "Teacher layers (1-based) copied for student_init=teacher_layers"}
    )
    compact_num_layers: int = field(default=6, metadata={"help": "student_init=compact: layers"})
    compact_hidden_size: int = field(default=256, metadata={"help": "student_init=compact: width"})
    compact_num_attention_heads: int = field(default=4, metadata={"help": "student_init=compact: heads"})
    tokenizer_name_or_path: str | None = field(default=None, metadata={"help": "Defaults to the teacher's"})
    trim_vocabulary: bool = field(
        default=False,
        metadata={
            "help": "Before distilling, trim teacher and student to the pieces of the distilled partitions, with one "
            "shared map so their vocabularies stay identical (hf_earlyexit.trim_vocabulary)"
        },
    )

    def __post_init__(self):
        if self.student_init not in STUDENT_INITS:
            raise ValueError(f"student_init={self.student_init!r}; expected one of {STUDENT_INITS}")
        if self.student_init == "pretrained" and not self.student_name_or_path:
            raise ValueError("student_init=pretrained needs student_name_or_path")
        if self.student_init == "teacher_layers" and not self.student_layers:
            raise ValueError("student_init=teacher_layers needs student_layers, e.g. [2, 4, 6]")
        for name in ("compact_num_layers", "compact_hidden_size", "compact_num_attention_heads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)}; expected a positive integer")


EVAL_METHODS = ("finetune", "linear_probe")


@dataclass
class CorpusArguments:
    corpus: str = field(default=DEFAULT_CORPUS, metadata={"help": "Hub dataset id, local folder or glob"})
    languages: list[str] | None = field(default=None, metadata={"help": "Languages kept; default all"})
    sampling: str = field(default="proportional", metadata={"help": "proportional | temperature"})
    temperature_alpha: float = field(default=0.3, metadata={"help": "Exponent of temperature sampling"})
    partitions: list[int] | None = field(
        default=None, metadata={"help": "Partitions distilled, in order (default all num_partitions)"}
    )
    block_size: int = field(default=128, metadata={"help": "Tokens per packed masked-LM block"})
    mlm_probability: float = field(default=0.15, metadata={"help": "Share of tokens masked"})
    steps_per_partition: int | None = field(
        default=None,
        metadata={
            "help": "Optimizer steps per partition. Default: one pass, counted by packing each partition once "
            "(fine for small corpora; set it for the 27 GB corpus, ≈ tokens / (block_size × global batch))"
        },
    )
    count_tokens: bool = field(
        default=True,
        metadata={
            "help": "Before training, count each partition's blocks (steps_per_partition must fit in them) and the "
            "tokens trained per language (a tokenizer pass over the data). false skips the pass when "
            "steps_per_partition is set: then nothing checks that a partition holds its steps"
        },
    )
    eval_task_config: str | None = field(
        default=None,
        metadata={
            "help": "A run_xnli.py / run_wikiann.py config: fine-tune and evaluate (full depth) the student of every "
            "partition with it, to record the metric against distillation data"
        },
    )
    eval_task: str = field(default="xnli", metadata={"help": "xnli | wikiann: the task of eval_task_config"})
    eval_method: str = field(
        default="finetune",
        metadata={
            "help": "finetune: fine-tune each partition's student with eval_task_config and evaluate it at full "
            "depth | linear_probe (xnli only): a logistic regression on the frozen student's pooled features "
            "(hf_earlyexit.evaluation.probe): one encoding pass instead of a fine-tune"
        },
    )

    def __post_init__(self):
        if self.block_size < 8:
            raise ValueError(f"block_size={self.block_size}; expected >= 8 tokens")
        if self.steps_per_partition is not None and self.steps_per_partition < 1:
            raise ValueError(f"steps_per_partition={self.steps_per_partition}; expected a positive integer")
        if self.eval_task_config is not None and not Path(self.eval_task_config).is_file():
            raise ValueError(f"eval_task_config={self.eval_task_config!r} does not exist; expected a YAML/JSON file")
        if self.eval_task not in ("xnli", "wikiann"):
            raise ValueError(f"eval_task={self.eval_task!r}; expected xnli or wikiann")
        if self.eval_method not in EVAL_METHODS:
            raise ValueError(f"eval_method={self.eval_method!r}; expected one of {EVAL_METHODS}")
        if self.eval_method == "linear_probe" and self.eval_task != "xnli":
            raise ValueError(f"eval_method=linear_probe probes sentence pairs; eval_task={self.eval_task!r}, expected xnli")
        if self.partitions is not None and (not self.partitions or self.partitions != sorted(set(self.partitions))):
            # partition-k/ is the student after partitions[:k+1]: the data-size curve needs them in order
            raise ValueError(f"partitions={self.partitions}; expected distinct partition indices in increasing order")


DISTIL_ARGUMENTS = (DistilModelArguments, CorpusArguments, DistillationArguments)


def check_layer_maps(model_args: DistilModelArguments, args: DistillationArguments) -> None:
    """The layer maps against both models' depths from their configs, before any weights load (the trainer checks
    the loaded models again)."""
    teacher_layers = AutoConfig.from_pretrained(model_args.teacher_name_or_path).num_hidden_layers
    if model_args.student_init == "pretrained":
        student_layers = AutoConfig.from_pretrained(model_args.student_name_or_path).num_hidden_layers
    elif model_args.student_init == "teacher_layers":
        student_layers = len(model_args.student_layers)
    else:
        student_layers = model_args.compact_num_layers
    resolve_layer_map(args.layer_map, student_layers, teacher_layers)
    if args.attention_layer_map is not None:
        resolve_layer_map(args.attention_layer_map, student_layers, teacher_layers, "attention_layer_map")


def build_student(model_args: DistilModelArguments, teacher):
    if model_args.student_init == "pretrained":
        return AutoModelForMaskedLM.from_pretrained(model_args.student_name_or_path)
    if model_args.student_init == "teacher_layers":
        return student_from_teacher_layers(teacher, list(model_args.student_layers))
    return compact_student(
        teacher,
        num_layers=model_args.compact_num_layers,
        hidden_size=model_args.compact_hidden_size,
        num_attention_heads=model_args.compact_num_attention_heads,
    )


class PartitionExportCallback(TrainerCallback):
    """Export the plain student at the last step of each partition."""

    def __init__(self, trainer: DistillationTrainer, boundaries: dict[int, Path]):
        self.trainer, self.boundaries = trainer, boundaries

    def on_step_end(self, args, state, control, **kwargs):
        path = self.boundaries.get(state.global_step)
        if path is not None:
            self.trainer.save_model(str(path))
            logger.info("step %d: exported the student to %s", state.global_step, path)


def run_distillation(
    model_args: DistilModelArguments, corpus_args: CorpusArguments, args: DistillationArguments
) -> dict[str, Any]:
    """Distil partition after partition; returns (and writes to ``output_dir/distillation.json``) the summary that
    run_xnli.py / run_wikiann.py record in results.json and the model card."""
    # Everything up to the trainer is set-up: bad input there is refused in one line, before any training.
    with refusing_bad_input("run_distil"):
        check_local_or_hub_id("teacher_name_or_path", model_args.teacher_name_or_path)
        check_local_or_hub_id("tokenizer_name_or_path", model_args.tokenizer_name_or_path)
        if model_args.student_init == "pretrained":
            check_local_or_hub_id("student_name_or_path", model_args.student_name_or_path)
        if not any(char in corpus_args.corpus for char in "*?["):
            check_local_or_hub_id("corpus", corpus_args.corpus, "corpus folder or file")
        prepare_output_dir(args)
        partitions = corpus_args.partitions if corpus_args.partitions is not None else list(range(args.num_partitions))
        bad = [p for p in partitions if not 0 <= p < args.num_partitions]
        if bad:
            raise ValueError(
                f"partitions {bad} are out of range; expected 0 <= p < num_partitions={args.num_partitions}"
            )
        corpus_kwargs = dict(
            source=corpus_args.corpus,
            languages=corpus_args.languages,
            num_partitions=args.num_partitions,
            sampling=corpus_args.sampling,
            temperature_alpha=corpus_args.temperature_alpha,
            seed=args.seed,
        )
        texts = {p: load_distillation_corpus(partition=p, **corpus_kwargs) for p in partitions}  # checks every file

        tokenizer = AutoTokenizer.from_pretrained(model_args.tokenizer_name_or_path or model_args.teacher_name_or_path)
        global_batch = args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
        blocks = {p: pack_for_mlm(texts[p], tokenizer, corpus_args.block_size) for p in partitions}
        steps, tokens_trained = {}, {}
        for p in partitions:
            wanted = corpus_args.steps_per_partition
            if wanted is None or corpus_args.count_tokens:
                # One tokenizer pass: the partition's real size in steps, and the tokens of the blocks trained on.
                available, tokens_trained[p] = count_trained_tokens(
                    texts[p], tokenizer, corpus_args.block_size, global_batch, max_steps=wanted
                )
                steps[p] = available // global_batch
                if wanted is not None and steps[p] < wanted:
                    raise ValueError(
                        f"partition {p} packs into {available} blocks of {corpus_args.block_size} tokens, "
                        f"{steps[p]} steps of {global_batch} blocks; steps_per_partition={wanted} would run into the "
                        f"next partition: expected steps_per_partition <= {steps[p]} (or unset for one pass)"
                    )
            else:
                steps[p], tokens_trained[p] = wanted, {}
            if steps[p] == 0:
                raise ValueError(
                    f"partition {p} packs into less than one batch of {global_batch} blocks; use less "
                    "batch, a smaller block_size or more data"
                )
        args.max_steps = sum(steps.values())
        check_layer_maps(model_args, args)
        # Seeded before the student (and its new weights) is built: the Trainer seeds only when it is built.
        set_seed(args.seed)
        teacher = AutoModelForMaskedLM.from_pretrained(model_args.teacher_name_or_path)
        student = build_student(model_args, teacher)
        trimming = None
        if model_args.trim_vocabulary:
            # One map for both models, so their vocabularies stay identical (the trainer refuses mismatched ones).
            before = vocabulary_summary(student, tokenizer)
            (teacher, student), tokenizer = trim_vocabulary(
                [teacher, student], tokenizer, itertools.chain(*(texts[p] for p in partitions))
            )
            trimming = {"before": before, "after": vocabulary_summary(student, tokenizer)}
            # The map was built from these very texts, so they segment as before and the step counts above hold;
            # only the ids change, hence the blocks are packed again with the trimmed tokenizer.
            blocks = {p: pack_for_mlm(texts[p], tokenizer, corpus_args.block_size) for p in partitions}
        # Whole steps per partition, so each export falls exactly at a partition's end.
        stream = concatenate_datasets([blocks[p].take(steps[p] * global_batch) for p in partitions])

        output_dir = Path(args.output_dir)
        partition_dirs = {p: output_dir / f"partition-{p}" for p in partitions}
        boundaries, done = {}, 0
        for p in partitions:
            done += steps[p]
            boundaries[done] = partition_dirs[p]
        hub = take_push_settings(args)
        # Exact, cheap resume: the stream position is saved with every checkpoint and restored directly, so nothing
        # is re-read or skipped (the Trainer's default would replay the stream up to the checkpoint).
        collator = mlm_data_collator(tokenizer, corpus_args.mlm_probability, seed=args.seed)
        stream_callback = StreamCheckpointCallback(stream, collator)
        if args.resume_from_checkpoint:
            stream_callback.load_checkpoint(args.resume_from_checkpoint)
            args.ignore_data_skip = True
        trainer = DistillationTrainer(
            model=student,
            teacher_model=teacher,
            args=args,
            callbacks=[stream_callback],
            train_dataset=stream_callback.stream,
            data_collator=collator,
            processing_class=tokenizer,
        )
    trainer.add_callback(PartitionExportCallback(trainer, boundaries))
    trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
    trainer.save_model(str(output_dir))

    summary = {
        "teacher": model_args.teacher_name_or_path,
        "student_init": model_args.student_init
        + (f" ({model_args.student_name_or_path})" if model_args.student_init == "pretrained" else ""),
        "layer_map": json.dumps(args.layer_map) if not isinstance(args.layer_map, str) else args.layer_map,
        "losses": {
            "hidden": f"{args.hidden_loss} x{args.hidden_loss_weight}",
            "attention": f"{args.attention_loss} x{args.attention_loss_weight}",
            "logits": f"{args.logit_loss} x{args.logit_loss_weight}",
        },
        "corpus": corpus_args.corpus,
        "block_size": corpus_args.block_size,
        "partitions": [],
    }
    if trimming is not None:
        summary["vocabulary_trimming"] = trimming
    if not trainer.is_world_process_zero():
        return summary
    for p in partitions:
        entry = {
            "partition": p,
            "steps": steps[p],
            "checkpoint": str(partition_dirs[p]),
            "tokens_by_language": tokens_trained[p],
            "metric_by_language": {},  # filled below when eval_task_config is set
        }
        summary["partitions"].append(entry)
    if corpus_args.eval_task_config:
        for entry in summary["partitions"]:
            if corpus_args.eval_method == "linear_probe":
                probe = linear_probe_xnli(entry["checkpoint"], corpus_args.eval_task_config)
                entry["metric_by_language"] = probe["metric_by_language"]
                summary["partition_eval"] = describe_probe(probe)
            else:
                entry["metric_by_language"] = evaluate_checkpoint(
                    corpus_args.eval_task, corpus_args.eval_task_config, entry["checkpoint"]
                )
                summary["partition_eval"] = f"{corpus_args.eval_task} fine-tune with {corpus_args.eval_task_config}"
    (output_dir / "distillation.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    (output_dir / "distillation_args.json").write_text(
        json.dumps({**asdict(model_args), **asdict(corpus_args)}, indent=2), encoding="utf-8"
    )
    if hub.push:
        summary["push_error"] = push_finished_folder(output_dir, hub, DISTILLATION_IGNORE_PATTERNS)
    return summary


def describe_probe(probe: dict) -> str:
    """distillation.json's `partition_eval`: what the per-partition metric is, in one line for report and card."""
    return (
        f"linear probe of the frozen student: {probe['pooling']}-pooled last layer, [u, v, |u-v|, u*v] pair features, "
        f"logistic regression (C={probe['C']:g}, cross-validated) fitted on {probe['num_train']:,} English NLI pairs, "
        "zero-shot XNLI dev accuracy "
        f"({probe['num_eval']:,} pairs per language)"
    )


def evaluate_checkpoint(task: str, config_path: str, checkpoint: str) -> dict[str, float]:
    """Fine-tune and evaluate one exported student at full depth with a task config; the metric per language."""
    from .cli import parse_config
    from .finetune import TASK_ARGUMENTS, run_task

    overrides = [
        "--model_name_or_path", checkpoint,
        "--output_dir", str(Path(checkpoint) / f"eval-{task}"),
        "--thresholds", "0.0",
        "--measure_efficiency", "false",
    ]  # fmt: skip
    results = run_task(task, *parse_config(TASK_ARGUMENTS, [config_path, *overrides]))
    return {lang: entry["full_depth"]["metric"] for lang, entry in results["languages"].items()}
