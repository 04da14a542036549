"""Statistics that set the region boxes B and C (``tf_boneage/preprocessing/regions.py``).

The *training* part of the pose-annotated images is registered with its annotated landmarks
(tip, thumb, capitate proxy) and the 21 pose points are mapped into the canonical frame; the
percentiles of the joints that bound each region are printed as fractions of the frame.
Never uses the ossification boxes (they are the check, in ``RESULTS.md``).

    python training/region_boxes.py --manifest runs/rsna100.csv
"""

from __future__ import annotations

import argparse

import numpy as np
import tensorflow as tf

from tf_boneage.data import manifest
from tf_boneage.data.annotations import POSE_NAMES
from tf_boneage.data.manifest import LANDMARK_COLUMNS
from tf_boneage.preprocessing import pose, registration
from tf_boneage.training.segmentation import pose_table


def registered_pose(rows, frame=registration.PAPER) -> np.ndarray:
    """(N, 21, 2) pose points in fractions (x / width, y / height) of the canonical frame."""
    marks = tf.constant(rows[list(LANDMARK_COLUMNS)].to_numpy(np.float32))
    orig = tf.constant(rows[["orig_h", "orig_w"]].to_numpy(np.float32))
    fwd, _ = registration.registration_matrix(marks, (100, 100), frame, orig)
    pts = np.stack([pose.pose_points(r) for _, r in rows.iterrows()]).astype(np.float32)
    flat = tf.constant(np.nan_to_num(pts).reshape(len(rows), -1))
    mapped = registration.landmarks_to_frame(flat, fwd, (100, 100)).numpy()
    mapped[np.isnan(pts)] = np.nan
    return mapped / [frame.width, frame.height]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--manifest", required=True)
    args = parser.parse_args(argv)
    rows = pose.landmarks_from_pose(pose_table(manifest.load_manifest(args.manifest), 0))
    rows = rows[rows["pose_split"] == "train"]
    pts = registered_pose(rows)
    idx = {n: k for k, n in enumerate(POSE_NAMES)}
    pct = (5, 50, 95)

    def show(label, values):
        values = values[np.isfinite(values)]
        print(f"{label:34s} " + "  ".join(f"p{p}={np.percentile(values, p):.3f}" for p in pct))

    fingers = ("forefinger", "middle_finger", "ring_finger", "pinky_finger")
    show("wrist y", pts[:, idx["wrist"], 1])
    show("capitate proxy y", pose.capitate_proxy(pts)[:, 1])
    show("MCP 2-5 y", np.concatenate([pts[:, idx[f"{f}1"], 1] for f in fingers]))
    show("PIP 2-5 y", np.concatenate([pts[:, idx[f"{f}2"], 1] for f in fingers]))
    show(
        "MCP/PIP 2-5 x",
        np.concatenate([pts[:, idx[f"{f}{k}"], 0] for f in fingers for k in (1, 2)]),
    )
    show("thumb1 x (thumb CMC)", pts[:, idx["thumb1"], 0])
    show("thumb1 y", pts[:, idx["thumb1"], 1])
    show("wrist x", pts[:, idx["wrist"], 0])
    for k in (2, 3):
        show(f"thumb{k} (x)", pts[:, idx[f"thumb{k}"], 0])
        show(f"thumb{k} (y)", pts[:, idx[f"thumb{k}"], 1])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
