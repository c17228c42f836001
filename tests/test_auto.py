"""Auto classes and remote code: save -> load through every Auto class, and in a clean process without the package."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from test_modeling import FAMILIES, mixed_lengths, mixing_thresholds, padded_batch, tiny_model
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
)

AUTO_KEYS = {"AutoConfig", "AutoModel", "AutoModelForSequenceClassification", "AutoModelForTokenClassification"}
THRESHOLDS = [0.9995, 0.999, 0.998, 0.0]  # positive: the batched exit loop runs and exits are part of what's compared


def logits_of(model, inputs):
    with torch.no_grad():
        output = model(**inputs, exit_threshold=THRESHOLDS)
    return output.logits, output.exit_layer


@pytest.mark.parametrize("family", list(FAMILIES))
def test_save_writes_safetensors_code_and_an_auto_map_for_all_four_auto_classes(family, tmp_path):
    model = tiny_model(family, "sequence")
    model.save_pretrained(tmp_path)
    files = set(os.listdir(tmp_path))
    module = "modeling_xlm_roberta_early_exit" if family == "xlm-roberta" else "modeling_bert_early_exit"
    assert {"model.safetensors", "config.json", f"{module}.py", "configuration_early_exit.py"} <= files
    assert {"early_exit.py", "criteria.py"} <= files  # relative imports copied along
    auto_map = json.loads((tmp_path / "config.json").read_text())["auto_map"]
    assert set(auto_map) == AUTO_KEYS
    spec = FAMILIES[family]
    assert auto_map["AutoConfig"] == f"configuration_early_exit.{spec.config.__name__}"
    assert (
        auto_map["AutoModel"] == auto_map["AutoModelForSequenceClassification"] == f"{module}.{spec.sequence.__name__}"
    )
    assert auto_map["AutoModelForTokenClassification"] == f"{module}.{spec.token.__name__}"
    token_model = tiny_model(family, "token")
    token_model.save_pretrained(tmp_path / "token")
    token_map = json.loads((tmp_path / "token" / "config.json").read_text())["auto_map"]
    assert token_map == {**auto_map, "AutoModel": f"{module}.{spec.token.__name__}"}  # the saved task class


@pytest.mark.parametrize("family", list(FAMILIES))
def test_round_trip_through_every_auto_class(family, tmp_path):
    spec = FAMILIES[family]
    inputs = dict(zip(("input_ids", "attention_mask"), padded_batch([4, 9, 6, 11, 3])))
    for task, auto_classes in (
        ("sequence", (AutoModel, AutoModelForSequenceClassification)),
        ("token", (AutoModel, AutoModelForTokenClassification)),
    ):
        model = tiny_model(family, task, exit_criterion="max_prob", exit_threshold=0.3)
        folder = tmp_path / task
        model.save_pretrained(folder)
        config = AutoConfig.from_pretrained(folder)
        assert type(config) is spec.config and config.exit_criterion == "max_prob" and config.exit_threshold == 0.3
        expected_logits, expected_layers = logits_of(model, inputs)
        for auto_class in auto_classes:
            loaded = auto_class.from_pretrained(folder).eval()
            assert type(loaded) is getattr(spec, task)
            logits, layers = logits_of(loaded, inputs)
            torch.testing.assert_close(logits, expected_logits, atol=1e-6, rtol=0)
            assert torch.equal(layers, expected_layers)
        assert type(auto_classes[-1].from_config(config)) is getattr(spec, task)


REMOTE_SCRIPT = textwrap.dedent(
    """
    import importlib.abc, json, sys

    class BlockPackage(importlib.abc.MetaPathFinder):
        # The package may be installed (editable) in this interpreter: make sure nothing of it is importable.
        def find_spec(self, name, path=None, target=None):
            if name == "hf_earlyexit" or name.startswith("hf_earlyexit."):
                raise ModuleNotFoundError(f"blocked {name}")
            return None

    sys.meta_path.insert(0, BlockPackage())
    try:
        import hf_earlyexit  # noqa: F401
    except ModuleNotFoundError:
        pass
    else:
        raise SystemExit("hf_earlyexit is importable in the clean process")

    import torch
    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification

    folder, task, inputs_file, output_file, thresholds = sys.argv[1:6]
    auto_class = AutoModelForSequenceClassification if task == "sequence" else AutoModelForTokenClassification
    model = auto_class.from_pretrained(folder, trust_remote_code=True).eval()
    assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
    inputs = torch.load(inputs_file)
    with torch.no_grad():
        output = model(**inputs, exit_threshold=json.loads(thresholds))
    torch.save({"logits": output.logits, "exit_layer": output.exit_layer, "module": type(model).__module__}, output_file)
    """
)


def outputs_in_a_clean_process(folder, task, inputs, thresholds, tmp_path) -> dict:
    """Logits and exit layers of `folder` loaded with trust_remote_code=True in a process that cannot import the
    package (isolated interpreter, another working directory, an import blocker)."""
    torch.save(inputs, tmp_path / "inputs.pt")
    (tmp_path / "remote.py").write_text(REMOTE_SCRIPT)
    workdir = tmp_path / "elsewhere"
    workdir.mkdir(exist_ok=True)
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("PYTHON") and key not in ("HF_HOME", "HF_MODULES_CACHE")
    }
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"))
    result = subprocess.run(
        [
            sys.executable,
            "-I",
            str(tmp_path / "remote.py"),
            str(folder),
            task,
            str(tmp_path / "inputs.pt"),
            str(tmp_path / "out.pt"),
            json.dumps(thresholds),
        ],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return torch.load(tmp_path / "out.pt")


@pytest.mark.slow
@pytest.mark.parametrize(
    "family,task,pooling",
    [("xlm-roberta", "sequence", "mean"), ("xlm-roberta", "token", "first"), ("bert", "sequence", "first")],
)
def test_a_clean_process_without_the_package_loads_the_folder_with_trust_remote_code(family, task, pooling, tmp_path):
    model = tiny_model(family, task, pooling=pooling)
    folder = tmp_path / "checkpoint"
    model.save_pretrained(folder)
    input_ids, attention_mask = padded_batch(mixed_lengths(32))
    thresholds = mixing_thresholds(model, input_ids, attention_mask)
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
    remote = outputs_in_a_clean_process(folder, task, inputs, thresholds, tmp_path)
    assert json.loads((folder / "config.json").read_text())["pooling"] == pooling
    with torch.no_grad():
        expected = model(input_ids, attention_mask=attention_mask, exit_threshold=thresholds)
    expected_logits, expected_layers = expected.logits, expected.exit_layer
    torch.testing.assert_close(remote["logits"], expected_logits, atol=1e-5, rtol=1e-5)
    assert torch.equal(remote["exit_layer"], expected_layers)
    assert len(set(expected_layers.flatten().tolist())) >= 2  # the remote code really took early exits
