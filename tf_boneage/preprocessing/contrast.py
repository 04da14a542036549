"""Contrast equalisation inside the hand, in TensorFlow ops.

We use histogram equalisation restricted to the hand mask rather than CLAHE: the background is
already removed (so the global histogram is the hand's own), it is one short TF implementation
that runs identically in training-data preparation, the SavedModel and TFLite, and it has no
tile-size parameter to tune. Contrast-limited local equalisation mainly helps films whose
background dominates the histogram, which masking already handles.
"""

from __future__ import annotations

import tensorflow as tf


def histograms(images: tf.Tensor, weights: tf.Tensor, bins: int = 256):
    """Per-image grey-level histograms of (B, H, W, 1) images in [0, 1], each pixel counted
    with its ``weights`` (same shape): ``(levels (B, H, W, 1) int32, histograms (B, bins)
    float32)``. One segment sum over the batch (TFLite built-ins)."""
    b = tf.shape(images)[0]
    level = tf.cast(tf.round(images * (bins - 1)), tf.int32)
    ids = tf.reshape(level + tf.range(b)[:, None, None, None] * bins, [-1])
    hist = tf.math.unsorted_segment_sum(tf.reshape(weights, [-1]), ids, b * bins)
    return level, tf.reshape(hist, [b, bins])


def equalize(images: tf.Tensor, masks: tf.Tensor, bins: int = 256) -> tf.Tensor:
    """Histogram-equalise images (B, H, W, 1) in [0, 1] using only pixels where masks > 0.5.

    Returns float32 (B, H, W, 1) in [0, 1], 0 outside the mask; inside, the darkest hand level
    maps to 0 and the brightest to 1.
    """
    images = tf.clip_by_value(tf.cast(images, tf.float32), 0.0, 1.0)
    masks = tf.cast(
        tf.image.resize(tf.cast(masks, tf.float32), tf.shape(images)[1:3], method="nearest") > 0.5,
        tf.float32,
    )
    level, hist = histograms(images, masks, bins)
    cdf = tf.cumsum(hist, axis=1)
    total = cdf[:, -1:]
    first = tf.reduce_min(tf.where(hist > 0, cdf, total), axis=1, keepdims=True)
    mapping = tf.math.divide_no_nan(cdf - first, total - first)
    out = tf.gather(tf.clip_by_value(mapping, 0.0, 1.0), level[..., 0], batch_dims=1)
    return tf.expand_dims(out, -1) * masks  # not [..., None]: TFLite needs it for any H, W


def grey_quantiles(images: tf.Tensor, quantiles, bins: int = 256) -> list[tf.Tensor]:
    """Per-image grey-level quantiles of (B, H, W, 1) images in [0, 1], each (B,) float32 in
    ``1 / (bins - 1)`` steps: the ``q``-quantile is the number of levels that hold less than a
    share ``q`` of the pixels (a histogram and its cumulative sum: TFLite built-ins, no sort)."""
    x = tf.clip_by_value(tf.cast(images, tf.float32), 0.0, 1.0)
    _, hist = histograms(x, tf.ones_like(x), bins)
    cdf = tf.cumsum(hist, axis=1)
    cdf = cdf / cdf[:, -1:]
    return [
        tf.reduce_sum(tf.cast(cdf < q, tf.float32), axis=1) / float(bins - 1) for q in quantiles
    ]


def stretch(images: tf.Tensor, low: float = 0.01, high: float = 0.99) -> tf.Tensor:
    """Exposure normalised: each image's ``low`` and ``high`` grey-level quantiles
    (:func:`grey_quantiles`) mapped to 0 and 1, clipped. (B, H, W, 1) in [0, 1] -> float32,
    the same shape. Undoes any brightness shift or contrast gain that clipped nothing."""
    lo, hi = grey_quantiles(images, (low, high))
    lo, span = lo[:, None, None, None], tf.maximum(hi - lo, 1.0 / 255.0)[:, None, None, None]
    return tf.clip_by_value((tf.cast(images, tf.float32) - lo) / span, 0.0, 1.0)
