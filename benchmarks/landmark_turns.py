"""How far a film's landmarks drift when the film is turned or darkened, with one or two
landmark looks.

    python benchmarks/landmark_turns.py --runs runs/table --preset rsna100 \
        --manifest runs/rsna100.csv --split val --limit 200 --out landmark_turns.md
    python benchmarks/landmark_turns.py --runs runs/table --preset rsna100 --angles \
        --darken 10 20 30 --passes 2 --manifest runs/rsna100.csv --split val --out dark.md
    python benchmarks/landmark_turns.py --runs runs/table --preset rsna100 \
        --images ../shared/data/raw10/*.png --out landmark_turns_raw.md

The chain of a ``training/table.py`` folder (its cache's ``chain.json``, outline and
orientation step, as the export serves it) reads the landmarks of the first ``--limit`` films
of the split upright and turned clockwise by each ``--angles`` (one Lanczos resampling at the
film's proportions, as ``benchmarks/robustness.py`` turns them; 90 degrees exactly). The
turned film's points are carried back to the upright film and compared with the upright
film's own, in true (square-pixel) distance over the tip-capitate distance, per landmark
count (``--passes``: 1, the net's one look; 2, again at the film turned upright by the
first, ``ChainConfig.landmark_passes``). The turn a landmark net learnt (25 degrees in the
presets) is where one look starts to drift. ``--darken 30``: also films 30 % darker (every
pixel shifted down by 30 % of the grey range, clipped at black: the soft tissue of the fingers
goes first), whose points are compared where they lie. No model is trained or exported here.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np
import tensorflow as tf
from common import split_rows, write_rows

from tf_boneage.data import io
from tf_boneage.inference import robustness
from tf_boneage.preprocessing import cache
from tf_boneage.preprocessing.spec import sha256
from tf_boneage.training import config as config_lib
from tf_boneage.training.export import cache_outline, chain_of_runs


def build(runs, preset: str, passes: int, landmarks: str | None = None, unet: str | None = None):
    """(the chain of ``runs``' cache with ``passes`` landmark looks, its assumed aspect);
    ``landmarks`` / ``unet``: another landmark net's / U-Net's ``.keras`` in that chain (a
    candidate's drift)."""
    spec = dataclasses.replace(chain_of_runs(runs, preset), landmark_passes=passes)
    if landmarks:
        spec = dataclasses.replace(spec, landmarks=landmarks)
    if unet:
        spec = dataclasses.replace(spec, unet=unet)
    pre = spec.preprocessor()
    outline = cache_outline(runs)
    if outline is not None:
        pre.outline = tf.constant(outline)
    return pre, spec


def read_points(pre, films, sizes, upright: bool, batch: int = 50) -> list[np.ndarray]:
    """(3, 2) landmarks of each of ``films`` in continuous pixels of that film; films of one
    size in batches, of several sizes one at a time."""
    run = tf.function(
        lambda x, s: pre(x, s, upright_size=upright)["landmarks"], reduce_retracing=True
    )
    step = batch if len({f.shape for f in films}) == 1 else 1
    out = []
    for start in range(0, len(films), step):
        part = films[start : start + step]
        x = tf.constant(np.stack(part)[..., None], tf.float32)
        got = run(x, tf.constant(sizes[start : start + len(part)])).numpy().reshape(-1, 3, 2)
        out.extend(g * np.float32([f.shape[1], f.shape[0]]) for g, f in zip(got, part, strict=True))
    return out


def drift_row(passes: int, change: str, base, moved) -> dict:
    """The drift of ``moved`` from ``base`` (lists of (3, 2) points of each film, in square
    pixels of the untouched film): medians per landmark and the mean, in % of each film's
    tip-capitate distance, and the share of films with a landmark off by more than 10 %."""
    axis = np.array([np.linalg.norm(b[0] - b[2]) for b in base])[:, None]
    drift = (
        np.stack([np.linalg.norm(m - b, axis=1) for b, m in zip(base, moved, strict=True)]) / axis
    )  # (N, 3)
    row = {
        "looks": passes,
        "film": change,
        "tip %": 100 * float(np.median(drift[:, 0])),
        "thumb %": 100 * float(np.median(drift[:, 1])),
        "capitate %": 100 * float(np.median(drift[:, 2])),
        "mean %": 100 * float(drift.mean()),
        "films > 10 %": f"{100 * np.mean(drift.max(1) > 0.1):.0f} %",
    }
    print(row)
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", required=True, help="a training/table.py folder")
    parser.add_argument("--preset", required=True, choices=config_lib.PRESETS)
    parser.add_argument("--manifest", help="the films: a split of this manifest ...")
    parser.add_argument("--split", default="val")
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument(
        "--images",
        nargs="+",
        help="... or these image files at their own size and square pixels (e.g. the raw "
        "full-resolution films: turned at full size, read as the native graph reads them)",
    )
    parser.add_argument("--angles", type=float, nargs="*", default=[15, 30, 45, 90])
    parser.add_argument(
        "--darken",
        type=float,
        nargs="*",
        default=[],
        help="also films darkened by these shares of the grey range, in %% (clipped at black, "
        "as benchmarks/robustness.py darkens them), e.g. 30",
    )
    parser.add_argument(
        "--landmarks",
        help="another landmark net (.keras) in the chain of --runs, e.g. a candidate trained "
        "with other settings on the same U-Net",
    )
    parser.add_argument("--unet", help="another U-Net (.keras) in the chain of --runs")
    parser.add_argument("--passes", type=int, nargs="+", default=[1, 2], choices=(1, 2))
    parser.add_argument("--out", required=True, help="markdown table (CSV beside it)")
    args = parser.parse_args(argv)
    if bool(args.manifest) == bool(args.images):
        parser.error("give --manifest (a split of it) or --images, not both")
    if args.manifest:
        if args.split == "test":
            print("note: the test split is for reporting; choose settings on val")
        rows = split_rows(args)
        films = [io.load_image(p) for p in rows["image_path"]]
        source = f"{len(films)} `{args.split}` films of {args.manifest}"
    else:
        films = [io.load_image(p) for p in sorted(args.images)]
        source = f"{len(films)} films at their own size ({min(f.size for f in films):,} to "
        source += f"{max(f.size for f in films):,} pixels)"
    records = []
    for passes in args.passes:
        pre, spec = build(Path(args.runs), args.preset, passes, args.landmarks, args.unet)
        if args.manifest:
            aspect = spec.assume_aspect
            sizes, upright = cache.original_sizes(rows, aspect)
        else:  # square pixels: the film's own size is the original's
            aspect, upright = None, False
            sizes = np.float32([f.shape for f in films])
        stretch = [
            np.float32([1.0, 1.0 if aspect is None else (f.shape[1] / aspect) / f.shape[0]])
            for f in films
        ]
        base = [
            p * k for p, k in zip(read_points(pre, films, sizes, upright), stretch, strict=True)
        ]
        for angle in args.angles:
            turned = [robustness.rotate(f, angle, aspect) for f in films]
            turned_sizes = sizes
            if not args.manifest and angle % 180 == 90:  # a quarter turn turns the size too
                turned_sizes = sizes[:, ::-1].copy()
            got = read_points(pre, turned, turned_sizes, upright)
            back = [
                robustness.turned_back(g, angle, f.shape, aspect) * k
                for g, f, k in zip(got, films, stretch, strict=True)
            ]
            records.append(drift_row(passes, f"turned {angle:g} degrees", base, back))
        for share in args.darken:
            dark = [robustness.exposure(f, brightness=-share / 100) for f in films]
            got = read_points(pre, dark, sizes, upright)
            back = [g * k for g, k in zip(got, stretch, strict=True)]
            records.append(drift_row(passes, f"{share:g} % darker", base, back))
    header = (
        f"# Landmark drift under turns and darkening\n\n{source}, chain of {args.runs}"
        + (
            f" with the landmark net {args.landmarks} (SHA-256 {sha256(args.landmarks)[:12]})"
            if args.landmarks
            else ""
        )
        + (f" with the U-Net {args.unet} (SHA-256 {sha256(args.unet)[:12]})" if args.unet else "")
        + "; median drift per "
        "landmark and the mean, in % of the tip-capitate distance\n\n"
    )
    write_rows(args.out, header, records)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
