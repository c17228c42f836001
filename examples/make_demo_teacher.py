#!/usr/bin/env python
"""Build the demo's teacher offline: a tokenizer trained on the demo corpus and a tiny XLM-R-shaped masked-LM
trained from random weights for a few hundred steps on that corpus.

The real recipe starts from `FacebookAI/xlm-roberta-large` on the Hub; this stands in for it where the Hub cannot
be reached, so the demo runs the same distil → fine-tune → evaluate chain end to end. Its numbers show that the
machinery works, not what XLM-R scores.

    python examples/make_demo_teacher.py --corpus examples/configs/demo-tiny/data/corpus --output_dir outputs/demo-tiny/teacher
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from transformers import Trainer, TrainingArguments, XLMRobertaConfig, XLMRobertaForMaskedLM

from hf_earlyexit.data.corpus import load_distillation_corpus
from hf_earlyexit.data.packing import mlm_data_collator, pack_for_mlm
from hf_earlyexit.data.tokenizer import train_tokenizer

TEACHER_SHAPE = {"num_hidden_layers": 4, "hidden_size": 64, "num_attention_heads": 4, "intermediate_size": 256}


def build_teacher(
    corpus: str, output_dir: str, vocab_size: int, steps: int, block_size: int, seed: int, languages=None
) -> Path:
    torch.manual_seed(seed)
    texts = load_distillation_corpus(corpus, languages=languages, num_partitions=1, streaming=False, seed=seed)
    tokenizer = train_tokenizer(texts["text"], vocab_size=vocab_size)
    config = XLMRobertaConfig(
        vocab_size=len(tokenizer),
        max_position_embeddings=block_size + 2 + 128,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **TEACHER_SHAPE,
    )
    model = XLMRobertaForMaskedLM(config)
    blocks = pack_for_mlm(texts, tokenizer, block_size)
    args = TrainingArguments(
        output_dir=str(Path(output_dir) / "mlm-run"),
        max_steps=steps,
        per_device_train_batch_size=16,
        learning_rate=1e-3,
        warmup_steps=steps // 10,
        logging_steps=max(1, steps // 5),
        save_strategy="no",
        report_to=[],
        disable_tqdm=True,
        seed=seed,
        use_cpu=not torch.cuda.is_available(),
    )
    trainer = Trainer(model=model, args=args, train_dataset=blocks, data_collator=mlm_data_collator(tokenizer))
    result = trainer.train()
    trainer.save_model(output_dir)
    tokenizer.save_pretrained(output_dir)
    summary = {"corpus": corpus, "mlm_steps": steps, "final_train_loss": result.training_loss, **TEACHER_SHAPE}
    (Path(output_dir) / "demo_teacher.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return Path(output_dir)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", required=True, help="Folder of one text file per language")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--vocab_size", type=int, default=2000)
    parser.add_argument("--steps", type=int, default=300, help="Masked-LM training steps from random weights")
    parser.add_argument("--block_size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--languages", nargs="+", default=None, help="Languages of the corpus used (default all)")
    args = parser.parse_args(argv)
    if not Path(args.corpus).exists():
        parser.error(f"--corpus {args.corpus!r} does not exist; expected a folder of per-language text files")
    path = build_teacher(
        args.corpus, args.output_dir, args.vocab_size, args.steps, args.block_size, args.seed, args.languages
    )
    print(f"demo teacher and tokenizer written to {path}")


if __name__ == "__main__":
    main()
