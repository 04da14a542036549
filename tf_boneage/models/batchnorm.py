"""Batch-norm recalibration.

Training batches are augmented (rotations with zero fill, exposure changes), so the moving
statistics that batch norm accumulates describe augmented images, not the clean ones the model
sees at inference: on the real-data U-Net this cost 0.15 Jaccard (0.70 with moving statistics,
0.85 with batch statistics on the same clean validation images). :func:`recalibrate` resets the
moving mean and variance of every batch-norm layer to the statistics of clean training images.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf


def batchnorm_layers(model: keras.Model) -> list:
    """Every BatchNormalization layer of ``model`` (nested models included)."""
    found = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            found.append(layer)
        elif isinstance(layer, keras.Model):
            found.extend(batchnorm_layers(layer))
    return found


def recalibrate(model: keras.Model, inputs) -> int:
    """Set moving statistics to the average batch statistics of clean inputs: one batch (array
    or dict of arrays) or a list or iterator of batches (averaged with equal weight, e.g. 8 x 256
    images; an iterator holds one batch at a time). No weight changes. Returns the number of
    layers reset."""
    one = isinstance(inputs, (np.ndarray, dict)) or tf.is_tensor(inputs)
    batches = [inputs] if one else inputs
    layers = batchnorm_layers(model)
    momenta = [layer.momentum for layer in layers]
    try:
        for i, batch in enumerate(batches, start=1):
            for layer in layers:  # running mean: moving = (i - 1) / i * moving + batch / i
                layer.momentum = (i - 1) / i
            model(batch, training=True)
    finally:
        for layer, momentum in zip(layers, momenta, strict=True):
            layer.momentum = momentum
    return len(layers)


#: most input pixels in one batch norm recalibration pass (8 images of 512 x 512, 227 of
#: 96 x 96): the paper preset's training batch. The U-Net at the paper's 512 px ran out of
#: 24 GB on 56 images at once, and 16 images made the segmentation step's peak (9.5 GB against
#: 4.4 GB while training at batch 8; BENCHMARKS.md, memory by step)
MAX_RECALIBRATION_PIXELS = 1 << 21


def batch_for(shape, largest: int = 256) -> int:
    """A recalibration batch size for inputs of ``shape`` (h, w, ...): at most ``largest``
    images and :data:`MAX_RECALIBRATION_PIXELS` pixels."""
    return max(1, min(largest, MAX_RECALIBRATION_PIXELS // int(shape[0] * shape[1])))


def clean_batches(dataset, limit: int = 2048, size: int = 256):
    """Up to ``limit`` un-augmented inputs of ``dataset`` (batches of ``(x, y)``; ``x`` an
    array or a dict of arrays) re-cut into batches of at most ``size``, one at a time: a
    generator, so that memory holds one batch of the dataset, never the ``limit`` inputs (2,048
    region crops of 500 x 375 are 1.5 GB: the region step's peak grew with the films)."""
    left = limit
    if left <= 0:
        return
    for x, _ in dataset:
        n = len(next(iter(x.values())) if isinstance(x, dict) else x)
        for i in range(0, min(n, left), size):
            j = min(i + size, n, left)
            if isinstance(x, dict):
                yield {k: np.asarray(v[i:j]) for k, v in x.items()}
            else:
                yield np.asarray(x[i:j])
        left -= n
        if left <= 0:
            return
