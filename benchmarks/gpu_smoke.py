"""A GPU check anyone with one can run: each paper-preset stage trained on embedded full-size
phantoms in mixed precision, with what the device waited on input.

    python benchmarks/gpu_smoke.py                 # GPU: one epoch per stage
    python benchmarks/gpu_smoke.py --steps 1       # CPU (no GPU): one step per stage, exit 0

Nothing is downloaded: ``--n`` phantoms of 2080 x 1600 are generated in a temporary folder,
and each stage is fed its inputs the way its ``Task`` reads them (segmentation: films and
masks; landmarks: films at 256 px with their points; orientation: films at 64 px; regions A,
B, C: crops of the films at the paper's sizes, decoded once into the store). Per stage it
prints films/s, the share of the stage's time spent waiting for the next batch (the
``tf.data`` iterator's wait; the rest is the train step, augmentation on the device
included), the device's peak memory (``tf.config.experimental.get_memory_info``; the host's
resident set on a CPU) and the films/s the FLOPs would allow on an A100 at 40 % of its peak
(BENCHMARKS.md). Without a GPU it says so, runs in float32 and exits 0.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import tensorflow as tf
from common import machine, table

#: training GFLOPs per film of each stage's network at the paper's sizes (3 x forward;
#: BENCHMARKS.md for the U-Net, landmarks and region A; B and C scaled from A by their pixels)
TRAIN_GFLOPS = {"segmentation": 89.4, "landmarks": 18.2, "orientation": 0.05, "region A": 19.2,
                "region B": 7.9, "region C": 11.8}  # fmt: skip
A100_TFLOPS = 312.0 * 0.4


def _phantoms(out: Path, n: int) -> pd.DataFrame:
    from tf_boneage.data.synthetic import generate

    generate(out, n=n, size=(2080, 1600), seed=1, holdout={"val": 2}, progress=False)
    return pd.read_csv(out / "manifest.csv")


def _small(paths, size: int) -> np.ndarray:
    """Films at (size, size) by the chain's own resize (as the stages get them)."""
    from tf_boneage.training.orientation import small_films

    return small_films(list(paths), size)


def _crops(table: pd.DataFrame, size, out: Path) -> pd.DataFrame:
    out.mkdir(parents=True, exist_ok=True)
    rows = table.copy()
    paths = []
    for p in table["image_path"]:
        img = cv2.imread(p, cv2.IMREAD_GRAYSCALE)
        path = out / Path(p).name
        cv2.imwrite(str(path), cv2.resize(img, (size[1], size[0]), interpolation=cv2.INTER_AREA))
        paths.append(str(path))
    rows["image_path"] = paths
    return rows


def _tasks(table: pd.DataFrame, tmp: Path, precision: str, strategy, batch: int | None):
    """(stage name, task) of every paper-preset stage on the phantoms."""
    from tf_boneage.training import config as cl
    from tf_boneage.training.landmarks import LandmarkTask
    from tf_boneage.training.orientation import OrientationTask
    from tf_boneage.training.region import RegionTask
    from tf_boneage.training.segmentation import SegmentationTask

    table = table.copy()
    table["image_path"] = [str(tmp / "films" / p) for p in table["image_path"]]
    table["mask_path"] = [str(tmp / "films" / p) for p in table["mask_path"]]
    manifest = tmp / "films" / "manifest.csv"
    sets = [f"manifest={manifest}", f"precision={precision}"]
    if batch:
        sets.append(f"batch_size={batch}")
    train, val = table[table["split"] == "train"], table[table["split"] == "val"]
    part = table["split"].to_numpy()
    seg = cl.load(cl.SegmentationConfig, "paper", None, sets)
    yield "segmentation", SegmentationTask(seg, strategy, train, val)
    marks = cl.load(cl.LandmarkConfig, "paper", None, sets)
    from tf_boneage.data.manifest import LANDMARK_COLUMNS

    points = table[list(LANDMARK_COLUMNS)].to_numpy(np.float32)
    x = _small(table["image_path"], marks.size)
    yield "landmarks", LandmarkTask(marks, strategy, x, points, part)
    orient = cl.load(cl.OrientationConfig, "paper", None, sets)
    yield "orientation", OrientationTask(orient, strategy, _small(table["image_path"], 64), part)
    sizes = cl.read_preset("paper")["regions"]
    for region, size in sizes.items():
        crops = _crops(table, size, tmp / f"crops{region}")
        crops_manifest = tmp / f"crops{region}" / "manifest.csv"
        crops.to_csv(crops_manifest, index=False)
        cfg = cl.load(
            cl.RegionConfig,
            "paper",
            None,
            [
                *sets[1:],
                f"manifest={crops_manifest}",
                f"region={region}",
                f"image_size={size[0]}x{size[1]}",
            ],  # fmt: skip
        )
        yield f"region {region}", RegionTask(cfg, strategy, crops)


def _run(task, steps: int | None) -> dict:
    """Train ``task``'s model for ``steps`` batches (None: one epoch) as the loop does:
    ``strategy.run`` of the task's step (:func:`tf_boneage.training.loop.distributed_epoch`),
    timed apart from the input; films/s and the share of time waiting for input (the first
    step, which traces, is not timed)."""
    strategy = task.strategy
    with strategy.scope():
        model = task.compiled_model()
        model.optimizer.build(model.trainable_variables)
    dataset = task.build_inputs("train", 0)
    if steps is not None:
        dataset = dataset.take(steps)
    dist = iter(strategy.experimental_distribute_dataset(dataset))

    @tf.function
    def step(*batch):
        return strategy.run(lambda *b: task.train_step(model, *b), args=batch)

    waited = stepped = 0.0
    films = 0
    first = True
    while True:
        start = time.perf_counter()
        try:
            batch = next(dist)
        except StopIteration:
            break
        got = time.perf_counter()
        step(*batch)
        done = time.perf_counter()
        n = int(tf.shape(tf.nest.flatten(batch[1])[0])[0])
        if first:  # tracing: not timed
            first = False
            continue
        waited += got - start
        stepped += done - got
        films += n
    total = waited + stepped
    return {
        "films/s": films / total if total else float("nan"),
        "waiting on input": waited / total if total else float("nan"),
    }


def _peak_mb(gpu: bool) -> float:
    if gpu:
        return tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=None, help="phantoms (default 64, CPU 6)")
    parser.add_argument(
        "--steps", type=int, default=None, help="steps per stage (default: an epoch)"
    )
    args = parser.parse_args(argv)
    gpu = bool(tf.config.list_physical_devices("GPU"))
    if not gpu:
        print("no GPU on this machine: a CPU smoke run of every stage in float32 (exit 0)")
    precision = "mixed_float16" if gpu else "float32"
    n = args.n or (64 if gpu else 6)
    steps = args.steps if args.steps is not None else (None if gpu else 1)
    strategy = tf.distribute.get_strategy()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        films = _phantoms(tmp / "films", n)
        for stage, task in _tasks(films, tmp, precision, strategy, None if gpu else 2):
            if gpu:
                tf.config.experimental.reset_memory_stats("GPU:0")
            result = _run(task, steps if steps is None else steps + 1)
            key = stage if stage in TRAIN_GFLOPS else stage.split()[0]
            rows.append(
                {
                    "stage": stage,
                    **result,
                    "peak MB": _peak_mb(gpu),
                    "A100 from FLOPs, films/s": A100_TFLOPS * 1e3 / TRAIN_GFLOPS[key],
                }
            )
            print(f"{stage}: done", flush=True)
    device = "GPU" if gpu else "CPU (no GPU)"
    print(f"machine: {machine()}; {device}; precision {precision}; {n} phantoms")
    print(table(rows, ["stage", "films/s", "waiting on input", "peak MB",
                       "A100 from FLOPs, films/s"]))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
