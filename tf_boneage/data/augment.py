"""In-graph batch augmentation: one geometric affine for images, masks and landmarks together,
plus photometric changes from Keras preprocessing layers.

Coordinates: pixel *index* coordinates have pixel centres at integers (what
``ImageProjectiveTransformV3`` samples); landmarks are normalised, ``x_norm = (x_index + 0.5) / W``
(fractions of the width / height, invariant to resizing).

The geometric augmentation draws, per image, a rotation about the image centre, an isotropic
scale, a shift and an optional horizontal mirror, builds the forward 3x3 matrix ``F`` (input
index -> output index), and warps with ``F^-1`` (``ImageProjectiveTransformV3`` maps output
points to input points: the 8 numbers ``a0, a1, a2, b0, b1, b2, c0, c1`` are the first 8 entries
of ``F^-1`` with the last one 1). Landmarks move with ``F``. Randomness is stateless: the same
``seed`` (shape (2,) int) gives the same transform on every run, wherever it runs.

Every draw is per image of the batch the seed belongs to. A replica that holds only some rows
of that batch (``tf.distribute`` splits a global batch) passes ``rows`` (:class:`Rows`: their
positions and the batch's size) and gets exactly the draws of its rows, so augmenting on the
replicas' devices inside the train step gives the tensors the ``tf.data`` pipeline would have
made (:func:`attach_rows` adds what it needs to each batch).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class Rows:
    """Which rows of the seeded batch a (replica's) batch holds: ``index`` (B,) int32 positions
    and ``total`` (scalar int32) the seeded batch's size."""

    index: tf.Tensor
    total: tf.Tensor


def uniform(shape_batch, seed, lo, hi, rows: Rows | None = None, dtype=tf.float32) -> tf.Tensor:
    """Per-image stateless uniform draws (B,) in [lo, hi): of the whole batch of
    ``shape_batch`` images, or with ``rows`` the draws of those rows of the seeded batch."""
    if rows is None:
        return tf.random.stateless_uniform([shape_batch], seed, lo, hi, dtype=dtype)
    whole = tf.random.stateless_uniform([rows.total], seed, lo, hi, dtype=dtype)
    return tf.gather(whole, rows.index)


def attach_rows(batch: dict, seed) -> dict:
    """``batch`` (a dict of (B, ...) tensors) with ``aug``: the batch's ``seed`` on every row
    (B, 2) int64, each row's ``index`` (B,) and the batch's size ``total`` on every row (B,),
    so that any split of the batch along its rows can augment itself (:func:`rows_of`)."""
    n = tf.shape(next(iter(batch.values())))[0]
    aug = {
        "seed": tf.tile(tf.cast(seed, tf.int64)[None], [n, 1]),
        "index": tf.range(n, dtype=tf.int32),
        "total": tf.fill([n], n),
    }
    return {**batch, "aug": aug}


def rows_of(aug: dict) -> tuple[tf.Tensor, Rows]:
    """``(seed (2,), rows)`` of an ``aug`` dict of :func:`attach_rows`, possibly a replica's
    share of the batch (an empty share draws nothing)."""
    seed = tf.reduce_max(aug["seed"], axis=0)
    total = tf.maximum(tf.reduce_max(aug["total"]), 0)
    return seed, Rows(tf.cast(aug["index"], tf.int32), tf.cast(total, tf.int32))


@dataclasses.dataclass(frozen=True)
class AffineRange:
    """Ranges of the geometric augmentation (rotation in degrees, scale factor, shift as a
    fraction of the image size, probability of a horizontal mirror)."""

    rotation: float = 15.0
    scale: tuple[float, float] = (0.9, 1.1)
    shift: float = 0.05
    mirror: float = 0.0

    def __post_init__(self):
        if self.rotation < 0:
            raise ValueError(f"rotation must be >= 0 degrees, got {self.rotation!r}")
        if not 0 < self.scale[0] <= self.scale[1]:
            raise ValueError(f"scale must be (low, high) with 0 < low <= high, got {self.scale!r}")
        if not 0 <= self.shift < 1:
            raise ValueError(f"shift must be in [0, 1), got {self.shift!r}")
        if not 0 <= self.mirror <= 1:
            raise ValueError(f"mirror must be a probability, got {self.mirror!r}")


def random_affine(
    batch: int, height: int, width: int, seed, ranges: AffineRange, rows: Rows | None = None
) -> tf.Tensor:
    """Forward matrices (input index -> output index), float32 (batch, 3, 3)."""
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 5)

    def draw(k, lo, hi):
        return uniform(batch, seeds[k], lo, hi, rows)

    angle = draw(0, -ranges.rotation, ranges.rotation) * (math.pi / 180.0)
    scale = draw(1, ranges.scale[0], ranges.scale[1])
    tx = draw(2, -ranges.shift, ranges.shift) * width
    ty = draw(3, -ranges.shift, ranges.shift) * height
    flip = tf.where(draw(4, 0.0, 1.0) < ranges.mirror, -1.0, 1.0)
    return affine_matrix(angle, scale, tx, ty, flip, height, width)


def affine_matrix(angle, scale, tx, ty, flip, height: int, width: int) -> tf.Tensor:
    """Forward matrices from per-image parameters (each shape (B,)): mirror ``x -> -x`` about
    the centre if ``flip == -1``, then rotate by ``angle`` (radians, clockwise on screen for
    positive values since y points down) and scale about the centre, then shift by (tx, ty)
    pixels. Returns float32 (B, 3, 3)."""
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    c, s = tf.cos(angle) * scale, tf.sin(angle) * scale
    zero, one = tf.zeros_like(c), tf.ones_like(c)
    # out = R S Flip (in - centre) + centre + t
    a00, a01, a10, a11 = c * flip, -s, s * flip, c
    b0 = cx + tx - (a00 * cx + a01 * cy)
    b1 = cy + ty - (a10 * cx + a11 * cy)
    rows = [
        tf.stack([a00, a01, b0], -1),
        tf.stack([a10, a11, b1], -1),
        tf.stack([zero, zero, one], -1),
    ]
    return tf.cast(tf.stack(rows, 1), tf.float32)


def projective_params(forward: tf.Tensor) -> tf.Tensor:
    """The 8-number transforms of ``ImageProjectiveTransformV3`` for forward matrices (B, 3, 3)."""
    inverse = tf.linalg.inv(forward)
    inverse = inverse / inverse[:, 2:3, 2:3]
    return tf.reshape(inverse, [-1, 9])[:, :8]


def warp(images: tf.Tensor, forward: tf.Tensor, interpolation: str = "BILINEAR") -> tf.Tensor:
    """Warp float images (B, H, W, C) by forward matrices; outside is filled with 0."""
    shape = tf.shape(images)[1:3]
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images,
        transforms=projective_params(forward),
        output_shape=shape,
        fill_value=0.0,
        interpolation=interpolation,
        fill_mode="CONSTANT",
    )


def transform_points(points: tf.Tensor, forward: tf.Tensor, height: int, width: int) -> tf.Tensor:
    """Move normalised points (B, K*2) = (x0, y0, x1, y1, ...) by forward matrices (B, 3, 3)."""
    size = tf.constant([width, height], tf.float32)
    xy = tf.reshape(points, [tf.shape(points)[0], -1, 2]) * size - 0.5
    moved = tf.einsum("bij,bkj->bki", forward[:, :2, :2], xy) + forward[:, None, :2, 2]
    return tf.reshape((moved + 0.5) / size, tf.shape(points))


@dataclasses.dataclass(frozen=True)
class Degradation:
    """How often a training crop is made to look like a film taken or resampled badly.

    ``underexposed``: probability that a crop looks as if its film had been darkened until a
    share, uniform in ``[0, max_black]``, of its hand clipped to black (the chain's histogram
    equalisation then maps the clipped pixels to 0 and stretches the rest:
    :func:`underexpose`). ``blurred``: probability of a blend, uniform in ``[0, 1]``, between
    the crop and its binomial blur (what one or two bilinear resamplings of a rotated film
    do to the few pixels a growth plate spans: :func:`blur`). ``blur_scale``: (rows, cols)
    factor by which the crop was enlarged from the film's frame to the network's input; the
    blur is 3x3 at 1 and widens so that it stays the same blur of the frame (variance 0.5 px
    of the frame, :func:`blur_orders`). ``noisy``: probability of noise inside the hand, each
    pixel uniform in +/- an amplitude drawn uniform in ``[0, max_noise]`` (a share of the grey
    range): what a film's own small changes (JPEG, 8-bit rounding, one resampling) become after
    the chain's histogram equalisation stretches its few grey levels (:func:`add_noise`).
    """

    underexposed: float = 0.0
    max_black: float = 0.5
    blurred: float = 0.0
    blur_scale: tuple[float, float] = (1.0, 1.0)
    noisy: float = 0.0
    max_noise: float = 8.0 / 255.0

    def __post_init__(self):
        if not 0 <= self.max_noise < 1:
            raise ValueError(f"max_noise must be in [0, 1), got {self.max_noise!r}")
        for name in ("underexposed", "blurred", "noisy"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be a probability, got {getattr(self, name)!r}")
        if not 0 <= self.max_black < 1:
            raise ValueError(f"max_black must be in [0, 1), got {self.max_black!r}")
        if len(self.blur_scale) != 2 or min(self.blur_scale) <= 0:
            raise ValueError(f"blur_scale must be (rows, cols) > 0, got {self.blur_scale!r}")

    @property
    def active(self) -> bool:
        return self.underexposed > 0 or self.blurred > 0 or (self.noisy > 0 and self.max_noise > 0)


def underexpose(images: tf.Tensor, black: tf.Tensor) -> tf.Tensor:
    """Equalised crops (B, H, W, C) in [0, 1], 0 outside the hand, as if the share ``black``
    (B,) in [0, 1) of their hand had been clipped to black before the equalisation: a pixel
    of equalised level ``e`` (the share of the hand darker than it) goes to
    ``max(0, (e - black) / (1 - black))``, the background stays 0."""
    q = tf.reshape(tf.cast(black, images.dtype), [-1, 1, 1, 1])
    return tf.nn.relu(images - q) / (1.0 - q)


def blur_orders(scale: tuple[float, float]) -> tuple[int, int]:
    """Binomial orders (rows, cols) that blur an image enlarged ``scale`` times from its
    frame as the 3x3 binomial ([1, 2, 1] / 4, variance 0.5 px) blurs the frame: order ``n``
    has variance ``n / 4``, so ``n = 2 s^2`` rounded to an even order (a centred kernel),
    at least 2. E.g. 2.17 -> 10, 1.25 -> 4, 1 -> 2."""
    return tuple(max(2, 2 * round(s * s)) for s in scale)


def binomial_taps(order: int) -> np.ndarray:
    """The ``order + 1`` binomial taps C(order, k) / 2^order (float64, sum 1)."""
    return np.array([math.comb(order, k) for k in range(order + 1)], np.float64) / 2.0**order


def blur(images: tf.Tensor, amount: tf.Tensor, orders: tuple[int, int] = (2, 2)) -> tf.Tensor:
    """Blend (B, H, W, C) images with their binomial blur (orders (rows, cols); (2, 2) is
    the 3x3 [1, 2, 1] / 4 each way; zero padding): ``(1 - amount) * image + amount *
    blurred`` with ``amount`` (B,) in [0, 1]."""
    rows, cols = (tf.constant(binomial_taps(n), images.dtype) for n in orders)
    kernel = (rows[:, None] * cols[None, :])[:, :, None, None]
    channels = int(images.shape[-1])
    blurred = tf.nn.depthwise_conv2d(
        images, tf.tile(kernel, [1, 1, channels, 1]), [1, 1, 1, 1], "SAME"
    )
    a = tf.reshape(tf.cast(amount, images.dtype), [-1, 1, 1, 1])
    return images + a * (blurred - images)


def add_noise(images: tf.Tensor, amplitude: tf.Tensor, seed, rows: Rows | None = None):
    """Equalised crops (B, H, W, C) in [0, 1], 0 outside the hand, with each hand pixel moved
    by uniform noise in +/- ``amplitude`` (B,) and clipped to [0, 1]; the background stays 0
    (the hand's outline does not move). Stateless; with ``rows``, those rows' noise of the
    seeded batch (each row's noise does not depend on how the batch is split)."""
    shape = tf.shape(images)
    if rows is None:
        unit = tf.random.stateless_uniform(shape, seed, -1.0, 1.0, dtype=images.dtype)
    else:
        whole = tf.concat([[rows.total], shape[1:]], 0)
        unit = tf.gather(
            tf.random.stateless_uniform(whole, seed, -1.0, 1.0, images.dtype), rows.index
        )
    a = tf.reshape(tf.cast(amplitude, images.dtype), [-1, 1, 1, 1])
    moved = tf.clip_by_value(images + a * unit, 0.0, 1.0)
    return tf.where(images > 0, moved, images)


def random_degradation(
    images: tf.Tensor, seed, degrade: Degradation, rows: Rows | None = None
) -> tf.Tensor:
    """:func:`underexpose`, :func:`blur` and :func:`add_noise` each image with ``degrade``'s
    probabilities and uniform strengths (stateless: the same ``seed``, shape (2,) int, gives the same result)."""
    batch = tf.shape(images)[0]
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 4)

    def draw(k, hi=1.0):
        return uniform(batch, seeds[k], 0.0, hi, rows)

    if degrade.underexposed > 0:
        black = draw(1, degrade.max_black) * tf.cast(draw(0) < degrade.underexposed, "float32")
        images = underexpose(images, black)
    if degrade.blurred > 0:
        amount = draw(3) * tf.cast(draw(2) < degrade.blurred, "float32")
        images = blur(images, amount, blur_orders(degrade.blur_scale))
    if degrade.noisy > 0 and degrade.max_noise > 0:  # its own seeds: the draws above unchanged
        noise = tf.random.experimental.stateless_split(
            tf.random.experimental.stateless_fold_in(tf.cast(seed, tf.int64), 13), 3
        )
        on = uniform(batch, noise[0], 0.0, 1.0, rows) < degrade.noisy
        amplitude = uniform(batch, noise[1], 0.0, degrade.max_noise, rows) * tf.cast(on, "float32")
        images = add_noise(images, amplitude, noise[2], rows)
    return images


#: the default range of the photometric brightness shift (a share of the grey range)
BRIGHTNESS = 0.1


#: the default range of the photometric contrast factor (1 +/- this)
CONTRAST = 0.2


def random_photometric(
    images: tf.Tensor, seed, brightness: float, contrast: float, rows: Rows | None = None
) -> tf.Tensor:
    """Exposure changes of images (B, H, W, C) in [0, 1], per image: a brightness shift
    uniform in +/- ``brightness`` of the grey range, then the contrast scaled about the
    image's mean by a factor uniform in 1 +/- ``contrast``, each clipped to [0, 1] (a film
    shifted down clips its darkest pixels to black, as an under-exposed one). Stateless."""
    batch = tf.shape(images)[0]
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 2)
    shape = [-1, 1, 1, 1]
    if brightness > 0:
        delta = uniform(batch, seeds[0], -brightness, brightness, rows)
        images = tf.clip_by_value(images + tf.reshape(delta, shape), 0.0, 1.0)
    if contrast > 0:
        factor = tf.reshape(uniform(batch, seeds[1], 1.0 - contrast, 1.0 + contrast, rows), shape)
        mean = tf.reduce_mean(images, axis=[1, 2], keepdims=True)
        images = tf.clip_by_value((images - mean) * factor + mean, 0.0, 1.0)
    return images


class BatchAugmenter:
    """Augments a batch dict in graph: ``image`` (B, H, W, 1) and, when present, ``mask``
    (B, H, W, 1, nearest-neighbour) and ``landmarks`` (B, 6, normalised) with one matrix each.
    Stateless: a batch and its seed give the same tensors in a ``tf.data`` map or on a
    replica's device in the train step (with ``rows``: that replica's share of the batch).

    Args:
        ranges: geometric ranges; ``None`` for no geometric augmentation.
        photometric: brightness / contrast changes of ``image`` (:func:`random_photometric`).
        brightness: the brightness shift's range, a share of the grey range.
        contrast: the contrast factor's range (1 +/- ``contrast``).
        degrade: under-exposure and blur of ``image`` (:func:`random_degradation`), after the
            geometric warp and before the photometric changes; ``None`` for none.
    """

    def __init__(
        self,
        ranges: AffineRange | None = AffineRange(),
        photometric=True,
        degrade: Degradation | None = None,
        brightness: float = BRIGHTNESS,
        contrast: float = CONTRAST,
    ):
        self.ranges = ranges
        self.degrade = degrade if degrade is not None and degrade.active else None
        self.brightness = float(brightness) if photometric else 0.0
        self.contrast = float(contrast) if photometric else 0.0

    def __call__(self, batch: dict, seed, rows: Rows | None = None) -> dict:
        out = dict(batch)
        image = batch["image"]
        height, width = int(image.shape[1]), int(image.shape[2])
        seed = tf.cast(seed, tf.int64)
        if self.ranges is not None:
            forward = random_affine(tf.shape(image)[0], height, width, seed, self.ranges, rows)
            out["image"] = warp(image, forward)
            if "mask" in batch:
                out["mask"] = warp(batch["mask"], forward, "NEAREST")
            if "landmarks" in batch:
                out["landmarks"] = transform_points(batch["landmarks"], forward, height, width)
        if self.degrade is not None:
            twin = tf.random.experimental.stateless_fold_in(seed, 7)
            out["image"] = random_degradation(out["image"], twin, self.degrade, rows)
        if self.brightness > 0 or self.contrast > 0:
            light = tf.random.experimental.stateless_fold_in(seed, 11)
            out["image"] = random_photometric(
                out["image"], light, self.brightness, self.contrast, rows
            )
        out["image"] = tf.clip_by_value(out["image"], 0.0, 1.0)
        return out
