"""Landmark-based registration to the paper's canonical frame.

The canonical frame (default 2080 high x 1600 wide, the authors' group's code) puts the
middle-finger tip centred horizontally about 100 px below the top edge and the capitate centred
horizontally about 480 px above the bottom edge; for other frame sizes these distances scale
with the height. The map keeps the aspect ratio: a similarity (isotropic scale, rotation,
translation) fixed exactly by the tip and the capitate, preceded by a reflection when the thumb
lies on the right-hand side of the tip -> capitate axis as seen for a right hand (the thumb of a
left hand in the canonical pose is on the image's right, +x).

Inputs whose pixels are not square (the 100 px RSNA images were resized from about 0.75 aspect
to 1:1) are first mapped back to square original pixels with ``original_size``; when it is
unknown the pixels are taken as square.

All functions are TensorFlow ops on batches, shared by training-data preparation and the
serving graph. Landmarks are normalised (x, y) of tip, thumb, capitate: shape (B, 6).
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf

from tf_boneage.preprocessing.warp import apply, invert_affine, scale_matrix, warp_affine

PAPER_FRAME = (2080, 1600)
TIP_FROM_TOP = 100.0 / 2080.0
CAPITATE_FROM_BOTTOM = 480.0 / 2080.0


@dataclasses.dataclass(frozen=True)
class Frame:
    """Canonical frame of ``height`` x ``width`` pixels and its two anchor points."""

    height: int = PAPER_FRAME[0]
    width: int = PAPER_FRAME[1]

    def __post_init__(self):
        if self.height < 8 or self.width < 8:
            raise ValueError(f"frame must be at least 8x8 pixels, got {self.height}x{self.width}")

    @property
    def tip(self) -> tuple[float, float]:
        return self.width / 2.0, TIP_FROM_TOP * self.height

    @property
    def capitate(self) -> tuple[float, float]:
        return self.width / 2.0, self.height * (1.0 - CAPITATE_FROM_BOTTOM)

    @property
    def size(self) -> tuple[int, int]:
        return self.height, self.width


PAPER = Frame()  # the paper's 2080 x 1600 frame (frames are immutable: safe as a default)


def square_size(image_size, original_size: tf.Tensor | None, n) -> tuple[tf.Tensor, tf.Tensor]:
    """(heights, widths), each (n,), of the square-pixel originals: ``original_size`` (n, 2)
    where known (> 0; NaN compares False), else the image size itself (square pixels)."""
    h = tf.cast(image_size[0], tf.float32)
    w = tf.cast(image_size[1], tf.float32)
    if original_size is None:
        return tf.fill([n], h), tf.fill([n], w)
    original_size = tf.cast(original_size, tf.float32)
    known = tf.reduce_all(original_size > 0, -1)
    return tf.where(known, original_size[:, 0], h), tf.where(known, original_size[:, 1], w)


def is_right_hand(points: tf.Tensor) -> tf.Tensor:
    """True where the thumb lies on a right hand's side of the tip -> capitate axis.

    ``points``: (B, 3, 2) tip, thumb, capitate in square-pixel coordinates (y down).
    """
    axis = points[:, 2] - points[:, 0]
    thumb = points[:, 1] - points[:, 0]
    return axis[:, 0] * thumb[:, 1] - axis[:, 1] * thumb[:, 0] > 0.0


def registration_matrix(
    landmarks: tf.Tensor,
    image_size: tuple[int, int] | tf.Tensor,
    frame: Frame = PAPER,
    original_size: tf.Tensor | None = None,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Forward maps (input continuous pixels -> canonical frame) and right-hand flags.

    Args:
        landmarks: float (B, 6) normalised (x, y) of middle-finger tip, thumb tip, capitate.
        image_size: (height, width) of the input images in pixels.
        frame: the canonical frame.
        original_size: optional float (B, 2) (height, width) of the original acquisition when
            the input was resized without keeping the aspect ratio; NaN / <= 0 = unknown.

    Returns:
        (forward (B, 3, 3) float32, right (B,) bool).
    """
    landmarks = tf.cast(tf.reshape(landmarks, [-1, 3, 2]), tf.float32)
    h = tf.cast(image_size[0], tf.float32)
    w = tf.cast(image_size[1], tf.float32)
    orig_h, orig_w = square_size(image_size, original_size, tf.shape(landmarks)[0])
    # input pixels -> square original pixels
    to_square = scale_matrix(orig_w / w, orig_h / h)
    pts = landmarks * tf.stack([orig_w, orig_h], -1)[:, None, :]
    right = is_right_hand(pts)
    flip = tf.where(right, -1.0, 1.0)
    pts = pts * tf.stack([flip, tf.ones_like(flip)], -1)[:, None, :]
    reflect = scale_matrix(flip, tf.ones_like(flip))
    tip, cap = pts[:, 0], pts[:, 2]
    dst_tip = tf.constant(frame.tip, tf.float32)
    dst_cap = tf.constant(frame.capitate, tf.float32)
    v_src, v_dst = cap - tip, dst_cap - dst_tip
    scale = tf.norm(v_dst) / tf.maximum(tf.norm(v_src, axis=-1), 1e-6)
    angle = tf.atan2(v_dst[1], v_dst[0]) - tf.atan2(v_src[:, 1], v_src[:, 0])
    c, s = scale * tf.cos(angle), scale * tf.sin(angle)
    tx = dst_tip[0] - (c * tip[:, 0] - s * tip[:, 1])
    ty = dst_tip[1] - (s * tip[:, 0] + c * tip[:, 1])
    zero, one = tf.zeros_like(c), tf.ones_like(c)
    similarity = tf.stack(
        [tf.stack([c, -s, tx], -1), tf.stack([s, c, ty], -1), tf.stack([zero, zero, one], -1)], 1
    )
    return similarity @ reflect @ to_square, right


def register(
    images: tf.Tensor,
    landmarks: tf.Tensor,
    frame: Frame = PAPER,
    original_size: tf.Tensor | None = None,
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Warp images (B, H, W, C) into the canonical frame.

    Returns ``(registered (B, frame.height, frame.width, C), forward (B, 3, 3), right (B,))``.
    """
    images = tf.cast(images, tf.float32)
    size = tf.shape(images)[1:3]
    forward, right = registration_matrix(landmarks, size, frame, original_size)
    registered = warp_affine(images, invert_affine(forward), frame.size)
    return registered, forward, right


def landmarks_to_frame(landmarks: tf.Tensor, forward: tf.Tensor, image_size) -> tf.Tensor:
    """Normalised landmarks (B, 2K) of the input -> continuous pixels (B, K, 2) of the frame."""
    h = tf.cast(image_size[0], tf.float32)
    w = tf.cast(image_size[1], tf.float32)
    pts = tf.reshape(tf.cast(landmarks, tf.float32), [tf.shape(landmarks)[0], -1, 2])
    return apply(forward, pts * tf.stack([w, h]))
