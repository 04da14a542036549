"""U-Net for hand segmentation (contracting + symmetric expanding path, skip connections,
batch norm), sigmoid mask output in float32."""

from __future__ import annotations

import keras

from tf_boneage.models.layers import PACKAGE, GreyStretch


def _check_size(input_shape, multiple: int, what: str):
    if len(input_shape) != 3:
        raise ValueError(f"input_shape must be (height, width, channels), got {input_shape!r}")
    h, w, _ = input_shape
    if h % multiple or w % multiple or h < multiple or w < multiple:
        raise ValueError(f"{what}: input {h}x{w} must be a positive multiple of {multiple}")


def conv_bn_relu(x, filters: int, name: str):
    """3x3 convolution -> batch norm -> ReLU."""
    x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
    return keras.layers.Activation("relu", name=f"{name}_relu")(x)


def double_conv(x, filters: int, name: str):
    """Two 3x3 conv-BN-ReLU units: the U-Net's unit on each level."""
    x = conv_bn_relu(x, filters, f"{name}_1")
    return conv_bn_relu(x, filters, f"{name}_2")


@keras.saving.register_keras_serializable(package=PACKAGE)
class UNet(keras.Model):
    """U-Net with batch norm for binary hand masks.

    Args:
        input_shape: (height, width, channels); height and width multiples of ``2**depth``.
        depth: number of 2x down-samplings (levels below the input level).
        base_filters: filters on the first level, doubled on each level down.
        normalize: a :class:`~tf_boneage.models.layers.GreyStretch` first (exposure
            normalised in the model: a darker or flatter film segments as a normal one).

    Input: float (B, H, W, C) images in [0, 1]. Output: float32 (B, H, W, 1) mask
    probabilities (sigmoid).

    The hand segmentation of Iglovikov et al. (DLMIA 2018), after Ronneberger et al. (MICCAI
    2015); trained with ``BCEJaccardLoss`` (BCE - log Jaccard).

    Example:
        >>> import numpy as np
        >>> from tf_boneage.models import UNet
        >>> net = UNet((96, 96, 1), depth=4, base_filters=16)
        >>> net(np.zeros((2, 96, 96, 1), "float32")).shape
        TensorShape([2, 96, 96, 1])
    """

    def __init__(
        self, input_shape=(256, 256, 1), depth=4, base_filters=16, normalize=False, **kwargs
    ):
        if not isinstance(depth, int) or not 1 <= depth <= 7:
            raise ValueError(f"depth must be an integer in 1..7, got {depth!r}")
        if not isinstance(base_filters, int) or base_filters < 1:
            raise ValueError(f"base_filters must be a positive integer, got {base_filters!r}")
        input_shape = tuple(input_shape)
        _check_size(input_shape, 2**depth, "UNet")
        inputs = keras.Input(input_shape, name="image")
        x, skips = inputs, []
        if normalize:
            x = GreyStretch(name="exposure")(x)
        for level in range(depth):
            x = double_conv(x, base_filters * 2**level, f"down{level}")
            skips.append(x)
            x = keras.layers.MaxPooling2D(2, name=f"down{level}_pool")(x)
        x = double_conv(x, base_filters * 2**depth, "bottleneck")
        for level in reversed(range(depth)):
            filters = base_filters * 2**level
            x = keras.layers.Conv2DTranspose(filters, 2, strides=2, name=f"up{level}_upconv")(x)
            x = keras.layers.Concatenate(name=f"up{level}_skip")([x, skips[level]])
            x = double_conv(x, filters, f"up{level}")
        outputs = keras.layers.Conv2D(1, 1, activation="sigmoid", dtype="float32", name="mask")(x)
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self.input_shape_ = input_shape
        self.depth = depth
        self.base_filters = base_filters
        self.normalize = bool(normalize)

    def get_config(self):
        return {
            "input_shape": self.input_shape_,
            "depth": self.depth,
            "base_filters": self.base_filters,
            "normalize": self.normalize,
            "name": self.name,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def at_size(model: keras.Model, size: int) -> keras.Model:
    """The same fully convolutional network (its layers cloned, the weights copied) for square
    inputs of ``size``: a Keras functional model's input is fixed to one size. For a
    :class:`UNet`, ``size`` must be a multiple of ``2**depth``. Used to score orientation
    candidates at a small size (:meth:`~tf_boneage.preprocessing.chain.Preprocessor.orient`)."""
    size = int(size)
    if isinstance(model, UNet):
        _check_size((size, size, 1), 2**model.depth, "UNet")
    x = keras.Input((size, size, int(model.input_shape[-1])), name="image")
    copy = keras.models.clone_model(model, input_tensors=x)
    copy.set_weights(model.get_weights())
    return copy
