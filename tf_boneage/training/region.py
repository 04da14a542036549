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
import json
import sys
import weakref
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from tf_boneage.data import manifest as manifest_lib
from tf_boneage.data.augment import AffineRange, Degradation, blur_orders, rows_of
from tf_boneage.data.pipeline import PipelineConfig, augmenter_of, region_dataset
from tf_boneage.evaluation import format_report, mae_report
from tf_boneage.models import RegionNet
from tf_boneage.models.age_losses import soft_bin_cross_entropy
from tf_boneage.models.batchnorm import clean_batches, recalibrate
from tf_boneage.training import config as config_lib
from tf_boneage.training import loop
from tf_boneage.training.runtime import start_job, worker_dir, write_json
from tf_boneage.training.task import Task


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


def qc_filtered(train: pd.DataFrame, min_plausibility: float) -> pd.DataFrame:
    """Training rows of a cache manifest whose landmark plausibility is at least
    ``min_plausibility`` and whose mask is not empty (``predict``'s ``MIN_MASK_AREA``); says
    how many were dropped."""
    from tf_boneage.inference.predict import MIN_MASK_AREA

    if not {"mask_area", "landmark_plausibility"} <= set(train.columns):
        raise config_lib.ConfigError(
            "train_min_plausibility", min_plausibility, "a cache manifest with QC columns"
        )
    keep = (train["mask_area"] >= MIN_MASK_AREA) & (
        train["landmark_plausibility"] >= min_plausibility - 1e-6
    )
    print(f"QC: {int((~keep).sum())} of {len(train)} training rows dropped")
    return train[keep]


def enlargement(cfg: config_lib.RegionConfig) -> tuple[float, float]:
    """(rows, cols) factor by which a cached crop of ``cfg.region`` shows the canonical frame
    enlarged at the network's input ``cfg.image_size``: the input size over the region's box in
    frame pixels, the frame read from the cache's ``chain.json`` (rsna100: region B's box of 29
    x 38 frame pixels becomes 48 x 64, 1.65 x 1.68; C 1.10 x 1.13; A 1 x 1). Raw inputs, or a
    cache without ``chain.json``: (1, 1)."""
    from tf_boneage.preprocessing.regions import box_pixels
    from tf_boneage.preprocessing.registration import Frame
    from tf_boneage.preprocessing.spec import CHAIN_FILE, ChainSpec

    recorded = Path(cfg.manifest).resolve().parent / CHAIN_FILE
    if cfg.input != "cache" or not recorded.is_file():
        return (1.0, 1.0)
    frame = Frame(*ChainSpec.read(recorded).frame)  # validated: a bad record names the file
    y0, x0, y1, x1 = box_pixels(cfg.region, frame)
    return (cfg.image_size[0] / (y1 - y0), cfg.image_size[1] / (x1 - x0))


class RegionTask(Task):
    """One region network: region crops (or raw images) -> age, MAE on months (the
    classification head's expected value is in months too), affine augmentation."""

    def __init__(self, config, strategy, rows: pd.DataFrame):
        super().__init__(config, strategy)
        cfg = config
        self.train = rows[rows["split"] == "train"]
        if cfg.train_min_plausibility > 0:
            self.train = qc_filtered(self.train, cfg.train_min_plausibility)
        if cfg.max_train:
            self.train = self.train.sample(
                min(cfg.max_train, len(self.train)), random_state=cfg.seed
            )
        self.val = rows[rows["split"] == "val"]
        if self.train.empty or self.val.empty:
            raise ValueError(
                f"{cfg.manifest}: need train and val rows (have {len(self.train)}, {len(self.val)})"
            )
        self.holdout = rows[rows["split"].isin(["val", "test"])]
        self.affine = AffineRange(cfg.rotation, tuple(cfg.scale), cfg.shift, 0.0)
        self.degrade = Degradation(
            underexposed=cfg.underexposed,
            blurred=cfg.blurred,
            blur_scale=enlargement(cfg) if cfg.blurred else (1.0, 1.0),
            noisy=cfg.noisy,
            max_noise=cfg.max_noise,
        )
        if cfg.blurred:
            scale, orders = self.degrade.blur_scale, blur_orders(self.degrade.blur_scale)
            print(f"blur: crops enlarged {scale[0]:.2f} x {scale[1]:.2f}, binomial orders {orders}")
        self.augmenter = augmenter_of(self._train_pipeline(0))
        # model -> the same model with its bin logits as a second output (weak: a model
        # that is gone takes its probe with it)
        self._probes = weakref.WeakKeyDictionary()

    def build_model(self):
        cfg = self.config
        return RegionNet(
            (*cfg.image_size, 1),
            head=cfg.head,
            sex_input=cfg.sex == "input",
            block=cfg.block,
            filters=cfg.filters,
            dense_units=cfg.dense_units,
            dropout=cfg.dropout,
            pool_padding=cfg.pool_padding,
            name=f"region_{cfg.region}",
        )

    def build_losses(self):
        return "mae"

    @property
    def custom_step(self) -> bool:
        """The bin cross-entropy needs the softmax, not just the expected age."""
        return self.config.head == "classification" and self.config.bin_loss_weight > 0

    def prepare_step(self, model):
        """The model with its bin logits as a second output (the same layers: one forward
        pass), built once per model outside the traced step."""
        if self.custom_step and model not in self._probes:
            outputs = [model.output, model.get_layer("bin_logits").output]
            self._probes[model] = keras.Model(model.inputs, outputs)

    def training_loss(self, model, x, y):
        """Per-sample MAE of the age (months), plus ``bin_loss_weight`` times the cross-entropy
        (nats) of the head's softmax against a Gaussian of ``bin_sigma`` months around the true age
        (:mod:`tf_boneage.models.age_losses`) when :attr:`custom_step`."""
        if not self.custom_step:
            return super().training_loss(model, x, y)
        import tensorflow as tf

        self.prepare_step(model)
        age, logits = self._probes[model](x, training=True)
        y = tf.reshape(tf.cast(y, "float32"), (-1, 1))
        start = float(model.get_layer("boneage").start)
        cross = soft_bin_cross_entropy(y, logits, start, self.config.bin_sigma)
        return self.loss_fn(model)(y, age) + self.config.bin_loss_weight * cross

    def _select(self, ds):
        if self.config.sex == "input":
            return ds
        return ds.map(lambda x, *rest: ({"image": x["image"]}, *rest))

    def _train_pipeline(self, epoch: int) -> PipelineConfig:
        """The training pipeline of ``epoch``: the cache's crops decoded once into a store
        beside it (``CACHE/decoded/``, :mod:`tf_boneage.data.decoded`), augmentation left
        to the train step."""
        cfg = self.config
        store = str(Path(cfg.manifest).parent / "decoded") if cfg.input == "cache" else None
        return PipelineConfig(
            decoded=store,
            image_size=tuple(cfg.image_size),
            batch_size=self.global_batch,
            seed=cfg.seed + epoch,
            augment=True,
            affine=self.affine,
            degrade=self.degrade,
            device_augment=True,
            drop_remainder=True,
        )

    def augment(self, x, y, aug):
        """Affine warp, degradations and exposure of the crops, on the replica's device."""
        seed, rows = rows_of(aug)
        image = self.augmenter({"image": x["image"]}, seed, rows)["image"]
        return {**x, "image": image}, y

    def _clean(self, rows):
        pc = PipelineConfig(
            image_size=tuple(self.config.image_size), batch_size=self.global_batch, shuffle=False
        )
        return self._select(region_dataset(rows, pc))

    def build_inputs(self, split, epoch=0):
        """``train`` (per epoch, ``(x, y, aug)``: augmented in the train step), ``val``, ``holdout`` (val and test rows, in
        order) or ``calibration`` (2,048 clean training images in random order: the first rows
        of a manifest are not a fair sample; recalibrating on them cost 1.3 months)."""
        cfg = self.config
        if split == "train":
            return self._select(region_dataset(self.train, self._train_pipeline(epoch)))
        if split == "val":
            return self._clean(self.val)
        if split == "holdout":
            return self._clean(self.holdout)
        if split == "calibration":
            n = min(2048, len(self.train))
            return self._clean(self.train.sample(n, random_state=cfg.seed))
        raise ValueError(f"unknown split {split!r}")

    def recalibration_batches(self, limit: int):
        """``limit`` (at most 2,048) clean training crops of the ``calibration`` split, one
        training batch at a time."""
        return clean_batches(self.build_inputs("calibration"), limit, self.global_batch)


def finished(out: str | Path) -> bool:
    """True when the run in ``out`` has written its predictions."""
    return (Path(out) / "predictions.csv").is_file()


def run(cfg: config_lib.RegionConfig, stop_after: int | None = None) -> dict | None:
    """Train (resumable), recalibrate batch norm, predict every hold-out row and report the
    validation MAE of one region run; returns ``metrics.json`` as a dict, or None when
    ``stop_after`` ended the call early. A finished run returns at once."""
    out_root = Path(cfg.out)
    config_lib.check_unchanged(cfg, out_root / "config.yaml")
    if finished(out_root) and (out_root / "metrics.json").is_file():
        print(f"region {out_root.name}: done ({out_root / 'predictions.csv'})")
        return json.loads((out_root / "metrics.json").read_text())
    strategy = start_job(cfg)  # first: multi-worker must start before other TF ops
    out = worker_dir(out_root, strategy)
    config_lib.save(cfg, out / "config.yaml")
    task = RegionTask(cfg, strategy, load_rows(cfg))
    counts = task.holdout["split"].value_counts().to_dict()
    print(
        f"region {cfg.region} {cfg.head} sex={cfg.sex} input={cfg.input}: {len(task.train)} "
        f"train, {counts}, {strategy.num_replicas_in_sync} replica(s)"
    )
    model, state = loop.run(task, out, cfg.epochs, cfg.patience, cfg.select, stop_after)
    if state["epoch"] < cfg.epochs and state["wait"] < cfg.patience:
        print(f"stopped after epoch {state['epoch']} (stop_after); run again to resume")
        return None
    recalibrate(model, task.recalibration_batches(2048))
    model.save(out / "model.keras")
    final = keras.saving.load_model(out / "model.keras")  # outside any strategy: plain batches
    pred = predict(final, task.build_inputs("holdout"), task.holdout, cfg.tta)
    extra = {"epochs": state["epoch"], "seconds": state["seconds"]}
    if cfg.blurred:  # derived from the cache's frame, so recorded with the run
        extra["blur_orders"] = list(blur_orders(task.degrade.blur_scale))
    return write_predictions(out, cfg, task.holdout, pred, extra)


def predict(model, dataset, rows: pd.DataFrame, tta: int = 1) -> np.ndarray:
    """(N,) estimates (months) of ``model`` on every batch of ``dataset`` (``(x, y)``, in the
    order of ``rows``), each the mean over ``tta`` test-time views of the crop
    (:mod:`tf_boneage.preprocessing.views`). ``RuntimeError`` if the labels come back in
    another order than ``rows``' ``boneage``."""
    import tensorflow as tf

    from tf_boneage.preprocessing import views

    preds, labels = [], []
    for x, y in dataset:
        inputs = {
            k: views.views(v, tta) if k == "image" else tf.tile(v, [tta, 1]) for k, v in x.items()
        }
        got = np.asarray(model.predict_on_batch(inputs))[:, 0]
        preds.append(views.mean_over_views(tf.constant(got), tta).numpy())
        labels.append(np.asarray(y))
    if not np.allclose(np.concatenate(labels), rows["boneage"].to_numpy(np.float32)):
        raise RuntimeError("the hold-out batches came back in another order than their rows")
    return np.concatenate(preds)


def write_predictions(out: Path, cfg, holdout: pd.DataFrame, pred, extra: dict) -> dict:
    """``predictions.csv`` (every val and test row), ``val_predictions.csv`` and
    ``metrics.json`` (the val report, ``extra``) of a run in ``out``; returns the metrics."""
    # every hold-out row (val and test); the training script itself reports val only
    table = holdout[["id", "boneage", "male", "split"]].assign(pred=pred)
    manifest_lib.save_table(table, out / "predictions.csv")
    val_table = table[table["split"] == "val"].drop(columns="split")
    manifest_lib.save_table(val_table, out / "val_predictions.csv")
    report = mae_report(val_table)
    metrics = {"config": str(out / "config.yaml"), **extra, "tta": int(cfg.tta), "val": report}
    write_json(out / "metrics.json", metrics)
    print(format_report(report))
    return metrics


def main(argv=None) -> int:
    """``training/region.py`` / ``tf-boneage train region``."""

    def extra(parser):
        parser.add_argument("--stop-after", type=int, default=None, help=argparse.SUPPRESS)

    cfg, args = config_lib.from_command_line(
        config_lib.RegionConfig, __doc__.split("\n")[0], argv, extra
    )
    try:
        run(cfg, args.stop_after)
    except config_lib.ConfigError as exc:  # e.g. the out folder holds a run of other settings
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
