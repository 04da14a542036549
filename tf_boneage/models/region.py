"""Region networks: the paper's six-block "custom VGG" with a regression or a classification
(softmax + binning) head, optionally with sex as an input.

Block choice: by default the block of the authors' public code, conv3x3 -> ELU -> BN ->
conv1x1 -> ELU -> BN -> max-pool(3, stride 2) (``block="authors"``); ``block="paper"`` is the
paper text's two 3x3 conv-ELU-BN units and a 2x2 max-pool. Pooling padding is ``"valid"`` as in
the authors' Keras code (500x375 -> 6x4 after six blocks); use ``pool_padding="same"`` for small
inputs such as the 100 px data.

Heads (both output float32 months, shape (B, 1)):

* ``regression``: Dense(1, tanh) gives y in [-1, 1]; :class:`UnitToMonths` maps
  ``age = 120 * (1 + y)``.
* ``classification``: Dense(240, softmax) over months 1..240 followed by :class:`ExpectedValue`;
  :func:`probability_model` exposes the 240-vector for uncertainty.

Sex: train the same network on one sex (sex-specific models), or set ``sex_input=True`` to add a
second input ``male`` (B, 1) in {0, 1}, embedded by a small dense layer and joined to the
flattened features before the dense head. Loss: MAE in months; Adam.
"""

from __future__ import annotations

import keras

from tf_boneage.models.landmarks import conv_elu_bn
from tf_boneage.models.layers import PACKAGE, ExpectedValue, UnitToMonths

PAPER_FILTERS = (32, 64, 128, 128, 256, 384)
HEADS = ("regression", "classification")
BLOCKS = ("authors", "paper")


def authors_block(x, filters: int, name: str, pool_padding: str):
    """conv3x3-ELU-BN -> conv1x1-ELU-BN -> max-pool(3, stride 2)."""
    x = conv_elu_bn(x, filters, f"{name}_3x3", kernel=3)
    x = conv_elu_bn(x, filters, f"{name}_1x1", kernel=1)
    return keras.layers.MaxPooling2D(3, strides=2, padding=pool_padding, name=f"{name}_pool")(x)


def paper_block(x, filters: int, name: str, pool_padding: str):
    """Two conv3x3-ELU-BN units -> max-pool(2)."""
    x = conv_elu_bn(x, filters, f"{name}_3x3a")
    x = conv_elu_bn(x, filters, f"{name}_3x3b")
    return keras.layers.MaxPooling2D(2, padding=pool_padding, name=f"{name}_pool")(x)


def _spatial_after(size: int, blocks: int, block: str, padding: str) -> int:
    for _ in range(blocks):
        if block == "authors":
            size = (size - 1) // 2 + 1 if padding == "same" else (size - 3) // 2 + 1
        else:
            size = -(-size // 2) if padding == "same" else size // 2
        if size < 1:
            return 0
    return size


@keras.saving.register_keras_serializable(package=PACKAGE)
class RegionNet(keras.Model):
    """Bone-age network for one region (A, B or C) of the registered hand.

    Args:
        input_shape: (height, width, channels); the authors used (500, 375, 1).
        head: ``"regression"`` or ``"classification"``.
        sex_input: add the ``male`` input.
        block: ``"authors"`` (default) or ``"paper"``; see the module docstring.
        filters: filters of the six blocks.
        dense_units: width of the two dense layers (2048).
        dropout: dropout before each dense layer (0.3).
        num_bins: months in the classification head (240).
        pool_padding: ``"valid"`` (authors) or ``"same"``.

    Inputs: ``image`` float (B, H, W, C) in [0, 1] (and ``male`` (B, 1) with ``sex_input``).
    Output: float32 (B, 1) bone age in months. The classification head is a 240-bin softmax
    read out as its expected value by the registered ``ExpectedValue`` layer.

    Example:
        >>> import numpy as np
        >>> from tf_boneage.models import RegionNet
        >>> net = RegionNet((48, 64, 1), head="classification", pool_padding="same",
        ...                 filters=(16, 32, 64, 64, 128, 192), dense_units=512)
        >>> net(np.zeros((2, 48, 64, 1), "float32")).shape  # months
        TensorShape([2, 1])
    """

    def __init__(
        self,
        input_shape=(500, 375, 1),
        head="regression",
        sex_input=False,
        block="authors",
        filters=PAPER_FILTERS,
        dense_units=2048,
        dropout=0.3,
        num_bins=240,
        pool_padding="valid",
        **kwargs,
    ):
        if head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {head!r}")
        if block not in BLOCKS:
            raise ValueError(f"block must be one of {BLOCKS}, got {block!r}")
        if pool_padding not in ("valid", "same"):
            raise ValueError(f"pool_padding must be 'valid' or 'same', got {pool_padding!r}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        if dense_units < 1:
            raise ValueError(f"dense_units must be >= 1, got {dense_units!r}")
        filters = tuple(int(f) for f in filters)
        input_shape = tuple(input_shape)
        if len(input_shape) != 3:
            raise ValueError(f"input_shape must be (height, width, channels), got {input_shape!r}")
        for side in input_shape[:2]:
            if _spatial_after(side, len(filters), block, pool_padding) < 1:
                raise ValueError(
                    f"input {input_shape[0]}x{input_shape[1]} is too small for "
                    f"{len(filters)} {block} blocks with {pool_padding!r} pooling; use "
                    "pool_padding='same' or a larger input"
                )
        block_fn = authors_block if block == "authors" else paper_block
        image = keras.Input(input_shape, name="image")
        inputs = {"image": image}
        x = image
        for k, f in enumerate(filters):
            x = block_fn(x, f, f"block{k + 1}", pool_padding)
        x = keras.layers.Flatten(name="flatten")(x)
        if sex_input:
            male = keras.Input((1,), name="male")
            inputs["male"] = male
            sex = keras.layers.Dense(16, activation="elu", name="sex_embedding")(male)
            x = keras.layers.Concatenate(name="join_sex")([x, sex])
        for k in (1, 2):
            x = keras.layers.Dropout(dropout, name=f"head_dropout{k}")(x)
            x = keras.layers.Dense(dense_units, activation="elu", name=f"head_dense{k}")(x)
        # small final weights: start at 120 months (regression) or a uniform distribution
        # (classification) instead of a saturated tanh / a peaked softmax
        small = keras.initializers.VarianceScaling(0.01)
        if head == "regression":
            y = keras.layers.Dense(
                1, activation="tanh", dtype="float32", name="unit_age", kernel_initializer=small
            )(x)
            outputs = UnitToMonths(120.0, dtype="float32", name="boneage")(y)
        else:
            logits = keras.layers.Dense(num_bins, name="bin_logits", kernel_initializer=small)(x)
            probs = keras.layers.Activation("softmax", dtype="float32", name="probabilities")(
                logits
            )
            outputs = ExpectedValue(num_bins, 1.0, dtype="float32", name="boneage")(probs)
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self.config_ = {
            "input_shape": input_shape,
            "head": head,
            "sex_input": bool(sex_input),
            "block": block,
            "filters": filters,
            "dense_units": int(dense_units),
            "dropout": float(dropout),
            "num_bins": int(num_bins),
            "pool_padding": pool_padding,
        }

    def get_config(self):
        return {**self.config_, "name": self.name}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def probability_model(model: keras.Model) -> keras.Model:
    """A model sharing ``model``'s weights that outputs the 240 bin probabilities (B, 240)
    of a classification-head :class:`RegionNet`."""
    try:
        probs = model.get_layer("probabilities").output
    except ValueError:
        raise ValueError(f"{model.name} has no classification head (no 'probabilities')") from None
    return keras.Model(model.inputs, probs, name=f"{model.name}_probabilities")


def feature_model(model: keras.Model, min_size: int = 4) -> tuple[keras.Model, str]:
    """A model sharing ``model``'s weights that outputs ``[features, age]`` for Grad-CAM.

    ``features`` (B, h, w, C) is the output of the deepest block whose map is at least
    ``min_size`` pixels on both sides (the last block when none is): at 100 px the last of six
    blocks is 2 x 2, too coarse to show which bones drove the estimate. ``age`` (B, 1) is the
    model's own output in months. Returns the model and the name of the feature layer.
    """
    pools = [la for la in model.layers if la.name.startswith("block") and la.name.endswith("_pool")]
    if not pools:
        raise ValueError(f"{model.name} has no block*_pool layers to take Grad-CAM features from")
    chosen = pools[-1]
    for layer in reversed(pools):
        h, w = layer.output.shape[1:3]
        if h is not None and w is not None and min(h, w) >= min_size:
            chosen = layer
            break
    outputs = [chosen.output, model.output]
    return keras.Model(model.inputs, outputs, name=f"{model.name}_gradcam"), chosen.name
