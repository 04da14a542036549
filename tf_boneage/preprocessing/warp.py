"""Gather-based bilinear affine warp in TensorFlow ops (converts to TFLite built-ins, unlike
``ImageProjectiveTransformV3``).

Only TFLite built-in ops are used here (gather, floor, arithmetic, bilinear resize, average
pooling): ``tf.linalg.inv`` (MatrixInverse) and antialiased ``tf.image.resize``
(ScaleAndTranslate) are not built-ins, hence :func:`invert_affine` and :func:`resize`.

Coordinates are *continuous pixel coordinates*: pixel ``(i, j)`` covers ``[j, j+1) x [i, i+1)``
and its centre is ``(j + 0.5, i + 0.5)``; normalised coordinates are these divided by the width
and height. Matrices are 3x3 float32 and map output coordinates to input coordinates
(``inverse``) unless named ``forward``.
"""

from __future__ import annotations

import tensorflow as tf


def output_grid(height: int, width: int) -> tf.Tensor:
    """Homogeneous centres of an (height, width) output, float32 (3, height * width)."""
    ys, xs = tf.meshgrid(
        tf.range(height, dtype=tf.float32) + 0.5,
        tf.range(width, dtype=tf.float32) + 0.5,
        indexing="ij",
    )
    ones = tf.ones_like(xs)
    return tf.reshape(tf.stack([xs, ys, ones]), [3, -1])


def warp_affine(images: tf.Tensor, inverse: tf.Tensor, size: tuple[int, int]) -> tf.Tensor:
    """Bilinear warp with zero fill.

    Args:
        images: float32 (B, H, W, C).
        inverse: float32 (B, 3, 3), output continuous coords -> input continuous coords.
        size: (height, width) of the output, Python ints.

    Returns:
        float32 (B, height, width, C).
    """
    height, width = size
    shape = tf.shape(images)
    b, h, w, c = shape[0], shape[1], shape[2], shape[3]
    src = tf.einsum("bij,jn->bin", inverse, output_grid(height, width))  # (B, 3, N)
    x = src[:, 0] - 0.5  # index coordinates: pixel centres at integers
    y = src[:, 1] - 0.5
    x0, y0 = tf.floor(x), tf.floor(y)
    wx, wy = x - x0, y - y0
    flat = tf.reshape(images, [-1, c])
    base = tf.cast(tf.range(b) * h * w, tf.float32)[:, None]
    wf, hf = tf.cast(w, tf.float32), tf.cast(h, tf.float32)
    out = 0.0
    for dx, dy, weight in (
        (0, 0, (1 - wx) * (1 - wy)),
        (1, 0, wx * (1 - wy)),
        (0, 1, (1 - wx) * wy),
        (1, 1, wx * wy),
    ):
        xi, yi = x0 + dx, y0 + dy
        valid = (xi >= 0) & (xi <= wf - 1) & (yi >= 0) & (yi <= hf - 1)
        index = base + tf.clip_by_value(yi, 0, hf - 1) * wf + tf.clip_by_value(xi, 0, wf - 1)
        values = tf.gather(flat, tf.cast(index, tf.int32))  # (B, N, C)
        out += values * (weight * tf.cast(valid, tf.float32))[..., None]
    return tf.reshape(out, [b, height, width, c])


def scale_matrix(sx, sy) -> tf.Tensor:
    """Diagonal 3x3 scale matrices for tensors ``sx``, ``sy`` of shape (B,)."""
    sx, sy = tf.cast(sx, tf.float32), tf.cast(sy, tf.float32)
    zero, one = tf.zeros_like(sx), tf.ones_like(sx)
    return tf.stack(
        [
            tf.stack([sx, zero, zero], -1),
            tf.stack([zero, sy, zero], -1),
            tf.stack([zero, zero, one], -1),
        ],
        1,
    )


def apply(matrix: tf.Tensor, points: tf.Tensor) -> tf.Tensor:
    """Apply (B, 3, 3) affine matrices to points (B, K, 2) -> (B, K, 2)."""
    return tf.einsum("bij,bkj->bki", matrix[:, :2, :2], points) + matrix[:, None, :2, 2]


def invert_affine(matrix: tf.Tensor) -> tf.Tensor:
    """Closed-form inverse of affine matrices (B, 3, 3) with last row (0, 0, 1)."""
    a, b, tx = matrix[:, 0, 0], matrix[:, 0, 1], matrix[:, 0, 2]
    c, d, ty = matrix[:, 1, 0], matrix[:, 1, 1], matrix[:, 1, 2]
    det = a * d - b * c
    ia, ib, ic, id_ = d / det, -b / det, -c / det, a / det
    zero, one = tf.zeros_like(a), tf.ones_like(a)
    return tf.stack(
        [
            tf.stack([ia, ib, -(ia * tx + ib * ty)], -1),
            tf.stack([ic, id_, -(ic * tx + id_ * ty)], -1),
            tf.stack([zero, zero, one], -1),
        ],
        1,
    )


def resize(images: tf.Tensor, size: tuple[int, int]) -> tf.Tensor:
    """The project's one image resize (training pipelines, the cache, the exported graph and
    TFLite all call it), with TFLite built-ins only.

    When the input is at least twice ``size`` in both directions it is first averaged over
    k x k blocks, k = min(H // h, W // w) (anti-aliasing; rows and columns past the last
    whole block are dropped), then resized bilinearly (half-pixel centres) to ``size``.
    Static shapes use ``avg_pool2d``; unknown ones (a ``tf.data`` map over files of
    different sizes) the same block mean by reshape, so both paths give the same pixels.

    Args: ``images`` float32 (B, H, W, C); ``size`` (h, w) Python ints.
    Returns: float32 (B, h, w, C).
    """
    h, w = images.shape[1], images.shape[2]
    if h is not None and w is not None:
        k = min(h // size[0], w // size[1])
        if k >= 2:
            images = tf.nn.avg_pool2d(images, k, k, "VALID")
    else:
        images = _block_mean(images, size)
    return tf.image.resize(images, size, method="bilinear", antialias=False)


def _block_mean(images: tf.Tensor, size: tuple[int, int]) -> tf.Tensor:
    """``avg_pool2d(images, k, k, "VALID")`` for a k known only at run time (k = 1: as is)."""
    shape = tf.shape(images)
    b, h, w, c = shape[0], shape[1], shape[2], shape[3]
    k = tf.maximum(1, tf.minimum(h // size[0], w // size[1]))
    hk, wk = h // k, w // k
    x = images[:, : hk * k, : wk * k, :]
    x = tf.reshape(x, tf.stack([b, hk, k, wk, k, c]))
    out = tf.reduce_mean(x, axis=[2, 4])
    # the reshape lost the static batch and channel sizes: keep them (the converted TFLite
    # graph of a native-size export needs the U-Net's input fully known after its resize)
    out.set_shape([images.shape[0], None, None, images.shape[3]])
    return out
