"""Mask cleanup in TensorFlow ops: threshold, keep the hand, fill holes, remove the background.

Connected components without tensorflow-addons: every foreground pixel starts with a unique
label (its own 1-based index) and takes the largest label of its 8-neighbours (a 3x3 max
filter) until nothing changes (``tf.while_loop``). Plain propagation needs as many steps as the
longest geodesic path in a component (hundreds on a hand at 96 px: 44 ms per image, most of the
chain's time). Pointer jumping shortens that: a label is the index of a pixel of the same
component whose own label can only be as large or larger, so every round also replaces each
label by the label found at that index (a gather), and labels travel along chains of jumps
instead of pixel by pixel. Holes are the background components that touch no border pixel.
Run it at the U-Net's resolution, not on full-size images.

Labels are **int32**, never float: with static shapes the converter folds the index image
into a constant, and a float16 TFLite model stores float constants in half precision, where
integers above 2,048 are rounded (to even, then to multiples of 4, 8, ...). Labels then
collide and jumps land on the wrong pixel: that broke the float16 model's masks (its bone-age
estimates moved by up to 108 months). Integer tensors are never converted.
"""

from __future__ import annotations

import tensorflow as tf

STEPS_PER_CHECK = 8


def _max3x3(v: tf.Tensor) -> tf.Tensor:
    """3x3 max filter of non-negative (B, H, W, 1) values of any dtype (zero padding), separably, from
    shifted slices: ``tf.nn.max_pool2d`` on one channel was 12 times slower on this CPU."""
    h = tf.pad(v, [[0, 0], [0, 0], [1, 1], [0, 0]])
    v = tf.maximum(tf.maximum(h[:, :, :-2], h[:, :, 1:-1]), h[:, :, 2:])
    p = tf.pad(v, [[0, 0], [1, 1], [0, 0], [0, 0]])
    return tf.maximum(tf.maximum(p[:, :-2], p[:, 1:-1]), p[:, 2:])


def _jump(labels: tf.Tensor) -> tf.Tensor:
    """Each label replaced by the label at the pixel it names (1-based flat index; 0 stays 0)."""
    flat = tf.reshape(labels, [-1])
    table = tf.concat([tf.zeros([1], flat.dtype), flat], 0)
    return tf.reshape(tf.gather(table, tf.cast(flat, tf.int32)), tf.shape(labels))


def _propagate(values: tf.Tensor, allowed: tf.Tensor, max_steps: int) -> tf.Tensor:
    """Repeat ``values = max3x3(values) * allowed`` with pointer jumping (:func:`_jump`)
    until stable (or ``max_steps`` pooling steps). ``values``: labels as in
    :func:`component_labels`.

    ``allowed`` (int32, 0 / 1) is a loop variable that the body passes through
    ``maximum(allowed, 0)`` (the identity on it) instead of a captured tensor: TFLite turns a
    capture into a loop variable returned
    unchanged, and its int8 calibrator then reads a tensor the WHILE op has freed and
    segfaults (tensorflow/tensorflow#75140)."""

    def step(v, mask):
        for _ in range(STEPS_PER_CHECK):
            v = _jump(_max3x3(v) * mask)
        return v

    def cond(i, v, changed, mask):
        return tf.logical_and(changed, i < max_steps)

    def body(i, v, changed, mask):
        new = step(v, mask)
        return i + STEPS_PER_CHECK, new, tf.reduce_any(tf.not_equal(new, v)), tf.maximum(mask, 0)

    start = [tf.constant(0), values * allowed, tf.constant(True), allowed]
    _, values, _, _ = tf.while_loop(cond, body, start)
    return values


def component_labels(mask: tf.Tensor, max_steps: int | None = None) -> tf.Tensor:
    """8-connected component labels of binary masks (B, H, W, 1): int32, 0 = background,
    every component labelled by the largest (1-based, batch-unique) index of its pixels."""
    mask = tf.cast(mask > 0.5, tf.int32)
    shape = tf.shape(mask)
    n = shape[0] * shape[1] * shape[2]
    index = tf.reshape(tf.range(1, n + 1, dtype=tf.int32), shape)
    steps = max_steps or 4 * (int(mask.shape[1] or 1024) + int(mask.shape[2] or 1024))
    return _propagate(index * mask, mask, steps)


def largest_component(mask: tf.Tensor) -> tf.Tensor:
    """Keep only the largest 8-connected component of each mask (B, H, W, 1) -> float32."""
    labels = component_labels(mask)
    pixel_area = _per_component(
        labels, tf.ones_like(labels, tf.float32), tf.math.unsorted_segment_sum
    )
    best = tf.reduce_max(pixel_area, axis=[1, 2, 3], keepdims=True)
    return tf.cast((pixel_area >= best) & (pixel_area > 0), tf.float32)


def _per_component(labels: tf.Tensor, values: tf.Tensor, reduce) -> tf.Tensor:
    """``reduce`` (a ``tf.math.unsorted_segment_*``) of ``values`` over each component of
    ``labels``, written back to every pixel of it (background: 0)."""
    shape = tf.shape(labels)
    n = shape[0] * shape[1] * shape[2]
    ids = tf.reshape(labels, [-1])
    per = reduce(tf.reshape(values, [-1]), ids, n + 1)
    per = tf.tensor_scatter_nd_update(per, [[0]], tf.zeros([1], per.dtype))  # no component
    return tf.reshape(tf.gather(per, ids), shape)


def fill_holes(mask: tf.Tensor) -> tf.Tensor:
    """Fill background regions (B, H, W, 1) not connected to the image border (8-connected)."""
    mask = tf.cast(mask > 0.5, tf.float32)
    background = 1.0 - mask
    h, w = tf.shape(mask)[1], tf.shape(mask)[2]
    border = tf.pad(tf.zeros([h - 2, w - 2]), [[1, 1], [1, 1]], constant_values=1.0)
    border = tf.broadcast_to(border[None, :, :, None], tf.shape(mask))
    labels = component_labels(background)
    outside = _per_component(labels, border * background, tf.math.unsorted_segment_sum) > 0
    return 1.0 - tf.cast(outside, tf.float32)


def clean_mask(probabilities: tf.Tensor, threshold: float = 0.5) -> tf.Tensor:
    """U-Net probabilities (B, H, W, 1) -> the hand: threshold, largest component, holes
    filled. float32 {0, 1}."""
    return fill_holes(largest_component(tf.cast(probabilities >= threshold, tf.float32)))


def at_size(masks: tf.Tensor, size) -> tf.Tensor:
    """Masks (B, s, s, 1) resized (nearest) to ``size`` (h, w), float32."""
    return tf.image.resize(tf.cast(masks, tf.float32), size, method="nearest")


def remove_background(images: tf.Tensor, masks: tf.Tensor) -> tf.Tensor:
    """Zero everything outside the hand; masks are resized (nearest) to the images' size."""
    return tf.cast(images, tf.float32) * at_size(masks, tf.shape(images)[1:3])
