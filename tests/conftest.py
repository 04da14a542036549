"""Shared fixtures. Real-data tests skip when ../shared/data is absent (a user's fresh machine)."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pathlib import Path

import pytest

SHARED_DATA = Path(
    os.environ.get("TF_BONEAGE_SHARED_DATA")
    or Path(__file__).resolve().parents[1].parent / "shared" / "data"
)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "rsna100" / "labels.csv").is_file():
        pytest.skip(f"real data not present at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory) -> Path:
    """A tiny embedded dataset: 40 phantoms of 64 x 64 px."""
    from tf_boneage.data.synthetic import generate

    out = tmp_path_factory.mktemp("synth")
    generate(
        out, n=40, size=(64, 64), seed=3, holdout={"val": 8, "test": 8}, workers=1, progress=False
    )
    return out
