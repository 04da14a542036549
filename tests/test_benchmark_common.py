"""The benchmarks' shared helpers (benchmarks/common.py): the split's rows and the report."""

import argparse
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import common  # noqa: E402


def test_split_rows_and_report(tmp_path):
    manifest = tmp_path / "m.csv"
    pd.DataFrame(
        {
            "id": ["a", "b", "c", "d"],
            "image_path": [str(tmp_path / f"{k}.png") for k in "abcd"],
            "boneage": [10.0, 20.0, 30.0, 40.0],
            "male": [1, 0, 1, 0],
            "split": ["train", "test", "val", "test"],
        }
    ).to_csv(manifest, index=False)
    parser = argparse.ArgumentParser()
    common.split_arguments(parser, "test", 1)
    args = parser.parse_args(["--manifest", str(manifest)])
    rows = common.split_rows(args)
    assert rows["id"].tolist() == ["b"] and rows.index.tolist() == [0]
    args = parser.parse_args(["--manifest", str(manifest), "--limit", "5"])
    assert common.split_rows(args)["id"].tolist() == ["b", "d"]
    out = tmp_path / "r" / "x.md"
    common.write_rows(out, "# head\n\n", [{"n": 1, "mae": 9.2861}, {"n": 2, "mae": 10.0}])
    text = out.read_text()
    assert text.startswith("# head") and "| n | mae |" in text and "| 1 | 9.29 |" in text
    assert pd.read_csv(out.with_suffix(".csv"))["mae"].tolist() == [9.2861, 10.0]


def test_landmark_drift_row_by_hand():
    """Two films, tip-capitate 10 px: film 0's tip moves 3-4-5 (50 %), film 1 moves nothing;
    the medians over the two films, the mean over all six points, one film past 10 %."""
    import landmark_turns
    import numpy as np

    base = [np.float32([[0, 0], [5, 5], [0, 10]])] * 2
    moved = [np.float32([[3, 4], [5, 5], [0, 10]]), base[1].copy()]
    row = landmark_turns.drift_row(2, "30 % darker", base, moved)
    assert row["looks"] == 2 and row["film"] == "30 % darker"
    assert row["tip %"] == 25.0 and row["thumb %"] == 0.0 and row["capitate %"] == 0.0
    assert abs(row["mean %"] - 50 / 6) < 1e-5
    assert row["films > 10 %"] == "50 %"


def test_interval_halves_rank_is_never_narrower_and_covers_near_nominal():
    """Seeded films whose logit errors are normal with the graph's std: the conformal rank's
    interval is at least as wide as the plain quantile's on every half (its rank is never
    lower), and both cover near 90 % of the held-out halves."""
    import interval_halves
    import numpy as np

    from tf_boneage.export import interval

    rng = np.random.default_rng(0)
    n = 400
    male = rng.random(n) < 0.5
    pred = rng.uniform(30, 200, n)
    std = np.full(n, 10.0)
    u = np.log(pred / (240 - pred)) + rng.standard_normal(n) * interval.logit_sigma(pred, std)
    truth = 240 / (1 + np.exp(-u))
    rows = {r["rule"]: r for r in interval_halves.halves(truth, pred, std, male, repeats=20)}
    conformal, plain = rows["conformal rank"], rows["plain quantile"]
    assert conformal["mean width (months)"] >= plain["mean width (months)"]
    assert conformal["covers %"] >= plain["covers %"]
    assert 85 <= plain["covers %"] <= 95 and 85 <= conformal["covers %"] <= 95


def test_a_film_shifted_by_one_pixel_repeats_its_first_column():
    import numpy as np

    img = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(common.shifted_one_pixel(img), [[0, 0, 1], [3, 3, 4]])
