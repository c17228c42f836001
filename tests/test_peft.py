"""LoRA through PEFT on an early-exit model: exit heads trained in full, backbone frozen, save -> reload on a fresh base
-> merge, with the exits still deciding the same way."""

import pytest
import torch
from datasets import Dataset
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file
from test_modeling import mixing_thresholds, padded_batch, tiny_model
from test_training_modes import PARAMETER_CASES, GradientRecorder, random_examples, training_args
from test_training_modes import tiny_model as modes_tiny_model
from transformers import Trainer, TrainingArguments

from hf_earlyexit import XLMRobertaForEarlyExit
from hf_earlyexit.training import EarlyExitTrainer

NUM_LAYERS = 3
SEQ_LEN = 8


def early_exit_lora_config(model) -> LoraConfig:
    """The recipe documented in docs/pipelines_and_peft.md: LoRA on the attention projections; the final head and
    every exit head trained in full. Heads are listed one by one because PEFT cannot wrap a ModuleList."""
    heads = ["classifier", *(f"exit_heads.{index}" for index in range(len(model.exit_heads)))]
    return LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"], modules_to_save=heads)


def training_set(size=32, seed=0):
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(3, 100, (size, SEQ_LEN), generator=generator)
    # A learnable rule (label from the first real token) so the heads get a consistent gradient.
    return Dataset.from_dict({"input_ids": input_ids.tolist(), "labels": (input_ids[:, 1] % 3).tolist()})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Base model saved to disk, the LoRA model trained by the Trainer, and the base weights before training."""
    folder = tmp_path_factory.mktemp("peft")
    base = tiny_model("xlm-roberta", "sequence", num_hidden_layers=NUM_LAYERS)
    base.save_pretrained(folder / "base")
    before = {name: tensor.clone() for name, tensor in base.state_dict().items()}
    peft_model = get_peft_model(base, early_exit_lora_config(base))
    args = TrainingArguments(
        output_dir=str(folder / "trainer"),
        max_steps=5,
        per_device_train_batch_size=8,
        learning_rate=1e-2,
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        logging_strategy="no",
        disable_tqdm=True,
    )
    Trainer(model=peft_model, args=args, train_dataset=training_set()).train()
    peft_model.eval()
    peft_model.save_pretrained(folder / "adapter")
    return folder, peft_model, before


@pytest.fixture(scope="module")
def batch():
    input_ids, attention_mask = padded_batch([5, 12, 3, 9, 16, 7, 11, 4, 14, 6, 8, 10])
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def run(model, batch, exit_threshold):
    with torch.no_grad():
        output = model(**batch, exit_threshold=exit_threshold)
    return output.logits, output.exit_layer


def threshold_settings(model, batch):
    """Full depth, everyone at the first exit, and thresholds splitting the batch across the exits."""
    return {
        "full_depth": 0.0,
        "first_exit": 2.0,
        "mixed": mixing_thresholds(model, batch["input_ids"], batch["attention_mask"]),
    }


def test_training_moves_lora_and_exit_heads_and_leaves_the_frozen_backbone_alone(trained):
    _, peft_model, before = trained
    base = peft_model.get_base_model()
    trainable = {name for name, parameter in peft_model.named_parameters() if parameter.requires_grad}
    assert trainable and all("lora_" in name or ".modules_to_save." in name for name in trainable)
    for name, tensor in base.state_dict().items():
        if "lora_" in name or ".modules_to_save." in name:
            continue
        # The frozen backbone, and the originals the heads' trainable copies were made from, are untouched.
        original = name.replace(".base_layer.", ".").replace(".original_module.", ".")
        assert torch.equal(tensor, before[original]), f"{name} changed during training"
    for index in range(NUM_LAYERS - 1):
        head = base.exit_heads[index].modules_to_save["default"]
        assert not torch.equal(head.out_proj.weight, before[f"exit_heads.{index}.out_proj.weight"])
        assert not torch.equal(head.dense.weight, before[f"exit_heads.{index}.dense.weight"])
    assert not torch.equal(
        base.classifier.modules_to_save["default"].out_proj.weight, before["classifier.out_proj.weight"]
    )
    lora_b = [parameter for name, parameter in peft_model.named_parameters() if "lora_B" in name]
    assert len(lora_b) == 2 * NUM_LAYERS and all(bool(parameter.abs().sum() > 0) for parameter in lora_b)


def test_the_adapter_holds_lora_and_every_head_and_reloads_on_a_fresh_base_with_the_same_exits(trained, batch):
    folder, peft_model, _ = trained
    saved = load_file(folder / "adapter" / "adapter_model.safetensors")
    assert {name.split(".")[2] for name in saved} == {"roberta", "classifier", "exit_heads"}
    assert all("lora_" in name for name in saved if ".roberta." in name)
    assert {name.split(".")[3] for name in saved if ".exit_heads." in name} == {str(i) for i in range(NUM_LAYERS - 1)}
    reloaded = PeftModel.from_pretrained(XLMRobertaForEarlyExit.from_pretrained(folder / "base"), folder / "adapter")
    reloaded.eval()
    for setting, threshold in threshold_settings(peft_model, batch).items():
        logits, exit_layer = run(reloaded, batch, threshold)
        expected_logits, expected_exit_layer = run(peft_model, batch, threshold)
        torch.testing.assert_close(logits, expected_logits, atol=1e-6, rtol=0, msg=setting)
        assert torch.equal(exit_layer, expected_exit_layer), setting


def test_the_merged_model_equals_the_adapter_model_and_still_exits_early(trained, batch, tmp_path):
    folder, _, _ = trained
    adapter_model = PeftModel.from_pretrained(
        XLMRobertaForEarlyExit.from_pretrained(folder / "base"), folder / "adapter"
    ).eval()
    settings = threshold_settings(adapter_model, batch)
    expected = {setting: run(adapter_model, batch, threshold) for setting, threshold in settings.items()}
    merged = adapter_model.merge_and_unload()
    assert type(merged) is XLMRobertaForEarlyExit
    assert not [name for name, _ in merged.named_modules() if "lora_" in name or "modules_to_save" in name]
    # The merged checkpoint is a plain early-exit checkpoint: it saves and loads without PEFT.
    merged.save_pretrained(tmp_path)
    reloaded_merged = XLMRobertaForEarlyExit.from_pretrained(tmp_path).eval()
    for model in (merged, reloaded_merged):
        for setting, threshold in settings.items():
            logits, exit_layer = run(model, batch, threshold)
            torch.testing.assert_close(logits, expected[setting][0], atol=1e-5, rtol=0, msg=setting)
            assert torch.equal(exit_layer, expected[setting][1]), setting
    assert set(expected["full_depth"][1].tolist()) == {NUM_LAYERS}
    assert set(expected["first_exit"][1].tolist()) == {1}
    assert len(set(expected["mixed"][1].tolist())) >= 2


def test_peft_cannot_wrap_the_exit_heads_list_itself_hence_one_entry_per_head():
    model = tiny_model("xlm-roberta", "sequence", num_hidden_layers=NUM_LAYERS)
    with pytest.raises(TypeError, match="ModuleList"):
        get_peft_model(model, LoraConfig(target_modules=["query", "value"], modules_to_save=["exit_heads"]))


def _peft_group(predicate):
    """A PARAMETER_CASES group as PEFT names it: exit heads live under ``base_model.model.exit_heads.i.
    modules_to_save``, the backbone's trainable parameters are its LoRA matrices."""

    def in_group(name):
        plain = name.removeprefix("base_model.model.").replace(".modules_to_save.default.", ".")
        plain = plain.replace(".lora_A.default.", ".").replace(".lora_B.default.", ".")
        return predicate(plain)

    return in_group


@pytest.mark.parametrize("case", list(PARAMETER_CASES))
def test_every_exit_training_mode_trains_the_right_parameters_under_the_documented_lora_recipe(tmp_path, case):
    mode, overrides, labelled, expected_steps, _ = PARAMETER_CASES[case]
    model = modes_tiny_model()
    peft_model = get_peft_model(model, early_exit_lora_config(model))
    trainable = [name for name, p in peft_model.named_parameters() if p.requires_grad]
    recorder = GradientRecorder()
    args = training_args(tmp_path, exit_training_mode=mode, **overrides)
    examples = random_examples("sequence", 8, labelled=labelled)
    trainer = EarlyExitTrainer(model=peft_model, args=args, train_dataset=examples)
    trainer.add_callback(recorder)
    trainer.train()
    assert len(recorder.steps) == len(expected_steps)
    for step, ((group, predicate), with_grad) in enumerate(zip(expected_steps, recorder.steps), start=1):
        expected = {name for name in trainable if _peft_group(predicate)(name)}
        assert expected and with_grad == expected, f"step {step} should train {group}: {sorted(with_grad ^ expected)}"
