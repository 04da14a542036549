"""Segmentation loss and metrics of the paper.

``L = H - log J``: H the per-pixel binary cross-entropy, J a soft (differentiable) Jaccard
index. PAPER.md writes J per pixel, ``J = 1/n sum_i y_i p_i / (y_i + p_i - y_i p_i)``; taken
literally that is ``1/n sum_{y_i = 1} p_i`` and is below 1 even for a perfect mask (4/9 for a
3x3 mask of four hand pixels), so -log J never reaches 0. We follow the authors' public code
(TernausNet) and use the set form per image, ``J = (sum y p + eps) / (sum y + sum p - sum y p +
eps)``, averaged over the batch; ``jaccard="per_pixel"`` gives the literal form.
"""

from __future__ import annotations

import keras
from keras import ops

from tf_boneage.models.layers import PACKAGE


def soft_jaccard(y_true, y_pred, eps: float = 1e-7, per_pixel: bool = False):
    """Soft Jaccard per image, shape (B,). Inputs (B, H, W, 1) or (B, N) in [0, 1]."""
    y = ops.reshape(ops.cast(y_true, "float32"), (ops.shape(y_true)[0], -1))
    p = ops.reshape(ops.cast(y_pred, "float32"), (ops.shape(y_pred)[0], -1))
    inter = y * p
    if per_pixel:
        return ops.mean(inter / (y + p - inter + eps), axis=-1)
    inter = ops.sum(inter, -1)
    return (inter + eps) / (ops.sum(y, -1) + ops.sum(p, -1) - inter + eps)


@keras.saving.register_keras_serializable(package=PACKAGE)
class BCEJaccardLoss(keras.losses.Loss):
    """``H - log J`` per image (see the module docstring), reduced over the batch.

    Args:
        eps: clips probabilities to [eps, 1 - eps] in H and smooths J.
        jaccard_weight: weight of the ``-log J`` term (1 in the paper).
        jaccard: ``"set"`` (default, authors' code) or ``"per_pixel"`` (literal paper text).
    """

    def __init__(self, eps=1e-7, jaccard_weight=1.0, jaccard="set", name="bce_jaccard", **kw):
        super().__init__(name=name, **kw)
        if not 0 < eps < 0.5:
            raise ValueError(f"eps must be in (0, 0.5), got {eps!r}")
        if jaccard not in ("set", "per_pixel"):
            raise ValueError(f"jaccard must be 'set' or 'per_pixel', got {jaccard!r}")
        if jaccard_weight < 0:
            raise ValueError(f"jaccard_weight must be >= 0, got {jaccard_weight!r}")
        self.eps, self.jaccard_weight, self.jaccard = float(eps), float(jaccard_weight), jaccard

    def call(self, y_true, y_pred):
        y = ops.cast(y_true, "float32")
        p = ops.cast(y_pred, "float32")
        # clip p and 1 - p separately: 1 - (1 - eps) is not eps in float32
        log_p = ops.log(ops.clip(p, self.eps, 1.0 - self.eps))
        log_not_p = ops.log(ops.clip(1.0 - p, self.eps, 1.0 - self.eps))
        bce = -(y * log_p + (1.0 - y) * log_not_p)
        h = ops.mean(ops.reshape(bce, (ops.shape(bce)[0], -1)), axis=-1)
        j = soft_jaccard(y, p, self.eps, per_pixel=self.jaccard == "per_pixel")
        return h - self.jaccard_weight * ops.log(j)

    def get_config(self):
        return {
            **super().get_config(),
            "eps": self.eps,
            "jaccard_weight": self.jaccard_weight,
            "jaccard": self.jaccard,
        }


class _OverlapMetric(keras.metrics.Metric):
    """Mean per-image overlap of thresholded masks (empty vs empty counts as 1)."""

    def __init__(self, threshold=0.5, name=None, **kwargs):
        super().__init__(name=name, **kwargs)
        if not 0 < threshold < 1:
            raise ValueError(f"threshold must be in (0, 1), got {threshold!r}")
        self.threshold = float(threshold)
        self.total = self.add_variable((), initializer="zeros", name="total")
        self.count = self.add_variable((), initializer="zeros", name="count")

    def update_state(self, y_true, y_pred, sample_weight=None):  # noqa: ARG002 (unweighted)
        n = ops.shape(y_true)[0]
        y = ops.reshape(ops.cast(ops.cast(y_true, "float32") > 0.5, "float32"), (n, -1))
        p = ops.reshape(ops.cast(ops.cast(y_pred, "float32") > self.threshold, "float32"), (n, -1))
        inter, total = ops.sum(y * p, -1), ops.sum(y, -1) + ops.sum(p, -1)
        score = self._score(inter, total)
        self.total.assign_add(ops.sum(score))
        self.count.assign_add(ops.cast(n, "float32"))

    def result(self):
        return ops.divide_no_nan(self.total, self.count)

    def reset_state(self):
        self.total.assign(0.0)
        self.count.assign(0.0)

    def get_config(self):
        return {**super().get_config(), "threshold": self.threshold}


@keras.saving.register_keras_serializable(package=PACKAGE)
class JaccardIndex(_OverlapMetric):
    """Intersection over union of masks thresholded at ``threshold``, mean over images."""

    def __init__(self, threshold=0.5, name="jaccard", **kwargs):
        super().__init__(threshold, name=name, **kwargs)

    def _score(self, inter, total):
        union = total - inter
        return ops.where(union > 0, inter / ops.maximum(union, 1.0), 1.0)


@keras.saving.register_keras_serializable(package=PACKAGE)
class DiceCoefficient(_OverlapMetric):
    """Dice = 2|A and B| / (|A| + |B|) of thresholded masks, mean over images."""

    def __init__(self, threshold=0.5, name="dice", **kwargs):
        super().__init__(threshold, name=name, **kwargs)

    def _score(self, inter, total):
        return ops.where(total > 0, 2.0 * inter / ops.maximum(total, 1.0), 1.0)
