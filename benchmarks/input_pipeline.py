"""Input pipeline throughput on full-size PNGs: the tf.data pipeline (parallel decode + resize
+ in-graph batch augmentation) against the same work in a single Python generator with cv2,
and against the training step of the region model it feeds (paper size, 500 x 375).

    python benchmarks/input_pipeline.py [--images DIR] [--n 48] [--batch 8]

Images: ``../shared/data/registered60/images`` (1600 x 2080 RSNA PNGs) when present, otherwise
``--n`` synthetic phantoms of 2080 x 1600 written to a temporary folder.
"""

from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path

import cv2
import keras
import numpy as np
import pandas as pd
from common import best_rate, machine, table

from tf_boneage.data.augment import AffineRange
from tf_boneage.data.pipeline import PipelineConfig, region_dataset

SIZE = (500, 375)
REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "registered60" / "images"


def _images(folder: Path | None, n: int, tmp: Path) -> list[str]:
    if folder is None and REAL.is_dir():
        folder = REAL
    if folder is not None:
        return sorted(str(p) for p in Path(folder).glob("*.png"))[:n]
    from tf_boneage.data.synthetic import generate

    generate(tmp, n=n, size=(2080, 1600), progress=False)
    return sorted(str(p) for p in (tmp / "images").glob("*.png"))


def cv2_generator(paths, batch, ranges: AffineRange, seed=0):
    """The same work as the tf.data pipeline, in plain Python: read, resize, augment, batch."""
    rng = np.random.default_rng(seed)
    h, w = SIZE
    for start in range(0, len(paths), batch):
        out = []
        for p in paths[start : start + batch]:
            img = cv2.imread(p, cv2.IMREAD_UNCHANGED)
            if img.ndim == 3:
                img = cv2.cvtColor(
                    img, cv2.COLOR_BGRA2GRAY if img.shape[2] == 4 else cv2.COLOR_BGR2GRAY
                )
            img = img.astype(np.float32)
            img /= 65535.0 if img.max() > 255 else 255.0
            img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
            angle = rng.uniform(-ranges.rotation, ranges.rotation)
            scale = rng.uniform(*ranges.scale)
            m = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), angle, scale)
            m[:, 2] += rng.uniform(-ranges.shift, ranges.shift, 2) * (w, h)
            out.append(cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR))
        yield np.stack(out)[..., None]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=Path, default=None)
    parser.add_argument("--n", type=int, default=48)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        paths = _images(args.images, args.n, Path(tmp))
        n = len(paths)
        manifest = pd.DataFrame(
            {"image_path": paths, "boneage": 100.0, "male": pd.array([True] * n, dtype="boolean")}
        )
        ranges = AffineRange(rotation=15, scale=(0.9, 1.1), shift=0.05)
        cfg = PipelineConfig(
            image_size=SIZE, batch_size=args.batch, shuffle=False, augment=True, affine=ranges
        )
        ds = region_dataset(manifest, cfg)

        def consume_tf():
            for _ in ds:
                pass

        def consume_cv2():
            for _ in cv2_generator(paths, args.batch, ranges):
                pass

        tf_rate = best_rate(consume_tf, n, repeats=2)
        cv_rate = best_rate(consume_cv2, n, repeats=2, warmup=0)
        from tf_boneage.models import RegionNet

        model = RegionNet((*SIZE, 1))
        model.compile(keras.optimizers.Adam(1e-4), loss="mae", jit_compile=False)
        x = np.random.default_rng(0).random((args.batch, *SIZE, 1), dtype=np.float32)
        y = np.full((args.batch, 1), 100.0, np.float32)
        step_rate = best_rate(lambda: model.train_on_batch(x, y), args.batch, repeats=2)
        keras.backend.clear_session()
    h, w = cv2.imread(paths[0], cv2.IMREAD_UNCHANGED).shape[:2]
    rows = [
        {"what": "tf.data: parallel decode + resize + in-graph augment", "img/s": tf_rate},
        {"what": "Python generator with cv2 (same work, one process)", "img/s": cv_rate},
        {"what": "region net training step (500x375, paper size)", "img/s": step_rate},
    ]
    print(f"machine: {machine()}; {n} PNGs of {w}x{h} -> {SIZE[1]}x{SIZE[0]}; batch {args.batch}")
    print(table(rows, ["what", "img/s"]))
    print(
        f"\ntf.data / cv2 generator: {tf_rate / cv_rate:.2f}x; "
        f"tf.data / training step: {tf_rate / step_rate:.1f}x "
        f"({'the GPU-less step is the bottleneck' if tf_rate > step_rate else 'input-bound'})"
    )
    return 0 if math.isfinite(tf_rate) else 1


if __name__ == "__main__":
    raise SystemExit(main())
