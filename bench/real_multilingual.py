"""The per-language table on real multilingual weights (issue 16, part 2): four arms, XNLI and PAN-X, one run.

Arms (teacher: the converted multilingual-e5-small, 12 layers x 384, mean pooling as e5 was trained):

* ``teacher``   -- teacher-12L fine-tuned with joint exits after every layer on English NLI / PAN-X English train;
* ``plain``     -- student-6L = teacher layers 2, 4, ..., 12, no distillation, the same fine-tuning;
* ``distilled`` -- the same student after task-agnostic hidden-state MSE + head-mean attention KL distillation on
  ``../shared/data/text/news`` (en ru hi tr sw ur, the demo's recipe, ``examples/configs/demo/distil.yaml``), then
  the same fine-tuning;
* ``twostage``  -- XtremeDistil style: the distilled student, then task-specific distillation from the fine-tuned
  XNLI teacher (logit KL at ``--temperature`` + hidden-state MSE on the mapped layers + the student's own joint exit
  cross-entropy, so its exits learn too) on the same NLI pairs. XNLI only: the recipe is NLI-specific.

Everything reuses the package: ``hf_earlyexit.finetune.run_task`` (the run_xnli / run_wikiann pipeline, with the
demo configs' budgets: 6,000 NLI pairs, 600 XNLI dev pairs per language, PAN-X 3,000 train / 500 dev sentences per
language, seeded), ``hf_earlyexit.distil.run_distillation``, ``student_from_teacher_layers``, the
``DistillationTrainer`` and ``hf_earlyexit.evaluation`` (sweeps, analytic FLOPs at real lengths, latency, memory).

Which split chose what: thresholds are chosen on a HELD-OUT slice of the English training data (the last
``--heldout`` rows of the shuffled NLI pool, the last rows of PAN-X en.train; neither is ever trained on), then read
off the dev sweeps at that threshold -- the honest figures. The thresholds chosen on XNLI/PAN-X dev itself (per
language, and the global one that keeps every language within 1 point) are reported too, labelled ``oracle``.
Nothing else is tuned on dev.

Every figure comes from one run: phases run as subprocesses (``--workers`` at a time, one thread each) and write
``<output-dir>/phases/*.json``; then one process measures latency at batch 1 and 32 and peak memory of every saved
model side by side (``--timing-only`` re-runs just that from the saved models, in a few minutes), and the bench
writes ``<output-dir>/results.json``, a dated section of docs/benchmarks.md and the README headline table.

Usage: python bench/real_multilingual.py [--quick | --budget demo|small] [--workers 2] [--output-dir outputs/real_multilingual] [--resume]
       python bench/real_multilingual.py --timing-only [--output-dir ...]   # re-measure latency/memory, re-write
(``--quick``: tiny budgets to check the plumbing in a few minutes; its numbers mean nothing and it writes no docs.)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared" / "data"
DEMO_CONFIGS = REPO_ROOT / "examples" / "configs" / "demo"
LANGUAGES = ("en", "ru", "hi", "tr", "sw", "ur")
# XLM-R's CC-100 sizes: en ru high, hi tr medium, sw ur low (the thesis' resource classes).
RESOURCE = {"en": "high", "ru": "high", "hi": "medium", "tr": "medium", "sw": "low", "ur": "low"}
ARMS = ("teacher", "plain", "distilled", "twostage")
STUDENT_LAYERS = [2, 4, 6, 8, 10, 12]
# XNLI's sequence sweep replays stored logits, so a fine grid is free; token-level exit re-runs the model per
# threshold, so both NER granularities share a coarser grid.
XNLI_THRESHOLDS = [round(0.01 * step, 2) for step in range(101)] + [1.01]
NER_THRESHOLDS = [round(0.1 * step, 1) for step in range(11)] + [1.01]
MAX_DROP = 0.01
TARGETS = {
    "a": "teacher-12L with exits saves >= 40 % FLOPs at <= 1 point mean XNLI drop",
    "b": "the better distilled 6L beats plain 6L by >= 1.5 mean XNLI accuracy and >= 1.5 mean PAN-X F1",
    "c": "distilled 6L + exits: >= 65 % fewer FLOPs than teacher-12L at full depth, <= 3 points mean XNLI drop",
    "d": "token-level exit on PAN-X (teacher) saves >= 30 % FLOPs at <= 1 F1 mean drop",
    "e": "low/medium-resource languages lose more under compression and exit (thesis); per-language drops shown",
}
README_START, README_END = "<!-- real-multilingual:start -->", "<!-- real-multilingual:end -->"


# ------------------------------------------------------------------------------------------------ budgets
BUDGETS = {
    # Plumbing only: its numbers mean nothing.
    "quick": dict(nli_train=64, xnli_eval=24, panx_train=64, panx_eval=16, heldout=32, distil_steps=2,
                  distil_batch=4, latency_repeats=1, twostage_epochs=1),
    # About half the demo's data, for a loaded shared machine.
    "small": dict(nli_train=3000, xnli_eval=400, panx_train=1500, panx_eval=300, heldout=400, distil_steps=12,
                  distil_batch=16, latency_repeats=3, twostage_epochs=1),
    # The demo's budgets (examples/configs/demo), distillation somewhat longer (the bench has the time).
    "demo": dict(nli_train=6000, xnli_eval=600, panx_train=3000, panx_eval=500, heldout=600, distil_steps=24,
                 distil_batch=16, latency_repeats=5, twostage_epochs=1),
}  # fmt: skip


def budgets(name: str) -> dict[str, Any]:
    return dict(BUDGETS[name], name=name)


def teacher_path() -> str:
    import hf_earlyexit

    return str(hf_earlyexit.multilingual_e5_small())


def _config(name: str) -> dict[str, Any]:
    import yaml

    return yaml.safe_load((DEMO_CONFIGS / name).read_text(encoding="utf-8"))


def _shared(path: str) -> str:
    """The demo configs' ../shared/data paths, resolved from the repository root."""
    return str((REPO_ROOT / path).resolve()) if path.startswith("..") else path


def nli_files() -> list[str]:
    return [_shared(p) for p in _config("xnli.yaml")["train_files"]]


# ------------------------------------------------------------------------------------------------ phases
def phase_plain(out: Path, b: dict) -> dict:
    """student-6L plain: teacher layers 2, 4, ..., 12 copied, nothing trained."""
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    from hf_earlyexit.distillation.student_init import student_from_teacher_layers

    teacher = AutoModelForMaskedLM.from_pretrained(teacher_path())
    student = student_from_teacher_layers(teacher, STUDENT_LAYERS)
    student.save_pretrained(out / "models" / "plain-student")
    AutoTokenizer.from_pretrained(teacher_path()).save_pretrained(out / "models" / "plain-student")
    return {"student_layers": STUDENT_LAYERS}


def phase_distil(out: Path, b: dict) -> dict:
    """The task-agnostic stage: the demo recipe (examples/configs/demo/distil.yaml) at the bench's budget."""
    from hf_earlyexit.cli import parse_config
    from hf_earlyexit.distil import DISTIL_ARGUMENTS, run_distillation

    config = _config("distil.yaml")
    config.update(
        teacher_name_or_path=teacher_path(),
        corpus=_shared(config["corpus"]),
        output_dir=str(out / "models" / "distilled-student"),
        overwrite_output_dir=True,
        steps_per_partition=b["distil_steps"],
        per_device_train_batch_size=b["distil_batch"],
        warmup_steps=max(1, b["distil_steps"] // 2),
    )
    path = _write_config(out, "distil", config)
    summary = run_distillation(*parse_config(DISTIL_ARGUMENTS, [str(path)]))
    tokens = sum(sum(p["tokens_by_language"].values()) for p in summary["partitions"])
    return {"summary": summary, "tokens": tokens}


def _write_config(out: Path, name: str, config: dict) -> Path:
    path = out / "configs" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config, indent=2), encoding="utf-8")
    return path


def task_config(task: str, model: str, output_dir: Path, b: dict, distillation: str | None) -> dict:
    """The demo config of `task` with this bench's model, budgets and grid; efficiency is measured side by side in
    the timing phase instead (one process, every model)."""
    config = _config("xnli.yaml" if task == "xnli" else "wikiann.yaml")
    config.update(
        model_name_or_path=model,
        data_dir=_shared(config["data_dir"]),
        output_dir=str(output_dir),
        overwrite_output_dir=True,
        distillation_summary=distillation,
        measure_efficiency=False,
        thresholds=XNLI_THRESHOLDS if task == "xnli" else NER_THRESHOLDS,
        max_drop=MAX_DROP,
        eval_languages=list(LANGUAGES),
    )
    config.pop("latency_repeats", None)
    if task == "xnli":
        config.update(train_files=nli_files(), max_train_samples=b["nli_train"], max_eval_samples=b["xnli_eval"])
    else:
        config.update(max_train_samples=b["panx_train"], max_eval_samples=b["panx_eval"])
    return config


def heldout_rows(task: str, b: dict):
    """The English rows that choose thresholds: never trained on (see the module docstring)."""
    from hf_earlyexit.data.tasks import load_wikiann, read_xnli_files

    if task == "xnli":
        pool = read_xnli_files(nli_files()).shuffle(seed=0)  # the order run_task takes its training head from
        if len(pool) < b["nli_train"] + b["heldout"]:
            raise ValueError(f"{len(pool)} NLI pairs cannot give {b['nli_train']} train + {b['heldout']} held out")
    else:
        pool = load_wikiann(["en"], "train", _shared("../shared/data/panx"))["en"]
        if len(pool) < b["panx_train"] + b["heldout"]:
            raise ValueError(f"{len(pool)} PAN-X en.train rows cannot give {b['panx_train']} + {b['heldout']}")
    return pool.select(range(len(pool) - b["heldout"], len(pool)))


def sweep_heldout(task: str, model_dir: Path, b: dict) -> dict:
    """The saved model's sweep on the held-out English slice (sequence, and token-level for NER)."""
    from transformers import AutoTokenizer, DataCollatorForTokenClassification, DataCollatorWithPadding

    from hf_earlyexit.evaluation.sweep import evaluate_languages
    from hf_earlyexit.finetune import TASKS, load_early_exit_model

    spec = TASKS[task]
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = load_early_exit_model(str(model_dir), spec["token_level"], spec["labels"], {}).eval()
    dataset = spec["tokenize"](heldout_rows(task, b), tokenizer, 128)
    collator = (
        DataCollatorForTokenClassification(tokenizer) if spec["token_level"] else DataCollatorWithPadding(tokenizer)
    )
    languages, _ = evaluate_languages(
        model,
        {"en-heldout": dataset},
        collator,
        thresholds=XNLI_THRESHOLDS if task == "xnli" else NER_THRESHOLDS,
        max_drop=MAX_DROP,
        batch_size=64,
        compare_token_exit=spec["token_level"],
    )
    entry = languages["en-heldout"]
    heldout = {"num_examples": entry["num_examples"], "sequence": entry["chosen"]}
    if spec["token_level"]:
        from hf_earlyexit.evaluation.sweep import choose_threshold

        heldout["token"] = choose_threshold(entry["sweep_token"], entry["sweep_token"][0]["metric"], MAX_DROP)
    return heldout


def phase_task(out: Path, b: dict, task: str, arm: str) -> dict:
    from hf_earlyexit.cli import parse_config
    from hf_earlyexit.finetune import TASK_ARGUMENTS, run_task

    models = out / "models"
    source = {"teacher": teacher_path(), "plain": str(models / "plain-student"),
              "distilled": str(models / "distilled-student")}[arm]  # fmt: skip
    distillation = str(models / "distilled-student" / "distillation.json") if arm == "distilled" else None
    model_dir = models / f"{task}-{arm}"
    config = task_config(task, source, model_dir, b, distillation)
    path = _write_config(out, f"{task}-{arm}", config)
    run_task(task, *parse_config(TASK_ARGUMENTS, [str(path)]))
    return {"model_dir": str(model_dir), "heldout": sweep_heldout(task, model_dir, b)}


def phase_twostage(out: Path, b: dict, temperature: float) -> dict:
    """Task-specific distillation of the distilled student from the fine-tuned XNLI teacher, then run_task's
    evaluation (no further training) of the result."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, set_seed

    from hf_earlyexit.cli import parse_config
    from hf_earlyexit.distillation import DistillationArguments, DistillationTrainer
    from hf_earlyexit.finetune import TASK_ARGUMENTS, TASKS, load_early_exit_model, run_task

    models = out / "models"
    config = task_config("xnli", str(models / "distilled-student"), models / "xnli-twostage", b, None)
    teacher = AutoModelForSequenceClassification.from_pretrained(models / "xnli-teacher")
    tokenizer = AutoTokenizer.from_pretrained(models / "distilled-student")
    set_seed(config["seed"])
    student = load_early_exit_model(
        str(models / "distilled-student"), False, TASKS["xnli"]["labels"], {"pooling": "mean"}
    )
    student.get_input_embeddings().weight.requires_grad_(False)  # as in every fine-tune here
    pairs = TASKS["xnli"]["read_files"](nli_files()).shuffle(seed=0).select(range(b["nli_train"]))
    train = TASKS["xnli"]["tokenize"](pairs, tokenizer, config["max_seq_length"])
    distil_dir = models / "twostage-student"
    args = DistillationArguments(
        output_dir=str(distil_dir),
        overwrite_output_dir=True,
        layer_map="uniform",
        hidden_loss="mse",
        attention_loss="none",
        logit_loss="kl",
        temperature=temperature,
        hard_label_weight=1.0,  # the student's own (joint exit) loss: its exit heads learn in the same pass
        num_train_epochs=b["twostage_epochs"],
        per_device_train_batch_size=config["per_device_train_batch_size"],
        learning_rate=config["learning_rate"],
        warmup_steps=config["warmup_steps"],
        weight_decay=config["weight_decay"],
        train_sampling_strategy="group_by_length",
        logging_steps=25,
        save_strategy="no",
        report_to=[],
        seed=config["seed"],
        disable_tqdm=True,
    )
    trainer = DistillationTrainer(
        model=student,
        teacher_model=teacher,
        args=args,
        train_dataset=train,
        data_collator=DataCollatorWithPadding(tokenizer),
        processing_class=tokenizer,
    )
    started = time.perf_counter()
    trainer.train()
    trainer.save_model(str(distil_dir))
    distil_seconds = time.perf_counter() - started
    log = [entry for entry in trainer.state.log_history if "loss" in entry]
    config.update(model_name_or_path=str(distil_dir), do_train=False)
    path = _write_config(out, "xnli-twostage", config)
    run_task("xnli", *parse_config(TASK_ARGUMENTS, [str(path)]))
    model_dir = models / "xnli-twostage"
    return {
        "model_dir": str(model_dir),
        "heldout": sweep_heldout("xnli", model_dir, b),
        "task_distillation": {"temperature": temperature, "losses": "logits kl + hidden mse + ce (joint exits)",
                              "pairs": b["nli_train"], "seconds": distil_seconds, "log": log[-3:]},
    }  # fmt: skip


def phase_timing(out: Path, b: dict) -> dict:
    """Latency at batch 1 and 32 and peak memory of every saved model, one after another in this one process, on
    the same 64 real English dev examples fixed to 128 tokens, at full depth and at the held-out threshold."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification, AutoTokenizer

    import hf_earlyexit  # noqa: F401  (registers the Auto classes)
    from hf_earlyexit.data.tasks import load_wikiann, load_xnli
    from hf_earlyexit.evaluation.efficiency import measure_efficiency
    from hf_earlyexit.finetune import TASKS

    timings = {}
    for phase in sorted((out / "phases").glob("*.json")):
        record = json.loads(phase.read_text(encoding="utf-8"))
        if "model_dir" not in record:
            continue
        task, arm = record["task"], record["arm"]
        model_dir = Path(record["model_dir"])
        auto = AutoModelForTokenClassification if task == "wikiann" else AutoModelForSequenceClassification
        model = auto.from_pretrained(model_dir).eval()
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        loader = load_xnli if task == "xnli" else load_wikiann
        rows = loader(["en"], "validation", _shared(f"../shared/data/{'xnli' if task == 'xnli' else 'panx'}"))["en"]
        examples = TASKS[task]["tokenize"](rows.shuffle(seed=0).select(range(64)), tokenizer, 128)
        threshold = record["heldout"]["sequence"]["threshold"]
        with torch.inference_mode():
            efficiency = measure_efficiency(
                model, [examples[i] for i in range(64)], threshold, seq_len=128, repeats=b["latency_repeats"]
            )
        timings[f"{task}-{arm}"] = efficiency
        print(f"timing {task}-{arm}: {json.dumps(efficiency['latency_ms'])}", flush=True)
    return {"timings": timings, "load": load_average(), "threads": torch.get_num_threads()}


PHASES = {
    # name: (dependencies, runner)
    "plain": ((), phase_plain),
    "distil": ((), phase_distil),
    "xnli-teacher": ((), lambda out, b, a: phase_task(out, b, "xnli", "teacher")),
    "xnli-plain": (("plain",), lambda out, b, a: phase_task(out, b, "xnli", "plain")),
    "xnli-distilled": (("distil",), lambda out, b, a: phase_task(out, b, "xnli", "distilled")),
    "xnli-twostage": (("distil", "xnli-teacher"), lambda out, b, a: phase_twostage(out, b, a.temperature)),
    "wikiann-teacher": ((), lambda out, b, a: phase_task(out, b, "wikiann", "teacher")),
    "wikiann-plain": (("plain",), lambda out, b, a: phase_task(out, b, "wikiann", "plain")),
    "wikiann-distilled": (("distil",), lambda out, b, a: phase_task(out, b, "wikiann", "distilled")),
}
# The order workers take ready phases in: the long teacher fine-tunes first, on the two workers.
PHASE_ORDER = ("xnli-teacher", "plain", "distil", "xnli-plain", "xnli-distilled", "wikiann-teacher", "xnli-twostage",
               "wikiann-plain", "wikiann-distilled")  # fmt: skip


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def run_phase(name: str, out: Path, b: dict, args) -> None:
    """One phase in this process; its record goes to phases/<name>.json."""
    started, load = time.perf_counter(), load_average()
    runner = PHASES[name][1]
    record = runner(out, b) if name in ("plain", "distil") else runner(out, b, args)
    task, _, arm = name.partition("-")
    if arm:
        record.update(task=task, arm=arm)
    record.update(phase=name, seconds=time.perf_counter() - started, load_at_start=load, load_at_end=load_average())
    (out / "phases").mkdir(parents=True, exist_ok=True)
    (out / "phases" / f"{name}.json").write_text(json.dumps(record, indent=2), encoding="utf-8")


def schedule(out: Path, args) -> None:
    """Run every phase as a one-thread subprocess, `args.workers` at a time, each when its dependencies are done."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}  # fmt: skip
    (out / "logs").mkdir(parents=True, exist_ok=True)
    # --resume: phases whose record exists are done (a record is written only when its phase finished).
    done = {name for name in PHASE_ORDER if args.resume and (out / "phases" / f"{name}.json").is_file()}
    running, pending = {}, [name for name in PHASE_ORDER if name not in done]
    start = time.perf_counter()
    while pending or running:
        for name, proc in list(running.items()):
            code = proc.poll()
            if code is None:
                continue
            del running[name]
            if code != 0:
                for other in running.values():
                    other.kill()
                raise SystemExit(f"phase {name} failed (exit {code}); see {out / 'logs' / (name + '.log')}")
            done.add(name)
            print(f"[{time.perf_counter() - start:7.0f} s] done {name}", flush=True)
        for name in list(pending):
            if len(running) >= args.workers:
                break
            if all(dep in done for dep in PHASES[name][0]):
                pending.remove(name)
                command = [
                    sys.executable,
                    __file__,
                    "--phase",
                    name,
                    "--output-dir",
                    str(out),
                    "--temperature",
                    str(args.temperature),
                    "--budget",
                    args.budget,
                ]
                command += ["--quick"] if args.quick else []
                log = open(out / "logs" / f"{name}.log", "w")  # noqa: SIM115 (closed with the process)
                running[name] = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
                print(f"[{time.perf_counter() - start:7.0f} s] start {name} (load {load_average()})", flush=True)
        time.sleep(2)


# ------------------------------------------------------------------------------------------------ summary (pure)
def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


def row_at(rows: list[dict], threshold: float) -> dict:
    """The sweep row at `threshold` (every sweep here uses the same grid, so the held-out choice is on it)."""
    for row in rows:
        if abs(row["threshold"] - threshold) < 1e-9:
            return row
    raise ValueError(f"threshold {threshold} is not in the sweep; expected one of {[r['threshold'] for r in rows]}")


def summarize_arm(results: dict, heldout: dict, granularity: str = "sequence") -> dict:
    """Per language: full-depth metric, the dev figures at the held-out threshold, and the oracle choices."""
    key = "sweep" if granularity == "sequence" else "sweep_token"
    threshold = heldout[granularity]["threshold"]
    global_rows = None
    if granularity == "sequence":
        global_rows = results["chosen_global"]
    languages = {}
    for lang, entry in results["languages"].items():
        rows = entry[key]
        full = rows[0]["metric"] if granularity == "token" else entry["full_depth"]["metric"]
        at = row_at(rows, threshold)
        oracle = entry["chosen"] if granularity == "sequence" else _choose(rows, full)
        languages[lang] = {
            "full_depth": full,
            "full_depth_flops": rows[0]["flops_per_example"] if granularity == "token" else entry["full_depth"]["flops_per_example"],
            "heldout_threshold": {"metric": at["metric"], "flops_saving": at["flops_saving"],
                                  "flops_per_example": at["flops_per_example"], "mean_exit_layer": at["mean_exit_layer"],
                                  "exit_layer_counts": at["exit_layer_counts"]},
            "oracle_per_language": {"threshold": oracle["threshold"], "metric": oracle["metric"],
                                    "flops_saving": oracle["flops_saving"]},
        }  # fmt: skip
        if global_rows is not None:
            g = row_at(rows, global_rows["threshold"])
            languages[lang]["oracle_global"] = {"threshold": g["threshold"], "metric": g["metric"],
                                                "flops_saving": g["flops_saving"]}  # fmt: skip
    means = {
        "full_depth": _mean(v["full_depth"] for v in languages.values()),
        "heldout_metric": _mean(v["heldout_threshold"]["metric"] for v in languages.values()),
        "heldout_saving": _mean(v["heldout_threshold"]["flops_saving"] for v in languages.values()),
        "oracle_per_language_saving": _mean(v["oracle_per_language"]["flops_saving"] for v in languages.values()),
        "oracle_per_language_metric": _mean(v["oracle_per_language"]["metric"] for v in languages.values()),
    }
    if global_rows is not None:
        means["oracle_global_metric"] = _mean(v["oracle_global"]["metric"] for v in languages.values())
        means["oracle_global_saving"] = _mean(v["oracle_global"]["flops_saving"] for v in languages.values())
    return {"granularity": granularity, "heldout_threshold": threshold,
            "oracle_global_threshold": None if global_rows is None else global_rows["threshold"],
            "languages": languages, "mean": means}  # fmt: skip


def _choose(rows, full):
    from hf_earlyexit.evaluation.sweep import choose_threshold

    return choose_threshold(rows, full, MAX_DROP)


def _pts(x: float) -> str:
    return f"{100 * x:.1f}"


DISTILLED_ARMS = ("distilled", "twostage")


def _best(arms: dict) -> str | None:
    """The distilled arm with the higher mean full-depth metric (None when neither ran)."""
    present = [arm for arm in DISTILLED_ARMS if arm in arms]
    return max(present, key=lambda arm: arms[arm]["mean"]["full_depth"]) if present else None


def _target_a(xnli: dict, ner: dict) -> dict:
    t = xnli["teacher"]["mean"]
    drop, saving = t["full_depth"] - t["heldout_metric"], t["heldout_saving"]
    return {"met": saving >= 0.40 and drop <= 0.01 + 1e-9,
            "reason": f"teacher at the held-out threshold {xnli['teacher']['heldout_threshold']}: saves "
                      f"{_pts(saving)} % FLOPs at a mean drop of {_pts(drop)} points (oracle global threshold on dev: "
                      f"{_pts(t['oracle_global_saving'])} % at {_pts(t['full_depth'] - t['oracle_global_metric'])})"}  # fmt: skip


def _target_b(xnli: dict, ner: dict) -> dict:
    best, ner_best = _best(xnli), _best(ner)
    gain_x = xnli[best]["mean"]["full_depth"] - xnli["plain"]["mean"]["full_depth"]
    gain_n = ner[ner_best]["mean"]["full_depth"] - ner["plain"]["mean"]["full_depth"]
    return {"met": gain_x >= 0.015 and gain_n >= 0.015,
            "reason": f"XNLI: {best} {_pts(xnli[best]['mean']['full_depth'])} vs plain "
                      f"{_pts(xnli['plain']['mean']['full_depth'])} ({gain_x * 100:+.1f}); PAN-X F1: {ner_best} "
                      f"{_pts(ner[ner_best]['mean']['full_depth'])} vs plain {_pts(ner['plain']['mean']['full_depth'])} "
                      f"({gain_n * 100:+.1f})"}  # fmt: skip


def _compressed(xnli: dict, arm: str) -> tuple[float, float]:
    """(FLOPs saved against teacher-12L at full depth, mean XNLI drop below it) of `arm` + exits, held-out threshold;
    per language on the same dev rows, then averaged."""
    teacher, langs = xnli["teacher"]["languages"], xnli[arm]["languages"]
    fewer = _mean(1 - langs[lang]["heldout_threshold"]["flops_per_example"] / teacher[lang]["full_depth_flops"]
                  for lang in langs)  # fmt: skip
    return fewer, xnli["teacher"]["mean"]["full_depth"] - xnli[arm]["mean"]["heldout_metric"]


def _compression_arm(xnli: dict) -> str:
    """The distilled arm that meets (c), else the one saving most (ties: the smaller drop)."""

    def key(arm):
        fewer, drop = _compressed(xnli, arm)
        return (fewer >= 0.65 and drop <= 0.03 + 1e-9, fewer, -drop)

    return max((arm for arm in DISTILLED_ARMS if arm in xnli), key=key)


def _target_c(xnli: dict, ner: dict) -> dict:
    arm = _compression_arm(xnli)
    fewer, drop = _compressed(xnli, arm)
    return {"met": fewer >= 0.65 and drop <= 0.03 + 1e-9, "arm": arm,
            "reason": f"{arm} + exits at its held-out threshold: {_pts(fewer)} % fewer FLOPs than teacher-12L at full "
                      f"depth, mean XNLI {_pts(drop)} points below the teacher's full depth"}  # fmt: skip


def _target_d(xnli: dict, ner: dict) -> dict:
    tok = ner["teacher-token"]["mean"]
    drop = tok["full_depth"] - tok["heldout_metric"]
    return {"met": tok["heldout_saving"] >= 0.30 and drop <= 0.01 + 1e-9,
            "reason": f"teacher token-level exit at held-out threshold {ner['teacher-token']['heldout_threshold']}: "
                      f"saves {_pts(tok['heldout_saving'])} % FLOPs at {_pts(drop)} F1 mean drop (sequence-level at its "
                      f"held-out threshold: {_pts(ner['teacher']['mean']['heldout_saving'])} %)"}  # fmt: skip


def _target_e(xnli: dict, ner: dict) -> dict:
    return resource_verdict(xnli, _compression_arm(xnli))


# target: (check, arms it needs: (task, arms of which one is enough))
TARGET_CHECKS = {
    "a": (_target_a, [("xnli", ("teacher",))]),
    "b": (_target_b, [("xnli", ("plain",)), ("xnli", DISTILLED_ARMS), ("wikiann", ("plain",)),
                      ("wikiann", DISTILLED_ARMS)]),
    "c": (_target_c, [("xnli", ("teacher",)), ("xnli", DISTILLED_ARMS)]),
    "d": (_target_d, [("wikiann", ("teacher",))]),
    "e": (_target_e, [("xnli", ("teacher",)), ("xnli", DISTILLED_ARMS)]),
}  # fmt: skip


def verdicts(summary: dict) -> dict[str, dict]:
    """Targets (a)-(e), each met/missed with the measured reason (held-out thresholds; see the module docstring);
    `met` None when an arm it needs has not run (a partial run)."""
    out = {}
    for key, (check, needs) in TARGET_CHECKS.items():
        missing = [f"{task} {'/'.join(arms)}" for task, arms in needs if not any(a in summary[task] for a in arms)]
        if missing:
            out[key] = {"met": None, "reason": f"not measured: no {', '.join(missing)} results in this run"}
        else:
            out[key] = check(summary["xnli"], summary["wikiann"])
    return out


def resource_verdict(xnli: dict, arm: str) -> dict:
    """Whether low/medium-resource languages lose more (compression: teacher full depth -> `arm` + exits)."""
    teacher, student = xnli["teacher"]["languages"], xnli[arm]["languages"]
    drops = {lang: teacher[lang]["full_depth"] - student[lang]["heldout_threshold"]["metric"] for lang in teacher}
    by_class = {c: _mean(d for lang, d in drops.items() if RESOURCE.get(lang) == c)
                for c in ("high", "medium", "low") if any(RESOURCE.get(lang) == c for lang in drops)}  # fmt: skip
    classes = [c for c in ("low", "medium") if c in by_class]
    more = [c for c in classes if by_class[c] > by_class.get("high", 0)]
    holds = bool(classes) and more == classes
    if holds:
        finding = "low and medium lose more than high (the thesis' finding holds)"
    elif more:
        less = " and ".join(c for c in classes if c not in more)
        finding = f"only {' and '.join(more)} loses more than high, {less} less (holds in part)"
    else:
        finding = "neither low nor medium loses more than high (does not hold here)"
    text = ", ".join(f"{lang} {d * 100:+.1f}" for lang, d in drops.items())
    return {"met": True, "holds": holds, "holds_for": more, "drops": drops, "by_class": by_class,
            "reason": f"XNLI drop teacher-12L -> {arm} + exits: {text}; mean by resource "
                      + ", ".join(f"{c} {v * 100:.1f}" for c, v in by_class.items()) + f" -- {finding}"}  # fmt: skip


def build_summary(out: Path) -> dict:
    phases = {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in (out / "phases").glob("*.json")}
    summary: dict[str, Any] = {"xnli": {}, "wikiann": {}, "phases": {}}
    for name, record in phases.items():
        summary["phases"][name] = {"seconds": record["seconds"], "load_at_start": record["load_at_start"],
                                   "load_at_end": record["load_at_end"]}  # fmt: skip
        if "model_dir" not in record:
            continue
        results = json.loads((Path(record["model_dir"]) / "results.json").read_text(encoding="utf-8"))
        task, arm = record["task"], record["arm"]
        arm_summary = summarize_arm(results, record["heldout"], "sequence")
        arm_summary["parameters"] = results["model"]["parameters"]
        arm_summary["parameters_without_embeddings"] = results["model"]["parameters_without_embeddings"]
        summary[task][arm] = arm_summary
        if task == "wikiann":
            summary[task][f"{arm}-token"] = summarize_arm(results, record["heldout"], "token")
        if "task_distillation" in record:
            summary["twostage_distillation"] = record["task_distillation"]
    if "distil" in phases:
        summary["distillation_tokens"] = phases["distil"]["tokens"]
    order = [key for arm in ARMS for key in (arm, f"{arm}-token")]
    for task in ("xnli", "wikiann"):
        summary[task] = {key: summary[task][key] for key in order if key in summary[task]}
    return summary


def speedups(timings: dict) -> dict[str, dict]:
    """Batch-32 latency ratios measured side by side in the timing phase: each model's full depth over its exits,
    and teacher-12L full depth over each model at its held-out threshold."""
    out = {}
    for key, eff in timings.items():
        task = key.split("-")[0]
        teacher = timings.get(f"{task}-teacher")
        b32 = eff["latency_ms"]["batch_32"]
        out[key] = {"own_exits": b32["full_depth"] / b32["chosen"],
                    "vs_teacher_full": None if teacher is None
                    else teacher["latency_ms"]["batch_32"]["full_depth"] / b32["chosen"]}  # fmt: skip
    return out


# ------------------------------------------------------------------------------------------------ tables (pure)
def _lang_cells(arm: dict, field: str) -> list[str]:
    get = {"full": lambda v: v["full_depth"], "heldout": lambda v: v["heldout_threshold"]["metric"],
           "saving": lambda v: v["heldout_threshold"]["flops_saving"],
           "oracle": lambda v: v["oracle_per_language"]["metric"],
           "oracle_saving": lambda v: v["oracle_per_language"]["flops_saving"]}[field]  # fmt: skip
    return [_pts(get(arm["languages"][lang])) if lang in arm["languages"] else "-" for lang in LANGUAGES]


def render_markdown(summary: dict, meta: dict) -> str:
    lines = [f"### Recorded run ({meta['date']})", ""]
    lines += [
        f"One run of `{meta['command']}` on {meta['machine']}; {meta['workers']} phases at a time, one thread each; "
        f"load average at start {meta['load_start']}, at end {meta['load_end']}; "
        + (
            "unfinished (a partial run: " + ", ".join(meta.get("finished_phases", [])) + " finished). "
            if meta["wall_minutes"] is None or not meta.get("all_phases", True)
            else f"wall {meta['wall_minutes']:.1f} min. "
        )
        + "Phase wall times and loads: "
        + "; ".join(
            f"{name} {p['seconds'] / 60:.1f} min (load {p['load_at_start'][0]}-{p['load_at_end'][0]})"
            for name, p in summary["phases"].items()
        )
        + ". "
        "Teacher: the converted multilingual-e5-small (12 x 384), mean pooling, exits after every layer, joint "
        f"training, word embeddings frozen. Budgets: {meta['budgets']['nli_train']} English NLI pairs "
        f"(../shared/data/nli), {meta['budgets']['xnli_eval']} XNLI dev pairs per language, PAN-X "
        f"{meta['budgets']['panx_train']} en.train / {meta['budgets']['panx_eval']} dev sentences per language "
        f"(seeded); task-agnostic distillation over {summary.get('distillation_tokens', '?')} tokens of "
        "../shared/data/text/news. **Thresholds were chosen on a held-out English slice of the training data** "
        f"({meta['budgets']['heldout']} rows never trained on) and read off the dev sweeps; `oracle` columns choose "
        "on dev itself (per language) and are labelled so. Nothing else was tuned on dev. FLOPs: analytic, at each "
        "example's real length.",
        "",
    ]
    header = "| arm | " + " | ".join(LANGUAGES) + " | mean |"
    rule = "| --- |" + " ---: |" * (len(LANGUAGES) + 1)
    for task, title in (("xnli", "XNLI dev accuracy (%)"), ("wikiann", "PAN-X dev entity F1 (%)")):
        lines += [f"#### {title}", "", header, rule]
        for arm, arm_summary in summary[task].items():
            for field, label, mean_key in (("full", "full depth", "full_depth"),
                                           ("heldout", f"exits @ {arm_summary['heldout_threshold']} (held-out)", "heldout_metric"),
                                           ("saving", "FLOPs saved at it", "heldout_saving"),
                                           ("oracle", "oracle per-language threshold", "oracle_per_language_metric")):  # fmt: skip
                lines.append(f"| {arm} {label} | " + " | ".join(_lang_cells(arm_summary, field))
                             + f" | {_pts(arm_summary['mean'][mean_key])} |")  # fmt: skip
            if arm_summary.get("oracle_global_threshold") is not None:
                lines.append(f"| {arm} oracle global threshold {arm_summary['oracle_global_threshold']} | "
                             + " | ".join(_pts(arm_summary["languages"][lang]["oracle_global"]["metric"]) for lang in LANGUAGES)
                             + f" | {_pts(arm_summary['mean']['oracle_global_metric'])} |")  # fmt: skip
        lines.append("")
    lines += ["#### Exit-layer histogram per language (held-out threshold, dev examples; NER tokens for *-token)", ""]
    for task in ("xnli", "wikiann"):
        for arm, arm_summary in summary[task].items():
            cells = [f"{lang}: {arm_summary['languages'][lang]['heldout_threshold']['exit_layer_counts']}"
                     for lang in LANGUAGES if lang in arm_summary["languages"]]  # fmt: skip
            lines.append(f"- {task} {arm}: " + "; ".join(cells))
    lines += ["", "#### Cost per arm", "",
              "| model | parameters | FLOPs/example full depth (en) | latency b1 full / exits (ms) | "
              "latency b32 full / exits (ms) | b32 speed-up own / vs teacher full | peak memory full / exits (MB) |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    timings, ratios = meta.get("timings", {}), speedups(meta.get("timings", {}))
    for task in ("xnli", "wikiann"):
        for arm, arm_summary in summary[task].items():
            if arm.endswith("-token"):
                continue
            eff = timings.get(f"{task}-{arm}")
            en = arm_summary["languages"].get("en", next(iter(arm_summary["languages"].values())))
            if eff is None:
                cells = ["-"] * 4
            else:
                lat, mem, r = eff["latency_ms"], eff["peak_memory_mb"], ratios[f"{task}-{arm}"]
                cells = [f"{lat['batch_1']['full_depth']:.1f} / {lat['batch_1']['chosen']:.1f}",
                         f"{lat['batch_32']['full_depth']:.0f} / {lat['batch_32']['chosen']:.0f}",
                         f"{r['own_exits']:.2f}x / " + ("-" if r["vs_teacher_full"] is None else f"{r['vs_teacher_full']:.2f}x"),
                         f"{mem['full_depth']:.0f} / {mem['chosen']:.0f}"]  # fmt: skip
            lines.append(f"| {task} {arm} | {arm_summary['parameters'] / 1e6:.1f} M "
                         f"({arm_summary['parameters_without_embeddings'] / 1e6:.1f} M w/o embeddings) | "
                         f"{en['full_depth_flops'] / 1e9:.2f} G | " + " | ".join(cells) + " |")  # fmt: skip
    if timings:
        lines += ["", f"Latency/memory: {meta.get('timing_note', '')}"]
    lines += ["", "#### Targets", ""]
    for key, verdict in meta["verdicts"].items():
        state = {True: "met", False: "**missed**", None: "**not measured**"}[verdict["met"]]
        if key == "e" and verdict["met"] is not None:
            state = "shown" + (" (holds)" if verdict["holds"] else
                               f" (holds for {' and '.join(verdict['holds_for'])} only)" if verdict.get("holds_for")
                               else " (does not hold)")  # fmt: skip
        lines.append(f"- ({key}) {TARGETS[key]}: {state} -- {verdict['reason']}")
    lines.append("")
    return "\n".join(lines)


def render_readme(summary: dict, meta: dict) -> str:
    """The README's headline table: per-language XNLI accuracy and PAN-X F1 for the teacher, the distilled student
    and the student with exits; FLOPs saved; measured batch-32 speed-up."""
    arm = meta["verdicts"]["c"]["arm"]
    xnli, ner = summary["xnli"], summary["wikiann"]
    ratios = speedups(meta.get("timings", {}))
    # PAN-X has no two-stage arm (its task distillation is XNLI's): the row says whose PAN-X F1 it shows.
    ner_arm = arm if arm in ner else "distilled"
    label = f"student-6L {arm}" + ("" if ner_arm == arm else f" (PAN-X: {ner_arm})")
    rows = [
        ("teacher-12L (full depth)", xnli["teacher"], ner["teacher"], "full", "-", "1.00x"),
        (f"{label} (full depth)", xnli[arm], ner[ner_arm], "full", None, None),
        (f"{label} + exits", xnli[arm], ner[ner_arm], "heldout", None, None),
    ]
    teacher_flops = _mean(v["full_depth_flops"] for v in xnli["teacher"]["languages"].values())
    lines = [README_START,
             f"### Headline numbers on real weights ({meta['date']}, bench/real_multilingual.py, recorded in "
             "docs/benchmarks.md)", "",
             "| model | XNLI acc " + " ".join(LANGUAGES) + " (mean) | PAN-X F1 " + " ".join(LANGUAGES)
             + " (mean) | XNLI FLOPs saved vs teacher | batch-32 speed-up vs teacher |",
             "| --- | --- | --- | ---: | ---: |"]  # fmt: skip
    for label, x, n, field, saved, speed in rows:
        if saved is None:
            flops = _mean(v["full_depth_flops"] if field == "full" else v["heldout_threshold"]["flops_per_example"]
                          for v in x["languages"].values())  # fmt: skip
            saved = f"{_pts(1 - flops / teacher_flops)} %"
            ratio = ratios.get(f"xnli-{arm}")
            speed = "-" if ratio is None or field == "full" else f"{ratio['vs_teacher_full']:.2f}x"
        mean_key = "full_depth" if field == "full" else "heldout_metric"
        lines.append(f"| {label} | " + " ".join(_lang_cells(x, field)) + f" ({_pts(x['mean'][mean_key])}) | "
                     + " ".join(_lang_cells(n, field)) + f" ({_pts(n['mean'][mean_key])}) | {saved} | {speed} |")  # fmt: skip
    lines += ["", "Zero-shot: fine-tuned on English only; exit thresholds chosen on held-out English training rows. "
              f"Speed-up measured side by side at batch 32 x 128 tokens, one thread, load {meta['timing_load']}.",
              README_END]  # fmt: skip
    return "\n".join(lines)


def replace_block(text: str, block: str, start: str = README_START, end: str = README_END) -> str:
    """`text` with the block between the markers replaced by `block` (appended when there is none)."""
    if start in text and end in text:
        head, rest = text.split(start, 1)
        return head + block + rest.split(end, 1)[1]
    return text.rstrip("\n") + "\n\n" + block + "\n"


# ------------------------------------------------------------------------------------------------ main
def readme_ready(summary: dict, verdict: dict) -> bool:
    """The headline table needs the teacher and the compression arm on both tasks."""
    arm = verdict["c"].get("arm")
    return (
        arm is not None
        and all(a in summary[t] for t in ("xnli", "wikiann") for a in ("teacher", "distilled"))
        and (arm in summary["xnli"])
    )


def finish(out: Path, args, meta: dict) -> dict:
    """results.json, table.md and (unless --quick / --no-docs) the docs/benchmarks.md section and the README block,
    from whatever phases have finished (a partial run says which targets were not measured)."""
    summary = build_summary(out)
    timing_path = out / "timing.json"
    timing = json.loads(timing_path.read_text(encoding="utf-8")) if timing_path.is_file() else None
    meta.update(finished_phases=sorted(summary["phases"]), all_phases=len(summary["phases"]) == len(PHASES))
    if timing is None:
        meta.update(timings={}, timing_load=None, timing_note="not measured in this run")
    else:
        meta.update(timings=timing["timings"], timing_load=timing["load"],
                    timing_note=f"measured one model after another in one process, {timing['threads']} thread, load "
                                f"{timing['load']} (loaded machine unless re-run quiet with --timing-only)")  # fmt: skip
    meta["verdicts"] = verdicts(summary)
    results = {"meta": meta, "summary": summary}
    (out / "results.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    markdown = render_markdown(summary, meta)
    (out / "table.md").write_text(markdown, encoding="utf-8")
    print(markdown)
    if not args.quick and not args.no_docs:
        docs = REPO_ROOT / "docs" / "benchmarks.md"
        marker = ("<!-- real-multilingual-table:start -->", "<!-- real-multilingual-table:end -->")
        docs.write_text(replace_block(docs.read_text(encoding="utf-8"), "\n".join([marker[0], markdown, marker[1]]),
                                      *marker), encoding="utf-8")  # fmt: skip
        if readme_ready(summary, meta["verdicts"]):
            readme = REPO_ROOT / "README.md"
            readme.write_text(replace_block(readme.read_text(encoding="utf-8"), render_readme(summary, meta)),
                              encoding="utf-8")  # fmt: skip
    return results


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", type=Path, default=REPO_ROOT / "outputs" / "real_multilingual")
    parser.add_argument("--quick", action="store_true", help="tiny budgets: plumbing only, numbers mean nothing")
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="demo", help="data budgets (see BUDGETS)")
    parser.add_argument("--workers", type=int, default=2, help="phases run at a time (one thread each)")
    parser.add_argument("--temperature", type=float, default=2.0, help="logit-KL temperature of the two-stage arm")
    parser.add_argument("--timing-only", action="store_true", help="re-measure latency/memory of the saved models")
    parser.add_argument("--resume", action="store_true", help="keep the phases a previous run of --output-dir finished")
    parser.add_argument("--report-only", action="store_true",
                        help="only re-write results.json, the table and the docs from the finished phases")  # fmt: skip
    parser.add_argument("--no-docs", action="store_true", help="do not rewrite docs/benchmarks.md and README.md")
    parser.add_argument("--phase", choices=sorted(PHASES) + ["timing"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error(f"--workers={args.workers}; expected >= 1")
    if not args.temperature > 0:
        parser.error(f"--temperature={args.temperature}; expected > 0")
    for folder in ("nli", "xnli", "panx", "text/news"):
        if not (SHARED / folder).is_dir():
            parser.error(f"{SHARED / folder} not found; expected the shared data (../shared/data, README inside)")
    out, b = args.output_dir.resolve(), budgets("quick" if args.quick else args.budget)
    if args.phase == "timing":
        import torch

        torch.set_num_threads(1)
        (out / "timing.json").write_text(json.dumps(phase_timing(out, b), indent=2), encoding="utf-8")
        return
    if args.phase:
        run_phase(args.phase, out, b, args)
        return
    meta_path = out / "meta.json"
    if args.timing_only or args.report_only:
        if not (out / "phases").is_dir():
            parser.error(f"{out / 'phases'} not found; expected a run in --output-dir (run without --timing-only)")
        if meta_path.is_file():
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        else:  # a run still going or killed before it recorded its start: say so rather than guess its start
            meta = partial_meta(out, args, b)
            meta.update(date=meta["date"] + ", report of an unfinished run", load_start="not recorded")
    else:
        out.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        meta = partial_meta(out, args, b)
        meta_path.write_text(json.dumps(meta, indent=2), encoding="utf-8")  # a killed run still has its start
        schedule(out, args)
        meta.update(load_end=load_average(), wall_minutes=(time.perf_counter() - started) / 60)
        meta_path.write_text(json.dumps(meta, indent=2), encoding="utf-8")
    if not args.report_only:
        env = {**os.environ, "OMP_NUM_THREADS": "1",
               "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}  # fmt: skip
        command = [sys.executable, __file__, "--phase", "timing", "--output-dir", str(out), "--budget", b["name"]]
        subprocess.run(command, env=env, check=True)
    finish(out, args, meta)


def partial_meta(out: Path, args, b: dict) -> dict:
    """The run's record before (or, for a killed run, without) its end: date, command, machine, load, budgets."""
    return {"date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "command": "python bench/real_multilingual.py" + (" --quick" if args.quick else f" --budget {b['name']}"),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch threads 1 per phase",
            "workers": args.workers, "load_start": load_average(), "load_end": None, "wall_minutes": None,
            "budgets": b, "temperature": args.temperature, "resumed": args.resume}  # fmt: skip


if __name__ == "__main__":
    main()
