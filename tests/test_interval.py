"""The 90 % interval: on the logit scale of age / 240, inside (0, 240)
months, its width following the image, a factor per sex and age band fitted on ``val``."""

import numpy as np
import pytest
import tensorflow as tf

from tf_boneage.export import interval


def test_bounds_by_hand():
    # age 120 (p = 0.5), std 12: sigma_u = 12 / (240 * 0.25) = 0.2; half = 1.645 * 0.2 = 0.329
    low, high = interval.bounds([120.0], [12.0], [1.0])
    assert low[0] == pytest.approx(240 / (1 + np.exp(0.329)), rel=1e-6)
    assert high[0] == pytest.approx(240 / (1 + np.exp(-0.329)), rel=1e-6)
    assert (low[0] + high[0]) / 2 == pytest.approx(120.0)  # symmetric at the middle
    assert high[0] - low[0] == pytest.approx(39.1, abs=0.1)  # ~ 2 * 1.645 * 12 = 39.5


def test_a_young_estimate_with_a_wide_spread_stays_inside_the_range():
    """The case of the issue: a boy estimated young with std 53 months (estimate +/- 1.645
    std ran from -35 to 152); here the interval stays in (0, 240) and is asymmetric."""
    age = np.array([58.0, 2.0, 235.0])
    std = np.array([53.0, 30.0, 30.0])
    low, high = interval.bounds(age, std, np.ones(3))
    assert (low > 0).all() and (high < 240).all()
    assert (low < age).all() and (age < high).all()
    assert age[0] - low[0] < high[0] - age[0]  # more room above a young estimate
    wide = interval.bounds([58.0], [80.0], [1.0])
    assert high[0] - low[0] < wide[1][0] - wide[0][0]  # wider spread, wider interval


def test_band_of_by_hand():
    assert interval.band_of([0, 59.9, 60, 119, 120, 167, 168, 240]).tolist() == [
        0, 0, 1, 1, 2, 2, 3, 3
    ]  # fmt: skip


def test_fit_covers_each_cell_and_follows_the_bands():
    """Errors twice as large (on the logit scale) in band 1 as in band 2: factors to match;
    each well-filled cell covers 90 % of its rows; a cell with few rows takes its sex's."""
    rng = np.random.default_rng(0)
    n = 2000
    male = rng.random(n) < 0.5
    pred = rng.choice([90.0, 140.0, 30.0], n, p=[0.495, 0.495, 0.01])  # band 0 nearly empty
    std = np.full(n, 10.0)
    sigma = interval.logit_sigma(pred, std)
    noise = np.where(pred == 90.0, 2.0, 1.0) * rng.standard_normal(n) * sigma
    p = pred / 240
    u = np.log(p / (1 - p)) + noise
    truth = 240 / (1 + np.exp(-u))
    table = np.asarray(interval.fit(truth, pred, std, male))
    assert table.shape == (2, 4)
    for row, sex in ((0, male), (1, ~male)):
        assert table[row, 1] == pytest.approx(2 * table[row, 2], rel=0.15)
        assert table[row, 1] == pytest.approx(1.0 * 2, rel=0.15)  # a normal's 90 %: z
        for band in (1, 2):
            cell = sex & (interval.band_of(pred) == band)
            low, high = interval.bounds(pred[cell], std[cell], table[row, band])
            assert interval.coverage(truth[cell], low, high) >= 0.9
        assert (sex & (interval.band_of(pred) == 0)).sum() < interval.MIN_ROWS
        assert table[row, 3] == table[row, 0]  # empty / thin cells: the sex's own factor


def test_the_factor_is_the_conformal_rank_of_the_ratios():
    """Ratios 1..20 (n = 20), z 1, level 0.9: the ceil(21 x 0.9) = 19th smallest, not the
    18th (the plain quantile); level 0.99 asks for the 21st: the largest."""
    ratio = np.arange(1.0, 21.0)
    assert interval._smallest_scale(ratio, 1.0, 0.9) == pytest.approx(19.0)
    assert interval._smallest_scale(ratio, 2.0, 0.9) == pytest.approx(9.5)
    assert interval._smallest_scale(ratio, 1.0, 0.99) == pytest.approx(20.0)
    assert interval._smallest_scale(ratio[:9], 1.0, 0.9) == pytest.approx(9.0)  # ceil(9.0) = 9
    # the plain quantile: the ceil(20 x 0.9) = 18th
    assert interval._smallest_scale(ratio, 1.0, 0.9, conformal=False) == pytest.approx(18.0)


def test_factors_by_sex_and_band():
    table = [[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]]
    got = interval.factors(table, [30.0, 100.0, 150.0, 200.0], [True, False, True, False])
    np.testing.assert_array_equal(got, [1.0, 6.0, 3.0, 8.0])


def test_fit_needs_rows_of_each_sex():
    with pytest.raises(ValueError, match="at least 10 female"):
        interval.fit([100] * 12, [90] * 12, [5] * 12, [True] * 12)


def test_graph_bounds_match_numpy():
    age = np.array([2.0, 58.0, 120.0, 170.0, 239.0], np.float32)
    std = np.array([30.0, 53.0, 12.0, 20.0, 5.0], np.float32)
    male = np.array([1, 1, 0, 0, 1], np.float32)
    table = np.array([[1.0, 1.5, 2.0, 2.5], [0.5, 0.75, 1.25, 1.75]], np.float32)
    low, high = interval.bounds_tf(tf.constant(age), tf.constant(std), tf.constant(male), table)
    rows = np.where(male > 0.5, 0, 1)
    ref = interval.bounds(age, std, table[rows, interval.band_of(age)])
    np.testing.assert_allclose(low.numpy(), ref[0], rtol=1e-4)
    np.testing.assert_allclose(high.numpy(), ref[1], rtol=1e-4)
