"""Regions of the registered hand (paper): A = whole hand, B = carpal bones, C = metacarpals and
proximal phalanges.

Boxes are fractions of the canonical frame, ``(y0, x0, y1, x1)``, so they hold for any frame
size. B and C were set from the 21-point poses of the *training* part of the pose-annotated
images registered with their annotated landmarks (``training/region_boxes.py`` prints the
statistics): B spans the carpus from just distal of the third metacarpal base to past the
annotated wrist point, C from there to past the proximal interphalangeal joints of fingers 2-5.
Registered pose percentiles (fractions of the frame, p5 / p50 / p95): capitate proxy y 0.769,
wrist y 0.898 / 0.905 / 0.912, MCP 2-5 y 0.437 / 0.476 / 0.556, PIP 2-5 y 0.246 / 0.294 / 0.436,
MCP and PIP 2-5 x 0.192 / 0.461 / 0.705, thumb CMC x 0.671 / 0.697 / 0.726, thumb MCP x
0.786 / 0.840 / 0.902. So B = y 0.68-0.96 (metacarpal bases to past the wrist point), x
0.27-0.75 (ulnar border to the thumb's CMC joint); C = y 0.22-0.78 (carpometacarpal joints to
past the PIP joints), x 0.12-0.92 (fingers 2-5 and the thumb's metacarpal and MCP joint; the
thumb's interphalangeal joint, x 0.83-1.03, often lies outside C and even outside the
2080 x 1600 frame). They are checked (never tuned) against the expert ossification boxes of
``../shared/data/ossification_roi`` in ``RESULTS.md``.

Crops are taken straight from the input image by composing the registration with the box map:
one bilinear resampling, with the same gather warp as registration.
"""

from __future__ import annotations

import tensorflow as tf

from tf_boneage.preprocessing.registration import PAPER, Frame
from tf_boneage.preprocessing.warp import invert_affine, warp_affine

REGIONS = {
    "A": (0.0, 0.0, 1.0, 1.0),
    "B": (0.68, 0.27, 0.96, 0.75),
    "C": (0.22, 0.12, 0.78, 0.92),
}


def box_pixels(region: str, frame: Frame = PAPER) -> tuple[float, float, float, float]:
    """(y0, x0, y1, x1) of ``region`` in continuous pixels of ``frame``."""
    if region not in REGIONS:
        raise ValueError(f"unknown region {region!r}; choose from {sorted(REGIONS)}")
    y0, x0, y1, x1 = REGIONS[region]
    return y0 * frame.height, x0 * frame.width, y1 * frame.height, x1 * frame.width


def crop_matrix(region: str, size: tuple[int, int], frame: Frame = PAPER) -> tf.Tensor:
    """(3, 3) map from crop output coordinates (``size`` = (h, w)) to frame coordinates."""
    y0, x0, y1, x1 = box_pixels(region, frame)
    h, w = size
    return tf.constant(
        [[(x1 - x0) / w, 0.0, x0], [0.0, (y1 - y0) / h, y0], [0.0, 0.0, 1.0]], tf.float32
    )


def extract(
    images: tf.Tensor, forward: tf.Tensor, region: str, size: tuple[int, int], frame: Frame = PAPER
) -> tf.Tensor:
    """Crop ``region`` at ``size`` (h, w) from input images (B, H, W, C) registered by
    ``forward`` (B, 3, 3): float32 (B, h, w, C)."""
    inverse = invert_affine(forward) @ crop_matrix(region, size, frame)[None]
    return warp_affine(tf.cast(images, tf.float32), inverse, size)


def inside(points: tf.Tensor, region: str, frame: Frame = PAPER) -> tf.Tensor:
    """Whether frame points (..., 2) as (x, y) lie inside ``region``: bool (...)."""
    y0, x0, y1, x1 = box_pixels(region, frame)
    x, y = points[..., 0], points[..., 1]
    return (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)
