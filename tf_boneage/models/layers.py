"""Custom layers of the bone-age networks (registered, serializable; never ``Lambda``)."""

from __future__ import annotations

import keras
from keras import ops

PACKAGE = "tf_boneage"


@keras.saving.register_keras_serializable(package=PACKAGE)
class ExpectedValue(keras.layers.Layer):
    """The paper's "binning" layer: expected age of a softmax over month bins.

    Multiplies the probabilities by the bin values ``[start, start + 1, ..., start + n - 1]``
    (months; the paper's ``[1, ..., 240]``) and sums.

    Input: probabilities, shape (B, num_bins), rows summing to 1.
    Output: float32 (B, 1), months.
    """

    def __init__(self, num_bins: int = 240, start: float = 1.0, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if int(num_bins) != num_bins or num_bins < 2:
            raise ValueError(f"num_bins must be an integer >= 2, got {num_bins!r}")
        self.num_bins = int(num_bins)
        self.start = float(start)

    def build(self, input_shape):
        if input_shape[-1] != self.num_bins:
            raise ValueError(
                f"ExpectedValue expects {self.num_bins} probabilities, got shape {input_shape}"
            )

    def call(self, probabilities):
        bins = ops.arange(self.num_bins, dtype="float32") + self.start
        return ops.sum(ops.cast(probabilities, "float32") * bins, axis=-1, keepdims=True)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], 1)

    def get_config(self):
        return {**super().get_config(), "num_bins": self.num_bins, "start": self.start}


@keras.saving.register_keras_serializable(package=PACKAGE)
class UnitToMonths(keras.layers.Layer):
    """Maps the regression output y in [-1, 1] to months: ``age = scale * (1 + y)``.

    The authors' mapping with ``scale = 120``: -1 -> 0 months, 0 -> 120, 1 -> 240.
    Input (B, 1) any float dtype; output float32 (B, 1) months.
    """

    def __init__(self, scale: float = 120.0, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if not scale > 0:
            raise ValueError(f"scale must be > 0 months, got {scale!r}")
        self.scale = float(scale)

    def call(self, y):
        return self.scale * (1.0 + ops.cast(y, "float32"))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}


@keras.saving.register_keras_serializable(package=PACKAGE)
class GreyStretch(keras.layers.Layer):
    """Exposure normalisation as a network's first layer: each image's ``low`` and ``high``
    grey-level quantiles go to 0 and 1 (:func:`tf_boneage.preprocessing.contrast.stretch`),
    so a film darker, brighter or flatter than the training films (nothing clipped) reaches
    the network as they did. Written into the model: whoever loads it normalises the same way.

    Input (B, H, W, 1) in [0, 1]; output float32, the same shape, in [0, 1].
    """

    def __init__(self, low: float = 0.01, high: float = 0.99, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if not 0 <= low < high <= 1:
            raise ValueError(f"need 0 <= low < high <= 1, got {low!r}, {high!r}")
        self.low, self.high = float(low), float(high)

    def call(self, images):
        from tf_boneage.preprocessing.contrast import stretch

        return stretch(images, self.low, self.high)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "low": self.low, "high": self.high}
