"""Calibration of bone_age_std: hand-computed quantiles and coverages, and the error cases."""

import numpy as np
import pandas as pd
import pytest

from tf_boneage.export import calibration
from tf_boneage.export.calibration import INTERVAL_Z, coverage, fit_per_sex, std_scale

ERR = np.arange(1.0, 11.0)  # |errors| 1..10 months
# smallest value covering 90 % of 1..10: the ceil(0.9 * 10) = 9th, 9


@pytest.mark.parametrize(
    ("std", "level", "expected"),
    [
        (np.ones(10), 0.9, 9.0 / INTERVAL_Z),
        (2 * np.ones(10), 0.9, 4.5 / INTERVAL_Z),  # twice the std: half the factor
        (np.ones(10), 0.5, 5.0 / INTERVAL_Z),  # the 5th of 10
        (np.ones(10), 0.85, 9.0 / INTERVAL_Z),  # ceil(8.5) = 9th: never below the level
        (ERR, 0.9, 1.0 / INTERVAL_Z),  # std = |error|: every ratio is 1
    ],
)
def test_std_scale_known_answers(std, level, expected):
    assert std_scale(np.zeros(10), ERR, std, level=level) == pytest.approx(expected)


def test_std_scale_ignores_rows_without_std_and_its_interval_covers_the_level():
    std = np.r_[np.ones(10), 0.0, -1.0]
    err = np.r_[ERR, 500.0, 500.0]
    s = std_scale(np.zeros(12), err, std)
    assert s == pytest.approx(9.0 / INTERVAL_Z)
    assert coverage(np.zeros(10), ERR, s * np.ones(10))["coverage_90"] == pytest.approx(0.9)


@pytest.mark.parametrize(
    ("n", "level", "message"),
    [(9, 0.9, "at least 10"), (10, 1.0, "level"), (10, 0.0, "level")],
)
def test_std_scale_errors(n, level, message):
    with pytest.raises(ValueError, match=message):
        std_scale(np.zeros(n), np.ones(n), np.ones(n), level=level)


def test_fit_per_sex_fits_each_sex_on_its_own_rows():
    truth = np.zeros(20)
    pred = np.r_[ERR, 2 * ERR]  # girls' errors twice the boys'
    male = np.r_[np.ones(10, bool), np.zeros(10, bool)]
    scales = fit_per_sex(truth, pred, np.ones(20), male)
    assert scales["male"] == pytest.approx(9.0 / INTERVAL_Z)
    assert scales["female"] == pytest.approx(18.0 / INTERVAL_Z)


def test_coverage_known_answer_and_shape_error():
    # errors 0.5, 1.5, 2.0 with std 1: inside +/- 1 std: 1 of 3; inside +/- 1.645: 2 of 3
    got = coverage([10, 10, 10], [10.5, 8.5, 12.0], [1, 1, 1])
    assert got == pytest.approx(
        {"n": 3, "mae": 4 / 3, "mean_std": 1.0, "coverage_68": 1 / 3, "coverage_90": 2 / 3}
    )
    with pytest.raises(ValueError, match="one length"):
        coverage([1, 2], [1, 2], [1])


def test_the_qc_films_are_train_films_outside_the_outlines_whether_or_not_it_is_passed():
    """``qc_extra_rows``: seeded ``train`` films, none of the outline's, at most
    ``QC_EXTRA_FILMS``; passing the outline's films in (the export has them) picks the same."""
    from tf_boneage.preprocessing.cache import OUTLINE_FILMS, outline_sample

    n = OUTLINE_FILMS + calibration.QC_EXTRA_FILMS + 300
    table = pd.DataFrame(
        {"id": np.arange(n + 200), "split": ["train"] * n + ["val"] * 100 + ["test"] * 100}
    )
    outline_rows = outline_sample(table)
    picked = calibration.qc_extra_rows(table, outline_rows)
    assert len(picked) == calibration.QC_EXTRA_FILMS
    assert (picked["split"] == "train").all()
    assert not picked["id"].isin(outline_rows["id"]).any()
    pd.testing.assert_frame_equal(picked, calibration.qc_extra_rows(table))
    small = table[table["id"] >= n - 100]  # 100 train films, all of them the outline's
    assert calibration.qc_extra_rows(small).empty
