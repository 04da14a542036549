"""Error analysis on a hand-made table with known errors."""

import json

import cv2
import numpy as np
import pandas as pd
import pytest

from tf_boneage.training import errors
from tf_boneage.training.runtime import StepError


def _table() -> pd.DataFrame:
    # 40 test rows: boys err +2, girls err -4; two far-off films (ids 100, 101) at the extremes;
    # 5 val rows that must not count
    rows = []
    for k in range(40):
        male = k % 2 == 0
        age = 30.0 + 4 * k  # 30 .. 186 months
        rows.append(
            {
                "id": k,
                "boneage": age,
                "male": male,
                "split": "test",
                "final": age + (2.0 if male else -4.0),
            }
        )
    rows.append({"id": 100, "boneage": 12.0, "male": True, "split": "test", "final": 72.0})
    rows.append({"id": 101, "boneage": 220.0, "male": False, "split": "test", "final": 180.0})
    for k in range(5):
        rows.append({"id": 200 + k, "boneage": 100.0, "male": True, "split": "val", "final": 300.0})
    return pd.DataFrame(rows)


def test_by_hand():
    doc = errors.analyse(_table(), "final", worst=2)
    assert doc["all"]["n"] == 42  # val rows not counted
    assert doc["all"]["mae"] == pytest.approx((20 * 2 + 20 * 4 + 60 + 40) / 42)
    assert doc["sex"]["male"]["mae"] == pytest.approx((20 * 2 + 60) / 21)
    assert doc["sex"]["female"]["bias"] == pytest.approx((20 * -4 - 40) / 21)
    assert doc["bands"]["0-24"]["all"]["mae"] == pytest.approx(60.0)
    assert doc["bands"]["0-24"]["female"] == {"n": 0}
    assert doc["extremes"]["under 2 years"]["n"] == 1
    assert doc["extremes"]["over 17 years"]["bias"] == pytest.approx(-40.0)
    assert [r["id"] for r in doc["worst"]] == [100, 101]
    common = doc["common"]
    assert common["worst"]["share at the extremes"] == 1.0
    assert common["rest"]["share at the extremes"] == 0.0
    assert common["worst"]["share over-estimated"] == 0.5
    text = errors.markdown(doc)
    assert "| 0-24 | 60.00" in text and "over 17 years" in text


def test_errors_cases():
    with pytest.raises(StepError, match="no model 'nope'"):
        errors.analyse(_table(), "nope")
    val_only = _table().assign(split="val")
    with pytest.raises(StepError, match="no test rows"):
        errors.analyse(val_only, "final")


def test_run_writes_the_report_and_the_contact_sheet(tmp_path):
    root = tmp_path / "region"
    root.mkdir()
    _table().to_csv(root / "ensemble_predictions.csv", index=False)
    cache = tmp_path / "cache"
    (cache / "registered").mkdir(parents=True)
    qc = []
    for i in [*range(40), 100, 101]:
        cv2.imwrite(str(cache / "registered" / f"{i}.png"), np.full((104, 80), i % 255, np.uint8))
        qc.append(
            {
                "id": i,
                "mask_area": 0.3,
                "mask_confidence": 0.9,
                "landmark_plausibility": 0.5 if i in (100, 101) else 1.0,
                "right_hand": False,
                "registered_path": f"registered/{i}.png",
            }
        )
    pd.DataFrame(qc).to_csv(cache / "manifest.csv", index=False)
    assert errors.main([str(root), "--cache", str(cache / "manifest.csv"), "--worst", "4"]) == 0
    out = root / "errors"
    worst = pd.read_csv(out / "worst.csv")
    assert list(worst["id"][:2]) == [100, 101] and len(worst) == 4
    doc = json.loads((out / "errors.json").read_text())
    assert doc["model"] == "final"  # the default
    assert doc["common"]["worst"]["share with a failed landmark check"] == 0.5
    sheet = cv2.imread(str(out / "worst.png"))
    assert sheet is not None and sheet.shape[1] == 5 * 160
