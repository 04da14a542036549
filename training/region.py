"""Train one region network of the paper (region A / B / C x regression / classification x
sex-specific / sex as input) on preprocessed region crops, or on raw images as the paper's
"stop preprocessing here" baseline.

    python training/region.py --preset rsna100 --set manifest=runs/cache100/manifest.csv \
        region=A head=regression sex=both out=runs/region/A_reg_both
    python training/region.py --preset rsna100 --set manifest=runs/rsna100.csv input=raw \
        image_size=104x80 out=runs/region/raw_reg_both          # the baseline

Outputs in ``out``: ``config.yaml`` (resolved), ``checkpoint.keras`` / ``state.json`` (resume
after a kill: run the same command again), ``best.keras``, ``model.keras`` (best weights,
batch norm recalibrated on clean images), ``history.csv``, ``tensorboard/``,
``predictions.csv`` (every val and test row: ``id,boneage,male,split,pred``, months),
``val_predictions.csv`` and ``metrics.json`` (validation MAE overall, by sex and age band).
With ``select=last`` (default) no weights are chosen on the validation split, so the ensemble
can be fitted on it; the test rows are predicted but never reported here.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import config as config_lib  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from common import start_job, write_json  # noqa: E402
from loop import fit, worker_dir  # noqa: E402

from tf_boneage.data import manifest as manifest_lib  # noqa: E402
from tf_boneage.data.augment import AffineRange  # noqa: E402
from tf_boneage.data.pipeline import PipelineConfig, region_dataset  # noqa: E402
from tf_boneage.evaluation import format_report, mae_report  # noqa: E402
from tf_boneage.models import RegionNet  # noqa: E402
from tf_boneage.models.batchnorm import clean_batches, recalibrate  # noqa: E402


def load_rows(cfg: config_lib.RegionConfig) -> pd.DataFrame:
    """Manifest rows with ``image_path`` pointing at the region crop (cache) or raw image."""
    path = Path(cfg.manifest)
    table = manifest_lib.load_manifest(path)
    if cfg.input == "cache":
        column = f"region_{cfg.region}_path"
        if column not in table:
            raise config_lib.ConfigError(
                "manifest", cfg.manifest, f"a cache manifest with {column}"
            )
        base = path.resolve().parent
        table["image_path"] = [str(base / p) for p in table[column]]
    if cfg.sex in ("male", "female"):
        table = table[table["male"] == (cfg.sex == "male")]
    return table.dropna(subset=["male"]).reset_index(drop=True)


def datasets(cfg, rows: pd.DataFrame, global_batch: int):
    train = rows[rows["split"] == "train"]
    if cfg.max_train:
        train = train.sample(min(cfg.max_train, len(train)), random_state=cfg.seed)
    val = rows[rows["split"] == "val"]
    if train.empty or val.empty:
        raise ValueError(f"{cfg.manifest}: need train and val rows (have {len(train)}, {len(val)})")
    holdout = rows[rows["split"].isin(["val", "test"])]
    affine = AffineRange(cfg.rotation, tuple(cfg.scale), cfg.shift, 0.0)
    sex_input = cfg.sex == "input"

    def select(ds):
        return ds if sex_input else ds.map(lambda x, y: ({"image": x["image"]}, y))

    def train_for_epoch(epoch: int):
        pc = PipelineConfig(image_size=tuple(cfg.image_size), batch_size=global_batch,
                            seed=cfg.seed + epoch, augment=True, affine=affine,
                            drop_remainder=True)  # fmt: skip
        return select(region_dataset(train, pc))

    clean = PipelineConfig(image_size=tuple(cfg.image_size), batch_size=global_batch,
                           shuffle=False)  # fmt: skip
    return (
        train,
        holdout,
        train_for_epoch,
        select(region_dataset(val, clean)),
        select(region_dataset(holdout, clean)),
        # batch-norm recalibration: 2,048 clean training images in random order (the first
        # rows of a manifest are not a fair sample: recalibrating on them cost 1.3 months)
        select(region_dataset(train.sample(min(2048, len(train)), random_state=cfg.seed), clean)),
    )


def main(argv=None) -> int:
    def extra(parser):
        parser.add_argument("--stop-after", type=int, default=None, help=argparse.SUPPRESS)

    cfg, args = config_lib.from_command_line(config_lib.RegionConfig, __doc__.split("\n")[0],
                                             argv, extra)  # fmt: skip
    strategy = start_job(cfg)  # first: multi-worker must start before other TF ops
    out = worker_dir(Path(cfg.out), strategy)
    config_lib.save(cfg, out / "config.yaml")
    global_batch = cfg.batch_size * strategy.num_replicas_in_sync
    rows = load_rows(cfg)
    train, holdout, train_for_epoch, val_ds, holdout_ds, calib_ds = datasets(
        cfg, rows, global_batch
    )
    counts = holdout["split"].value_counts().to_dict()
    print(f"region {cfg.region} {cfg.head} sex={cfg.sex} input={cfg.input}: {len(train)} train, "
          f"{counts}, {strategy.num_replicas_in_sync} replica(s)")  # fmt: skip

    def build():
        model = RegionNet((*cfg.image_size, 1), head=cfg.head, sex_input=cfg.sex == "input",
                          block=cfg.block, filters=cfg.filters, dense_units=cfg.dense_units,
                          dropout=cfg.dropout, pool_padding=cfg.pool_padding,
                          name=f"region_{cfg.region}")  # fmt: skip
        model.compile(keras.optimizers.Adam(cfg.learning_rate), loss="mae", jit_compile=False)
        return model

    model, state = fit(build, train_for_epoch, val_ds, out, cfg.epochs, cfg.learning_rate,
                       cfg.patience, strategy, args.stop_after, cfg.select)  # fmt: skip
    if state["epoch"] < cfg.epochs and state["wait"] < cfg.patience:
        print(f"stopped after epoch {state['epoch']} (--stop-after); run again to resume")
        return 0
    recalibrate(model, clean_batches(calib_ds, 2048, global_batch))
    model.save(out / "model.keras")
    final = keras.saving.load_model(out / "model.keras")  # outside any strategy: plain batches
    pred = np.concatenate([final.predict_on_batch(x)[:, 0] for x, _ in holdout_ds])
    # every hold-out row (val and test); the training script itself reports val only
    table = holdout[["id", "boneage", "male", "split"]].assign(pred=pred)
    manifest_lib.save_table(table, out / "predictions.csv")
    val_table = table[table["split"] == "val"].drop(columns="split")
    manifest_lib.save_table(val_table, out / "val_predictions.csv")
    report = mae_report(val_table)
    write_json(out / "metrics.json", {"config": str(out / "config.yaml"), "epochs": state["epoch"],
                                      "seconds": state["seconds"], "val": report})  # fmt: skip
    print(format_report(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
