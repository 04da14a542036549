"""``tf-boneage demo`` as a user runs it (the README's first command), on a tiny budget."""

import json
import subprocess
import sys

import pytest


def _demo(*args, cwd, timeout=900):
    return subprocess.run(
        [sys.executable, "-m", "tf_boneage.cli", "demo", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
    )


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_demo_runs_every_stage(tmp_path):
    args = [
        "--n",
        "120",
        "--epochs",
        "1",
        "--eval-limit",
        "4",
        "--out",
        tmp_path / "run",
        "--models",
        tmp_path / "sm",
        "--set",
        "segmentation.epochs=1",
        "landmarks.epochs=1",
        "batch_size=8",
    ]
    r = _demo(*args, cwd=tmp_path)
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    out = r.stdout
    assert "| region A |" in out and "mean predictor" in out  # the table and its baseline
    assert "| float32 |" in out and "| dynamic |" in out  # SavedModel vs TFLite
    assert "nominal 90" in out  # interval coverage on test
    assert out.count("predicted ") == 3  # predict on three test images of one sex
    assert "given as --sex" in out
    export = json.loads((tmp_path / "run" / "export.json").read_text())["saved_model"]
    assert (tmp_path / "sm" / "boneage" / "1" / "saved_model.pb").is_file()
    assert export.endswith("boneage/1")
    # too few val phantoms per sex to calibrate the interval: said, and the demo goes on
    assert "not calibrated on val" in out
    assert len(list((tmp_path / "run" / "overlays").glob("*.png"))) == 3


def test_demo_data_without_keypoints_is_refused(tmp_path):
    (tmp_path / "d").mkdir()
    r = _demo("--data", tmp_path / "d", "--out", tmp_path / "run", cwd=tmp_path, timeout=120)
    assert r.returncode != 0 and "--keypoints" in r.stderr
