"""VGG-style landmark regressor: (x, y) of the middle-finger tip, thumb tip and capitate."""

from __future__ import annotations

import keras

from tf_boneage.models.layers import PACKAGE
from tf_boneage.models.unet import _check_size


def conv_elu_bn(x, filters: int, name: str, kernel: int = 3):
    """Convolution -> ELU -> batch norm (the order of the paper and the authors' code)."""
    x = keras.layers.Conv2D(filters, kernel, padding="same", name=f"{name}_conv")(x)
    x = keras.layers.Activation("elu", name=f"{name}_elu")(x)
    return keras.layers.BatchNormalization(name=f"{name}_bn")(x)


def vgg_block(x, filters: int, name: str):
    """Two 3x3 conv-ELU-BN units, then 2x2 max pooling."""
    x = conv_elu_bn(x, filters, f"{name}_1")
    x = conv_elu_bn(x, filters, f"{name}_2")
    return keras.layers.MaxPooling2D(2, name=f"{name}_pool")(x)


@keras.saving.register_keras_serializable(package=PACKAGE)
class LandmarkNet(keras.Model):
    """VGG-ELU regressor of the paper's three landmarks.

    Args:
        input_shape: (height, width, channels), multiples of ``2**len(filters)``.
        filters: filters of each VGG block.
        dense_units: width of the hidden dense layer; ``dropout`` before it and the output.

    Input: float (B, H, W, C) in [0, 1]. Output: float32 (B, 6) = (x, y) of middle-finger tip,
    thumb tip, capitate in normalised image coordinates (fractions of width / height). Train
    with MSE and Adam, as the paper.

    Example:
        >>> import numpy as np
        >>> from tf_boneage.models import LandmarkNet
        >>> net = LandmarkNet((96, 96, 1), filters=(16, 32, 64, 128, 128))
        >>> net(np.zeros((1, 96, 96, 1), "float32")).shape  # tip, thumb, capitate (x, y)
        TensorShape([1, 6])
    """

    def __init__(
        self,
        input_shape=(256, 256, 1),
        filters=(32, 64, 128, 256, 256),
        dense_units=512,
        dropout=0.3,
        **kwargs,
    ):
        filters = tuple(int(f) for f in filters)
        if not filters or min(filters) < 1:
            raise ValueError(f"filters must be a non-empty list of positive ints, got {filters!r}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        if dense_units < 1:
            raise ValueError(f"dense_units must be >= 1, got {dense_units!r}")
        input_shape = tuple(input_shape)
        _check_size(input_shape, 2 ** len(filters), "LandmarkNet")
        inputs = keras.Input(input_shape, name="image")
        x = inputs
        for k, f in enumerate(filters):
            x = vgg_block(x, f, f"block{k + 1}")
        x = keras.layers.Flatten(name="flatten")(x)
        x = keras.layers.Dropout(dropout, name="head_dropout1")(x)
        x = keras.layers.Dense(dense_units, activation="elu", name="head_dense")(x)
        x = keras.layers.Dropout(dropout, name="head_dropout2")(x)
        # start at the image centre with small weights: Adam moves a bias by about the
        # learning rate per step, so a zero bias needs thousands of steps to reach 0.5
        outputs = keras.layers.Dense(
            6,
            dtype="float32",
            name="landmarks",
            kernel_initializer=keras.initializers.VarianceScaling(0.01),
            bias_initializer=keras.initializers.Constant(0.5),
        )(x)
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self.input_shape_, self.filters = input_shape, filters
        self.dense_units, self.dropout = int(dense_units), float(dropout)

    def get_config(self):
        return {
            "input_shape": self.input_shape_,
            "filters": self.filters,
            "dense_units": self.dense_units,
            "dropout": self.dropout,
            "name": self.name,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)
