"""Hand segmentation on real radiographs, bootstrapped like the paper's authors did.

Round 0: masks drawn from the 21-point hand poses (``tf_boneage.preprocessing.pose``) of the
pose-annotated images train a U-Net. Round k: the previous U-Net segments every other image,
predictions that pass a quality filter become labels, and the U-Net is retrained on both. Each
round is evaluated on held-out pose-annotated images: the fraction of the 21 annotated points
inside the cleaned predicted mask, mask area statistics and Jaccard against the pose mask.

    python training/segmentation.py --preset rsna100 --set manifest=runs/rsna100.csv out=runs/seg

Resumable: a finished round is skipped, an interrupted one resumes from its last epoch
(``training/loop.py``). ``config.yaml`` (resolved), ``roundK/`` (``unet.keras``, history,
TensorBoard), ``report.json`` (held-out pose images: points inside the mask, Jaccard).
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import keras
import numpy as np
import pandas as pd
import tensorflow as tf
from tqdm import tqdm

from tf_boneage.data import io, manifest, split
from tf_boneage.data.augment import AffineRange, rows_of
from tf_boneage.data.pipeline import PipelineConfig, augmenter_of, segmentation_dataset
from tf_boneage.models import BCEJaccardLoss, DiceCoefficient, JaccardIndex, UNet
from tf_boneage.models.batchnorm import batch_for, clean_batches, recalibrate
from tf_boneage.preprocessing import pose
from tf_boneage.preprocessing.chain import ChainConfig, Preprocessor
from tf_boneage.training import config as config_lib
from tf_boneage.training import loop
from tf_boneage.training.runtime import start_job, worker_dir, write_json
from tf_boneage.training.task import Task

#: The split of the pose-annotated images, ids only (stable across runs and machines).
POSE_SPLIT = "data_manifests/handpose_split.csv"


def pose_table(table: pd.DataFrame, seed: int, split_file: str | Path = POSE_SPLIT) -> pd.DataFrame:
    """Pose-annotated rows with a ``pose_split`` (train / val / test): read from
    ``split_file`` (ids only) when it exists, else made (seeded, stratified) and written there."""
    split_file = Path(split_file)
    rows = table.dropna(subset=["pose_wrist_x", "pose_middle_finger4_x"]).copy()
    previous = split.load_split(split_file) if split_file.is_file() else None
    rows["split"] = split.assign_split(rows, {"val": 50, "test": 100}, seed, previous).to_numpy()
    if previous is None:
        split_file.parent.mkdir(parents=True, exist_ok=True)
        split.save_split(rows, split_file)
    return rows.rename(columns={"split": "pose_split"})


def labelled_table(table: pd.DataFrame, seed: int, out: Path, split_file=POSE_SPLIT):
    """Rows with a mask and a ``pose_split``: pose-annotated rows (masks drawn from the pose,
    split in ``split_file``) or, for manifests that already have masks (the synthetic
    default), their own rows and split."""
    if "pose_wrist_x" in table and table["pose_wrist_x"].notna().any():
        rows = pose_table(table, seed, split_file)
        rows["mask_path"] = write_pose_masks(rows, out / "masks_pose")
        return rows
    if "mask_path" in table and table["mask_path"].notna().any():
        return table.dropna(subset=["mask_path"]).assign(pose_split=lambda t: t["split"])
    raise ValueError("the manifest has neither 21-point pose columns nor mask_path")


def eval_points(row: pd.Series) -> np.ndarray:
    """Annotated points that must lie inside the hand: the 21-point pose, else the three
    landmarks (normalised (K, 2))."""
    if "pose_wrist_x" in row and np.isfinite(row["pose_wrist_x"]):
        return pose.pose_points(row)
    return np.array([[row[f"{n}_x"], row[f"{n}_y"]] for n in ("tip", "thumb", "capitate")], float)


def write_pose_masks(rows: pd.DataFrame, folder: Path) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for _, row in rows.iterrows():
        path = folder / f"{row['id']}.png"
        if not path.exists():
            image_h, image_w = io.load_image(row["image_path"]).shape
            m = pose.mask_from_pose(
                pose.pose_points(row), (image_h, image_w), (row["orig_h"], row["orig_w"])
            )
            cv2.imwrite(str(path), m * 255)
        paths.append(str(path))
    return paths


#: most pixels of decoded films held at once by :func:`iter_masks` (16 MP: about five 2,000 x
#: 1,600 films; the U-Net itself runs on its small input)
MAX_BATCH_PIXELS = 1 << 24


def batches_of_films(paths, batch: int, max_pixels: int = MAX_BATCH_PIXELS):
    """Decoded films ``(path, (h, w) float32)`` grouped in batches of one size (at most
    ``batch`` films and ``max_pixels`` pixels, a film larger than that alone), read one at a
    time: what is in memory is set by the batch, never by the number of films."""
    group: list = []
    for path in paths:
        image = io.load_image(path)
        if group and (
            image.shape != group[0][1].shape
            or len(group) >= batch
            or (len(group) + 1) * image.size > max_pixels
        ):
            yield group
            group = []
        group.append((path, image))
    if group:
        yield group


def small_copies(paths, fn, size: int, out=None, batch: int = 64):
    """``fn`` (a batch of decoded films (B, H, W, 1) float32 -> (B, size, size, 1)) over every
    film of ``paths`` in order, read in batches (:func:`batches_of_films`): (N, size, size, 1)
    float32. Only the small results are kept; with ``out`` (an ``.npy`` path) they are written
    there as they come and a :class:`~tf_boneage.data.rowfile.RowFile` is returned (rows read
    from the file on demand), so that not even they are held in memory."""
    from tf_boneage.data.rowfile import RowWriter

    paths = list(paths)
    shape = (len(paths), size, size, 1)
    x = np.empty(shape, np.float32) if out is None else RowWriter(out, shape)
    run = tf.function(fn, reduce_retracing=True)
    k = 0
    for group in batches_of_films(paths, batch):
        small = run(tf.constant(np.stack([image for _, image in group])[..., None])).numpy()
        if out is None:
            x[k : k + len(group)] = small
        else:
            x.write(small)
        k += len(group)
    return x if out is None else x.close()


def iter_masks(model, paths, size, batch=64):
    """Per film, in order: the cleaned mask (h, w) uint8 0 / 1 at the film's own size and the
    raw probabilities (h, w) float32 (the chain's own segmentation step, so evaluation sees
    what the chain does). Streams (:func:`batches_of_films`): full-size films of any number
    and sizes, one batch in memory at a time."""
    chain = Preprocessor(model, None, ChainConfig(unet_size=size))
    segment = tf.function(chain.segment, reduce_retracing=True)
    for group in tqdm(batches_of_films(paths, batch), desc="segmenting", unit="batch"):
        images = np.stack([image for _, image in group])[..., None]
        m, p = (t.numpy() for t in segment(tf.constant(images)))
        for (_, image), pk, mk in zip(group, p, m, strict=True):
            h, w = image.shape
            # the chain's own upsampling of masks (remove_background: nearest)
            mask = tf.image.resize(mk, (h, w), method="nearest").numpy()[..., 0] > 0.5
            yield mask.astype(np.uint8), tf.image.resize(pk, (h, w)).numpy()[..., 0]


def evaluate(model, rows: pd.DataFrame, size: int) -> dict:
    """Held-out pose images: points inside the cleaned mask, area, Jaccard vs the pose mask
    (streamed: one batch of films in memory)."""
    masks = iter_masks(model, rows["image_path"].tolist(), size)
    inside, areas, jaccard = [], [], []
    for (_, row), (m, _) in zip(rows.iterrows(), masks, strict=True):
        pts = eval_points(row)
        inside.append(pose.points_inside(m, pts)[~np.isnan(pts).any(1)])
        areas.append(m.mean())
        ref = cv2.imread(row["mask_path"], 0) > 0
        jaccard.append((ref & (m > 0)).sum() / max(1, (ref | (m > 0)).sum()))
    inside_all = np.concatenate(inside)
    per_image = np.array([i.mean() for i in inside])
    return {
        "images": len(rows),
        "points_inside": float(inside_all.mean()),
        "images_with_all_points_inside": float((per_image == 1).mean()),
        "worst_image_points_inside": float(per_image.min()),
        "mask_area_mean": float(np.mean(areas)),
        "mask_area_p5_p50_p95": [float(v) for v in np.percentile(areas, [5, 50, 95])],
        "jaccard_vs_pose_mask": float(np.mean(jaccard)),
    }


def quality_filter(mask: np.ndarray, prob: np.ndarray) -> bool:
    """Keep a pseudo-label: plausible area, tall enough, confident, little discarded mass."""
    area = mask.mean()
    if not 0.12 <= area <= 0.8:
        return False
    ys = np.nonzero(mask.any(1))[0]
    if ys.size == 0 or (ys[-1] - ys[0] + 1) < 0.5 * mask.shape[0]:
        return False
    inside = prob[mask > 0]
    outside_mass = prob[(mask == 0) & (prob > 0.5)].size / max(1, inside.size)
    return float(inside.mean()) >= 0.85 and outside_mass <= 0.05


class SegmentationTask(Task):
    """U-Net on (image, mask) pairs: BCE - log soft Jaccard, Jaccard and Dice metrics,
    geometric augmentation (turns of up to ``config.rotation`` degrees, scale 0.85-1.15, shift
    8 %, mirror), brightness shifts of up to ``config.brightness`` (clipped: an under-exposed
    film's lost soft tissue)."""

    def __init__(self, config, strategy, train, val, init: Path | None = None):
        super().__init__(config, strategy)
        self.train, self.val, self.init = train, val, init
        self.size = (config.size, config.size)
        self.affine = AffineRange(
            rotation=config.rotation, scale=(0.85, 1.15), shift=0.08, mirror=0.5
        )
        self._val = None
        self.augmenter = augmenter_of(self._train_pipeline(0))

    def _train_pipeline(self, epoch: int) -> PipelineConfig:
        """The training pipeline of ``epoch``: augmentation left to the train step."""
        return PipelineConfig(
            image_size=self.size,
            batch_size=self.global_batch,
            seed=self.config.seed + epoch,
            augment=True,
            affine=self.affine,
            brightness=self.config.brightness,
            device_augment=True,
            drop_remainder=True,
        )

    def augment(self, x, y, aug):
        """One warp of image and mask, and the image's exposure, on the replica's device."""
        seed, rows = rows_of(aug)
        out = self.augmenter({"image": x, "mask": y}, seed, rows)
        return out["image"], out["mask"]

    def build_model(self):
        cfg = self.config
        return UNet(
            (*self.size, 1),
            depth=cfg.depth,
            base_filters=cfg.base_filters,
            normalize=cfg.normalize,
            name="unet",
        )

    def initialize(self, model):
        if self.init is not None:  # warm start from the previous round
            model.set_weights(keras.saving.load_model(self.init).get_weights())

    def build_losses(self):
        return BCEJaccardLoss()

    def build_metrics(self):
        return [JaccardIndex(), DiceCoefficient()]

    def recalibration_batches(self, limit: int):
        """The first ``limit`` training images, un-augmented, in batches of at most
        :data:`~tf_boneage.models.batchnorm.MAX_RECALIBRATION_PIXELS` pixels."""
        clean = PipelineConfig(
            image_size=self.size, batch_size=min(64, limit), seed=self.config.seed
        )
        return clean_batches(segmentation_dataset(self.train, clean), limit, batch_for(self.size))

    def build_inputs(self, split, epoch=0):
        if split == "train":
            return segmentation_dataset(self.train, self._train_pipeline(epoch))
        if self._val is None:
            pc = PipelineConfig(
                image_size=self.size, batch_size=self.global_batch, shuffle=False, cache=True
            )
            self._val = segmentation_dataset(self.val, pc)
        return self._val


def train_round(cfg, train, val, out: Path, epochs: int, init: Path | None, strategy):
    """One round: :class:`SegmentationTask` trained by :func:`loop.run` (resumable, cosine
    rate, best weights by validation loss), batch norm recalibrated on clean images, saved as
    ``unet.keras``."""
    final = out / "unet.keras"
    if final.exists():
        print(f"{final} exists: round already trained")
        return keras.saving.load_model(final)
    task = SegmentationTask(cfg, strategy, train, val, init)
    model, state = loop.run(task, worker_dir(out, strategy), epochs, cfg.patience, select="best")
    # statistics averaged over batches small enough at any input size (batch_for)
    recalibrate(model, task.recalibration_batches(256))
    model.save(final)
    write_json(
        out / "train.json",
        {"seconds": state["seconds"], "train_images": len(train), "epochs": state["epoch"]},
    )
    return keras.saving.load_model(final)


def finished(out: str | Path) -> dict | None:
    """The report of a finished segmentation run in ``out``, else None."""
    path = Path(out) / "report.json"
    if path.is_file():
        report = json.loads(path.read_text())
        if report.get("finished"):
            return report
    return None


def run(cfg: config_lib.SegmentationConfig) -> dict:
    """Train every round of ``cfg`` (resumable: a finished run returns at once) and return
    the report (``OUT/report.json``); its ``unet`` is the U-Net to use downstream: the last
    round trained."""
    config_lib.check_unchanged(cfg, Path(cfg.out) / "config.yaml")
    done = finished(cfg.out)
    if done is not None:
        print(f"segmentation: done ({Path(cfg.out) / 'report.json'})")
        return done
    strategy = start_job(cfg)
    out = Path(cfg.out)
    config_lib.save(cfg, worker_dir(out, strategy) / "config.yaml")
    table = manifest.load_manifest(cfg.manifest)
    poses = labelled_table(table, cfg.seed, out, cfg.pose_split)
    train = poses[poses.pose_split == "train"]
    val = poses[poses.pose_split == "val"]
    test = poses[poses.pose_split == "test"]
    others = table[~table["id"].isin(poses["id"])]
    others = others[others["split"] == "train"]  # never pseudo-label the bone-age hold-out
    report = {"pose_images": {"train": len(train), "val": len(val), "test": len(test)}}
    init = None
    for r in range(cfg.rounds):
        rdir = out / f"round{r}"
        epochs = cfg.epochs[min(r, len(cfg.epochs) - 1)]
        print(f"segmentation round {r + 1}/{cfg.rounds}: {len(train)} training images")
        model = train_round(cfg, train, val, rdir, epochs, init, strategy)
        result = evaluate(model, test, cfg.size)
        result["train_images"] = len(train)
        report[f"round{r}"] = result
        print(f"round {r}: {result}")
        write_json(out / "report.json", report)
        init = rdir / "unet.keras"
        if r + 1 < cfg.rounds and others.empty:
            print("no unlabelled training images left: no further rounds")
            break
        if r + 1 < cfg.rounds:
            cand = others.head(cfg.max_pseudo) if cfg.max_pseudo else others
            masks = iter_masks(model, cand["image_path"].tolist(), cfg.size)
            folder = out / f"masks_round{r + 1}"
            folder.mkdir(parents=True, exist_ok=True)
            keep = []
            for rid, (m, p) in zip(cand["id"], masks, strict=True):
                if quality_filter(m, p):
                    cv2.imwrite(str(folder / f"{rid}.png"), (m > 0).astype(np.uint8) * 255)
                    keep.append(rid)
            pseudo = cand[cand["id"].isin(keep)].copy()
            pseudo["mask_path"] = [str(folder / f"{i}.png") for i in pseudo["id"]]
            report[f"round{r + 1}_pseudo_labels"] = {"candidates": len(cand), "kept": len(keep)}
            train = pd.concat([poses[poses.pose_split == "train"], pseudo], ignore_index=True)
    # the U-Net to use downstream: the last round trained (rounds can stop early)
    report.update(finished=True, unet=str(init))
    write_json(out / "report.json", report)
    return report


def main(argv=None) -> int:
    """``training/segmentation.py`` / ``tf-boneage train segmentation``."""
    cfg, _ = config_lib.from_command_line(
        config_lib.SegmentationConfig, __doc__.split("\n")[0], argv
    )
    run(cfg)
    return 0
