"""Does an export's registration land real films where the paper's authors put them?

    python benchmarks/registered_identity.py --model saved_models/boneage \
        --data ../shared/data/registered60 --out registered_identity.md [--model OTHER ...]

``registered60`` holds full-size films (1,600 x 2,080) that the paper's authors' group already
segmented and registered into the canonical frame (background exactly 0). Served again, a film
should come out nearly where it went in: the registration an export computes for it should be
close to the identity, and the hand it warps into its frame should cover the authors' hand.
For each ``--model`` (a SavedModel version or model folder), each film through
``explain_bytes`` (PNG bytes in, as served): the registered hand (its frame's pixels above 0,
resized to the film's size; the equalisation also sends the hand's darkest level to 0, well
under 1 % of it) against the authors' (the film's pixels above 0), as Jaccard; the
registration's scale, rotation and shift of the frame's centre, computed from the landmarks the
export answered (``registration.registration_matrix``, as the graph does); and whether the film
was called a right hand. Our canonical anchors are not the authors' (our tip-capitate distance
is about 12 % longer: RESULTS.md), so even perfect landmarks give a scale near 1.1 and a
Jaccard below 1: compare exports with each other.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import tensorflow as tf
from common import machine, write_report

from tf_boneage.data import io
from tf_boneage.export import load
from tf_boneage.preprocessing import registration


def version_dir(path) -> Path:
    """A SavedModel version folder: ``path`` itself, or its newest numbered version."""
    path = Path(path)
    if (path / "saved_model.pb").is_file():
        return path
    versions = sorted((p for p in path.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    if not versions:
        raise FileNotFoundError(f"{path}: no SavedModel version")
    return versions[-1]


def measure(model_dir: Path, films: list[Path]) -> pd.DataFrame:
    """One row per film (module docstring)."""
    loaded = load.saved_model(model_dir)
    explain = loaded.signatures["explain_bytes"]
    meta = load.metadata(model_dir)
    frame = registration.Frame(*meta["chain"]["frame"])
    rows = []
    for path in films:
        theirs = io.load_image(path)  # grey, any depth or channel count, as the chain reads
        out = explain(image_bytes=tf.constant([path.read_bytes()]), male=tf.constant([1.0]))
        ours = out["registered"].numpy()[0, ..., 0] > 0
        ours = cv2.resize(ours.astype(np.uint8), theirs.shape[::-1], cv2.INTER_NEAREST) > 0
        theirs = theirs > 0
        marks = out["landmarks"].numpy()
        forward, right = registration.registration_matrix(tf.constant(marks), theirs.shape, frame)
        m = forward.numpy()[0]
        centre = np.array([frame.width / 2, frame.height / 2])
        shift = m[:2, :2] @ centre + m[:2, 2] - centre
        rows.append(
            {
                "film": path.name,
                "jaccard": float((ours & theirs).sum() / max((ours | theirs).sum(), 1)),
                "scale": math.sqrt(abs(np.linalg.det(m[:2, :2]))),
                "angle_deg": math.degrees(math.atan2(m[1, 0], m[0, 0])),
                "centre_shift_px": float(np.linalg.norm(shift)),
                "right": bool(right.numpy()[0]),
            }
        )
    return pd.DataFrame(rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", nargs="+", required=True, help="SavedModel folders")
    parser.add_argument("--data", default="../shared/data/registered60")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--out", required=True, help="markdown table (CSV beside it)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    films = sorted(Path(args.data, "images").glob("*.png"))[: args.limit]
    if not films:
        parser.error(f"{args.data}/images: no PNG films")
    frames, lines = [], []
    lines.append(
        "| export | films | Jaccard median (p10) | scale median (p5-p95) | abs rotation median "
        "(deg) | centre shift median (px) | called right |"
    )
    lines.append("|---|---|---|---|---|---|---|")
    for given in args.model:
        rows = measure(version_dir(given), films).assign(model=given)
        frames.append(rows)
        p5, p95 = rows.scale.quantile([0.05, 0.95])
        lines.append(
            f"| {given} | {len(rows)} | {rows.jaccard.median():.3f} "
            f"({rows.jaccard.quantile(0.1):.3f}) | {rows.scale.median():.3f} ({p5:.2f}-{p95:.2f}) "
            f"| {rows.angle_deg.abs().median():.1f} | {rows.centre_shift_px.median():.0f} "
            f"| {int(rows.right.sum())} |"
        )
    header = (
        f"{len(films)} films of {args.data}, served by `explain_bytes`; {machine()}; "
        f"{time.perf_counter() - started:.0f} s\n\n"
    )
    write_report(args.out, header, "\n".join(lines), pd.concat(frames))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
