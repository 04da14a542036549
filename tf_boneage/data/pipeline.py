"""tf.data pipelines per stage, built from a canonical manifest.

Every builder: file paths and labels -> seeded shuffle of the rows -> parallel native decode
(:func:`tf_boneage.data.io.decode_image_bytes`, DICOM through ``tf.numpy_function``) -> resize
to ``config.image_size`` -> batch -> in-graph batch augmentation
(:class:`tf_boneage.data.augment.BatchAugmenter`) -> prefetch. The shuffle holds file names,
never decoded images, so memory is set by the batch and not by the number of films (a buffer
of decoded 500 x 375 crops of 12,611 films would be 9.5 GB). With ``cache`` the decoded images
are cached and shuffled after the cache instead (that buffer then holds them all: for sets
that fit in memory, such as a validation split).

Elements (all float32, images in [0, 1], ``B`` = batch):

* :func:`segmentation_dataset`: ``(image (B, H, W, 1), mask (B, H, W, 1) in {0, 1})``
* :func:`landmark_dataset`: ``(image, landmarks (B, 6))``, normalised x, y of the middle-finger
  tip, thumb tip and capitate (fractions of width / height; unchanged by the resize)
* :func:`region_dataset`: ``({"image": image, "male": (B, 1) in {0, 1}}, boneage (B,) months)``

``deterministic=True`` fixes element order and augmentation for tests and parity checks.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import tensorflow as tf

from tf_boneage.data import io
from tf_boneage.data.augment import BRIGHTNESS, AffineRange, BatchAugmenter, Degradation
from tf_boneage.data.manifest import LANDMARK_COLUMNS
from tf_boneage.preprocessing import warp

AUTOTUNE = tf.data.AUTOTUNE


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """Settings shared by the stage builders.

    Attributes:
        image_size: (height, width) in pixels after resizing.
        batch_size: images per batch.
        shuffle: shuffle the rows (seeded) every epoch.
        seed: seed of shuffling and augmentation.
        cache: ``False``, ``True`` (memory) or a file prefix for an on-disk cache of decoded,
            resized images.
        augment: apply geometric (``affine``) and photometric augmentation.
        affine: ranges of the geometric augmentation.
        photometric: brightness / contrast augmentation on top of the geometric one.
        brightness: range of the photometric brightness shift (a share of the grey range).
        degrade: under-exposure and blur of training crops (``None``: none).
        deterministic: fixed order and augmentation (slower; for tests).
        drop_remainder: drop the last incomplete batch.
    """

    image_size: tuple[int, int] = (256, 256)
    batch_size: int = 16
    shuffle: bool = True
    seed: int = 0
    cache: bool | str = False
    augment: bool = False
    affine: AffineRange = AffineRange()
    photometric: bool = True
    brightness: float = BRIGHTNESS
    degrade: Degradation | None = None
    deterministic: bool = False
    drop_remainder: bool = False

    def __post_init__(self):
        if len(self.image_size) != 2 or min(self.image_size) < 1:
            raise ValueError(f"image_size must be (height, width) > 0, got {self.image_size!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size!r}")
        if not 0 <= self.brightness < 1:
            raise ValueError(f"brightness must be in [0, 1), got {self.brightness!r}")


def _decode_dicom(path: bytes) -> np.ndarray:
    return io.load_image(path.decode())[..., None]


def load_image(path: tf.Tensor, size: tuple[int, int]) -> tf.Tensor:
    """Read and decode one file (PNG / JPEG natively, DICOM via pydicom), resize to ``size``
    (aspect not kept) with the chain's own :func:`~tf_boneage.preprocessing.warp.resize`:
    float32 (H, W, 1) in [0, 1]."""
    is_dicom = tf.strings.regex_full_match(tf.strings.lower(path), r".*\.(dcm|dicom)")
    image = tf.cond(
        is_dicom,
        lambda: tf.numpy_function(_decode_dicom, [path], tf.float32, stateful=False),
        lambda: io.decode_image_bytes(tf.io.read_file(path)),
    )
    image = tf.ensure_shape(
        tf.reshape(image, tf.concat([tf.shape(image)[:2], [1]], 0)), [None, None, 1]
    )
    return warp.resize(image[None], tuple(size))[0]


def _load_mask(path: tf.Tensor, size: tuple[int, int]) -> tf.Tensor:
    mask = io.decode_image_bytes(tf.io.read_file(path))
    mask = tf.image.resize(mask, size, method="nearest")
    return tf.cast(mask > 0.0, tf.float32)


def _rows(slices, n: int, cfg: PipelineConfig) -> tf.data.Dataset:
    """The rows (file paths and labels) as a dataset, shuffled here, before anything is
    decoded, unless ``cfg.cache`` (then :func:`_finish` shuffles the cached images)."""
    ds = tf.data.Dataset.from_tensor_slices(slices)
    if cfg.shuffle and not cfg.cache:
        ds = ds.shuffle(max(n, 1), seed=cfg.seed, reshuffle_each_iteration=True)
    return ds


def _finish(ds: tf.data.Dataset, n: int, cfg: PipelineConfig, augmenter) -> tf.data.Dataset:
    if cfg.cache:
        ds = ds.cache() if cfg.cache is True else ds.cache(str(cfg.cache))
        if cfg.shuffle:
            ds = ds.shuffle(max(n, 1), seed=cfg.seed, reshuffle_each_iteration=True)
    ds = ds.batch(cfg.batch_size, drop_remainder=cfg.drop_remainder)
    if augmenter is not None:
        seeds = tf.data.Dataset.random(seed=cfg.seed, rerandomize_each_iteration=True).batch(2)
        # sequential when deterministic: the Keras photometric layers carry seed state
        parallel = {} if cfg.deterministic else {"num_parallel_calls": AUTOTUNE}
        ds = tf.data.Dataset.zip(ds, seeds).map(augmenter, **parallel)
    options = tf.data.Options()
    options.deterministic = cfg.deterministic
    return ds.with_options(options).prefetch(AUTOTUNE)


def _augmenter(cfg: PipelineConfig):
    if not cfg.augment:
        return None
    return BatchAugmenter(
        cfg.affine,
        photometric=cfg.photometric,
        seed=cfg.seed,
        degrade=cfg.degrade,
        brightness=cfg.brightness,
    )


def _require(manifest: pd.DataFrame, columns, stage: str) -> pd.DataFrame:
    missing = [c for c in columns if c not in manifest.columns]
    if missing:
        raise ValueError(f"{stage} pipeline needs manifest column(s) {missing}")
    rows = manifest.dropna(subset=list(columns))
    if rows.empty:
        raise ValueError(f"{stage} pipeline: no manifest row has all of {list(columns)}")
    return rows


def _map_kw(cfg):
    return {"num_parallel_calls": AUTOTUNE, "deterministic": cfg.deterministic or None}


def segmentation_dataset(manifest: pd.DataFrame, cfg: PipelineConfig) -> tf.data.Dataset:
    """(image, mask) batches from rows with a ``mask_path``."""
    rows = _require(manifest, ["image_path", "mask_path"], "segmentation")
    ds = _rows((rows["image_path"].to_numpy(str), rows["mask_path"].to_numpy(str)), len(rows), cfg)
    ds = ds.map(
        lambda p, m: {
            "image": load_image(p, cfg.image_size),
            "mask": _load_mask(m, cfg.image_size),
        },
        **_map_kw(cfg),
    )
    ds = _finish(ds, len(rows), cfg, _augmenter(cfg))
    return ds.map(lambda b: (b["image"], b["mask"]))


def landmark_dataset(manifest: pd.DataFrame, cfg: PipelineConfig) -> tf.data.Dataset:
    """(image, landmarks (6,)) batches from rows with all six landmark columns."""
    rows = _require(manifest, ["image_path", *LANDMARK_COLUMNS], "landmark")
    points = rows[list(LANDMARK_COLUMNS)].to_numpy(np.float32)
    ds = _rows((rows["image_path"].to_numpy(str), points), len(rows), cfg)
    ds = ds.map(
        lambda p, y: {"image": load_image(p, cfg.image_size), "landmarks": y}, **_map_kw(cfg)
    )
    ds = _finish(ds, len(rows), cfg, _augmenter(cfg))
    return ds.map(lambda b: (b["image"], b["landmarks"]))


def region_dataset(manifest: pd.DataFrame, cfg: PipelineConfig) -> tf.data.Dataset:
    """({"image", "male"}, boneage in months) batches; rows of unknown sex are refused."""
    rows = _require(manifest, ["image_path", "boneage", "male"], "region")
    male = rows["male"].astype("float32").to_numpy(np.float32)[:, None]
    ds = _rows(
        (rows["image_path"].to_numpy(str), male, rows["boneage"].to_numpy(np.float32)),
        len(rows),
        cfg,
    )
    ds = ds.map(
        lambda p, s, y: {"image": load_image(p, cfg.image_size), "male": s, "boneage": y},
        **_map_kw(cfg),
    )
    ds = _finish(ds, len(rows), cfg, _augmenter(cfg))
    return ds.map(lambda b: ({"image": b["image"], "male": b["male"]}, b["boneage"]))
