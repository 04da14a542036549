"""Landmark model on real radiographs: the paper's three landmarks from the 21-point poses
(capitate = documented proxy), on images segmented and equalised by the U-Net chain, with
geometry-consistent augmentation (rotation, scale, shift, mirror move the points too).

    python training/landmarks.py --preset rsna100 --set manifest=runs/rsna100.csv \
        unet=runs/seg/round0/unet.keras out=runs/landmarks

Evaluation on the held-out pose images (``data_manifests/handpose_split.csv``, split ``test``):
mean distance per landmark in pixels of the landmark network's input, in original pixels, and
as a percentage of the annotated tip-to-capitate length.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from tf_boneage.data import io, manifest
from tf_boneage.data.augment import (
    AffineRange,
    BatchAugmenter,
    Degradation,
    attach_rows,
    rows_of,
)
from tf_boneage.data.manifest import LANDMARK_COLUMNS
from tf_boneage.models import LandmarkNet
from tf_boneage.models.batchnorm import batch_for, recalibrate
from tf_boneage.preprocessing import pose
from tf_boneage.preprocessing.chain import ChainConfig, Preprocessor
from tf_boneage.training import config as config_lib
from tf_boneage.training import loop
from tf_boneage.training.runtime import start_job, worker_dir, write_json
from tf_boneage.training.segmentation import POSE_SPLIT, pose_table
from tf_boneage.training.task import Task

NAMES = ("tip", "thumb", "capitate")


def enhanced_images(rows, unet, size, raw: bool, out: Path | None = None):
    """Images as the landmark model sees them in the chain (segmented, equalised), (N, s, s, 1)
    float32. Films are read and run in batches (``segmentation.batches_of_films``): only the
    small (s, s) results are kept, so full-size films of any number fit in memory. With ``out``
    (an ``.npy`` path) they are written there as they come and returned as a
    :class:`~tf_boneage.data.rowfile.RowFile` (rows read from the file on demand): the step's
    memory is then set by its batch, not by the number of labelled films (the whole-set array
    grew the step from 8.5 to 11.7 GB between 80 and 400 full-size films)."""
    from tf_boneage.training.segmentation import small_copies

    chain = Preprocessor(
        unet, None, ChainConfig(unet_size=unet.input_shape[1] if unet else 96, landmark_size=size)
    )

    def small(batch):
        if raw:
            return chain.landmark_input(batch)
        masks, _ = chain.segment(batch)
        return chain.landmark_input(chain.enhance(batch, masks))

    return small_copies(rows["image_path"], small, size, out)


def eval_batch(shape) -> int:
    """Images per evaluation batch for inputs of ``shape`` (s, s, 1): 64, or fewer so that a
    batch has at most ``batchnorm.MAX_RECALIBRATION_PIXELS`` input pixels (8 at 512 px: 64
    images of 512 px made the first layers' activations alone 2 GB, and the validation set of a
    small run a smaller batch than a large one's)."""
    return batch_for(shape, largest=64)


def predict_rows(model, x, index, batch: int | None = None) -> np.ndarray:
    """The model's (K, 6) answers for rows ``index`` of ``x`` (N, s, s, 1), read ``batch``
    rows at a time (default :func:`eval_batch`; ``x`` may be a
    :class:`~tf_boneage.data.rowfile.RowFile`)."""
    batch = batch or eval_batch(x.shape[1:])
    if len(index) == 0:
        return np.zeros((0, model.output_shape[-1]), np.float32)
    parts = np.array_split(index, -(-len(index) // batch))
    return np.concatenate([model.predict_on_batch(np.asarray(x[p])) for p in parts])


def labelled_rows(table, seed: int, split_file=POSE_SPLIT):
    """Rows with the three landmarks and a ``pose_split``: from the 21-point poses (capitate
    proxy) or, for manifests that carry landmarks (the synthetic default), as they are.
    ``orig_w`` / ``orig_h`` default to each image's own size (square pixels)."""
    if "pose_wrist_x" in table and table["pose_wrist_x"].notna().any():
        return pose.landmarks_from_pose(pose_table(table, seed, split_file))
    rows = table.dropna(subset=list(LANDMARK_COLUMNS)).assign(pose_split=lambda t: t["split"])
    if rows.empty:
        raise ValueError("the manifest has neither 21-point pose columns nor landmark columns")
    if "orig_w" not in rows or rows["orig_w"].isna().any():
        # each film's own size from its header (the paper phantoms run from 1,500 to 3,000 px
        # at several aspects: the first film's size for all made the errors in film pixels
        # and in % of the tip-capitate length wrong for the others)
        sizes = [io.sniff(p) for p in rows["image_path"]]
        width = pd.Series([float(s.width) for s in sizes], index=rows.index)
        height = pd.Series([float(s.height) for s in sizes], index=rows.index)
        if "orig_w" in rows:
            width, height = rows["orig_w"].fillna(width), rows["orig_h"].fillna(height)
        rows = rows.assign(orig_w=width.astype(float), orig_h=height.astype(float))
    return rows


def errors(pred: np.ndarray, rows, input_size: int) -> dict:
    """Distances per landmark between ``pred`` (N, 6) and the rows' landmarks (normalised):
    in pixels of the landmark network's ``input_size`` x ``input_size`` input (whatever the
    films' resolution), in original pixels (``orig_w`` / ``orig_h``) and as % of the annotated
    tip-to-capitate length."""
    true = rows[list(LANDMARK_COLUMNS)].to_numpy(float).reshape(-1, 3, 2)
    pred = pred.reshape(-1, 3, 2)
    orig = np.stack([rows["orig_w"], rows["orig_h"]], -1)[:, None, :]
    d_img = np.linalg.norm((pred - true) * float(input_size), axis=-1)
    d_orig = np.linalg.norm((pred - true) * orig, axis=-1)
    axis = np.linalg.norm((true[:, 0] - true[:, 2]) * orig[:, 0], axis=-1)[:, None]
    out = {}
    for k, name in enumerate(NAMES):
        out[name] = {
            "px_input": float(d_img[:, k].mean()),
            "px_original": float(d_orig[:, k].mean()),
            "pct_tip_capitate": float(100 * (d_orig[:, k] / axis[:, 0]).mean()),
            "median_pct": float(100 * np.median(d_orig[:, k] / axis[:, 0])),
        }
    out["mean"] = {
        "px_input": float(d_img.mean()),
        "px_original": float(d_orig.mean()),
        "pct_tip_capitate": float(100 * (d_orig / axis).mean()),
    }
    return out


class LandmarkTask(Task):
    """The landmark regressor on in-memory arrays ``x`` (N, s, s, 1) of the chain's enhanced
    images and ``y`` (N, 6) normalised (x, y) of tip, thumb, capitate; MSE, Adam with gradient
    clipping; geometry-consistent augmentation (the points move with the image) and, with
    ``underexposed``, images darkened as a clipped film's
    (:func:`~tf_boneage.data.augment.underexpose`)."""

    def __init__(self, config, strategy, x, y, part):
        super().__init__(config, strategy)
        self.x, self.y, self.part = x, y, part
        self.augmenter = BatchAugmenter(
            AffineRange(rotation=config.rotation, scale=(0.85, 1.15), shift=0.08, mirror=0.5),
            photometric=True,
            degrade=Degradation(underexposed=config.underexposed),
        )

    def build_model(self):
        cfg = self.config
        return LandmarkNet(
            (cfg.size, cfg.size, 1),
            filters=cfg.filters,
            dense_units=cfg.dense_units,
            dropout=cfg.dropout,
            name="landmarks",
        )

    def build_optimizer(self):
        return keras.optimizers.Adam(self.config.learning_rate, clipnorm=1.0)

    def build_losses(self):
        return "mse"

    def augment(self, x, y, aug):
        """One warp of the images and their points, darkening and exposure, on the replica's
        device."""
        seed, rows = rows_of(aug)
        b = self.augmenter({"image": x, "landmarks": y}, seed, rows)
        return b["image"], b["landmarks"]

    def _gather(self, index):
        """Rows ``index`` (a batch of positions in ``x``, in the shuffled order) of ``x`` and
        ``y``: read from ``x`` (an array or a ``RowFile``) one batch at a time."""
        x, y = self.x, self.y

        def read(i):
            return np.asarray(x[i], np.float32), np.asarray(y[i], np.float32)

        images, points = tf.numpy_function(read, [index], (tf.float32, tf.float32))
        images.set_shape((None, *x.shape[1:]))
        points.set_shape((None, y.shape[1]))
        return images, points

    def recalibration_batches(self, limit: int):
        """The first ``limit`` training images, un-augmented, read a batch at a time (at most
        :data:`~tf_boneage.models.batchnorm.MAX_RECALIBRATION_PIXELS` per batch)."""
        clean = np.flatnonzero(self.part == "train")[:limit]
        size = batch_for(self.x.shape[1:])
        return (self.x[clean[i : i + size]] for i in range(0, len(clean), size))

    def build_inputs(self, split, epoch=0):
        """Batches of (images (B, s, s, 1) float32, points (B, 6) float32), and for ``train``
        their augmentation rows (``aug``: augmented in the train step): positions are shuffled
        and batched, the images read per batch (never the whole split at once)."""
        ds = tf.data.Dataset.from_tensor_slices(np.flatnonzero(self.part == split))
        if split != "train":
            return ds.batch(eval_batch(self.x.shape[1:])).map(self._gather)
        seed = self.config.seed + epoch
        ds = ds.shuffle(1000, seed=seed).batch(self.global_batch, drop_remainder=True)
        ds = ds.map(self._gather)
        seeds = tf.data.Dataset.random(seed=seed).batch(2)

        def with_rows(xy, s):  # augmented in the train step (:meth:`augment`)
            b = attach_rows({"image": xy[0], "landmarks": xy[1]}, s)
            return b["image"], b["landmarks"], b["aug"]

        return tf.data.Dataset.zip(ds, seeds).map(with_rows).prefetch(2)


def run(cfg: config_lib.LandmarkConfig) -> dict:
    """Train (resumable) and evaluate the landmark model of ``cfg``; returns the report
    (``OUT/report.json``: errors on the held-out pose images). A finished run returns at once."""
    out_root = Path(cfg.out)
    config_lib.check_unchanged(cfg, out_root / "config.yaml", ("out", "manifest", "unet"))
    if (out_root / "landmarks.keras").is_file() and (out_root / "report.json").is_file():
        print(f"landmarks: done ({out_root / 'landmarks.keras'})")
        return json.loads((out_root / "report.json").read_text())
    strategy = start_job(cfg)
    out = worker_dir(out_root, strategy)
    config_lib.save(cfg, out / "config.yaml")
    table = manifest.load_manifest(cfg.manifest)
    rows = labelled_rows(table, cfg.seed, cfg.pose_split)
    unet = keras.saving.load_model(cfg.unet, compile=False) if cfg.unet else None
    x = enhanced_images(rows, unet, cfg.size, raw=unet is None, out=out / "inputs.npy")
    # x: a RowFile, rows read from disk a batch at a time
    y = rows[list(LANDMARK_COLUMNS)].to_numpy(np.float32)
    part = rows["pose_split"].to_numpy()
    final = out / "landmarks.keras"
    start = time.perf_counter()
    if final.exists():
        model = keras.saving.load_model(final)
    else:
        task = LandmarkTask(cfg, strategy, x, y, part)
        model, _ = loop.run(task, out, cfg.epochs, cfg.patience, select="best")
        recalibrate(model, task.recalibration_batches(256))
        model.save(final)
        model = keras.saving.load_model(final)
    seconds = time.perf_counter() - start
    test = part == "test"
    pred = predict_rows(model, x, np.flatnonzero(test))
    report = {
        "test_images": int(test.sum()),
        "train_images": int((part == "train").sum()),
        "input": "raw" if unet is None else f"segmented+equalised ({cfg.unet})",
        "seconds": seconds,
        "errors": errors(pred, rows[test], cfg.size),
    }
    write_json(out / "report.json", report)
    np.save(out / "test_predictions.npy", pred)
    x.close()
    (out / "inputs.npy").unlink(missing_ok=True)  # 1 MB per film at 512 px; rebuilt on resume
    print(
        f"landmarks: mean error {report['errors']['mean']['pct_tip_capitate']:.1f} % of the "
        f"tip-capitate length on {report['test_images']} held-out images"
    )
    return report


def main(argv=None) -> int:
    """``training/landmarks.py`` / ``tf-boneage train landmarks``."""
    cfg, _ = config_lib.from_command_line(config_lib.LandmarkConfig, __doc__.split("\n")[0], argv)
    run(cfg)
    return 0
