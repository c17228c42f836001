"""ONNX deployment: export_onnx writes per-segment graphs + manifest; OnnxEarlyExitRunner equals the PyTorch batched
exit path (exit layers identical, logits within 1e-4) on real sentences of six languages; bad input fails with one
line and writes nothing."""

import csv
import json
import sys

import pytest
import torch
from test_modeling import mixing_thresholds
from test_pipelines import assert_same_results
from transformers import XLMRobertaConfig, XLMRobertaForSequenceClassification, pipeline

onnxruntime = pytest.importorskip(
    "onnxruntime", reason="onnxruntime is not installed (pip install 'hf_earlyexit[onnx]'); deployment tests skipped"
)

from conftest import REPO_ROOT  # noqa: E402

from hf_earlyexit import (  # noqa: E402
    BertEarlyExitConfig,
    BertForEarlyExit,
    OnnxEarlyExitRunner,
    XLMRobertaEarlyExitConfig,
    XLMRobertaForEarlyExit,
    XLMRobertaForEarlyExitTokenClassification,
    export_onnx,
)
from hf_earlyexit.data.tokenizer import train_tokenizer  # noqa: E402
from hf_earlyexit.deploy import ExportError, ManifestError  # noqa: E402
from hf_earlyexit.deploy import export as export_module  # noqa: E402
from hf_earlyexit.deploy.__main__ import main as cli  # noqa: E402
from hf_earlyexit.deploy.export import state_dict_sha256  # noqa: E402
from hf_earlyexit.deploy.manifest import MANIFEST_NAME  # noqa: E402
from hf_earlyexit.modeling.criteria import uncertainty  # noqa: E402
from hf_earlyexit.pipelines import TEXT_CLASSIFICATION_TASK  # noqa: E402

# The offline XNLI fixture: real sentences of six languages.
XNLI_DEMO = REPO_ROOT / "examples" / "configs" / "demo-tiny" / "data" / "xnli"
LANGUAGES = ("en", "hi", "ru", "sw", "tr", "ur")
LABELS = ("entailment", "neutral", "contradiction")


def xnli_pairs(per_language: int = 6) -> list[tuple[str, str]]:
    """Real premise / hypothesis pairs of the six demo languages (different lengths, so batches are padded)."""
    pairs = []
    for language in LANGUAGES:
        with open(XNLI_DEMO / f"{language}.dev.tsv", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
        pairs += [(row["premise"], row["hypothesis"]) for row in rows[:per_language]]
    return pairs


PAIRS = xnli_pairs()


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer([text for pair in PAIRS for text in pair], vocab_size=400)


def tiny_config(config_class, tokenizer, **overrides):
    fields = {
        "vocab_size": len(tokenizer),
        "hidden_size": 32,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "intermediate_size": 64,
        "max_position_embeddings": 256,
        "pad_token_id": tokenizer.pad_token_id,
        "id2label": dict(enumerate(LABELS)),
        "exit_layers": [1, 2, 4],
        # A wide init spreads the random heads' confidences, so a threshold can split the inputs across exits.
        "initializer_range": 0.2,
    }
    return config_class(**{**fields, **overrides})


@pytest.fixture(scope="module")
def model(tokenizer):
    torch.manual_seed(0)
    return XLMRobertaForEarlyExit(tiny_config(XLMRobertaEarlyExitConfig, tokenizer)).eval()


@pytest.fixture(scope="module")
def exported(model, tokenizer, tmp_path_factory):
    return export_onnx(model, tmp_path_factory.mktemp("onnx") / "fp32", tokenizer=tokenizer)


@pytest.fixture(scope="module")
def runner(exported):
    return OnnxEarlyExitRunner(exported, num_threads=1)


@pytest.fixture(scope="module")
def batch(tokenizer):
    return tokenizer([p for p, _ in PAIRS], [h for _, h in PAIRS], padding=True, return_tensors="pt")


def numpy_batch(batch):
    return {name: tensor.numpy() for name, tensor in batch.items()}


def assert_matches_pytorch(model, runner, batch, threshold):
    with torch.no_grad():
        expected = model(**batch, exit_threshold=threshold)
    logits, exit_layer = runner.forward(numpy_batch(batch), threshold)
    assert exit_layer.tolist() == expected.exit_layer.tolist()
    assert abs(logits - expected.logits.numpy()).max() <= 1e-4
    return exit_layer


# ------------------------------------------------------------------------------------------------------ export
def test_export_writes_one_graph_per_segment_and_a_manifest(exported, model):
    manifest = json.loads((exported / MANIFEST_NAME).read_text())
    names = [entry["name"] for entry in manifest["segments"]]
    assert names == ["embeddings", "layers_01_01", "exit_head_01", "layers_02_02", "exit_head_02", "layers_03_04",
                     "final_head"]
    assert sorted(path.name for path in exported.glob("*.onnx")) == sorted(f"{name}.onnx" for name in names)
    assert manifest["exit_layers"] == [1, 2, 4] and manifest["exit_criterion"] == "entropy"
    assert manifest["pooling"] == "first" and manifest["quantization"] is None and manifest["opset"] == 17
    assert manifest["id2label"] == {"0": "entailment", "1": "neutral", "2": "contradiction"}
    assert manifest["source_sha256"] == state_dict_sha256(model)
    assert manifest["validation"]["fp32_max_abs_diff"] <= 1e-4
    assert (exported / "tokenizer_config.json").is_file()
    # dynamic batch and sequence axes, the attention mask as an input of every layer run
    import onnx

    graph = onnx.load(exported / "layers_03_04.onnx").graph
    inputs = {node.name: [d.dim_param or d.dim_value for d in node.type.tensor_type.shape.dim] for node in graph.input}
    assert inputs["attention_mask"] == ["batch", "sequence"] and inputs["hidden_states"][:2] == ["batch", "sequence"]


def test_fused_export_has_onnx_runtime_attention_and_still_matches_pytorch(exported, model, tokenizer, tmp_path,
                                                                          batch):
    # fuse=True traces the layers with the Div-scaled eager attention, so ONNX Runtime's BERT fusion finds the
    # pattern beside the additive mask (with the eager "* scaling" or SDPA it fuses no Attention at all).
    import onnx

    fused = export_onnx(model, tmp_path / "fused", tokenizer=tokenizer, fuse=True)
    manifest = json.loads((fused / MANIFEST_NAME).read_text())
    assert manifest["fusions"] == {"Attention": 4, "BiasGelu": 4, "SkipLayerNormalization": 8}
    ops = {node.op_type for node in onnx.load(fused / "layers_03_04.onnx").graph.node}
    assert {"Attention", "SkipLayerNormalization", "BiasGelu"} <= ops and "Softmax" not in ops
    assert model.config._attn_implementation == "sdpa"  # the export's attention was put back
    assert "fusions" not in json.loads((exported / MANIFEST_NAME).read_text())  # the default: unfused
    assert "Softmax" in {node.op_type for node in onnx.load(exported / "layers_03_04.onnx").graph.node}
    # fused graphs on a padded batch: every exit within 1e-4 of PyTorch (what the export validated), and int8 of them
    with torch.no_grad():
        reference = model(**batch, output_exit_logits=True).exit_logits
    got = OnnxEarlyExitRunner(fused, 1).exit_logits(numpy_batch(batch))
    assert max(float(abs(g - w.numpy()).max()) for g, w in zip(got, reference)) <= 1e-4
    int8 = export_onnx(model, tmp_path / "fused-int8", tokenizer=tokenizer, fuse=True, quantize="int8")
    ops = {node.op_type for node in onnx.load(int8 / "layers_03_04.onnx").graph.node}
    assert "Attention" in ops and ("MatMulInteger" in ops or "DynamicQuantizeMatMul" in ops)


def test_state_dict_sha256_changes_with_any_weight(model):
    changed = XLMRobertaForEarlyExit(model.config)
    changed.load_state_dict(model.state_dict())
    assert state_dict_sha256(changed) == state_dict_sha256(model)
    with torch.no_grad():
        changed.exit_heads[1].out_proj.bias[0] += 1e-3
    assert state_dict_sha256(changed) != state_dict_sha256(model)


# ------------------------------------------------------------------------------------------------------ runner
@pytest.mark.parametrize(("criterion", "pooling"), [("entropy", "first"), ("max_prob", "first"), ("entropy", "mean")])
def test_fp32_runner_equals_the_pytorch_batched_path_on_six_languages(criterion, pooling, model, runner, batch,
                                                                      tokenizer, tmp_path):
    if (criterion, pooling) != ("entropy", "first"):
        torch.manual_seed(0)
        model = XLMRobertaForEarlyExit(
            tiny_config(XLMRobertaEarlyExitConfig, tokenizer, exit_criterion=criterion, pooling=pooling)
        )
        runner = OnnxEarlyExitRunner(export_onnx(model.eval(), tmp_path / "out", tokenizer=tokenizer), num_threads=1)
    mid = mixing_thresholds(
        model, batch["input_ids"], batch["attention_mask"], score=lambda logits: uncertainty(logits, criterion)
    )
    assert batch["attention_mask"].float().mean() < 0.9 and runner.manifest["pooling"] == pooling  # really padded
    layers = {threshold: assert_matches_pytorch(model, runner, batch, threshold) for threshold in (0.0, 1.5)}
    assert set(layers[0.0].tolist()) == {4} and set(layers[1.5].tolist()) == {1}
    # the mid thresholds really split the batch over every exit
    assert set(assert_matches_pytorch(model, runner, batch, mid).tolist()) == {1, 2, 4}


def test_threshold_zero_runs_no_exit_head_and_equals_full_depth(model, runner, batch, monkeypatch):
    heads = [segment for segment in runner.sessions if segment.kind == "exit_head"]
    calls = []
    original = runner._run
    monkeypatch.setattr(runner, "_run", lambda segment, *a: calls.append(segment.kind) or original(segment, *a))
    logits, exit_layer = runner.forward(numpy_batch(batch), 0.0)
    assert heads and "exit_head" not in calls
    with torch.no_grad():
        full = model(**batch, exit_threshold=0.0).logits  # the plain full-depth forward
    assert abs(logits - full.numpy()).max() <= 1e-4 and set(exit_layer.tolist()) == {4}


def test_patience_criterion_matches_pytorch(tokenizer, batch, tmp_path):
    torch.manual_seed(3)
    model = XLMRobertaForEarlyExit(
        tiny_config(XLMRobertaEarlyExitConfig, tokenizer, exit_criterion="patience", exit_patience=1,
                    exit_layers=[1, 2, 3, 4])
    ).eval()
    runner = OnnxEarlyExitRunner(export_onnx(model, tmp_path / "out", tokenizer=tokenizer), num_threads=1)
    layers = assert_matches_pytorch(model, runner, batch, 1.0)
    assert len(set(layers.tolist())) > 1  # some rows leave at 2 or 3, some go on


def test_texts_and_pairs_give_the_pipeline_results(model, runner, tokenizer):
    pipe = pipeline(TEXT_CLASSIFICATION_TASK, model=model, tokenizer=tokenizer)
    threshold = 0.97
    texts = [premise for premise, _ in PAIRS[::3]]
    expected = pipe(texts, exit_threshold=threshold, batch_size=4)
    assert_same_results(runner(texts, exit_threshold=threshold, batch_size=4), expected)
    pair_dicts = [{"text": p, "text_pair": h} for p, h in PAIRS[:5]]
    expected = [pipe(item, exit_threshold=threshold) for item in pair_dicts]
    assert_same_results(runner(PAIRS[:5], exit_threshold=threshold), expected)
    assert_same_results(runner(pair_dicts, exit_threshold=threshold), expected)


def test_bert_family_with_token_type_ids(tokenizer, tmp_path):
    torch.manual_seed(0)
    model = BertForEarlyExit(tiny_config(BertEarlyExitConfig, tokenizer, type_vocab_size=2, exit_layers=[2, 4])).eval()
    runner = OnnxEarlyExitRunner(export_onnx(model, tmp_path / "bert", tokenizer=tokenizer), num_threads=1)
    generator = torch.Generator().manual_seed(0)
    batch = {
        "input_ids": torch.randint(5, len(tokenizer), (6, 11), generator=generator),
        "attention_mask": torch.ones(6, 11, dtype=torch.long),
        "token_type_ids": (torch.arange(11) >= 5).long().expand(6, -1),
    }
    batch["attention_mask"][3:, 7:] = 0
    for threshold in (0.0, 0.99, 2.0):
        assert_matches_pytorch(model, runner, batch, threshold)


def test_bad_calls_fail_before_any_graph_runs(runner, monkeypatch):
    monkeypatch.setattr(runner, "_run", lambda *a: pytest.fail("a graph ran"))
    with pytest.raises(ValueError, match=r"exit_threshold=-0.1.*expected values >= 0"):
        runner(["a"], exit_threshold=-0.1)
    with pytest.raises(ValueError, match=r"exit_threshold has 2 values.*one per exit layer \(3\)"):
        runner(["a"], exit_threshold=[0.1, 0.2])
    with pytest.raises(ValueError, match=r"inputs\[1\] is 3; expected a str"):
        runner(["a", 3])
    with pytest.raises(ValueError, match="mix single texts and text pairs"):
        runner(["a", ("b", "c")])
    with pytest.raises(ValueError, match="batch_size=0"):
        runner(["a"], batch_size=0)


# ------------------------------------------------------------------------------------------------------- int8
def test_int8_export_quantizes_the_layer_runs_only(model, tokenizer, tmp_path, exported, batch):
    folder = export_onnx(model, tmp_path / "int8", quantize="int8", tokenizer=tokenizer)
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    assert manifest["quantization"]["weight_type"] == "QInt8" and manifest["quantization"]["segments"] == "layers"
    import onnx

    for entry in manifest["segments"]:
        ops = {node.op_type for node in onnx.load(folder / entry["file"]).graph.node}
        assert ("MatMulInteger" in ops or "DynamicQuantizeMatMul" in ops) == (entry["kind"] == "layers"), entry
        if entry["kind"] != "layers":  # embeddings and heads are the fp32 graphs, byte for byte
            assert (folder / entry["file"]).read_bytes() == (exported / entry["file"]).read_bytes()
    assert 0 < manifest["validation"]["int8_max_abs_diff"] < 0.2
    logits, _ = OnnxEarlyExitRunner(folder, 1).forward(numpy_batch(batch), 0.0)
    with torch.no_grad():
        full = model(**batch).logits.numpy()
    assert (logits.argmax(-1) == full.argmax(-1)).mean() >= 0.9


@pytest.fixture(scope="module")
def outlier_model(tokenizer):
    """The tiny model with one outlier channel entering layer 4's FFN down-projection (a large up-projection bias:
    GELU passes it on for every token), the pattern of e5-small's layer 5."""
    torch.manual_seed(0)
    model = XLMRobertaForEarlyExit(tiny_config(XLMRobertaEarlyExitConfig, tokenizer)).eval()
    with torch.no_grad():
        model.roberta.encoder.layer[3].intermediate.dense.bias[0] += 40.0
    return model


def graph_matmuls(path):
    import onnx

    graph = onnx.load(path).graph
    return {node.name for node in graph.node if node.op_type == "MatMul"}


def test_int8_keeps_the_outlier_layers_ffn_down_projection_fp32(outlier_model, tokenizer, tmp_path, batch):
    from hf_earlyexit.deploy.export import OUTLIER_FACTOR, ffn_down_input_ranges

    ranges = ffn_down_input_ranges(outlier_model, dict(batch))
    assert ranges[3] > OUTLIER_FACTOR * sorted(ranges)[1] and max(ranges[:3]) < ranges[3] / OUTLIER_FACTOR
    auto = export_onnx(outlier_model, tmp_path / "auto", quantize="int8", tokenizer=tokenizer,
                       calibration_texts=PAIRS)
    fp32 = json.loads((auto / MANIFEST_NAME).read_text())["quantization"]["fp32"]
    assert fp32["ffn_down_layers"] == [4] and fp32["calibration"] == f"{len(PAIRS)} texts"
    assert fp32["ffn_down_input_max_abs"] == pytest.approx(ranges, rel=1e-3)
    # Layer 4 is the second layer of the run 3..4: its down-projection is the one float MatMul left there (the
    # float MatMuls of the attention scores stay in every run).
    assert "/layers.1/output/dense/MatMul" in graph_matmuls(auto / "layers_03_04.onnx")
    assert "/layers.0/output/dense/MatMul" not in graph_matmuls(auto / "layers_03_04.onnx")
    assert not any("output/dense" in name for name in graph_matmuls(auto / "layers_02_02.onnx"))
    # Without the exclusion the outlier coarsens layer 4's int8 step: the logits move further from PyTorch's.
    none = export_onnx(outlier_model, tmp_path / "none", quantize="int8", tokenizer=tokenizer, fp32_ffn_down=[])
    assert json.loads((none / MANIFEST_NAME).read_text())["quantization"]["fp32"] == {"ffn_down_layers": [],
                                                                                      "rule": "given"}
    with torch.no_grad():
        want = outlier_model(**batch).logits.numpy()
    errors = [abs(OnnxEarlyExitRunner(folder, 1).forward(numpy_batch(batch), 0.0)[0] - want).max()
              for folder in (auto, none)]
    assert errors[0] < errors[1] / 2, errors


@pytest.mark.parametrize("vnni", [True, False, None])
def test_reduce_range_follows_the_exporting_cpu_unless_given(model, tokenizer, tmp_path, batch, vnni, monkeypatch):
    import onnx

    monkeypatch.setattr(export_module, "cpu_has_vnni", lambda: vnni)
    folder = export_onnx(model, tmp_path / "auto", quantize="int8", tokenizer=tokenizer)
    quantization = json.loads((folder / MANIFEST_NAME).read_text())["quantization"]
    assert quantization["reduce_range"] is (vnni is not True)
    assert quantization["reduce_range_rule"].startswith("auto: the exporting CPU")

    def weight_range(path):  # the largest |int8 weight| of the layer runs: 127 with 8-bit weights, <= 64 with 7-bit
        graph = onnx.load(path).graph
        return max(int(abs(onnx.numpy_helper.to_array(t).astype(int)).max()) for t in graph.initializer
                   if t.data_type == onnx.TensorProto.INT8)

    assert (weight_range(folder / "layers_03_04.onnx") > 64) is (vnni is True)
    if vnni is None:
        given = export_onnx(model, tmp_path / "given", quantize="int8", tokenizer=tokenizer, reduce_range=False)
        assert json.loads((given / MANIFEST_NAME).read_text())["quantization"]["reduce_range_rule"] == "given"
        assert weight_range(given / "layers_03_04.onnx") > 64


def test_runner_warns_on_8_bit_graphs_without_vnni(model, tokenizer, tmp_path, monkeypatch):
    from hf_earlyexit.deploy import runner as runner_module

    folder = export_onnx(model, tmp_path / "int8", quantize="int8", tokenizer=tokenizer, reduce_range=False)
    monkeypatch.setattr(runner_module, "cpu_has_vnni", lambda: False)
    with pytest.warns(UserWarning, match=r"8-bit int8 weights .* this CPU has no VNNI.*reduce_range=True"):
        OnnxEarlyExitRunner(folder, 1)
    monkeypatch.setattr(runner_module, "cpu_has_vnni", lambda: True)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        OnnxEarlyExitRunner(folder, 1)


def test_fp32_ffn_down_and_calibration_texts_are_checked_before_any_work(model, tokenizer, tmp_path):
    with pytest.raises(ExportError, match=r"fp32_ffn_down=\[0, 5\]; expected 'auto' or a list of layers in 1\.\.4"):
        export_onnx(model, tmp_path / "out", quantize="int8", tokenizer=tokenizer, fp32_ffn_down=[0, 5])
    with pytest.raises(ExportError, match=r"calibration_texts=.*; expected a non-empty list of texts or text pairs"):
        export_onnx(model, tmp_path / "out", quantize="int8", tokenizer=tokenizer, calibration_texts="one string")
    with pytest.raises(ExportError, match=r"expected quantize='int8' with them"):
        export_onnx(model, tmp_path / "out", tokenizer=tokenizer, fp32_ffn_down=[1])
    with pytest.raises(ExportError, match=r"reduce_range='yes'; expected None \(this CPU decides\), True or False"):
        export_onnx(model, tmp_path / "out", quantize="int8", tokenizer=tokenizer, reduce_range="yes")
    assert not (tmp_path / "out").exists()


# -------------------------------------------------------------------------------------------------- bad input
def assert_nothing_written(parent, name="out"):
    assert sorted(path.name for path in parent.iterdir()) == [] or not (parent / name).exists()
    assert not [path for path in parent.iterdir() if ".partial-" in path.name]


def test_checkpoint_without_exit_heads_is_refused(tokenizer, tmp_path):
    plain = XLMRobertaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                             intermediate_size=64, num_labels=3)
    XLMRobertaForSequenceClassification(plain).save_pretrained(tmp_path / "plain")
    tokenizer.save_pretrained(tmp_path / "plain")
    with pytest.raises(ExportError, match=r"has no exit heads \(model_type='xlm-roberta'\)"):
        export_onnx(tmp_path / "plain", tmp_path / "out")
    one_exit = XLMRobertaForEarlyExit(tiny_config(XLMRobertaEarlyExitConfig, tokenizer, exit_layers=[4]))
    with pytest.raises(ExportError, match=r"exit_layers=\[4\]: no intermediate exit"):
        export_onnx(one_exit, tmp_path / "out", tokenizer=tokenizer)
    token = XLMRobertaForEarlyExitTokenClassification(tiny_config(XLMRobertaEarlyExitConfig, tokenizer))
    with pytest.raises(ExportError, match="is a token classifier"):
        export_onnx(token, tmp_path / "out", tokenizer=tokenizer)
    token.save_pretrained(tmp_path / "token")  # would load as a sequence classifier with a fresh final head
    with pytest.raises(ExportError, match=r"is a token classifier \(XLMRobertaForEarlyExitTokenClassification\)"):
        export_onnx(tmp_path / "token", tmp_path / "out")
    with pytest.raises(ExportError, match=r"'.*missing' has no config.json; expected a saved early-exit model"):
        export_onnx(tmp_path / "missing", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_early_exit_folder_with_untrained_heads_is_refused(tokenizer, tmp_path):
    """A plain checkpoint whose config was relabelled early-exit loads with fresh heads: refused by name."""
    torch.manual_seed(0)
    model = XLMRobertaForEarlyExit(tiny_config(XLMRobertaEarlyExitConfig, tokenizer))
    model.save_pretrained(tmp_path / "ckpt")
    from safetensors.torch import load_file, save_file

    weights = load_file(tmp_path / "ckpt" / "model.safetensors")
    save_file({k: v for k, v in weights.items() if not k.startswith("exit_heads.")}, tmp_path / "ckpt" /
              "model.safetensors", metadata={"format": "pt"})
    tokenizer.save_pretrained(tmp_path / "ckpt")
    with pytest.raises(ExportError, match=r"has no trained exit heads \(missing \['exit_heads\.0\."):
        export_onnx(tmp_path / "ckpt", tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("opset", [13, 21, "17"])
def test_unsupported_opset_and_quantization_are_refused_before_any_work(model, tmp_path, opset):
    with pytest.raises(ExportError, match=rf"opset={opset!r}; expected an int in 14..20"):
        export_onnx(model, tmp_path / "out", opset=opset)
    with pytest.raises(ExportError, match=r"quantize='int4'; expected one of \(None, 'int8'\)"):
        export_onnx(model, tmp_path / "out", quantize="int4")
    with pytest.raises(ExportError, match=r"fuse='yes'; expected True or False"):
        export_onnx(model, tmp_path / "out", fuse="yes")
    assert list(tmp_path.iterdir()) == []


def test_missing_onnxruntime_is_one_line(model, exported, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ImportError, match=r"^export_onnx needs onnx and onnxruntime \(missing 'onnxruntime'\); "
                                          r"install them with pip install 'hf_earlyexit\[onnx\]'$"):
        export_onnx(model, tmp_path / "out")
    with pytest.raises(ImportError, match=r"^OnnxEarlyExitRunner needs onnx and onnxruntime"):
        OnnxEarlyExitRunner(exported)
    assert list(tmp_path.iterdir()) == []


def test_failed_validation_leaves_nothing_behind(model, tokenizer, tmp_path, monkeypatch):
    monkeypatch.setattr(export_module, "VALIDATION_ATOL", 0.0)
    with pytest.raises(ExportError, match=r"ONNX fp32 logits differ from PyTorch by .* on a padded batch; expected "
                                          r"<= 0.0"):
        export_onnx(model, tmp_path / "out", tokenizer=tokenizer)
    assert list(tmp_path.iterdir()) == []


def test_output_dir_that_is_not_an_export_is_refused_and_a_previous_export_is_replaced(
    model, tokenizer, tmp_path, exported
):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    with pytest.raises(ExportError, match=r"is not empty and holds no manifest.json"):
        export_onnx(model, tmp_path / "notes", tokenizer=tokenizer)
    assert [path.name for path in (tmp_path / "notes").iterdir()] == ["keep.txt"]
    previous = tmp_path / "previous"
    export_onnx(model, previous, tokenizer=tokenizer, quantize="int8")
    export_onnx(model, previous, tokenizer=tokenizer)
    assert json.loads((previous / MANIFEST_NAME).read_text())["quantization"] is None
    assert sorted(path.name for path in tmp_path.iterdir()) == ["notes", "previous"]


def copy_export(exported, target):
    import shutil

    shutil.copytree(exported, target)
    return target


def test_manifest_not_matching_its_graphs_is_refused(exported, tmp_path):
    changed = copy_export(exported, tmp_path / "changed")
    (changed / "exit_head_02.onnx").write_bytes((changed / "exit_head_01.onnx").read_bytes())
    with pytest.raises(ManifestError, match=r"exit_head_02.onnx' does not match its manifest \(sha256 differs\)"):
        OnnxEarlyExitRunner(changed)
    missing = copy_export(exported, tmp_path / "missing")
    (missing / "layers_02_02.onnx").unlink()
    with pytest.raises(ManifestError, match=r"names 'layers_02_02.onnx', which is missing"):
        OnnxEarlyExitRunner(missing)
    relabelled = copy_export(exported, tmp_path / "relabelled")
    manifest = json.loads((relabelled / MANIFEST_NAME).read_text())
    manifest["exit_layers"] = [2, 4]
    (relabelled / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(ManifestError, match=r"lists segments \[.*\]; expected \[.*\] for exit_layers \[2, 4\]"):
        OnnxEarlyExitRunner(relabelled)
    with pytest.raises(ManifestError, match="has no manifest.json; expected a folder written by export_onnx"):
        OnnxEarlyExitRunner(tmp_path)


# -------------------------------------------------------------------------------------------------------- CLI
def test_command_line_exports_a_folder_and_runs_it(model, tokenizer, tmp_path, capsys):
    model.save_pretrained(tmp_path / "ckpt")
    tokenizer.save_pretrained(tmp_path / "ckpt")
    assert cli(["export", str(tmp_path / "ckpt"), str(tmp_path / "out"), "--opset", "18"]) == 0
    assert json.loads((tmp_path / "out" / MANIFEST_NAME).read_text())["opset"] == 18
    capsys.readouterr()
    assert cli(["run", str(tmp_path / "out"), PAIRS[0][0], PAIRS[7][0], "--exit-threshold", "2"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["exit_layer"] for line in lines] == [1, 1] and {line["label"] for line in lines} <= set(LABELS)
    assert cli(["export", str(tmp_path / "ckpt"), str(tmp_path / "bad"), "--opset", "9"]) == 2
    err = capsys.readouterr().err
    assert err == "error: opset=9; expected an int in 14..20\n"


def test_command_line_int8_options(outlier_model, tokenizer, tmp_path, capsys):
    outlier_model.save_pretrained(tmp_path / "ckpt")
    tokenizer.save_pretrained(tmp_path / "ckpt")
    (tmp_path / "calibration.txt").write_text("".join(f"{p}\t{h}\n" for p, h in PAIRS[:12]) + "\n", encoding="utf-8")
    args = ["export", str(tmp_path / "ckpt"), str(tmp_path / "auto"), "--quantize", "int8"]
    assert cli([*args, "--calibration-file", str(tmp_path / "calibration.txt")]) == 0
    fp32 = json.loads((tmp_path / "auto" / MANIFEST_NAME).read_text())["quantization"]["fp32"]
    assert fp32["ffn_down_layers"] == [4] and fp32["calibration"] == "12 texts"
    assert cli([*args[:2], str(tmp_path / "given"), *args[3:], "--fp32-ffn-down", "1,3"]) == 0
    fp32 = json.loads((tmp_path / "given" / MANIFEST_NAME).read_text())["quantization"]["fp32"]
    assert fp32 == {"ffn_down_layers": [1, 3], "rule": "given"}
    assert "/layers.0/output/dense/MatMul" in graph_matmuls(tmp_path / "given" / "layers_03_04.onnx")
    capsys.readouterr()
    with pytest.raises(SystemExit):
        cli([*args, "--fp32-ffn-down", "five"])
    assert "'five'; expected auto, none or layer numbers like 5 or 4,5" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------- run_xnli / report / card
def test_run_task_export_gives_a_deployment_line_in_report_and_card(model, tokenizer, tmp_path):
    from test_report import make_results

    from hf_earlyexit.evaluation.report import render_report
    from hf_earlyexit.finetune import SweepArguments, export_deployment
    from hf_earlyexit.hub import EarlyExitCardData, render_model_card

    entry = export_deployment(model, tokenizer, tmp_path, "int8")
    manifest = json.loads((tmp_path / "onnx" / MANIFEST_NAME).read_text())
    assert manifest["quantization"]["weight_type"] == "QInt8"
    assert entry == {"onnx_dir": "onnx", "precision": "int8", "opset": 17,
                     "fp32_max_abs_diff": manifest["validation"]["fp32_max_abs_diff"],
                     "fp32_ffn_down_layers": manifest["quantization"]["fp32"]["ffn_down_layers"]}
    line = "ONNX Runtime export (int8 layer runs, opset 17) in `onnx/`; fp32 graphs matched PyTorch to "
    results = {**make_results(), "deployment": {**entry, "fp32_ffn_down_layers": []}}
    assert f"## Deployment\n\n{line}" in render_report(results)
    kept = {**results, "deployment": {**entry, "fp32_ffn_down_layers": [5]}}
    assert "(int8 layer runs; FFN down-projection of layer 5 fp32, opset 17)" in render_report(kept)
    assert line in render_model_card(EarlyExitCardData(model_name="m", results=[results]))
    assert "ONNX Runtime export" not in render_report(make_results())
    assert "ONNX Runtime export" not in render_model_card(EarlyExitCardData(model_name="m", results=[make_results()]))
    with pytest.raises(ValueError, match=r"onnx_export='int4'; expected None, 'fp32' or 'int8'"):
        SweepArguments(onnx_export="int4")


# ----------------------------------------------------------------------------------------------- real weights
@pytest.mark.slow
@pytest.mark.real_weights
@pytest.mark.parametrize("pooling", ["first", "mean"])
def test_real_multilingual_e5_small_runner_equals_pytorch(e5_small_dir, pooling, tmp_path):
    """The converted real checkpoint, exits after layers 4 and 8 (fresh heads steer where rows leave), both
    poolings: fp32 runner exit layers identical and logits within 1e-4 on real sentence pairs of six languages, at
    0, a splitting threshold and above 1."""
    # A wide init of the fresh heads spreads their confidences, so a threshold can split the pairs across exits.
    config = XLMRobertaEarlyExitConfig.from_pretrained(
        e5_small_dir, num_labels=3, exit_layers=[4, 8, 12], initializer_range=0.2, pooling=pooling
    )
    torch.manual_seed(0)
    model = XLMRobertaForEarlyExit.from_pretrained(e5_small_dir, config=config).eval()
    runner = OnnxEarlyExitRunner(export_onnx(model, tmp_path / "e5"), num_threads=1)
    manifest = json.loads((tmp_path / "e5" / MANIFEST_NAME).read_text())
    assert manifest["validation"]["fp32_max_abs_diff"] <= 1e-4 and manifest["pooling"] == pooling
    batch = runner.tokenizer([p for p, _ in PAIRS], [h for _, h in PAIRS], padding=True, return_tensors="pt")
    mid = mixing_thresholds(model, batch["input_ids"], batch["attention_mask"])
    assert set(assert_matches_pytorch(model, runner, batch, 0.0).tolist()) == {12}
    assert set(assert_matches_pytorch(model, runner, batch, mid).tolist()) == {4, 8, 12}
    assert set(assert_matches_pytorch(model, runner, batch, 1.5).tolist()) == {4}
