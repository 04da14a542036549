"""Mask cleanup in TensorFlow ops: threshold, keep the hand, fill holes, remove the background.

Connected components without tensorflow-addons, by hooking and pointer jumping (a
Shiloach-Vishkin style union of trees): every foreground pixel k starts as its own tree,
``parent[k] = k`` (1-based flat index). Each round (1) every pixel reads the largest parent
among its 8 neighbours (a 3x3 max filter), (2) every tree's root takes the largest value read
by any pixel of its tree (``unsorted_segment_max`` keyed by parent: the trees hook onto their
largest neighbouring tree), and (3) every parent is replaced by its parent's parent twice
(pointer jumping). Parents only grow and always name a pixel of the same component, so at the
fixed point every component points at its largest index. The number of rounds grows with the
logarithm of a component's size, not with its geodesic length: 6-8 rounds on 512 px masks,
ragged U-Net masks included (about 35 ms each), where plain propagation with jumps took up to
1 s on tortuous masks (BENCHMARKS.md). Holes are the background components that touch no border
pixel.

Labels are **int32**, never float: with static shapes the converter folds the index image
into a constant, and a float16 TFLite model stores float constants in half precision, where
integers above 2,048 are rounded (to even, then to multiples of 4, 8, ...). Labels then
collide and jumps land on the wrong pixel: that broke the float16 model's masks (its bone-age
estimates moved by up to 108 months). Integer tensors are never converted.
"""

from __future__ import annotations

import tensorflow as tf

#: pointer jumps per round (each halves the depth of the trees)
JUMPS_PER_ROUND = 2


def _max3x3(v: tf.Tensor) -> tf.Tensor:
    """3x3 max filter of non-negative (B, H, W, 1) values of any dtype (zero padding), separably, from
    shifted slices: ``tf.nn.max_pool2d`` on one channel was 12 times slower on this CPU."""
    h = tf.pad(v, [[0, 0], [0, 0], [1, 1], [0, 0]])
    v = tf.maximum(tf.maximum(h[:, :, :-2], h[:, :, 1:-1]), h[:, :, 2:])
    p = tf.pad(v, [[0, 0], [1, 1], [0, 0], [0, 0]])
    return tf.maximum(tf.maximum(p[:, :-2], p[:, 1:-1]), p[:, 2:])


def _hook_round(parent: tf.Tensor, allowed: tf.Tensor, shape: tf.Tensor) -> tf.Tensor:
    """One round of hooking and jumping. ``parent``: int32 (N + 1,), entry k the parent of
    pixel k (1-based; entry 0 and background pixels 0); ``allowed``: int32 (N,) 0 / 1."""
    labels = parent[1:]
    seen = tf.reshape(_max3x3(tf.reshape(labels, shape)), [-1]) * allowed
    hook = tf.math.unsorted_segment_max(seen, labels, tf.shape(parent)[0])
    # empty segments hold the dtype's lowest value: no tree points there
    parent = tf.maximum(parent, tf.maximum(hook, 0))
    parent = tf.maximum(parent, tf.concat([tf.zeros([1], tf.int32), seen], 0))
    for _ in range(JUMPS_PER_ROUND):
        parent = tf.gather(parent, parent)
    return parent


def component_labels(mask: tf.Tensor, max_rounds: int = 64) -> tf.Tensor:
    """8-connected component labels of binary masks (B, H, W, 1): int32, 0 = background,
    every component labelled by the largest (1-based, batch-unique) flat index of its pixels.
    ``max_rounds`` bounds the loop (a fixed point comes in about log2 of the largest
    component's pixel count rounds; 64 is never reached).

    ``allowed`` is a loop variable that the body passes through ``maximum(allowed, 0)`` (the
    identity on it) instead of a captured tensor: TFLite turns a capture into a loop variable
    returned unchanged, and its int8 calibrator then reads a tensor the WHILE op has freed and
    segfaults (tensorflow/tensorflow#75140)."""
    shape = tf.shape(mask)
    allowed = tf.reshape(tf.cast(mask > 0.5, tf.int32), [-1])
    n = tf.size(allowed)
    start = tf.concat([tf.zeros([1], tf.int32), tf.range(1, n + 1, dtype=tf.int32) * allowed], 0)

    def cond(i, parent, changed, allowed):
        return tf.logical_and(changed, i < max_rounds)

    def body(i, parent, changed, allowed):
        new = _hook_round(parent, allowed, shape)
        return i + 1, new, tf.reduce_any(tf.not_equal(new, parent)), tf.maximum(allowed, 0)

    loop = [tf.constant(0), start, tf.constant(True), allowed]
    _, parent, _, _ = tf.while_loop(cond, body, loop)
    return tf.reshape(parent[1:], shape)


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
