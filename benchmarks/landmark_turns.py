"""How far a film's landmarks drift when the film is turned, with one or two landmark looks.

    python benchmarks/landmark_turns.py --runs runs/t24 --preset rsna100 \
        --manifest runs/rsna100.csv --split val --limit 200 --out landmark_turns.md

The chain of a ``training/table.py`` folder (its cache's ``chain.json``, outline and
orientation step, as the export serves it) reads the landmarks of the first ``--limit`` films
of the split upright and turned clockwise by each ``--angles`` (one Lanczos resampling at the
film's proportions, as ``benchmarks/robustness.py`` turns them; 90 degrees exactly). The
turned film's points are carried back to the upright film and compared with the upright
film's own, in true (square-pixel) distance over the tip-capitate distance, per landmark
count (``--passes``: 1, the net's one look; 2, again at the film turned upright by the
first, ``ChainConfig.landmark_passes``). The turn a landmark net learnt (25 degrees in the
presets) is where one look starts to drift. No model is trained or exported here.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np
import tensorflow as tf
from common import split_arguments, split_rows, write_rows

from tf_boneage.data import io
from tf_boneage.inference import robustness
from tf_boneage.preprocessing import cache, chain
from tf_boneage.training import config as config_lib
from tf_boneage.training.export import cache_outline, chain_of_runs


def build(runs, preset: str, passes: int):
    """(the chain of ``runs``' cache with ``passes`` landmark looks, its assumed aspect)."""
    spec = dataclasses.replace(chain_of_runs(runs, preset), landmark_passes=passes)
    pre = chain.load(
        spec.unet,
        spec.landmarks,
        spec.frame,
        spec.region_sizes,
        spec.orient,
        spec.orient_size,
        spec.orient_model,
        spec.orient_margin,
        spec.landmark_passes,
    )
    outline = cache_outline(runs)
    if outline is not None:
        pre.outline = tf.constant(outline)
    return pre, spec


def read_points(pre, films, sizes, upright: bool, batch: int = 50) -> np.ndarray:
    """(N, 3, 2) landmarks of ``films`` in continuous pixels of each film."""
    run = tf.function(
        lambda x, s: pre(x, s, upright_size=upright)["landmarks"], reduce_retracing=True
    )
    out = []
    for start in range(0, len(films), batch):
        part = films[start : start + batch]
        x = tf.constant(np.stack(part)[..., None], tf.float32)
        got = run(x, tf.constant(sizes[start : start + len(part)])).numpy().reshape(-1, 3, 2)
        out.append(got * np.float32([part[0].shape[1], part[0].shape[0]]))
    return np.concatenate(out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", required=True, help="a training/table.py folder")
    parser.add_argument("--preset", required=True, choices=config_lib.PRESETS)
    split_arguments(parser, "val", 200)
    parser.add_argument("--angles", type=float, nargs="+", default=[15, 30, 45, 90])
    parser.add_argument("--passes", type=int, nargs="+", default=[1, 2], choices=(1, 2))
    parser.add_argument("--out", required=True, help="markdown table (CSV beside it)")
    args = parser.parse_args(argv)
    if args.split == "test":
        print("note: the test split is for reporting; choose settings on val")
    rows = split_rows(args)
    films = [io.load_image(p) for p in rows["image_path"]]
    shapes = {f.shape for f in films}
    if len(shapes) != 1:
        raise SystemExit(f"films of one size only (a thumbnail set), got {sorted(shapes)}")
    (shape,) = shapes
    records = []
    for passes in args.passes:
        pre, spec = build(Path(args.runs), args.preset, passes)
        aspect = spec.assume_aspect
        sizes, upright = cache.original_sizes(rows, aspect)
        stretch = np.float32([1.0, 1.0 if aspect is None else (shape[1] / aspect) / shape[0]])
        base = read_points(pre, films, sizes, upright) * stretch
        axis = np.linalg.norm(base[:, 0] - base[:, 2], axis=1)[:, None]
        for angle in args.angles:
            turned = [robustness.rotate(f, angle, aspect) for f in films]
            got = read_points(pre, turned, sizes, upright)
            back = robustness.turned_back(got, angle, shape, aspect) * stretch
            drift = np.linalg.norm(back - base, axis=2) / axis  # (N, 3)
            records.append(
                {
                    "looks": passes,
                    "turn (degrees)": angle,
                    "tip %": 100 * float(np.median(drift[:, 0])),
                    "thumb %": 100 * float(np.median(drift[:, 1])),
                    "capitate %": 100 * float(np.median(drift[:, 2])),
                    "mean %": 100 * float(drift.mean()),
                    "films > 10 %": f"{100 * np.mean(drift.max(1) > 0.1):.0f} %",
                }
            )
            print(records[-1])
    header = (
        f"# Landmark drift under turns\n\n{len(films)} `{args.split}` films of "
        f"{args.manifest}, chain of {args.runs}; median drift per landmark and the mean, in % "
        "of the tip-capitate distance\n\n"
    )
    write_rows(args.out, header, records)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
