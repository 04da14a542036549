"""Ablations that need no training: a finished region run's hold-out predictions made another way.

    python training/posthoc.py RUN --out DIR --weights checkpoint   # batch norm not recalibrated
    python training/posthoc.py RUN --out DIR --tta 5                # test-time views

``RUN`` is a finished region run (``training/region.py``: ``config.yaml``, ``model.keras``,
``checkpoint.keras``). ``DIR`` becomes a region run of its own: ``config.yaml`` (the run's, with
``out`` and ``tta`` set), ``model.keras`` (the weights used, linked or copied),
``predictions.csv`` (every val and test row), ``val_predictions.csv``, ``metrics.json`` and
``posthoc.json`` (what was done, how long it took). So ``tf-boneage train ablation --base
base=RUN --variant NAME=DIR`` compares them on ``val`` image by image, and a table folder made
of such runs can be ensembled and exported (the export reads each member's ``tta``).

- ``--weights checkpoint``: the last epoch's weights with the batch-norm statistics the
  training accumulated on augmented batches (``model.keras`` has them recalibrated on 2,048
  clean training crops: :func:`tf_boneage.models.batchnorm.recalibrate`);
- ``--tta N``: the mean of the network's estimates on the crop and on ``N - 1`` fixed views of
  it (:mod:`tf_boneage.preprocessing.views`).
"""

import argparse
import dataclasses
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

WEIGHTS = {"model": "model.keras", "checkpoint": "checkpoint.keras"}


def _link(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another file system
        shutil.copy2(src, dst)


def run(run_dir, out, weights: str = "model", tta: int = 1) -> pd.DataFrame:
    """The finished region run ``run_dir`` re-predicted with ``weights`` (``model`` /
    ``checkpoint``) and ``tta`` views into the new run folder ``out`` (module docstring);
    returns its predictions (``id, boneage, male, split, pred``, months). Refuses to write into
    the run itself or into a folder that holds predictions."""
    import keras
    import tensorflow as tf

    import tf_boneage.models  # noqa: F401  (registers the custom layers)
    from tf_boneage.preprocessing.views import check
    from tf_boneage.training import config as config_lib
    from tf_boneage.training import region
    from tf_boneage.training.runtime import write_json

    run_dir, out = Path(run_dir), Path(out)
    check(tta)
    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {sorted(WEIGHTS)}, got {weights!r}")
    if out.resolve() == run_dir.resolve():
        raise ValueError(f"{out}: write the variant beside the run, not into it")
    if (out / "predictions.csv").exists():
        raise FileExistsError(f"{out / 'predictions.csv'} exists: choose another --out")
    source = run_dir / WEIGHTS[weights]
    if not (run_dir / "config.yaml").is_file() or not source.is_file():
        raise FileNotFoundError(
            f"{run_dir}: not a finished region run (config.yaml, {source.name})"
        )
    start = time.perf_counter()
    cfg = config_lib.load(config_lib.RegionConfig, file=run_dir / "config.yaml")
    cfg = dataclasses.replace(cfg, out=str(out), tta=int(tta))
    task = region.RegionTask(cfg, tf.distribute.get_strategy(), region.load_rows(cfg))
    model = keras.saving.load_model(source, compile=False)
    pred = region.predict(model, task.build_inputs("holdout"), task.holdout, tta)
    out.mkdir(parents=True, exist_ok=True)
    config_lib.save(cfg, out / "config.yaml")
    _link(source, out / "model.keras")
    seconds = time.perf_counter() - start
    doc = {"run": str(run_dir), "weights": weights, "tta": int(tta), "seconds": seconds}
    region.write_predictions(out, cfg, task.holdout, pred, {"posthoc": doc})
    write_json(out / "posthoc.json", doc)
    return task.holdout[["id", "boneage", "male", "split"]].assign(pred=pred)


def main(argv=None) -> int:
    """``training/posthoc.py`` / ``tf-boneage train posthoc``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", help="a finished region run (training/region.py)")
    parser.add_argument("--out", required=True, help="folder for the variant's predictions")
    parser.add_argument("--weights", default="model", choices=sorted(WEIGHTS))
    parser.add_argument("--tta", type=int, default=1, help="test-time views (1 = the crop)")
    args = parser.parse_args(argv)
    try:
        table = run(args.run, args.out, args.weights, args.tta)
    except (ValueError, FileNotFoundError, FileExistsError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    val = table[table["split"] == "val"]
    print(f"{args.out}: val MAE {np.abs(val['pred'] - val['boneage']).mean():.2f} months")
    return 0
