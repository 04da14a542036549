"""Shared fixtures. Real-data tests skip when ../shared/data is absent (a user's fresh machine)."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pathlib import Path

import pytest

SHARED_DATA = Path(
    os.environ.get("TF_BONEAGE_SHARED_DATA")
    or Path(__file__).resolve().parents[1].parent / "shared" / "data"
)


#: session fixtures that train or export: every test using one runs in the same pytest-xdist
#: worker (``--dist loadgroup`` in setup.cfg), so each is built once per run, not once per worker
HEAVY_FIXTURES = {
    "demo_run": "demo",
    "exported": "export",
    "loaded_export": "export",
    # the shipped model, loaded once per worker (tf_boneage.export.load caches it)
    "served": "shipped",
    "shipped_model": "shipped",
}


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups (its hook, in each worker)
def pytest_collection_modifyitems(config, items):
    for item in items:
        groups = {g for f, g in HEAVY_FIXTURES.items() if f in getattr(item, "fixturenames", ())}
        if len(groups) > 1:
            raise pytest.UsageError(f"{item.nodeid} uses fixtures of two xdist groups {groups}")
        if groups:
            item.add_marker(pytest.mark.xdist_group(groups.pop()))


def _built_once(tmp_path_factory, name: str) -> None:
    """Fail when a second xdist worker builds the session fixture ``name``: the grouping that
    keeps its tests in one worker is broken (it was, silently, with pytest 9.2:
    pytest-xdist#1386) and the suite would pay for it twice."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker is None:
        return
    shared = tmp_path_factory.getbasetemp().parent  # one folder per run, shared by workers
    first = shared / f"built-{name}"
    try:
        with open(first, "x") as f:
            f.write(worker)
    except FileExistsError:
        pytest.fail(
            f"{name} built by {first.read_text()} and again by {worker}: xdist groups broken"
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
    from tiny_graph import _graph, _labelled_rows

    from tf_boneage.export import calibration, saved_model

    _built_once(tmp_path_factory, "exported")
    root = tmp_path_factory.mktemp("saved_models")
    graph = _graph()
    rows = _labelled_rows(root, 24, seed=3)
    report = calibration.calibrate(graph, rows, batch=8)
    chain = {"frame": [104, 80], "unet_sha256": "0" * 64}  # stands for preprocessing.spec's
    path = saved_model.export_end_to_end(
        graph, root / "boneage", metadata={"test": True, "chain": chain}
    )
    return graph, path, report, rows


@pytest.fixture(scope="session")
def loaded_export(exported):
    """The tiny export loaded once (``tf.saved_model.load``)."""
    import tensorflow as tf

    return tf.saved_model.load(str(exported[1]))


#: the demo as the README's first command runs it, on a tiny budget (one call per session)
#: (dynamic range and int8 are converted on the tiny graph in test_export.py)
DEMO_ARGS = ["--n", "120", "--epochs", "1", "--eval-limit", "16", "--tflite", "float32",
             "float16", "--set", "segmentation.epochs=1", "landmarks.epochs=1",
             "batch_size=8"]  # fmt: skip


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory):
    """``tf-boneage demo`` run once as a user runs it (a subprocess): the demo, driver, export
    and TFLite-parity tests read what it made. Returns ``(completed process, work folder,
    model root)``."""
    import subprocess
    import sys

    _built_once(tmp_path_factory, "demo_run")
    root = tmp_path_factory.mktemp("demo")
    cmd = [sys.executable, "-m", "tf_boneage.cli", "demo", *DEMO_ARGS, "--out",
           str(root / "run"), "--models", str(root / "sm")]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=root, timeout=1500)
    return result, root / "run", root / "sm"
