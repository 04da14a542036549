"""The 90 % interval a clinician reads: inside the possible range, its width following the image.

``estimate +/- 1.645 std`` ran from -35 to 152 months for a boy (a symmetric interval around
a young estimate with a wide std). Here the interval is made on the logit scale of
``age / 240``, where it cannot leave (0, 240) months: u = logit(age / 240), its standard
deviation by the delta method ``sigma_u = std / (240 p (1 - p))``, interval
``240 * sigmoid(u +/- z * s * sigma_u)``. ``std`` is the graph's own spread of the members and
bins (so the width follows the image); ``s`` is a factor per sex and band of the estimated age
(:data:`BANDS`), fitted on a labelled split that is not ``test`` so that a new film falls inside
with probability at least 90 % (the split-conformal rank of each cell's rows, :func:`fit`);
coverage on ``test`` is then measured.
"""

from __future__ import annotations

import numpy as np

from tf_boneage.export.calibration import INTERVAL_Z, NOMINAL

MAX_AGE = 240.0  # months: the interval lies in (0, MAX_AGE)
#: bands of the estimated age (months) with their own factor: infancy, childhood, the years
#: around puberty, adolescence (where a film's remaining growth plates narrow the answer)
BANDS = (0.0, 60.0, 120.0, 168.0, MAX_AGE)
EPS = 1e-3  # p = age / 240 kept in [EPS, 1 - EPS]
MIN_ROWS = 20  # a (sex, band) cell with fewer rows takes its sex's factor


def _p(age):
    return np.clip(np.asarray(age, np.float64) / MAX_AGE, EPS, 1 - EPS)


def logit_sigma(age, std) -> np.ndarray:
    """Standard deviation on the logit scale (delta method), (N,)."""
    p = _p(age)
    return np.asarray(std, np.float64) / (MAX_AGE * p * (1 - p))


def bounds(age, std, scale, z: float = INTERVAL_Z) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) months of the interval for estimates ``age``, spreads ``std`` (N,) months
    and factors ``scale`` (N,) (numpy; the graph's own is :func:`bounds_tf`)."""
    p = _p(age)
    u = np.log(p / (1 - p))
    half = z * np.asarray(scale, np.float64) * logit_sigma(age, std)
    return MAX_AGE / (1 + np.exp(-(u - half))), MAX_AGE / (1 + np.exp(-(u + half)))


def band_of(age) -> np.ndarray:
    """Index of :data:`BANDS` each estimate falls in (N,) int."""
    edges = np.asarray(BANDS[1:-1])
    return np.searchsorted(edges, np.asarray(age, np.float64), side="right")


def _smallest_scale(ratio: np.ndarray, z: float, level: float, conformal: bool = True) -> float:
    """The smallest s with ratio <= z * s on the ``ceil((n + 1) level)``-th smallest of the n
    rows (the split-conformal rank; the largest when that exceeds n): a new film then falls
    inside with probability at least ``level``. ``conformal`` False: the ``ceil(n level)``-th
    (the plain quantile), which covers less on films it was not fitted on (rsna100 `val`,
    fitted on random halves and measured on the other: 88.6 % against 90.6 %, the interval 8 %
    narrower; ``benchmarks/interval_halves.py``, RESULTS.md)."""
    ordered = np.sort(np.asarray(ratio, np.float64))
    n = len(ordered)
    rank = min(n, int(np.ceil((n + 1 if conformal else n) * level - 1e-9)))
    return float(ordered[max(rank, 1) - 1] / z * (1 + 1e-6))


def fit(
    truth, pred, std, male, z: float = INTERVAL_Z, level: float = NOMINAL, conformal: bool = True
) -> list:
    """Factors ``[[male band 0..3], [female band 0..3]]`` so that the interval covers at least
    ``level`` of the rows of each (sex, band) cell (the band of the estimate; the conformal
    rank unless ``conformal`` is False, :func:`_smallest_scale`), each fitted on its own rows;
    a cell with fewer than :data:`MIN_ROWS` rows takes its sex's factor (fitted on all that
    sex's rows; at least 10 needed, else ``ValueError``)."""
    truth, pred, std = (np.asarray(a, np.float64) for a in (truth, pred, std))
    male = np.asarray(male).astype(bool)
    ok = std > 0
    p_t, p_p = _p(truth), _p(pred)
    ratio = np.abs(np.log(p_t / (1 - p_t)) - np.log(p_p / (1 - p_p))) / np.where(
        ok, logit_sigma(pred, std), 1.0
    )
    band = band_of(pred)
    table = []
    for sex in (True, False):
        rows = ok & (male == sex)
        if rows.sum() < 10:
            name = "male" if sex else "female"
            raise ValueError(f"need at least 10 {name} rows with std > 0, got {rows.sum()}")
        overall = _smallest_scale(ratio[rows], z, level, conformal)
        table.append(
            [
                _smallest_scale(ratio[rows & (band == b)], z, level, conformal)
                if (rows & (band == b)).sum() >= MIN_ROWS
                else overall
                for b in range(len(BANDS) - 1)
            ]
        )
    return table


def factors(table, pred, male) -> np.ndarray:
    """Each film's factor (N,) from a :func:`fit` ``table`` (row 0 male), by its sex and the
    band of its estimate ``pred`` (months)."""
    rows = np.where(np.asarray(male).astype(bool), 0, 1)
    return np.asarray(table, np.float64)[rows, band_of(pred)]


def coverage(truth, low, high) -> float:
    """Share of ``truth`` inside [low, high]."""
    truth = np.asarray(truth, np.float64)
    return float(((truth >= np.asarray(low)) & (truth <= np.asarray(high))).mean())


def bounds_tf(age, std, male, table):
    """The graph's interval: ``age``, ``std`` (B,) months, ``male`` (B,) 1 / 0, ``table``
    (2, bands) factors (row 0 male) -> (low, high) (B,) months, TFLite built-in ops only."""
    import tensorflow as tf

    p = tf.clip_by_value(age / MAX_AGE, EPS, 1 - EPS)
    u = tf.math.log(p / (1 - p))
    sigma = std / (MAX_AGE * p * (1 - p))
    edges = tf.constant(BANDS[1:-1], tf.float32)
    band = tf.reduce_sum(tf.cast(age[:, None] >= edges[None, :], tf.int32), -1)
    rows = tf.where(male > 0.5, 0, 1)
    flat = tf.reshape(table, [-1])  # a flat gather (batched GATHER_ND fails in LiteRT)
    scale = tf.gather(flat, rows * (len(BANDS) - 1) + band)
    half = INTERVAL_Z * scale * sigma
    return MAX_AGE * tf.sigmoid(u - half), MAX_AGE * tf.sigmoid(u + half)
