"""QC that catches a failed registration: the registered hand against a canonical outline.

After registration every hand should cover the same part of the canonical frame: fingers up,
the middle fingertip and the capitate where the frame puts them. The chain reports each film's
``occupancy``, the share of hand pixels (background removed: the registered image > 0) in each
cell of a :data:`SIZE` grid over the frame. The canonical ``outline`` is the mean occupancy of
training films; a film's **registration fit** is the soft Dice overlap of its occupancy with the
outline (1: the average hand, 0: nothing where hands go). Wrong landmarks, a film turned
upside down, noise, a document or a photograph land elsewhere in the frame or fill it evenly.

The export fits the outline on ``train`` films and the threshold on ``val`` (never ``test``):
the :data:`REJECT_SHARE` quantile of the ``val`` fits, so about 1 % of good films are turned
away. Both are written into the graph (``outline``, ``qc_min_fit``); the graph outputs
``registration_fit`` and ``registration_ok``.
"""

from __future__ import annotations

import numpy as np

from tf_boneage.preprocessing.chain import OUTLINE_SIZE as SIZE
from tf_boneage.preprocessing.chain import (
    occupancy,  # noqa: F401  (re-exported)
    soft_dice,
)

#: the share of the fitting split the threshold turns away
REJECT_SHARE = 0.01
#: fewest films to fit an outline or a threshold on
MIN_ROWS = 50


#: soft Dice of occupancies (B, 52, 40, 1) with the outline (52, 40): (B,) in [0, 1] (the
#: chain's own, which the orientation step uses too)
fit_tf = soft_dice


def fit(occ, outline) -> np.ndarray:
    """:func:`fit_tf` in numpy: (N, 52, 40[, 1]) and (52, 40) -> (N,)."""
    occ = np.asarray(occ, np.float64).reshape(len(occ), -1)
    ref = np.asarray(outline, np.float64).reshape(1, -1)
    den = occ.sum(-1) + ref.sum()
    return np.where(den > 0, 2.0 * (occ * ref).sum(-1) / np.where(den > 0, den, 1.0), 0.0)


def mean_outline(occ) -> np.ndarray:
    """The canonical outline (52, 40): the mean of (N, 52, 40[, 1]) training occupancies."""
    occ = np.asarray(occ, np.float32)
    if len(occ) < MIN_ROWS:
        raise ValueError(f"need at least {MIN_ROWS} films to fit the outline, got {len(occ)}")
    return occ.reshape(len(occ), *SIZE).mean(0)


def threshold(fits, share: float = REJECT_SHARE) -> float:
    """The fit below which a film is rejected: the ``share`` quantile of ``fits`` (N,)
    (``inverted_cdf``: at most ``share`` of these films fall below it)."""
    fits = np.asarray(fits, float)
    fits = fits[np.isfinite(fits)]
    if len(fits) < MIN_ROWS:
        raise ValueError(f"need at least {MIN_ROWS} films to fit the threshold, got {len(fits)}")
    if not 0 <= share < 1:
        raise ValueError(f"share must be in [0, 1), got {share}")
    if share == 0:
        return float(fits.min())
    return float(np.quantile(fits, share, method="inverted_cdf"))
