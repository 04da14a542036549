"""QC that catches a failed registration: the registered hand against a canonical outline.

After registration every hand should cover the same part of the canonical frame: fingers up,
the middle fingertip and the capitate where the frame puts them. The chain reports each film's
``occupancy``, the share of hand pixels (background removed: the registered image > 0) in each
cell of a :data:`SIZE` grid over the frame. The canonical ``outline`` is the mean occupancy of
training films; a film's **registration fit** is the soft Dice overlap of its occupancy with the
outline (1: the average hand, 0: nothing where hands go). Wrong landmarks, a film turned
upside down, noise, a document or a photograph land elsewhere in the frame or fill it evenly.

The outline says where a hand lies, not whether what lies there is a hand: a document or a
photograph the U-Net took for a hand, or a hand registered upside down, can cover much of it.
So the chain also reports each film's ``content``, the mean grey level per cell of the same
grid, and the **content match** is its correlation with the ``template``, the mean content of
training films, each cell weighted by the outline: bones, soft tissue and the gaps between the
fingers where a registered hand has them.

The export fits the outline and the template on ``train`` films and both thresholds on ``val``
and more ``train`` films outside the outline's (never ``test``): one quantile of each, the
largest for which the two together turn away at most :data:`REJECT_SHARE` of those films
(:func:`joint_thresholds`). All four are
written into the graph (``outline``, ``qc_min_fit``, ``content_template``,
``qc_min_match``); the graph outputs ``registration_fit``, ``registration_ok``,
``content_match`` and ``content_ok``.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tf_boneage.preprocessing.chain import OUTLINE_SIZE as SIZE
from tf_boneage.preprocessing.chain import (
    content,  # noqa: F401  (re-exported)
    occupancy,  # noqa: F401  (re-exported)
    pattern_match,
    soft_dice,
)

#: the share of the fitting films the registration checks turn away together; with the image
#: checks' 0.15 % each (:data:`~tf_boneage.export.calibration.IMAGE_REJECT_SHARE`) the fitted
#: checks turn away at most 0.65 % of the films they are fitted on (the goal: at most 1 %
#: of good `test` films; at 0.5 % and 0.25 % the design summed to 1.25 %, and 7 of 500 good `test`
#: films were turned away, RESULTS.md)
REJECT_SHARE = 0.0035
#: fewest films to fit an outline or a threshold on
MIN_ROWS = 50


#: soft Dice of occupancies (B, 52, 40, 1) with the outline (52, 40): (B,) in [0, 1] (the
#: chain's own, which the orientation step uses too)
fit_tf = soft_dice
#: weighted correlation of content maps (B, 52, 40, 1) with the template, weighted by the
#: outline: (B,) in [-1, 1]
match_tf = pattern_match


#: the outline's core: the cells at least this share of training hands cover (palm, wrist,
#: finger bases), where a good film has tissue, never background
CORE_LEVEL = 0.9


def core_share_tf(maps, outline) -> tf.Tensor:
    """The mean of per-cell shares ``maps`` (B, 52, 40, 1) over the outline's core (the cells
    of ``outline`` (52, 40) at or above :data:`CORE_LEVEL`): (B,) in [0, 1]; 0 while the
    outline has no core (not fitted). With the chain's ``black_map``: the share of the
    registered hand's core that the film shows black (under-exposed: clipped)."""
    core = tf.cast(tf.reshape(outline, [1, *SIZE, 1]) >= CORE_LEVEL, tf.float32)
    return tf.math.divide_no_nan(
        tf.reduce_sum(tf.cast(maps, tf.float32) * core, [1, 2, 3]), tf.reduce_sum(core)
    )


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


def match(maps, template, weights) -> np.ndarray:
    """:func:`match_tf` in numpy: (N, 52, 40[, 1]), (52, 40), (52, 40) -> (N,)."""
    x = np.asarray(maps, np.float64).reshape(len(maps), -1)
    t = np.asarray(template, np.float64).reshape(1, -1)
    w = np.asarray(weights, np.float64).reshape(1, -1)
    w = w / w.sum() if w.sum() > 0 else w
    x = x - (w * x).sum(-1, keepdims=True)
    t = t - (w * t).sum(-1, keepdims=True)
    den = np.sqrt((w * x * x).sum(-1) * (w * t * t).sum(-1))
    return np.where(den > 0, (w * x * t).sum(-1) / np.where(den > 0, den, 1.0), 0.0)


def joint_thresholds(fits, matches, share: float = REJECT_SHARE) -> tuple[float, float, float]:
    """``(least fit, least match, share rejected)``: the ``q`` quantile of ``fits`` (N,) and
    of ``matches`` (N,), for the largest ``q`` at which films below either limit are at most
    ``share`` of them (so the two checks together turn away at most ``share`` of the films
    they were fitted on)."""
    fits, matches = np.asarray(fits, float), np.asarray(matches, float)
    if len(fits) < MIN_ROWS or len(matches) != len(fits):
        raise ValueError(f"need at least {MIN_ROWS} films of each, got {len(fits)}")
    if not 0 <= share < 1:
        raise ValueError(f"share must be in [0, 1), got {share}")
    best = (float(fits.min()), float(matches.min()), 0.0)
    for q in np.linspace(0.0, share, 101)[1:]:
        lo_fit = float(np.quantile(fits, q, method="inverted_cdf"))
        lo_match = float(np.quantile(matches, q, method="inverted_cdf"))
        rejected = float(((fits < lo_fit) | (matches < lo_match)).mean())
        if rejected > share:
            break
        best = (lo_fit, lo_match, rejected)
    return best
