"""Issue-4 measurements of the preprocessing chain on real radiographs (``RESULTS.md``).

    python training/evaluate_preprocessing.py --manifest runs/rsna100.csv \
        --unet runs/seg/round1/unet.keras --landmarks runs/landmarks/landmarks.keras \
        --data ../shared/data --out runs/preprocessing_eval

1. Registration spread: held-out pose images (``handpose_split.csv`` test), landmarks predicted
   by the chain; the annotated middle-finger tip and capitate proxy mapped into the 2080 x 1600
   frame; standard deviation in frame pixels. Right hands: detected and mirrored to left.
2. Regions: expert ossification boxes (``ossification_roi``), registered with predicted
   landmarks: fraction of Wrist boxes inside region B and MCP / PIP boxes inside region C
   (whole box and box centre).
3. Full resolution: the chain on ``raw10`` (QC numbers) and on ``registered60`` (already
   registered: the registration should be close to identity).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow as tf

from tf_boneage.data import io, manifest
from tf_boneage.data.manifest import LANDMARK_COLUMNS
from tf_boneage.preprocessing import chain as chain_module
from tf_boneage.preprocessing import pose, regions, registration
from tf_boneage.training.runtime import write_json
from tf_boneage.training.segmentation import pose_table

PAPER = registration.PAPER


def predict(pre, images: np.ndarray, original_size=None):
    """Predicted landmarks (N, 6), QC dict, for images (N, H, W) of one size."""
    out_marks, qcs = [], []
    for start in range(0, len(images), 64):
        batch = tf.constant(images[start : start + 64, ..., None])
        masks, probs = pre.segment(batch)
        size = None if original_size is None else tf.constant(original_size[start : start + 64])
        marks = pre.landmarks(pre.enhance(batch, masks), None, size)  # a second look: true size
        qcs.append(
            {
                k: v.numpy()
                for k, v in pre.qc(masks, probs, marks, tf.shape(batch)[1:3], size).items()
            }
        )
        out_marks.append(marks.numpy())
    qc = {k: np.concatenate([q[k] for q in qcs]) for k in qcs[0]}
    return np.concatenate(out_marks), qc


def to_frame(marks, points_norm, image_size, original_size):
    fwd, right = registration.registration_matrix(
        tf.constant(marks), image_size, PAPER, tf.constant(original_size)
    )
    pts = registration.landmarks_to_frame(tf.constant(points_norm), fwd, image_size)
    return pts.numpy(), fwd.numpy(), right.numpy()


def registration_spread(pre, table) -> dict:
    rows = pose.landmarks_from_pose(pose_table(table, 0))
    rows = rows[rows["pose_split"] == "test"]
    images = np.stack([io.load_image(p) for p in rows["image_path"]])
    orig = rows[["orig_h", "orig_w"]].to_numpy(np.float32)
    marks, qc = predict(pre, images, orig)
    truth = rows[list(LANDMARK_COLUMNS)].to_numpy(np.float32)
    pts, _, right = to_frame(marks, truth, (100, 100), orig)
    ideal, _, _ = to_frame(truth, truth, (100, 100), orig)
    labelled_right = (rows["hand_side"] == "right").to_numpy()
    result = {"images": len(rows)}
    for k, name in ((0, "tip"), (2, "capitate")):
        result[name] = {
            "std_x_px": float(pts[:, k, 0].std()),
            "std_y_px": float(pts[:, k, 1].std()),
            "mean_offset_px": [
                float(v)
                for v in pts[:, k].mean(0) - np.array(PAPER.tip if k == 0 else PAPER.capitate)
            ],
            "median_distance_px": float(
                np.median(
                    np.linalg.norm(pts[:, k] - (PAPER.tip if k == 0 else PAPER.capitate), axis=1)
                )
            ),
        }
    result["thumb_on_left_hand_side_after_registration"] = float(
        (pts[:, 1, 0] > PAPER.width / 2).mean()
    )
    result["right_hands_labelled"] = int(labelled_right.sum())
    result["right_hands_detected"] = int((right & labelled_right).sum())
    result["left_hands_called_right"] = int((right & ~labelled_right).sum())
    result["ideal_thumb_on_left_side"] = float((ideal[:, 1, 0] > PAPER.width / 2).mean())
    result["qc_plausibility_mean"] = float(qc["landmark_plausibility"].mean())
    return result


def region_check(pre, table, roi_csv) -> dict:
    boxes = pd.read_csv(roi_csv, dtype={"id": str})
    ids = sorted(set(boxes["id"]) & set(table["id"]))
    rows = table.set_index("id").loc[ids]
    images = np.stack([io.load_image(p) for p in rows["image_path"]])
    sizes = boxes.drop_duplicates("id").set_index("id").loc[ids, ["orig_h", "orig_w"]]
    orig = sizes.to_numpy(np.float32)
    marks, _ = predict(pre, images, orig)
    fwd, right = registration.registration_matrix(
        tf.constant(marks), (100, 100), PAPER, tf.constant(orig)
    )
    fwd = fwd.numpy()
    result = {"images": len(ids), "right_hands_detected": int(right.numpy().sum())}
    for label, region in (("Wrist", "B"), ("MCP", "C"), ("PIP", "C"), ("DIP", "A")):
        inside_all, inside_centre = [], []
        for k, rid in enumerate(ids):
            b = boxes[(boxes["id"] == rid) & (boxes["label"] == label)]
            if b.empty:
                continue
            w, h = sizes.loc[rid, "orig_w"], sizes.loc[rid, "orig_h"]
            corners = np.stack(
                [
                    np.stack([b.xmin, b.ymin], -1),
                    np.stack([b.xmax, b.ymin], -1),
                    np.stack([b.xmin, b.ymax], -1),
                    np.stack([b.xmax, b.ymax], -1),
                ],
                1,
            ) / [w, h]
            centre = corners.mean(1, keepdims=True)
            pts = np.concatenate([corners, centre], 1) * 100.0  # 100 px image coordinates
            mapped = pts @ fwd[k, :2, :2].T + fwd[k, :2, 2]
            ok = regions.inside(tf.constant(mapped, tf.float32), region, PAPER).numpy()
            inside_all.extend(ok[:, :4].all(1))
            inside_centre.extend(ok[:, 4])
        result[f"{label}_in_{region}"] = {
            "boxes": len(inside_all),
            "whole_box": float(np.mean(inside_all)),
            "centre": float(np.mean(inside_centre)),
        }
    return result


def full_resolution(pre, data: Path) -> dict:
    out = {"raw10": [], "registered60": []}
    for path in sorted((data / "raw10").glob("*.png")):
        img = io.load_image(path)
        marks, qc = predict(pre, img[None])
        out["raw10"].append(
            {"file": path.name, "size": list(img.shape), **{k: float(v[0]) for k, v in qc.items()}}
        )
    labels = pd.read_csv(data / "registered60" / "labels.csv", dtype={"id": str})
    for rid in labels["id"]:
        img = io.load_image(data / "registered60" / "images" / f"{rid}.png")
        marks, qc = predict(pre, img[None])
        fwd, right = registration.registration_matrix(tf.constant(marks), img.shape, PAPER)
        m = fwd.numpy()[0]
        scale = math.sqrt(abs(np.linalg.det(m[:2, :2])))
        angle = math.degrees(math.atan2(m[1, 0], m[0, 0]))
        centre = m[:2, :2] @ [800.0, 1040.0] + m[:2, 2] - [800.0, 1040.0]
        out["registered60"].append(
            {
                "id": rid,
                "scale": scale,
                "angle_deg": angle,
                "centre_shift_px": float(np.linalg.norm(centre)),
                "right": bool(right.numpy()[0]),
                "plausibility": float(qc["landmark_plausibility"][0]),
            }
        )
    reg = pd.DataFrame(out["registered60"])
    out["registered60_summary"] = {
        "images": len(reg),
        "scale_median": float(reg.scale.median()),
        "scale_p5_p95": [float(v) for v in reg.scale.quantile([0.05, 0.95])],
        "abs_angle_median_deg": float(reg.angle_deg.abs().median()),
        "centre_shift_median_px": float(reg.centre_shift_px.median()),
        "called_right": int(reg.right.sum()),
    }
    raw = pd.DataFrame(out["raw10"])
    out["raw10_summary"] = {
        "images": len(raw),
        "mask_area_mean": float(raw.mask_area.mean()),
        "plausibility_mean": float(raw.landmark_plausibility.mean()),
    }
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--unet", required=True)
    parser.add_argument("--landmarks", required=True)
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--out", default="runs/preprocessing_eval")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pre = chain_module.load(args.unet, args.landmarks)
    table = manifest.load_manifest(args.manifest)
    data = Path(args.data)
    report = {"registration": registration_spread(pre, table)}
    print(report["registration"])
    report["regions"] = region_check(pre, table, data / "ossification_roi" / "roi_boxes.csv")
    print(report["regions"])
    report["full_resolution"] = full_resolution(pre, data)
    print(
        report["full_resolution"]["raw10_summary"],
        report["full_resolution"]["registered60_summary"],
    )
    write_json(out / "report.json", report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
