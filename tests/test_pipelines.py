"""Early-exit pipelines: results carry exit_layer, thresholds per call, batched equals one by one, standard pipeline
parity, loading from folders (package and remote code, the latter in a process without the package)."""

import copy
import inspect
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from test_modeling import mixing_thresholds
from transformers import (
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    TokenClassificationPipeline,
    XLMRobertaConfig,
    XLMRobertaForSequenceClassification,
    pipeline,
)
from transformers.pipelines import PIPELINE_REGISTRY

from hf_earlyexit import XLMRobertaEarlyExitConfig, XLMRobertaForEarlyExit, XLMRobertaForEarlyExitTokenClassification
from hf_earlyexit.data.tokenizer import train_tokenizer
from hf_earlyexit.pipelines import (
    TEXT_CLASSIFICATION_TASK,
    TOKEN_CLASSIFICATION_TASK,
    EarlyExitTextClassificationPipeline,
    EarlyExitTokenClassificationPipeline,
    register_pipelines,
    save_pretrained_with_pipeline,
)

LABELS = ("entailment", "neutral", "contradiction")
TAGS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC")
NAMES, ORGS, PLACES = ("John", "Maria", "Ahmed", "Olga"), ("Google", "Reuters", "Siemens"), ("Paris", "London", "Delhi")
CORPUS = [f"{name} works at {org} in {place} ." for name in NAMES for org in ORGS for place in PLACES]
TEXTS = [
    "Maria works at Google .",
    "Olga",
    "Ahmed works at Reuters in London and John works at Siemens in Delhi .",
    "John in Paris",
    "Siemens works at Maria in Olga in Google .",
    "London at Paris",
    "Reuters in Delhi works .",
    "Olga works at Siemens in Paris , Maria works at Google in London .",
]
PAIR = {"text": "Maria works at Google .", "text_pair": "Maria works in London ."}
NUM_LAYERS = 3


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(CORPUS, vocab_size=200)


def tiny_config(tokenizer, labels, **overrides):
    return XLMRobertaEarlyExitConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=NUM_LAYERS,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=128,
        pad_token_id=tokenizer.pad_token_id,
        id2label=dict(enumerate(labels)),
        # A wide init spreads the random heads' confidences, so a threshold can split the inputs across exits.
        initializer_range=0.2,
        **overrides,
    )


@pytest.fixture(scope="module")
def text_model(tokenizer):
    torch.manual_seed(0)
    return XLMRobertaForEarlyExit(tiny_config(tokenizer, LABELS)).eval()


@pytest.fixture(scope="module")
def token_model(tokenizer):
    torch.manual_seed(1)
    return XLMRobertaForEarlyExitTokenClassification(tiny_config(tokenizer, TAGS)).eval()


@pytest.fixture(scope="module")
def text_pipe(text_model, tokenizer):
    return pipeline(TEXT_CLASSIFICATION_TASK, model=text_model, tokenizer=tokenizer)


@pytest.fixture(scope="module")
def token_pipe(token_model, tokenizer):
    return pipeline(TOKEN_CLASSIFICATION_TASK, model=token_model, tokenizer=tokenizer)


def mixing_thresholds_for(model, tokenizer, texts=TEXTS):
    """Thresholds sending a real share of `texts` out at every exit, robust to padding noise (see test_modeling)."""
    encodings = tokenizer(texts, padding=True, return_tensors="pt")
    return mixing_thresholds(model, encodings["input_ids"], encodings["attention_mask"])


def count_model_calls(model):
    """Records the input_ids shape of every forward call; returns (shapes, hook handle)."""
    shapes = []
    handle = model.register_forward_hook(
        lambda module, args, kwargs, output: shapes.append(tuple(kwargs["input_ids"].shape)), with_kwargs=True
    )
    return shapes, handle


def assert_same_results(actual, expected, path="result"):
    """Equal structure, strings and ints; floats (scores) equal to 1e-5."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict) and actual.keys() == expected.keys(), f"{path}: {actual} != {expected}"
        for key in expected:
            assert_same_results(actual[key], expected[key], f"{path}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), f"{path}: {actual} != {expected}"
        for index, (a, e) in enumerate(zip(actual, expected)):
            assert_same_results(a, e, f"{path}[{index}]")
    elif isinstance(expected, float) or hasattr(expected, "dtype"):
        assert float(actual) == pytest.approx(float(expected), abs=1e-5), f"{path}: {actual} != {expected}"
    else:
        assert actual == expected and type(actual) is type(expected), f"{path}: {actual!r} != {expected!r}"


# ------------------------------------------------------------------------------------------------- registration
def test_import_registers_both_tasks_and_registering_again_changes_nothing():
    entries = {
        task: PIPELINE_REGISTRY.supported_tasks[task] for task in (TEXT_CLASSIFICATION_TASK, TOKEN_CLASSIFICATION_TASK)
    }
    assert entries[TEXT_CLASSIFICATION_TASK]["impl"] is EarlyExitTextClassificationPipeline
    assert entries[TEXT_CLASSIFICATION_TASK]["pt"] == (AutoModelForSequenceClassification,)
    assert entries[TOKEN_CLASSIFICATION_TASK]["impl"] is EarlyExitTokenClassificationPipeline
    assert entries[TOKEN_CLASSIFICATION_TASK]["pt"] == (AutoModelForTokenClassification,)
    register_pipelines()
    for task, entry in entries.items():
        assert PIPELINE_REGISTRY.supported_tasks[task] is entry


def test_a_model_without_exits_is_refused_with_a_clear_error(tokenizer):
    plain = XLMRobertaForSequenceClassification(
        XLMRobertaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=4)
    )
    with pytest.raises(ValueError, match=r"XLMRobertaForSequenceClassification .*expected an early-exit model"):
        pipeline(TEXT_CLASSIFICATION_TASK, model=plain, tokenizer=tokenizer)


# -------------------------------------------------------------------------------------------- text classification
def test_single_texts_and_pairs_get_the_models_label_score_and_exit_layer(text_pipe, text_model, tokenizer):
    thresholds = mixing_thresholds_for(text_model, tokenizer)
    results = text_pipe(TEXTS, exit_threshold=thresholds)
    pair_result = text_pipe(PAIR, exit_threshold=thresholds)
    inputs = [((text,), result) for text, result in zip(TEXTS, results)] + [
        ((PAIR["text"], PAIR["text_pair"]), pair_result)
    ]
    for texts, result in inputs:
        with torch.no_grad():
            output = text_model(**tokenizer(*texts, return_tensors="pt"), exit_threshold=thresholds)
        probabilities = output.logits.softmax(-1)[0]
        assert set(result) == {"label", "score", "exit_layer"}
        assert result["label"] == LABELS[int(probabilities.argmax())]
        assert 0.0 <= result["score"] <= 1.0
        assert result["score"] == pytest.approx(float(probabilities.max()), abs=1e-5)
        assert result["exit_layer"] == int(output.exit_layer[0])
    assert {result["exit_layer"] for result in results} >= {1, NUM_LAYERS}, "thresholds should split the texts"


def test_a_single_string_returns_a_list_and_top_k_none_every_label_with_the_exit_layer(text_pipe):
    assert isinstance(text_pipe(TEXTS[0]), list) and len(text_pipe(TEXTS[0])) == 1
    ranked = text_pipe(TEXTS[0], top_k=None, exit_threshold=2.0)
    assert sorted(result["label"] for result in ranked) == sorted(LABELS)
    assert [result["score"] for result in ranked] == sorted((result["score"] for result in ranked), reverse=True)
    assert sum(result["score"] for result in ranked) == pytest.approx(1.0, abs=1e-5)
    assert {result["exit_layer"] for result in ranked} == {1}


def test_threshold_per_call_and_per_pipeline_moves_exits_as_documented(text_model, token_model, tokenizer):
    text_pipe = pipeline(TEXT_CLASSIFICATION_TASK, model=text_model, tokenizer=tokenizer, exit_threshold=2.0)
    token_pipe = pipeline(TOKEN_CLASSIFICATION_TASK, model=token_model, tokenizer=tokenizer, exit_threshold=2.0)
    # Above 1 everything leaves at the first exit; 0.0 never leaves early; a call's value beats the pipeline's.
    assert {result["exit_layer"] for result in text_pipe(TEXTS)} == {1}
    assert {result["exit_layer"] for result in text_pipe(TEXTS, exit_threshold=0.0)} == {NUM_LAYERS}
    assert {result["exit_layer"] for result in text_pipe(TEXTS, exit_threshold=[0.0, 2.0, 0.0])} == {2}
    entities = token_pipe(TEXTS, ignore_labels=[])
    assert {entity["exit_layer"] for sentence in entities for entity in sentence} == {1}
    entities = token_pipe(TEXTS, ignore_labels=[], exit_threshold=0.0)
    assert {entity["exit_layer"] for sentence in entities for entity in sentence} == {NUM_LAYERS}


@pytest.mark.parametrize("bad", [-0.5, [0.5, 0.5], "high"])
def test_a_bad_threshold_fails_in_one_line_before_the_model_runs(text_pipe, text_model, bad):
    shapes, handle = count_model_calls(text_model)
    try:
        with pytest.raises(ValueError, match="exit_threshold") as error:
            text_pipe(TEXTS, exit_threshold=bad)
    finally:
        handle.remove()
    assert "\n" not in str(error.value)
    assert shapes == []


def test_batched_calls_run_padded_batches_through_the_model_and_equal_one_by_one(text_pipe, text_model, tokenizer):
    thresholds = mixing_thresholds_for(text_model, tokenizer)
    inputs = TEXTS + [PAIR]
    one_by_one = text_pipe(inputs, exit_threshold=thresholds)
    shapes, handle = count_model_calls(text_model)
    try:
        batched = text_pipe(inputs, batch_size=4, exit_threshold=thresholds)
    finally:
        handle.remove()
    assert [shape[0] for shape in shapes] == [4, 4, 1]
    lengths = [len(tokenizer(text)["input_ids"]) for text in TEXTS[:4]]
    assert shapes[0][1] == max(lengths) > min(lengths), "the first batch should need padding"
    assert_same_results(batched, one_by_one)
    assert len({result["exit_layer"] for result in batched}) >= 2



def test_a_mean_pooling_model_gives_the_same_results_batched_and_one_by_one(tokenizer):
    # Padding enters the mean unless the pipeline's attention mask reaches every head: batched calls would differ.
    torch.manual_seed(0)
    model = XLMRobertaForEarlyExit(tiny_config(tokenizer, LABELS, pooling="mean")).eval()
    pipe = pipeline(TEXT_CLASSIFICATION_TASK, model=model, tokenizer=tokenizer)
    thresholds = mixing_thresholds_for(model, tokenizer)
    one_by_one = pipe(TEXTS, exit_threshold=thresholds)
    assert_same_results(pipe(TEXTS, batch_size=4, exit_threshold=thresholds), one_by_one)
    assert len({result["exit_layer"] for result in one_by_one}) >= 2
    encoded = tokenizer(TEXTS[2], return_tensors="pt")
    with torch.no_grad():
        logits = model(**encoded, exit_threshold=thresholds).logits[0]
    assert one_by_one[2]["score"] == pytest.approx(float(logits.softmax(-1).max()), abs=1e-6)


# ------------------------------------------------------------------------------------------- token classification
# Word aggregation warns that this char-level test tokenizer has no real words (the standard pipeline does as well).
@pytest.mark.filterwarnings("ignore:Tokenizer does not support real words")
@pytest.mark.parametrize("strategy", ["none", "simple", "first", "average", "max"])
def test_token_results_equal_the_standard_pipeline_plus_each_sequences_exit_layer(
    token_pipe, token_model, tokenizer, strategy
):
    thresholds = mixing_thresholds_for(token_model, tokenizer)
    ours = token_pipe(TEXTS, aggregation_strategy=strategy, ignore_labels=[], exit_threshold=thresholds)
    standard_pipe = TokenClassificationPipeline(model=token_model, tokenizer=tokenizer)
    saved = token_model.config.exit_threshold
    token_model.config.exit_threshold = thresholds  # the standard pipeline calls the model with its config's value
    try:
        standard = standard_pipe(TEXTS, aggregation_strategy=strategy, ignore_labels=[])
    finally:
        token_model.config.exit_threshold = saved
    exit_layers = []
    for text, our_entities, standard_entities in zip(TEXTS, ours, standard):
        with torch.no_grad():
            output = token_model(**tokenizer(text, return_tensors="pt"), exit_threshold=thresholds)
        exit_layers.append(int(output.exit_layer[0, 0]))
        assert {entity.pop("exit_layer") for entity in our_entities} == {exit_layers[-1]}
        assert_same_results(our_entities, standard_entities)
        key = "entity" if strategy == "none" else "entity_group"
        assert all(entity[key] in TAGS or f"B-{entity[key]}" in TAGS for entity in standard_entities)
        assert all(0.0 <= entity["score"] <= 1.0 for entity in standard_entities)
    assert len(set(exit_layers)) >= 2, "thresholds should split the texts"


def test_token_batched_calls_equal_one_by_one(token_pipe, token_model, tokenizer):
    thresholds = mixing_thresholds_for(token_model, tokenizer)
    one_by_one = token_pipe(TEXTS, aggregation_strategy="simple", exit_threshold=thresholds, ignore_labels=[])
    shapes, handle = count_model_calls(token_model)
    try:
        batched = token_pipe(
            TEXTS, aggregation_strategy="simple", exit_threshold=thresholds, ignore_labels=[], batch_size=8
        )
    finally:
        handle.remove()
    assert [shape[0] for shape in shapes] == [8]
    assert_same_results(batched, one_by_one)


class StripedExitTokenModel(XLMRobertaForEarlyExitTokenClassification):
    """Reports exit layer 1 + (token position mod 3), as per-token exit will: each token its own exit layer."""

    def forward(self, *args, **kwargs):
        output = super().forward(*args, **kwargs)
        positions = torch.arange(output.logits.shape[1])
        output.exit_layer = (1 + positions % NUM_LAYERS).expand(output.logits.shape[0], -1)
        return output


def simple_groups(tokens):
    """Consecutive tokens grouped as the standard pipeline documents: a new group at a B- tag or a tag change."""
    groups = []
    for token in tokens:
        bi, tag = token["entity"].split("-", 1) if token["entity"][:2] in ("B-", "I-") else ("I", token["entity"])
        if groups and groups[-1][0] == tag and bi != "B":
            groups[-1][1].append(token)
        else:
            groups.append((tag, [token]))
    return groups


def test_each_token_carries_its_own_exit_layer_and_each_group_the_deepest_of_its_tokens(token_model, tokenizer):
    striped = StripedExitTokenModel(token_model.config).eval()
    striped.load_state_dict(token_model.state_dict())
    striped_pipe = pipeline(TOKEN_CLASSIFICATION_TASK, model=striped, tokenizer=tokenizer)
    group_exit_layers = set()
    for text in TEXTS[:4]:
        tokens = striped_pipe(text, ignore_labels=[])
        assert [token["exit_layer"] for token in tokens] == [1 + token["index"] % NUM_LAYERS for token in tokens]
        groups = striped_pipe(text, ignore_labels=[], aggregation_strategy="simple")
        expected = simple_groups(tokens)
        assert [group["entity_group"] for group in groups] == [tag for tag, _ in expected]
        for group, (_, members) in zip(groups, expected):
            assert group["exit_layer"] == max(token["exit_layer"] for token in members)
            group_exit_layers.add(group["exit_layer"])
    assert len(group_exit_layers) >= 2


# ------------------------------------------------------------------------------------------------------- folders
def test_a_plainly_saved_folder_loads_through_the_standard_string_path(text_pipe, text_model, tokenizer, tmp_path):
    # `pipeline(task, model=<str>)` is the path a Hub id takes too; only resolving the name differs.
    text_model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    loaded = pipeline(TEXT_CLASSIFICATION_TASK, model=str(tmp_path))
    assert type(loaded) is EarlyExitTextClassificationPipeline
    thresholds = mixing_thresholds_for(text_model, tokenizer)
    assert_same_results(
        loaded(TEXTS + [PAIR], exit_threshold=thresholds), text_pipe(TEXTS + [PAIR], exit_threshold=thresholds)
    )


def test_a_folder_saved_with_its_pipeline_runs_the_saved_pipeline_code(text_pipe, text_model, tokenizer, tmp_path):
    save_pretrained_with_pipeline(text_model, tokenizer, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["custom_pipelines"] == {
        TEXT_CLASSIFICATION_TASK: {
            "impl": "pipeline_early_exit.EarlyExitTextClassificationPipeline",
            "pt": ["AutoModelForSequenceClassification"],
            "type": "text",
        }
    }
    assert {"pipeline_early_exit.py", "criteria.py", "tokenizer.json", "model.safetensors"} <= set(os.listdir(tmp_path))
    with pytest.raises(ValueError, match="trust_remote_code=True"):
        pipeline(TEXT_CLASSIFICATION_TASK, model=str(tmp_path))
    loaded = pipeline(TEXT_CLASSIFICATION_TASK, model=str(tmp_path), trust_remote_code=True)
    assert type(loaded).__module__.startswith("transformers_modules.")
    thresholds = mixing_thresholds_for(text_model, tokenizer)
    assert_same_results(
        loaded(TEXTS + [PAIR], exit_threshold=thresholds), text_pipe(TEXTS + [PAIR], exit_threshold=thresholds)
    )


def pipeline_calls(text_pipe, token_pipe, texts, pair, text_thresholds, token_thresholds):
    """The calls compared between this process and one without hf_earlyexit (its source runs there as well)."""
    results = {
        "texts": text_pipe(texts, exit_threshold=text_thresholds),
        "pair": text_pipe(pair, exit_threshold=text_thresholds),
        "batched": text_pipe(texts + [pair], batch_size=4, exit_threshold=text_thresholds),
        "full_depth": text_pipe(texts[:2], exit_threshold=0.0),
        "first_exit": text_pipe(texts[:2], exit_threshold=2.0),
        "tokens": token_pipe(texts[:3], ignore_labels=[], exit_threshold=token_thresholds),
        "entities": token_pipe(texts, aggregation_strategy="simple", batch_size=4, exit_threshold=token_thresholds),
    }
    return json.loads(json.dumps(results, default=float))  # numpy scores become floats, as they do over JSON


CLEAN_PROCESS = """
import importlib.abc, json, sys

class BlockPackage(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "hf_earlyexit":
            raise ImportError(f"{name} is blocked: this process checks the folder works without the package")

sys.meta_path.insert(0, BlockPackage())
try:
    import hf_earlyexit  # noqa: F401
except ImportError:
    pass
else:
    raise SystemExit("hf_earlyexit is still importable")

from transformers import pipeline
"""


@pytest.mark.slow
def test_folders_saved_with_their_pipelines_give_the_same_results_in_a_process_without_the_package(
    text_pipe, token_pipe, text_model, token_model, tokenizer, tmp_path
):
    text_dir, token_dir = tmp_path / "text", tmp_path / "token"
    save_pretrained_with_pipeline(text_model, tokenizer, text_dir)
    save_pretrained_with_pipeline(token_model, tokenizer, token_dir)
    arguments = [
        TEXTS,
        PAIR,
        mixing_thresholds_for(text_model, tokenizer),
        mixing_thresholds_for(token_model, tokenizer),
    ]
    script = (
        CLEAN_PROCESS
        + textwrap.dedent(inspect.getsource(pipeline_calls))
        + textwrap.dedent(
            f"""
        text_pipe = pipeline({TEXT_CLASSIFICATION_TASK!r}, model={str(text_dir)!r}, trust_remote_code=True)
        token_pipe = pipeline({TOKEN_CLASSIFICATION_TASK!r}, model={str(token_dir)!r}, trust_remote_code=True)
        results = pipeline_calls(text_pipe, token_pipe, *json.loads(sys.argv[1]))
        assert not [name for name in sys.modules if name.split(".")[0] == "hf_earlyexit"]
        print("RESULTS " + json.dumps(results))
        """
        )
    )
    env = {
        key: value for key, value in os.environ.items() if not key.startswith("PYTHON") and key != "HF_MODULES_CACHE"
    }
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"))
    process = subprocess.run(
        [sys.executable, "-I", "-c", script, json.dumps(arguments)],
        cwd=tmp_path,  # not the repository, so the package cannot come from the working directory either
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert process.returncode == 0, process.stderr[-3000:]
    line = next(line for line in process.stdout.splitlines() if line.startswith("RESULTS "))
    clean = json.loads(line.removeprefix("RESULTS "))
    expected = pipeline_calls(text_pipe, token_pipe, *arguments)
    assert_same_results(clean, expected)
    assert {result["exit_layer"] for result in expected["texts"]} >= {1, NUM_LAYERS}
    assert {result["exit_layer"] for result in expected["full_depth"]} == {NUM_LAYERS}
    assert {result["exit_layer"] for result in expected["first_exit"]} == {1}


@pytest.mark.filterwarnings("ignore:Tokenizer does not support real words")
@pytest.mark.parametrize("call", ["stride", "split_into_words"])
def test_long_texts_in_strided_chunks_and_pre_split_words_match_the_standard_pipeline(token_model, tokenizer, call):
    short_tokenizer = copy.deepcopy(tokenizer)
    short_tokenizer.model_max_length = 24  # several overlapping chunks per text
    texts = [TEXTS[2], TEXTS[7]]
    kwargs = {"aggregation_strategy": "first", "ignore_labels": []}
    if call == "stride":
        kwargs["stride"] = 6
    else:
        texts, kwargs["is_split_into_words"] = [text.split() for text in TEXTS[:3]], True
    thresholds = mixing_thresholds_for(token_model, tokenizer)
    ours = pipeline(TOKEN_CLASSIFICATION_TASK, model=token_model, tokenizer=short_tokenizer)
    shapes, handle = count_model_calls(token_model)
    try:
        ours = ours(texts, exit_threshold=thresholds, **kwargs)
    finally:
        handle.remove()
    if call == "stride":
        assert len(shapes) > len(texts), "each text should be cut into several chunks"
    standard_pipe = TokenClassificationPipeline(model=token_model, tokenizer=short_tokenizer)
    saved = token_model.config.exit_threshold
    token_model.config.exit_threshold = thresholds
    try:
        standard = standard_pipe(texts, **kwargs)
    finally:
        token_model.config.exit_threshold = saved
    exit_layers = [entity.pop("exit_layer") for entities in ours for entity in entities]
    assert set(exit_layers) <= set(range(1, NUM_LAYERS + 1)) and exit_layers
    assert_same_results(ours, standard)
