"""Orientation classifier on whole films: which quarter turn and polarity a film is in.

    python training/orientation.py --preset rsna100 --set manifest=runs/rsna100.csv \\
        out=runs/orientation

Labels cost nothing: every training film is taken as upright and normal, and each batch gives
every film a random one of the eight orientations (:mod:`tf_boneage.models.orientation`), on
top of a random in-plane rotation (``rotation`` degrees), scale, shift, mirror and exposure
change. Validation and the report use every ``val`` film in all eight orientations (no
rotation): accuracy per orientation, the share of upright films kept as they are and the
confusion table (``OUT/report.json``). The chain uses the model when the preset's chain has
``orient: true`` and an ``orientation`` section (``training/table.py``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from tf_boneage.data import manifest
from tf_boneage.data.augment import AffineRange, BatchAugmenter, attach_rows, rows_of, uniform
from tf_boneage.models.orientation import CLASSES, OrientationNet
from tf_boneage.preprocessing import orientation, warp
from tf_boneage.training import config as config_lib
from tf_boneage.training import loop
from tf_boneage.training.runtime import start_job, worker_dir, write_json
from tf_boneage.training.task import Task

#: the report's name of each class
NAMES = tuple(f"{90 * (c % 4)} deg{' inverted' if c >= 4 else ''}" for c in range(CLASSES))


def small_films(paths, size: int) -> np.ndarray:
    """Films squashed to (size, size) as the chain gives them to the classifier: (N, s, s, 1)
    float32 in [0, 1], read in batches (only the small copies are kept)."""
    from tf_boneage.training.segmentation import small_copies

    return small_copies(paths, lambda x: warp.resize(x, (size, size)), size)


def all_orientations(films: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every film in all eight orientations: ((8 N, s, s, 1), classes (8 N,)), class-major."""
    classes = np.repeat(np.arange(CLASSES, dtype=np.int32), len(films))
    x = orientation.make(np.tile(films, (CLASSES, 1, 1, 1)), classes).numpy()
    return x, classes


class OrientationTask(Task):
    """The classifier on in-memory films ``x`` (N, s, s, 1) with their ``part`` (N,) split
    names; sparse categorical cross-entropy, accuracy reported."""

    def __init__(self, config, strategy, x, part):
        super().__init__(config, strategy)
        self.x, self.part = x, part
        self.augmenter = BatchAugmenter(
            AffineRange(rotation=config.rotation, scale=(0.85, 1.15), shift=0.08, mirror=0.5),
            photometric=True,
            brightness=config.exposure,
            contrast=config.exposure,
        )

    def build_model(self):
        cfg = self.config
        return OrientationNet((cfg.size, cfg.size, 1), cfg.filters, cfg.dropout, name="orientation")

    def build_losses(self):
        return "sparse_categorical_crossentropy"

    def build_metrics(self):
        return ["sparse_categorical_accuracy"]

    def _per_sample(self, model, x, y, training: bool):
        pred = model(x, training=training)
        per = keras.losses.sparse_categorical_crossentropy(tf.reshape(y, [-1]), pred)
        return per, pred

    def augment(self, x, y, aug):
        """Warp and exposure of the upright films, then each turned or inverted into a class
        drawn at random (the labels ``y`` are made here), on the replica's device."""
        seed, rows = rows_of(aug)
        seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 2)
        images = self.augmenter({"image": x}, seeds[0], rows)["image"]
        n = tf.shape(images)[0]
        classes = uniform(n, seeds[1], 0, CLASSES, rows, dtype=tf.int32)
        return orientation.make(images, classes), classes

    def build_inputs(self, split, epoch=0):
        films = self.x[self.part == split]
        if split != "train":
            classes = np.arange(len(films), dtype=np.int32) % CLASSES
            x = orientation.make(films, classes).numpy()
            return tf.data.Dataset.from_tensor_slices((x, classes)).batch(64)
        seed = self.config.seed + epoch
        ds = tf.data.Dataset.from_tensor_slices(films).shuffle(len(films), seed=seed)
        ds = ds.batch(self.global_batch, drop_remainder=True)
        seeds = tf.data.Dataset.random(seed=seed).batch(2)

        def with_rows(films, s):  # classes made in the train step (:meth:`augment`)
            b = attach_rows({"image": films}, s)
            return b["image"], tf.zeros(tf.shape(films)[:1], tf.int32), b["aug"]

        return tf.data.Dataset.zip(ds, seeds).map(with_rows).prefetch(2)


def evaluate(model, films: np.ndarray, batch: int = 256, margin: float | None = None) -> dict:
    """Accuracy of ``model`` on every film of ``films`` (N, s, s, 1) in all eight
    orientations, by the chain's own rule (:func:`~tf_boneage.preprocessing.orientation.classify`
    with ``margin``, default the chain's ``ORIENT_CLASS_MARGIN``): overall, per orientation,
    upright kept, and the confusion table (true x chosen)."""
    from tf_boneage.preprocessing.chain import ORIENT_CLASS_MARGIN

    margin = ORIENT_CLASS_MARGIN if margin is None else float(margin)
    x, true = all_orientations(films)
    choose = tf.function(
        lambda b: orientation.classify(model, b, margin)[:2], reduce_retracing=True
    )
    chosen = []
    for i in range(0, len(x), batch):
        turns, inverted = choose(tf.constant(x[i : i + batch]))
        chosen.append(turns.numpy() + 4 * inverted.numpy().astype(np.int32))
    chosen = np.concatenate(chosen) if chosen else np.zeros(0, np.int32)
    right = chosen == true
    confusion = np.zeros((CLASSES, CLASSES), int)
    np.add.at(confusion, (true, chosen), 1)
    return {
        "films": int(len(films)),
        "margin": margin,
        "accuracy": float(right.mean()) if len(right) else float("nan"),
        "upright_kept": float(right[true == 0].mean()) if len(right) else float("nan"),
        "turned_or_inverted_right": float(right[true != 0].mean()) if len(right) else float("nan"),
        "per_orientation": {NAMES[c]: float(right[true == c].mean()) for c in range(CLASSES)},
        "confusion": {
            "rows": "true",
            "columns": "chosen",
            "names": list(NAMES),
            "counts": confusion.tolist(),
        },
    }


def run(cfg: config_lib.OrientationConfig) -> dict:
    """Train (resumable) and evaluate the classifier of ``cfg`` on ``val``; returns the report
    (``OUT/report.json``). A finished run returns at once."""
    out_root = Path(cfg.out)
    config_lib.check_unchanged(cfg, out_root / "config.yaml")
    final, report_path = out_root / "orientation.keras", out_root / "report.json"
    if final.is_file() and report_path.is_file():
        print(f"orientation: done ({final})")
        return json.loads(report_path.read_text())
    strategy = start_job(cfg)
    out = worker_dir(out_root, strategy)
    config_lib.save(cfg, out / "config.yaml")
    table = manifest.load_manifest(cfg.manifest)
    table = table[table["split"].isin(["train", "val"])]
    train = table[table["split"] == "train"]
    if cfg.max_train:
        train = train.head(cfg.max_train)
    rows = [train, table[table["split"] == "val"]]
    if rows[0].empty or rows[1].empty:
        raise ValueError(f"{cfg.manifest}: the orientation classifier needs train and val films")
    x = np.concatenate([small_films(r["image_path"], cfg.size) for r in rows])
    part = np.array(["train"] * len(rows[0]) + ["val"] * len(rows[1]))
    start = time.perf_counter()
    if final.exists():
        model = keras.saving.load_model(final)
    else:
        model, _ = loop.run(OrientationTask(cfg, strategy, x, part), out, cfg.epochs, cfg.patience)
        model.save(final)
        model = keras.saving.load_model(final)
    report = {
        "train_films": int((part == "train").sum()),
        "seconds": time.perf_counter() - start,
        "val": evaluate(model, x[part == "val"]),
    }
    write_json(out / "report.json", report)
    val = report["val"]
    print(
        f"orientation: {100 * val['accuracy']:.1f} % of {val['films']} val films x 8 "
        f"orientations right (upright kept {100 * val['upright_kept']:.1f} %)"
    )
    return report


def main(argv=None) -> int:
    """``training/orientation.py`` / ``tf-boneage train orientation``."""
    cfg, _ = config_lib.from_command_line(
        config_lib.OrientationConfig, __doc__.split("\n")[0], argv
    )
    run(cfg)
    return 0
