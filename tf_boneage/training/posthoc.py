"""Ablations that need no training: a finished region run's hold-out predictions made another way.

    python training/posthoc.py RUN --out DIR --weights checkpoint   # batch norm not recalibrated
    python training/posthoc.py RUN --out DIR --tta 5                # test-time augmentation

``RUN`` is a finished region run (``training/region.py``: ``config.yaml``, ``model.keras``,
``checkpoint.keras``). ``DIR`` gets ``predictions.csv`` (every val and test row, as the run's
own) and ``posthoc.json`` (what was done, how long it took), so that ``tf-boneage train
ablation --base base=RUN --variant NAME=DIR`` compares them on ``val``, image by image.

- ``--weights checkpoint``: the last epoch's weights with the batch-norm statistics the
  training accumulated on augmented batches (``model.keras`` has them recalibrated on 2,048
  clean training crops: :func:`tf_boneage.models.batchnorm.recalibrate`);
- ``--tta N``: the mean of the network's estimates on the crop and on ``N - 1`` fixed views of
  it (:data:`VIEWS`: small rotations, scalings and shifts inside the training augmentation's
  range; never a mirror: the canonical frame holds left hands).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

#: test-time views (rotation in degrees, scale, shift x and y as a fraction of the crop), in
#: the order ``--tta N`` takes them; the first is the crop itself
VIEWS = (
    (0.0, 1.0, 0.0, 0.0),
    (5.0, 1.0, 0.0, 0.0),
    (-5.0, 1.0, 0.0, 0.0),
    (0.0, 1.05, 0.0, 0.0),
    (0.0, 0.95, 0.0, 0.0),
    (0.0, 1.0, 0.02, 0.0),
    (0.0, 1.0, -0.02, 0.0),
    (0.0, 1.0, 0.0, 0.02),
    (0.0, 1.0, 0.0, -0.02),
)
WEIGHTS = {"model": "model.keras", "checkpoint": "checkpoint.keras"}


def views(images, n: int):
    """The first ``n`` of :data:`VIEWS` of ``images`` (B, H, W, C) float32: a list of ``n``
    tensors of the same shape (the first the images themselves)."""
    import math

    import tensorflow as tf

    from tf_boneage.data import augment

    if not 1 <= n <= len(VIEWS):
        raise ValueError(f"tta must be 1-{len(VIEWS)} views, got {n}")
    images = tf.convert_to_tensor(images, tf.float32)
    b = tf.shape(images)[0]
    h, w = int(images.shape[1]), int(images.shape[2])
    out = [images]
    for angle, scale, sx, sy in VIEWS[1:n]:
        full = lambda v: tf.fill([b], float(v))  # noqa: E731
        forward = augment.affine_matrix(
            full(angle * math.pi / 180), full(scale), full(sx * w), full(sy * h), full(1), h, w
        )
        out.append(augment.warp(images, forward))
    return out


def predict(run, weights: str = "model", tta: int = 1, batch: int = 64) -> pd.DataFrame:
    """``id, boneage, male, split, pred`` (months) of every val and test row of the finished
    region run ``run``, with ``weights`` (``model`` / ``checkpoint``) and ``tta`` views."""
    import keras

    import tf_boneage.models  # noqa: F401  (registers the custom layers)
    from tf_boneage.data.pipeline import PipelineConfig, region_dataset
    from tf_boneage.training import config as config_lib
    from tf_boneage.training.region import load_rows

    run = Path(run)
    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {sorted(WEIGHTS)}, got {weights!r}")
    path = run / WEIGHTS[weights]
    if not (run / "config.yaml").is_file() or not path.is_file():
        raise FileNotFoundError(f"{run}: not a finished region run (config.yaml, {path.name})")
    cfg = config_lib.load(config_lib.RegionConfig, file=run / "config.yaml")
    rows = load_rows(cfg)
    holdout = rows[rows["split"].isin(["val", "test"])].reset_index(drop=True)
    model = keras.saving.load_model(path, compile=False)
    pc = PipelineConfig(image_size=tuple(cfg.image_size), batch_size=batch, shuffle=False)
    preds, labels = [], []
    for x, y in region_dataset(holdout, pc):
        inputs = {"image": x["image"]} if cfg.sex != "input" else x
        got = [
            np.asarray(model.predict_on_batch({**inputs, "image": v}))[:, 0]
            for v in views(x["image"], tta)
        ]
        preds.append(np.mean(got, 0))
        labels.append(y.numpy())
    labels = np.concatenate(labels)
    if not np.allclose(labels, holdout["boneage"].to_numpy(np.float32)):
        raise RuntimeError(f"{run}: the dataset's rows came back out of order")
    table = holdout[["id", "boneage", "male", "split"]].copy()
    table["pred"] = np.concatenate(preds)
    return table


def run(run_dir, out, weights: str = "model", tta: int = 1) -> pd.DataFrame:
    """:func:`predict` written to ``out/predictions.csv`` with ``out/posthoc.json``; refuses
    to write into the run itself or over an existing ``predictions.csv``."""
    from tf_boneage.data.manifest import save_table
    from tf_boneage.training.runtime import write_json

    out = Path(out)
    if out.resolve() == Path(run_dir).resolve():
        raise ValueError(f"{out}: write the variant beside the run, not into it")
    if (out / "predictions.csv").exists():
        raise FileExistsError(f"{out / 'predictions.csv'} exists: choose another --out")
    start = time.perf_counter()
    table = predict(run_dir, weights, tta)
    out.mkdir(parents=True, exist_ok=True)
    save_table(table, out / "predictions.csv")
    seconds = time.perf_counter() - start
    write_json(
        out / "posthoc.json",
        {"run": str(run_dir), "weights": weights, "tta": tta, "seconds": seconds},
    )
    return table


def main(argv=None) -> int:
    """``training/posthoc.py`` / ``tf-boneage train posthoc``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", help="a finished region run (training/region.py)")
    parser.add_argument("--out", required=True, help="folder for the variant's predictions")
    parser.add_argument("--weights", default="model", choices=sorted(WEIGHTS))
    parser.add_argument("--tta", type=int, default=1, help=f"views, 1-{len(VIEWS)}")
    args = parser.parse_args(argv)
    try:
        table = run(args.run, args.out, args.weights, args.tta)
    except (ValueError, FileNotFoundError, FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    val = table[table["split"] == "val"]
    print(f"{args.out}: val MAE {np.abs(val['pred'] - val['boneage']).mean():.2f} months")
    return 0
