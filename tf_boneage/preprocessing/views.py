"""Test-time views of region crops: small rotations, scalings and shifts of a registered crop.

A region network's estimate can be averaged over a few views of its crop (test-time
augmentation): a run's ``tta`` setting (``RegionConfig.tta``) says how many of :data:`VIEWS`, in
order; the first is the crop itself. The same views are made offline (the run's predictions,
``training/posthoc.py``) and in the exported graph, with the gather warp of :mod:`.warp`
(TFLite built-ins only) and matrices computed here in numpy (constants in the graph). Every view
stays inside the training augmentation's range (rotation 10 degrees, scale 0.9-1.1, shift 5 %);
none mirrors: the canonical frame holds left hands.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from tf_boneage.preprocessing import warp

#: (rotation in degrees, clockwise on screen; scale; shift x and y as a fraction of the crop)
VIEWS = (
    (0.0, 1.0, 0.0, 0.0),
    (5.0, 1.0, 0.0, 0.0),
    (-5.0, 1.0, 0.0, 0.0),
    (0.0, 1.05, 0.0, 0.0),
    (0.0, 0.95, 0.0, 0.0),
    (0.0, 1.0, 0.02, 0.0),
    (0.0, 1.0, -0.02, 0.0),
    (0.0, 1.0, 0.0, 0.02),
    (0.0, 1.0, 0.0, -0.02),
)


def check(n: int) -> int:
    """``n`` if it is a valid number of views, else ``ValueError``."""
    if not isinstance(n, (int, np.integer)) or not 1 <= n <= len(VIEWS):
        raise ValueError(f"tta must be 1-{len(VIEWS)} views, got {n!r}")
    return int(n)


def matrices(n: int, height: int, width: int) -> np.ndarray:
    """(n, 3, 3) float32 inverse matrices (output -> input continuous coordinates) of the first
    ``n`` views of a (height, width) crop: rotate and scale about the centre, then shift."""
    check(n)
    cx, cy = width / 2.0, height / 2.0
    out = []
    for angle, scale, sx, sy in VIEWS[:n]:
        a = math.radians(angle)
        c, s = math.cos(a) * scale, math.sin(a) * scale
        forward = np.array(
            [
                [c, -s, cx + sx * width - (c * cx - s * cy)],
                [s, c, cy + sy * height - (s * cx + c * cy)],
                [0.0, 0.0, 1.0],
            ]
        )
        out.append(np.linalg.inv(forward))
    return np.stack(out).astype(np.float32)


def views(images: tf.Tensor, n: int) -> tf.Tensor:
    """The first ``n`` views of ``images`` (B, H, W, C) float32 (static H, W), stacked view by
    view: (n * B, H, W, C), rows ``k * B ... (k + 1) * B - 1`` the k-th view (k = 0: the images
    themselves, exactly)."""
    images = tf.convert_to_tensor(images, tf.float32)
    if check(n) == 1:
        return images
    h, w = int(images.shape[1]), int(images.shape[2])
    b = tf.shape(images)[0]
    out = [images]
    for inverse in matrices(n, h, w)[1:]:
        tiled = tf.tile(tf.constant(inverse)[None], [b, 1, 1])
        out.append(warp.warp_affine(images, tiled, (h, w)))
    return tf.concat(out, 0)


def mean_over_views(values: tf.Tensor, n: int) -> tf.Tensor:
    """The mean over views of ``values`` (n * B, ...) laid out as :func:`views` makes them:
    (B, ...)."""
    if check(n) == 1:
        return values
    shape = tf.shape(values)
    split = tf.reshape(values, tf.concat([[n, shape[0] // n], shape[1:]], 0))
    return tf.reduce_mean(split, 0)
