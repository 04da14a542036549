"""``tf-boneage demo`` as a user runs it (the README's first command), on a tiny budget: one
run per session (``demo_run`` in conftest.py), read by these tests and the driver tests."""

import json
import subprocess
import sys

import pandas as pd
import pytest

from tf_boneage.inference.tflite_eval import BOUNDS


@pytest.mark.slow
def test_demo_runs_every_stage(demo_run):
    result, run, models = demo_run
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-3000:])
    out = result.stdout
    assert "| region A |" in out and "mean predictor" in out  # the table and its baseline
    assert "| float32 |" in out and "| float16 |" in out
    assert out.count("| model | MAE (months)") == 1  # one header per table
    assert "nominal 90" in out  # interval coverage on test
    # predict --labels on three test images: an age or QC's reason for each, and the MAE
    answered = out.count(": predicted ")
    assert answered + out.count(": rejected by QC (") == 3
    assert "sex and true age from --labels" in out
    if answered:
        assert "against the true bone age: MAE" in out
    export = json.loads((run / "export.json").read_text())["saved_model"]
    assert (models / "boneage" / "1" / "saved_model.pb").is_file()
    assert export.endswith("boneage/1")
    # too few val phantoms per sex to calibrate the interval: said, and the demo goes on
    assert "not calibrated on val" in out
    assert len(list((run / "overlays").glob("*.png"))) == answered  # none without an age
    # steps are numbered, in one process (no subprocess per step)
    assert "== [1/6] data" in out and "== [6/6] predict" in out
    assert "WARNING: TFLite" not in result.stderr  # every exported variant within its bound


@pytest.mark.slow
def test_tflite_parity_guard_on_the_demo_graph(demo_run):
    """The TFLite variants the demo exports by default, against the SavedModel on 16 test
    phantoms (trained briefly, real crops): float32 largest difference <= 0.05 months, float16
    mean <= 0.5 and largest <= 3, the same QC decisions."""
    result, run, _ = demo_run
    assert result.returncode == 0, result.stderr[-3000:]
    preds = pd.read_csv(run / "evaluate_tflite.csv")
    preds = preds[preds["error"].fillna("") == ""]
    assert len(preds) >= 16
    ref = preds["savedmodel"]
    assert ref.std() > 1.0  # the estimates depend on the image: the comparison can fail
    diff = {v: (preds[v] - ref).abs() for v in ("float32", "float16")}
    assert diff["float32"].max() <= BOUNDS["float32"]["max_diff"]
    assert diff["float16"].mean() <= BOUNDS["float16"]["mean_diff"]
    assert diff["float16"].max() <= BOUNDS["float16"]["max_diff"]
    for v in ("float32", "float16"):
        assert (preds[f"qc_{v}"] == preds["qc_savedmodel"]).all(), v
    text = (run / "evaluate_tflite.md").read_text()
    assert "OUT OF BOUND" not in text and text.count("within its bound") == 2


def test_demo_data_without_keypoints_is_refused(tmp_path):
    (tmp_path / "d").mkdir()
    r = subprocess.run(
        [sys.executable, "-m", "tf_boneage.cli", "demo", "--data", str(tmp_path / "d"), "--out",
         str(tmp_path / "run")],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert r.returncode != 0 and "--keypoints" in r.stderr
