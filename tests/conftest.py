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


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    """The tiny end-to-end graph, its uncertainty calibrated on 24 labelled phantoms, exported
    once per session: ``(graph, SavedModel version folder, calibration report, rows)``."""
    import pandas as pd
    from tiny_graph import _graph, _images, _png

    from tf_boneage.export import calibration, saved_model

    root = tmp_path_factory.mktemp("saved_models")
    graph = _graph()
    rows = []
    for k, img in enumerate(_images(24, seed=3)):
        path = root / f"calib{k}.png"
        path.write_bytes(_png(img))
        rows.append({"image_path": str(path), "male": k % 2 == 0, "boneage": 60.0 + 5 * k})
    rows = pd.DataFrame(rows)
    report = calibration.calibrate(graph, rows, batch=8)
    path = saved_model.export_end_to_end(graph, root / "boneage", metadata={"test": True})
    return graph, path, report, rows


@pytest.fixture(scope="session")
def loaded_export(exported):
    """The tiny export loaded once (``tf.saved_model.load``)."""
    import tensorflow as tf

    return tf.saved_model.load(str(exported[1]))


#: the demo as the README's first command runs it, on a tiny budget (one call per session)
DEMO_ARGS = ["--n", "120", "--epochs", "1", "--eval-limit", "16", "--set",
             "segmentation.epochs=1", "landmarks.epochs=1", "batch_size=8"]  # fmt: skip


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory):
    """``tf-boneage demo`` run once as a user runs it (a subprocess): the demo, driver, export
    and TFLite-parity tests read what it made. Returns ``(completed process, work folder,
    model root)``."""
    import subprocess
    import sys

    root = tmp_path_factory.mktemp("demo")
    cmd = [sys.executable, "-m", "tf_boneage.cli", "demo", *DEMO_ARGS, "--out",
           str(root / "run"), "--models", str(root / "sm")]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=root, timeout=1500)
    return result, root / "run", root / "sm"
