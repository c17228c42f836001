"""train_tokenizer: XLM-R's special tokens and ids, templates, word_ids, save/load round trip."""

import json

import pytest
from transformers import AutoTokenizer, XLMRobertaTokenizer

from hf_earlyexit.data.tokenizer import train_tokenizer

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Быстрая коричневая лиса прыгает через ленивую собаку.",
    "तेज़ भूरी लोमड़ी आलसी कुत्ते के ऊपर कूदती है।",
    "Hızlı kahverengi tilki tembel köpeğin üzerinden atlar.",
    "Mbweha mwepesi wa kahawia anaruka juu ya mbwa mvivu.",
    "تیز بھوری لومڑی سست کتے کے اوپر چھلانگ لگاتی ہے۔",
] * 20


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(TEXTS, vocab_size=200)


def test_special_tokens_have_xlmr_ids(tokenizer):
    assert isinstance(tokenizer, XLMRobertaTokenizer) and tokenizer.is_fast
    # Unigram stops early on a tiny corpus: vocab_size is an upper bound; <mask> is always the last id.
    assert 50 < len(tokenizer) <= 200
    last = len(tokenizer) - 1
    ids = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "<mask>": last}
    assert {token: tokenizer.convert_tokens_to_ids(token) for token in ids} == ids
    assert (tokenizer.cls_token_id, tokenizer.pad_token_id, tokenizer.sep_token_id) == (0, 1, 2)
    assert (tokenizer.unk_token_id, tokenizer.mask_token_id) == (3, last)


def test_single_and_pair_templates_match_xlmr(tokenizer):
    single = tokenizer("quick fox")["input_ids"]
    assert single[0] == 0 and single[-1] == 2 and 2 not in single[1:-1]
    a = tokenizer("quick fox", add_special_tokens=False)["input_ids"]
    b = tokenizer("lazy dog", add_special_tokens=False)["input_ids"]
    assert tokenizer("quick fox", "lazy dog")["input_ids"] == [0, *a, 2, 2, *b, 2]


def test_word_ids_and_unknown_characters(tokenizer):
    encoding = tokenizer(["brown", "fox", "jumps"], is_split_into_words=True)
    word_ids = encoding.word_ids()
    assert word_ids[0] is None and word_ids[-1] is None
    assert sorted(set(word_ids[1:-1])) == [0, 1, 2]
    # A script never seen in training becomes <unk>, not an error (sentencepiece's behaviour).
    assert 3 in tokenizer("漢字")["input_ids"]


def test_save_and_reload_round_trip(tokenizer, tmp_path):
    tokenizer.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    assert type(reloaded) is type(tokenizer)
    for text in TEXTS[:6]:
        assert reloaded(text, "pair")["input_ids"] == tokenizer(text, "pair")["input_ids"]
        assert reloaded.decode(reloaded(text)["input_ids"], skip_special_tokens=True) == text
    assert reloaded.mask_token_id == len(tokenizer) - 1 and reloaded.model_max_length == 512


def test_rare_characters_do_not_break_small_vocabularies():
    # 300 distinct CJK characters cannot all fit in 100 pieces; they are dropped like sentencepiece's coverage.
    texts = TEXTS + ["".join(chr(0x4E00 + i) for i in range(start, start + 30)) for start in range(0, 300, 30)]
    tokenizer = train_tokenizer(texts, vocab_size=100)
    assert len(tokenizer) <= 100
    assert tokenizer("".join(chr(0x4E00 + i) for i in range(300)))["input_ids"].count(3) > 0


@pytest.mark.parametrize(
    ("texts", "vocab_size", "message"),
    [(TEXTS, 3, "vocab_size=3 is too small"), (["", "  "], 100, "no non-empty text")],
)
def test_bad_input(texts, vocab_size, message):
    with pytest.raises(ValueError, match=message):
        train_tokenizer(texts, vocab_size=vocab_size)


@pytest.mark.real_data
@pytest.mark.slow
def test_the_same_texts_give_the_same_ids_in_every_process(shared_data):
    # The Unigram trainer orders pieces (and deals out the scores of characters it keeps unscored) by hash maps
    # Rust seeds afresh per process: the ids used to differ run to run.
    import subprocess
    import sys

    script = (
        "import json, sys\n"
        "from hf_earlyexit.data.tokenizer import train_tokenizer\n"
        "from hf_earlyexit.data.textfiles import read_lines\n"
        f"folder = {str(shared_data / 'text' / 'tatoeba')!r}\n"
        "texts = [t for lang in ('eng', 'rus', 'hin', 'cmn') for t in read_lines(f'{folder}/{lang}.txt')[:300]]\n"
        "print(json.dumps(sorted(train_tokenizer(texts, 500).get_vocab().items(), key=lambda item: item[1])))\n"
    )
    runs = [
        json.loads(subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout)
        for _ in range(2)
    ]
    assert len(runs[0]) == 500 and runs[0] == runs[1]
