"""finetune.py's data set-up and refusals (the example scripts' shared body), on the demo files."""

from pathlib import Path

import pytest

from hf_earlyexit.data.tasks import load_xnli
from hf_earlyexit.finetune import TaskDataArguments, load_task_data

REPO = Path(__file__).resolve().parents[1]
DEMO_XNLI = REPO / "examples" / "configs" / "demo-tiny" / "data" / "xnli"


def _rows(dataset):
    return [(row["premise"], row["hypothesis"], row["label"]) for row in dataset]


@pytest.mark.parametrize("train_split, eval_split", [("validation", "dev"), ("dev", "validation"), ("dev", "dev")])
def test_dev_and_validation_are_one_split_so_the_holdout_applies(train_split, eval_split):
    args = TaskDataArguments(
        data_dir=str(DEMO_XNLI), train_split=train_split, eval_split=eval_split, eval_languages=["en", "ru"], holdout=20
    )
    assert (args.train_split, args.eval_split) == ("validation", "validation")
    train, evals = load_task_data("xnli", args)
    dev = _rows(load_xnli(["en"], "validation", DEMO_XNLI)["en"])
    assert _rows(train) == dev[:-20] and _rows(evals["en"]) == dev[-20:]
    assert len(evals["ru"]) == 20


def test_two_split_names_reading_the_same_file_are_refused(tmp_path):
    for lang in ("en", "ru"):
        (tmp_path / f"{lang}.dev.tsv").symlink_to(DEMO_XNLI / f"{lang}.dev.tsv")
    (tmp_path / "en.train.tsv").symlink_to(DEMO_XNLI / "en.dev.tsv")
    args = TaskDataArguments(data_dir=str(tmp_path), eval_languages=["en", "ru"])
    with pytest.raises(ValueError, match=r"train_split='train' and eval_split='validation' read the same file"):
        load_task_data("xnli", args)
