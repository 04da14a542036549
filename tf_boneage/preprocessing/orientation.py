"""The eight orientations of a film (:mod:`tf_boneage.models.orientation`): make them from an
upright film (training the classifier) and read them off the classifier (the chain).

Class ``c``: ``c % 4`` quarter turns counter-clockwise (:func:`~.chain.rot90`) of the upright
film, inverted polarity (``1 - x``) when ``c >= 4``. Every op is a TFLite built-in.
"""

from __future__ import annotations

import tensorflow as tf

from tf_boneage.preprocessing import warp
from tf_boneage.preprocessing.chain import CANDIDATES, _select, rot90


def make(images: tf.Tensor, classes: tf.Tensor) -> tf.Tensor:
    """Upright square films (B, s, s, C) float32 in [0, 1] -> each in the orientation of its
    class ``classes`` (B,) int in [0, 8): turned ``c % 4`` times, inverted when ``c >= 4``."""
    images = tf.convert_to_tensor(images, tf.float32)
    classes = tf.cast(classes, tf.int32)
    inverted = (classes >= 4)[:, None, None, None]
    images = tf.where(inverted, 1.0 - images, images)
    return _select(tf.stack([rot90(images, j) for j in range(4)], 1), classes % 4, 4)


def classify(model, images: tf.Tensor, margin: float = 0.0):
    """The orientation of films (B, H, W, 1) float32 in [0, 1] by the classifier ``model``
    (input (s, s, 1); the films squashed to it). The film as given (class 0) wins unless
    another class is more probable by ``margin``.

    Returns ``(turns, inverted, confidence)``: the quarter turns (B,) int32 that make each film
    upright (:func:`~.chain.rot90` by ``-turns``, as :meth:`~.chain.Preprocessor.orient`), whether
    it is inverted (B,) bool, and the chosen class's probability (B,) float32.
    """
    s = int(model.input_shape[1])
    probs = tf.cast(model(warp.resize(images, (s, s)), training=False), tf.float32)
    best = tf.argmax(probs + tf.one_hot(0, CANDIDATES) * margin, 1, output_type=tf.int32)
    confidence = tf.reduce_sum(probs * tf.one_hot(best, CANDIDATES), 1)
    return best % 4, best >= 4, confidence
