"""The linear probe of run_distil's eval_method=linear_probe (hf_earlyexit/evaluation/probe.py), offline on a tiny
random encoder: the pair features see both sentences, the probe reads the config's rows, and bad input is refused."""

import csv
from pathlib import Path

import pytest
from transformers import XLMRobertaConfig, XLMRobertaModel

from hf_earlyexit.data.tokenizer import train_tokenizer
from hf_earlyexit.distil import CorpusArguments
from hf_earlyexit.evaluation.probe import linear_probe_xnli

REPO = Path(__file__).resolve().parents[1]
XNLI_DEMO = REPO / "examples" / "configs" / "demo-tiny" / "data" / "xnli"
LANGUAGES = ("en", "ru")


def sentences(lang: str) -> list[str]:
    with open(XNLI_DEMO / f"{lang}.dev.tsv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    return list(dict.fromkeys(text for row in rows for text in (row["premise"], row["hypothesis"])))


def write_pairs(path: Path, texts: list[str]) -> None:
    """A task a pair probe must solve and a single-sentence probe cannot: the hypothesis repeats the premise
    (entailment) or is another sentence (contradiction); every sentence appears in both roles."""
    rows = ["premise\thypothesis\tlabel"]
    for i, text in enumerate(texts):
        rows.append(f"{text}\t{text}\tentailment")
        rows.append(f"{text}\t{texts[(i + 1) % len(texts)]}\tcontradiction")
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")


@pytest.fixture(scope="module")
def probe_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("probe")
    texts = {lang: sentences(lang) for lang in LANGUAGES}
    tokenizer = train_tokenizer([t for lang in LANGUAGES for t in texts[lang]], vocab_size=400)
    config = XLMRobertaConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=256, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    checkpoint = root / "encoder"
    XLMRobertaModel(config, add_pooling_layer=False).save_pretrained(checkpoint)
    tokenizer.save_pretrained(checkpoint)
    (root / "xnli").mkdir()
    for lang in LANGUAGES:
        write_pairs(root / "xnli" / f"{lang}.dev.tsv", texts[lang][20:])
    write_pairs(root / "train.tsv", texts["en"][:20] + texts["ru"][:20])
    config_file = root / "probe.yaml"
    config_file.write_text(
        f"data_dir: {root / 'xnli'}\ntrain_files: [{root / 'train.tsv'}]\neval_split: validation\n"
        f"eval_languages: [en, ru]\nmax_eval_samples: 20\neval_sample_seed: 0\npooling: mean\nmax_seq_length: 64\n"
        "per_device_eval_batch_size: 8\nseed: 0\n"
    )
    return checkpoint, config_file


def test_the_probe_reads_both_sentences_of_a_pair(probe_setup):
    result = linear_probe_xnli(*probe_setup)
    assert set(result["metric_by_language"]) == set(LANGUAGES)
    assert result["num_train"] == 80 and result["num_eval"] == 20 and result["pooling"] == "mean"
    # |u - v| is 0 exactly for a repeated sentence: solvable from pair features even with random weights, while
    # the labels are balanced, so a probe that read one sentence would stay near 50 %.
    assert all(accuracy >= 0.9 for accuracy in result["metric_by_language"].values()), result


def test_bad_probe_settings_are_refused_in_one_line():
    with pytest.raises(ValueError, match=r"eval_method='probe'; expected one of \('finetune', 'linear_probe'\)"):
        CorpusArguments(eval_method="probe")
    with pytest.raises(ValueError, match=r"eval_method=linear_probe probes sentence pairs; eval_task='wikiann'"):
        CorpusArguments(eval_method="linear_probe", eval_task="wikiann")
