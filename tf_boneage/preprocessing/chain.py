"""The whole preprocessing chain of the paper as one TensorFlow module:

image -> U-Net mask -> cleanup -> background removed -> histogram-equalised -> landmarks ->
registration to the canonical frame -> regions A, B, C, plus QC numbers.

The same object serves the offline cache (``tf_boneage.preprocessing.cache``), the training
scripts and the exported serving graph, so training data and serving never drift apart.
"""

from __future__ import annotations

import dataclasses

import keras
import tensorflow as tf

import tf_boneage.models  # noqa: F401  (registers the custom classes for load_model)
from tf_boneage.preprocessing import contrast, mask, regions, registration, warp

#: Plausibility checks of the landmarks (in square original pixels).
THUMB_RATIO = (0.3, 1.2)  # |thumb - capitate| / |tip - capitate|
AXIS_FRACTION = (0.25, 1.3)  # |tip - capitate| / image height


@dataclasses.dataclass
class ChainConfig:
    """Sizes of the chain: the U-Net's and the landmark net's square inputs, the canonical
    frame, and the output size (h, w) of each region crop."""

    unet_size: int = 96
    landmark_size: int = 96
    frame: registration.Frame = dataclasses.field(default_factory=registration.Frame)
    region_sizes: dict = dataclasses.field(
        default_factory=lambda: {"A": (104, 80), "B": (48, 64), "C": (64, 72)}
    )


class Preprocessor(tf.Module):
    """Runs the chain on a batch of decoded images (B, H, W, 1) float32 in [0, 1].

    Args:
        unet: segmentation model, input (unet_size, unet_size, 1).
        landmark_model: landmark model, input (landmark_size, landmark_size, 1), or ``None``
            to stop after contrast (landmarks then come from the caller).
        config: sizes.
    """

    def __init__(
        self,
        unet: keras.Model,
        landmark_model: keras.Model | None = None,
        config: ChainConfig | None = None,
    ):
        super().__init__(name="preprocessor")
        self.unet = unet
        self.landmark_model = landmark_model
        self.config = config or ChainConfig()

    def segment(self, images: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """(clean masks at the U-Net's size (B, s, s, 1), probabilities (B, s, s, 1))."""
        probs = tf.cast(self.unet(self.unet_input(images), training=False), tf.float32)
        return mask.clean_mask(probs), probs

    def unet_input(self, images: tf.Tensor) -> tf.Tensor:
        """The U-Net's input: images at (unet_size, unet_size)."""
        s = self.config.unet_size
        return warp.resize(images, (s, s))

    def enhance(self, images: tf.Tensor, masks: tf.Tensor) -> tf.Tensor:
        """Background removed and equalised inside the hand, at the images' size."""
        return contrast.equalize(mask.remove_background(images, masks), masks)

    def landmark_input(self, enhanced: tf.Tensor) -> tf.Tensor:
        """The landmark model's input: enhanced images at (landmark_size, landmark_size)."""
        s = self.config.landmark_size
        return warp.resize(enhanced, (s, s))

    def landmarks(self, enhanced: tf.Tensor) -> tf.Tensor:
        """Normalised (B, 6) landmarks predicted on the enhanced images."""
        small = self.landmark_input(enhanced)
        return tf.cast(self.landmark_model(small, training=False), tf.float32)

    def qc(self, masks, probs, landmarks, image_size, original_size=None) -> dict:
        """QC numbers per image: ``mask_area`` (fraction of the image), ``mask_confidence``
        (mean probability inside the mask) and ``landmark_plausibility``, the fraction of 4
        checks passed: thumb-capitate / tip-capitate distance in :data:`THUMB_RATIO`,
        tip-capitate distance / image height in :data:`AXIS_FRACTION` (square pixels), all
        landmarks inside the image, all landmarks on the mask."""
        area = tf.reduce_mean(masks, axis=[1, 2, 3])
        confidence = tf.math.divide_no_nan(
            tf.reduce_sum(probs * masks, [1, 2, 3]), tf.reduce_sum(masks, [1, 2, 3])
        )
        oh, ow = registration.square_size(image_size, original_size, tf.shape(area)[0])
        pts = tf.reshape(landmarks, [-1, 3, 2]) * tf.stack([ow, oh], -1)[:, None]
        axis = tf.norm(pts[:, 0] - pts[:, 2], axis=-1)
        thumb = tf.norm(pts[:, 1] - pts[:, 2], axis=-1) / tf.maximum(axis, 1e-6)
        axis_frac = axis / oh
        s = tf.shape(masks)[1]
        idx = tf.cast(
            tf.clip_by_value(tf.reshape(landmarks, [-1, 3, 2]), 0.0, 0.999)
            * tf.cast(s, tf.float32),
            tf.int32,
        )
        # a flat gather (GATHER_ND with batch dimensions fails in LiteRT: index out of bounds)
        flat = tf.reshape(masks, [tf.shape(masks)[0], -1])
        idx = tf.clip_by_value(idx, 0, s - 1)  # NaN landmarks cast to any integer
        on_mask = tf.gather(flat, idx[..., 1] * s + idx[..., 0], batch_dims=1)
        checks = tf.stack(
            [
                (thumb >= THUMB_RATIO[0]) & (thumb <= THUMB_RATIO[1]),
                (axis_frac >= AXIS_FRACTION[0]) & (axis_frac <= AXIS_FRACTION[1]),
                tf.reduce_all(tf.reshape(landmarks, [-1, 6]) >= -0.02, -1)
                & tf.reduce_all(tf.reshape(landmarks, [-1, 6]) <= 1.02, -1),
                tf.reduce_all(on_mask > 0.5, -1),
            ],
            -1,
        )
        return {
            "mask_area": area,
            "mask_confidence": confidence,
            "landmark_plausibility": tf.reduce_mean(tf.cast(checks, tf.float32), -1),
        }

    def __call__(
        self,
        images: tf.Tensor,
        original_size: tf.Tensor | None = None,
        landmarks: tf.Tensor | None = None,
    ) -> dict:
        """Run the chain. ``landmarks`` (B, 6) override the landmark model when given.

        Returns a dict: ``mask`` (B, s, s, 1), ``enhanced`` (B, H, W, 1), ``landmarks``
        (B, 6), ``registered`` (B, frame h, frame w, 1), ``forward`` (B, 3, 3), ``right``
        (B,), ``region_A`` / ``region_B`` / ``region_C`` crops and the QC numbers.
        """
        images = tf.cast(images, tf.float32)
        masks, probs = self.segment(images)
        enhanced = self.enhance(images, masks)
        if landmarks is None:
            landmarks = self.landmarks(enhanced)
        size = tf.shape(images)[1:3]
        forward, right = registration.registration_matrix(
            landmarks, size, self.config.frame, original_size
        )
        frame = self.config.frame
        registered = regions.warp_affine(enhanced, warp.invert_affine(forward), frame.size)
        out = {
            "mask": masks,
            "enhanced": enhanced,
            "landmarks": landmarks,
            "registered": registered,
            "forward": forward,
            "right": right,
        }
        for name, crop_size in self.config.region_sizes.items():
            out[f"region_{name}"] = regions.extract(enhanced, forward, name, crop_size, frame)
        out.update(self.qc(masks, probs, landmarks, size, original_size))
        return out


def load(unet_path, landmarks_path=None, frame=None, region_sizes=None) -> Preprocessor:
    """A :class:`Preprocessor` from saved ``.keras`` models; sizes read from the models;
    ``frame`` (h, w) defaults to the paper's ``registration.PAPER_FRAME``."""
    # compile=False: inference weights only (an export must not carry optimizer slots)
    unet = keras.saving.load_model(unet_path, compile=False)
    marks = keras.saving.load_model(landmarks_path, compile=False) if landmarks_path else None
    config = ChainConfig(
        unet_size=int(unet.input_shape[1]),
        landmark_size=int(marks.input_shape[1]) if marks is not None else 96,
        frame=registration.Frame(*(frame or registration.PAPER_FRAME)),
    )
    if region_sizes is not None:
        config.region_sizes = dict(region_sizes)
    return Preprocessor(unet, marks, config)


def to_input_size(image, size: tuple[int, int]):
    """Resize one decoded image (H, W) to the chain's input ``size`` (h, w) with the chain's own
    resize (TF ops): used by the cache and the contact sheet, so nothing resizes differently."""
    batch = tf.constant(image, tf.float32)[None, ..., None]
    return warp.resize(batch, tuple(size)).numpy()[0, ..., 0]
