"""tf.data pipelines per stage, built from a canonical manifest.

Every builder: file paths and labels -> seeded shuffle of the rows -> parallel native decode
(:func:`tf_boneage.data.io.decode_image_bytes`, DICOM through ``tf.numpy_function``) -> resize
to ``config.image_size`` -> batch -> prefetch. With ``augment`` each batch gets its seed, and
the stage's :class:`tf_boneage.data.augment.BatchAugmenter` runs either here, in the
``tf.data`` graph on the host (``device_augment=False``), or in the train step on the replicas'
devices (``device_augment=True``, how the stages train): the batches then carry an ``aug``
dict (:func:`tf_boneage.data.augment.attach_rows`) as a third element, ``(x, y, aug)``. The shuffle holds file names,
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
from tf_boneage.data.augment import (
    BRIGHTNESS,
    AffineRange,
    BatchAugmenter,
    Degradation,
    attach_rows,
)
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
        device_augment: leave the augmentation to the train step (the batches carry their
            seed rows as a third element); False: augment in the pipeline.
        decoded: a folder for the region pipeline's store of decoded 8-bit films
            (:mod:`tf_boneage.data.decoded`): decoded once, read back by rows in every epoch
            (the same batches as decoding each time); None: decode every epoch.
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
    device_augment: bool = False
    decoded: str | None = None
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


def _finish(
    ds: tf.data.Dataset, n: int, cfg: PipelineConfig, augmenter, batched: bool = False
) -> tf.data.Dataset:
    """Cache, shuffle and batch (unless ``batched``), then each batch's seed and its
    augmentation (or, ``device_augment``, its seed rows), prefetched."""
    if not batched:
        if cfg.cache:
            ds = ds.cache() if cfg.cache is True else ds.cache(str(cfg.cache))
            if cfg.shuffle:
                ds = ds.shuffle(max(n, 1), seed=cfg.seed, reshuffle_each_iteration=True)
        ds = ds.batch(cfg.batch_size, drop_remainder=cfg.drop_remainder)
    if augmenter is not None:
        seeds = tf.data.Dataset.random(seed=cfg.seed, rerandomize_each_iteration=True).batch(2)
        step = attach_rows if cfg.device_augment else augmenter
        ds = tf.data.Dataset.zip(ds, seeds).map(step, num_parallel_calls=AUTOTUNE)
    options = tf.data.Options()
    options.deterministic = cfg.deterministic
    return ds.with_options(options).prefetch(AUTOTUNE)


def augmenter_of(cfg: PipelineConfig) -> BatchAugmenter | None:
    """The augmentation a pipeline of ``cfg`` applies (or leaves to the train step)."""
    if not cfg.augment:
        return None
    return BatchAugmenter(
        cfg.affine, photometric=cfg.photometric, degrade=cfg.degrade, brightness=cfg.brightness
    )


def _split(batch: dict, x, y):
    """``(x, y)``, or ``(x, y, aug)`` when the batch carries its augmentation rows."""
    return (x, y, batch["aug"]) if "aug" in batch else (x, y)


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
    ds = _finish(ds, len(rows), cfg, augmenter_of(cfg))
    return ds.map(lambda b: _split(b, b["image"], b["mask"]))


def landmark_dataset(manifest: pd.DataFrame, cfg: PipelineConfig) -> tf.data.Dataset:
    """(image, landmarks (6,)) batches from rows with all six landmark columns."""
    rows = _require(manifest, ["image_path", *LANDMARK_COLUMNS], "landmark")
    points = rows[list(LANDMARK_COLUMNS)].to_numpy(np.float32)
    ds = _rows((rows["image_path"].to_numpy(str), points), len(rows), cfg)
    ds = ds.map(
        lambda p, y: {"image": load_image(p, cfg.image_size), "landmarks": y}, **_map_kw(cfg)
    )
    ds = _finish(ds, len(rows), cfg, augmenter_of(cfg))
    return ds.map(lambda b: _split(b, b["image"], b["landmarks"]))


def region_dataset(manifest: pd.DataFrame, cfg: PipelineConfig) -> tf.data.Dataset:
    """({"image", "male"}, boneage in months) batches; rows of unknown sex are refused. With
    ``cfg.decoded`` the films are read from their decoded store when they can be
    (:func:`_region_from_store`)."""
    rows = _require(manifest, ["image_path", "boneage", "male"], "region")
    male = rows["male"].astype("float32").to_numpy(np.float32)[:, None]
    if cfg.decoded and not cfg.cache:
        from tf_boneage.data import decoded

        store = decoded.open_store(rows["image_path"], cfg.image_size, cfg.decoded)
        if store is not None:
            return _region_from_store(rows, male, store, cfg)
    ds = _rows(
        (rows["image_path"].to_numpy(str), male, rows["boneage"].to_numpy(np.float32)),
        len(rows),
        cfg,
    )
    ds = ds.map(
        lambda p, s, y: {"image": load_image(p, cfg.image_size), "male": s, "boneage": y},
        **_map_kw(cfg),
    )
    ds = _finish(ds, len(rows), cfg, augmenter_of(cfg))
    return ds.map(lambda b: _split(b, {"image": b["image"], "male": b["male"]}, b["boneage"]))


def _region_from_store(rows, male, store, cfg: PipelineConfig) -> tf.data.Dataset:
    """:func:`region_dataset` from a store of the decoded films (uint8 rows, in the order of
    ``rows``): the same shuffle of the rows, batches and seeds as decoding each epoch, the
    images gathered a batch at a time from the store."""
    from tf_boneage.data.decoded import reader

    h, w = cfg.image_size
    pixels_of = reader(store)
    index = np.arange(len(rows), dtype=np.int64)
    ds = _rows((index, male, rows["boneage"].to_numpy(np.float32)), len(rows), cfg)
    ds = ds.batch(cfg.batch_size, drop_remainder=cfg.drop_remainder)

    def gather(i):
        return pixels_of[i]

    def read(i, s, y):
        pixels = tf.numpy_function(gather, [i], tf.uint8, stateful=False)
        image = tf.cast(tf.ensure_shape(pixels, [None, h, w, 1]), tf.float32) / 255.0
        return {"image": image, "male": s, "boneage": y}

    ds = ds.map(read, num_parallel_calls=AUTOTUNE, deterministic=cfg.deterministic or None)
    ds = _finish(ds, len(rows), cfg, augmenter_of(cfg), batched=True)
    return ds.map(lambda b: _split(b, {"image": b["image"], "male": b["male"]}, b["boneage"]))
