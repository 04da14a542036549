"""Mask cleanup in TensorFlow ops: threshold, keep the hand, fill holes, remove the background.

Connected components without tensorflow-addons: every foreground pixel starts with a unique
label and takes the largest label of its 8-neighbours (3x3 max pooling) until nothing changes
(``tf.while_loop``; the number of steps is the longest geodesic path in a component, a few
hundred at 256 px). Run it at the U-Net's resolution, not on full-size images.
"""

from __future__ import annotations

import tensorflow as tf

STEPS_PER_CHECK = 8


def _propagate(values: tf.Tensor, allowed: tf.Tensor, max_steps: int) -> tf.Tensor:
    """Repeat ``values = maxpool3x3(values) * allowed`` until stable (or ``max_steps``).

    ``allowed`` (>= 0) is a loop variable that the body passes through ``relu`` (the identity
    on it) instead of a captured tensor: TFLite turns a capture into a loop variable returned
    unchanged, and its int8 calibrator then reads a tensor the WHILE op has freed and
    segfaults (tensorflow/tensorflow#75140)."""

    def step(v, mask):
        for _ in range(STEPS_PER_CHECK):
            v = tf.nn.max_pool2d(v, 3, 1, "SAME") * mask
        return v

    def cond(i, v, changed, mask):
        return tf.logical_and(changed, i < max_steps)

    def body(i, v, changed, mask):
        new = step(v, mask)
        return i + STEPS_PER_CHECK, new, tf.reduce_any(tf.not_equal(new, v)), tf.nn.relu(mask)

    start = [tf.constant(0), values * allowed, tf.constant(True), allowed]
    _, values, _, _ = tf.while_loop(cond, body, start)
    return values


def component_labels(mask: tf.Tensor, max_steps: int | None = None) -> tf.Tensor:
    """8-connected component labels of binary masks (B, H, W, 1): float32, 0 = background,
    every component labelled by the largest (1-based, batch-unique) index of its pixels."""
    mask = tf.cast(mask > 0.5, tf.float32)
    shape = tf.shape(mask)
    n = shape[0] * shape[1] * shape[2]
    index = tf.reshape(tf.range(1, n + 1, dtype=tf.float32), shape)
    steps = max_steps or 4 * (int(mask.shape[1] or 1024) + int(mask.shape[2] or 1024))
    return _propagate(index * mask, mask, steps)


def largest_component(mask: tf.Tensor) -> tf.Tensor:
    """Keep only the largest 8-connected component of each mask (B, H, W, 1) -> float32."""
    labels = component_labels(mask)
    shape = tf.shape(labels)
    n = shape[0] * shape[1] * shape[2]
    ids = tf.cast(tf.reshape(labels, [-1]), tf.int32)
    areas = tf.math.unsorted_segment_sum(tf.ones_like(ids, tf.float32), ids, n + 1)
    areas = tf.tensor_scatter_nd_update(areas, [[0]], [0.0])  # background is no component
    pixel_area = tf.reshape(tf.gather(areas, ids), shape)
    best = tf.reduce_max(pixel_area, axis=[1, 2, 3], keepdims=True)
    return tf.cast((pixel_area >= best) & (pixel_area > 0), tf.float32)


def fill_holes(mask: tf.Tensor) -> tf.Tensor:
    """Fill background regions (B, H, W, 1) not connected to the image border."""
    mask = tf.cast(mask > 0.5, tf.float32)
    background = 1.0 - mask
    h, w = tf.shape(mask)[1], tf.shape(mask)[2]
    border = tf.pad(tf.zeros([h - 2, w - 2]), [[1, 1], [1, 1]], constant_values=1.0)
    seeds = border[None, :, :, None] * background
    steps = 4 * (int(mask.shape[1] or 1024) + int(mask.shape[2] or 1024))
    outside = _propagate(seeds, background, steps)
    return 1.0 - outside


def clean_mask(probabilities: tf.Tensor, threshold: float = 0.5) -> tf.Tensor:
    """U-Net probabilities (B, H, W, 1) -> the hand: threshold, largest component, holes
    filled. float32 {0, 1}."""
    return fill_holes(largest_component(tf.cast(probabilities >= threshold, tf.float32)))


def remove_background(images: tf.Tensor, masks: tf.Tensor) -> tf.Tensor:
    """Zero everything outside the hand; masks are resized (nearest) to the images' size."""
    size = tf.shape(images)[1:3]
    masks = tf.image.resize(tf.cast(masks, tf.float32), size, method="nearest")
    return tf.cast(images, tf.float32) * masks
