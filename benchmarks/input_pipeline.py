"""Does the input keep up with a GPU? Images/s of each stage's pipeline on this machine's
cores, with the augmentation moved into the train step, next to what one A100 and one H100
would consume (from the measured FLOPs, mixed precision at 40 % of peak), and how many host
cores each GPU needs to be fed.

    python benchmarks/input_pipeline.py [--images DIR] [--n 60] [--batch 32] [--epochs 3]

Films: ``../shared/data/registered60/images`` (1600 x 2080 RSNA PNGs) when present, otherwise
``--n`` synthetic phantoms of 2080 x 1600. Pipelines, each consumed for ``--epochs`` passes
(the first of a stored pipeline writes its store and is not timed):

- segmentation input: full-size PNG decoded and resized to 512 x 512 every epoch;
- region crops (paper size, 500 x 375, and rsna100's region A, 104 x 80): written as 8-bit
  PNGs as the preprocessing cache writes them, then read by ``region_dataset`` decoding every
  epoch, and from the decoded store (``PipelineConfig.decoded``);
- the augmentation the train step now runs on the device (warp, degradations, exposure),
  here on this CPU, for scale.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import cv2
import pandas as pd
import tensorflow as tf
from common import machine, table

from tf_boneage.data.augment import AffineRange, BatchAugmenter, Degradation
from tf_boneage.data.pipeline import PipelineConfig, region_dataset

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "registered60" / "images"
#: training GFLOPs per image (3 x forward; BENCHMARKS.md, benchmarks/models.py)
TRAIN_GFLOPS = {"U-Net 512 x 512": 89.4, "region A 500 x 375": 19.2, "region A 104 x 80": 0.95}
#: dense float16 tensor-core peaks (TFLOP/s), sustained at 40 %
GPUS = {"A100": 312.0, "H100 SXM": 989.0}
SUSTAINED = 0.4


def _films(folder: Path | None, n: int, tmp: Path) -> list[str]:
    if folder is None and REAL.is_dir():
        folder = REAL
    if folder is not None:
        return sorted(str(p) for p in Path(folder).glob("*.png"))[:n]
    from tf_boneage.data.synthetic import generate

    generate(tmp, n=n, size=(2080, 1600), progress=False)
    return sorted(str(p) for p in (tmp / "images").glob("*.png"))


def _crops(films: list[str], size: tuple[int, int], out: Path) -> list[str]:
    """Each film resized to ``size`` and written as an 8-bit PNG (as the cache writes crops)."""
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for f in films:
        img = cv2.imread(f, cv2.IMREAD_GRAYSCALE)
        crop = cv2.resize(img, (size[1], size[0]), interpolation=cv2.INTER_AREA)
        path = out / Path(f).name
        cv2.imwrite(str(path), crop)
        paths.append(str(path))
    return paths


def _rate(make, epochs: int, skip_first: bool = False) -> float:
    """Images/s over ``epochs`` passes of ``make()`` (a dataset per epoch)."""
    images, seconds = 0, 0.0
    for epoch in range(epochs + int(skip_first)):
        start = time.perf_counter()
        n = sum(int(tf.shape(b[1])[0]) for b in make(epoch))
        if skip_first and epoch == 0:
            continue
        images += n
        seconds += time.perf_counter() - start
    return images / seconds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=Path, default=None)
    parser.add_argument("--n", type=int, default=60)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--copies", type=int, default=20, help="crop rows per film")
    args = parser.parse_args(argv)
    cores = os.cpu_count()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        films = _films(args.images, args.n, tmp / "films")

        def frame(paths, copies=1):
            paths = list(paths) * copies
            male = pd.array([True] * len(paths), dtype="boolean")
            return pd.DataFrame({"image_path": paths, "boneage": 100.0, "male": male})

        def pipe(manifest, size, **kw):
            return lambda epoch: region_dataset(
                manifest,
                PipelineConfig(image_size=size, batch_size=args.batch, seed=epoch, **kw),
            )

        seg = frame(films)
        rows.append(
            {
                "pipeline": "full-size film -> 512 x 512 (segmentation input), decoded every epoch",
                "images/s": _rate(pipe(seg, (512, 512)), 1),
                "feeds": "U-Net 512 x 512",
            }
        )
        for size, model in (((500, 375), "region A 500 x 375"), ((104, 80), "region A 104 x 80")):
            crops = frame(_crops(films, size, tmp / f"crops{size[0]}"), args.copies)
            rows.append(
                {
                    "pipeline": f"crops {size[0]} x {size[1]}, PNG decoded every epoch",
                    "images/s": _rate(pipe(crops, size), args.epochs),
                    "feeds": model,
                }
            )
            store = str(tmp / f"store{size[0]}")
            rows.append(
                {
                    "pipeline": f"crops {size[0]} x {size[1]}, from the decoded store",
                    "images/s": _rate(pipe(crops, size, decoded=store), args.epochs, True),
                    "feeds": model,
                }
            )
        augmenter = BatchAugmenter(
            AffineRange(10, (0.9, 1.1), 0.05), degrade=Degradation(0.25, 0.5, 0.25)
        )
        batch = {"image": tf.random.uniform([args.batch, 500, 375, 1])}
        step = tf.function(lambda b, s: augmenter(b, s)["image"])
        step(batch, tf.constant([1, 2], tf.int64))
        start, reps = time.perf_counter(), 5
        for k in range(reps):
            step(batch, tf.constant([k, 2], tf.int64)).numpy()
        rows.append(
            {
                "pipeline": "the train step's augmentation of 500 x 375 crops, on this CPU",
                "images/s": reps * args.batch / (time.perf_counter() - start),
                "feeds": "region A 500 x 375",
            }
        )
    for r in rows:
        on_device = "augmentation" in r["pipeline"]  # runs on the GPU, not on host cores
        for gpu, peak in GPUS.items():
            appetite = peak * 1e3 * SUSTAINED / TRAIN_GFLOPS[r["feeds"]]
            r[f"{gpu} eats img/s"] = appetite
            cores_needed = appetite / (r["images/s"] / cores)
            r[f"{gpu}: cores to feed"] = "(on the GPU)" if on_device else cores_needed
    columns = ["pipeline", "images/s", "feeds"]
    for gpu in GPUS:
        columns += [f"{gpu} eats img/s", f"{gpu}: cores to feed"]
    print(f"machine: {machine()}; {len(films)} films; batch {args.batch}")
    print(table(rows, columns))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
