"""Orientation classifier: which of the eight orientations (four quarter turns, normal or
inverted polarity) a film is in, from a small copy of it.

Classes follow :data:`tf_boneage.preprocessing.chain.CANDIDATES`: class ``k`` in 0-3 is an
upright film turned ``k`` quarter turns counter-clockwise (``np.rot90(film, k)``), class
``4 + k`` the same film inverted (a MONOCHROME1 film stored without its inversion). The chain
turns a film of class ``c`` back by ``-(c % 4)`` quarter turns and inverts it back when
``c >= 4``. A mirrored film (a right hand) is the same class as the unmirrored one: the
registration handles mirroring.
"""

from __future__ import annotations

import keras

from tf_boneage.models.landmarks import conv_elu_bn
from tf_boneage.models.layers import PACKAGE
from tf_boneage.models.unet import _check_size

#: the eight orientation classes (see the module docstring)
CLASSES = 8


@keras.saving.register_keras_serializable(package=PACKAGE)
class OrientationNet(keras.Model):
    """A small conv-ELU-BN classifier of the eight orientations.

    Args:
        input_shape: (s, s, 1), a multiple of ``2**len(filters)``.
        filters: filters of each block (one 3x3 conv-ELU-BN unit, then 2x2 max pooling).
        dropout: before the output layer.

    Input: float (B, s, s, 1) in [0, 1], the film squashed to a square. Output: float32
    (B, 8) class probabilities (softmax).

    Example:
        >>> import numpy as np
        >>> from tf_boneage.models import OrientationNet
        >>> OrientationNet((64, 64, 1))(np.zeros((1, 64, 64, 1), "float32")).shape
        TensorShape([1, 8])
    """

    def __init__(self, input_shape=(64, 64, 1), filters=(16, 32, 64, 128), dropout=0.2, **kwargs):
        filters = tuple(int(f) for f in filters)
        if not filters or min(filters) < 1:
            raise ValueError(f"filters must be a non-empty list of positive ints, got {filters!r}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        input_shape = tuple(input_shape)
        if input_shape[0] != input_shape[1]:
            raise ValueError(f"OrientationNet: a square input, got {input_shape!r}")
        _check_size(input_shape, 2 ** len(filters), "OrientationNet")
        inputs = keras.Input(input_shape, name="image")
        x = inputs
        for k, f in enumerate(filters):
            x = conv_elu_bn(x, f, f"block{k + 1}")
            x = keras.layers.MaxPooling2D(2, name=f"block{k + 1}_pool")(x)
        # the whole film's layout matters (where the fingers point): flatten, not global pooling
        x = keras.layers.Flatten(name="flatten")(x)
        x = keras.layers.Dropout(dropout, name="head_dropout")(x)
        outputs = keras.layers.Dense(
            CLASSES, activation="softmax", dtype="float32", name="orientation"
        )(x)
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self.input_shape_, self.filters, self.dropout = input_shape, filters, float(dropout)

    def get_config(self):
        return {
            "input_shape": self.input_shape_,
            "filters": self.filters,
            "dropout": self.dropout,
            "name": self.name,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)
