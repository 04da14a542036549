"""Contact sheet like the paper's figure: raw -> mask -> equalised -> registered -> regions.

One row per image; panels scaled to one height. With ``pose=True`` the raw panel also shows the
annotated 21-point pose (yellow) and the capitate proxy (red) of pose-annotated images.
"""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
import tensorflow as tf

from tf_boneage.data import io
from tf_boneage.preprocessing import pose as pose_tools
from tf_boneage.preprocessing.chain import to_input_size
from tf_boneage.preprocessing.regions import box_pixels

COLOURS = {"tip": (0, 0, 255), "thumb": (0, 200, 0), "capitate": (255, 0, 0)}


def _bgr(grey: np.ndarray, height: int) -> np.ndarray:
    h, w = grey.shape[:2]
    img = cv2.resize(grey, (max(1, round(w * height / h)), height), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(np.clip(img * 255, 0, 255).astype(np.uint8), cv2.COLOR_GRAY2BGR)


def _points(panel, points_norm, radius=3):
    h, w = panel.shape[:2]
    for (x, y), colour in zip(points_norm, COLOURS.values(), strict=False):
        if np.isfinite(x) and np.isfinite(y):
            cv2.circle(panel, (int(x * w), int(y * h)), radius, colour, -1, cv2.LINE_AA)


def _title(panel, text):
    cv2.putText(panel, text, (3, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (0, 255, 255), 1, cv2.LINE_AA)
    return panel


def draw(
    table: pd.DataFrame,
    chain,
    image_size=(100, 100),
    height: int = 208,
    pose: bool = False,
    assume_aspect: float | None = None,
) -> np.ndarray:
    """BGR uint8 sheet for every row of ``table`` (canonical manifest)."""
    from tf_boneage.preprocessing.cache import original_sizes

    # a sheet needs one size: without image_size every image takes the first one's size
    image_size = image_size or io.load_image(table["image_path"].iloc[0]).shape
    images = np.stack([to_input_size(io.load_image(p), image_size) for p in table["image_path"]])[
        ..., None
    ]

    sizes, upright = original_sizes(table, assume_aspect)
    out = chain(tf.constant(images), tf.constant(sizes), upright_size=upright)
    out = {k: v.numpy() for k, v in out.items()}
    frame = chain.config.frame
    rows = []
    for j in range(len(table)):
        raw = _bgr(images[j, ..., 0], height)
        if pose and "pose_wrist_x" in table and np.isfinite(table["pose_wrist_x"].iloc[j]):
            pts = pose_tools.pose_points(table.iloc[j])
            for x, y in pts[~np.isnan(pts).any(1)]:
                cv2.circle(
                    raw, (int(x * raw.shape[1]), int(y * raw.shape[0])), 2, (0, 255, 255), -1
                )
            cap = pose_tools.capitate_proxy(pts)
            cv2.circle(
                raw, (int(cap[0] * raw.shape[1]), int(cap[1] * raw.shape[0])), 4, (0, 0, 255), -1
            )
        masked = _bgr(images[j, ..., 0], height)
        m = cv2.resize(out["mask"][j, ..., 0], masked.shape[1::-1], interpolation=cv2.INTER_NEAREST)
        contours, _ = cv2.findContours(
            (m > 0).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE
        )
        cv2.drawContours(masked, contours, -1, (0, 255, 255), 1)
        enhanced = _bgr(out["enhanced"][j, ..., 0], height)
        _points(enhanced, out["landmarks"][j].reshape(3, 2))
        registered = _bgr(out["registered"][j, ..., 0], height)
        scale = height / frame.height
        for name, colour in (("B", (255, 128, 0)), ("C", (0, 128, 255))):
            y0, x0, y1, x1 = (v * scale for v in box_pixels(name, frame))
            cv2.rectangle(registered, (int(x0), int(y0)), (int(x1), int(y1)), colour, 1)
        crops = [_title(_bgr(out[f"region_{n}"][j, ..., 0], height // 2), n) for n in "ABC"]
        stack = np.vstack(
            [
                np.hstack(crops[1:]),
                _pad(crops[0], height // 2, crops[1].shape[1] + crops[2].shape[1]),
            ]
        )
        qc = (
            f"{table['id'].iloc[j]} area {out['mask_area'][j]:.2f} "
            f"plaus {out['landmark_plausibility'][j]:.2f}"
            f"{' R' if out['right'][j] else ''}"
        )
        panels = [
            _title(raw, qc),
            _title(masked, "mask"),
            _title(enhanced, "equalised"),
            _title(registered, "registered"),
            stack,
        ]
        rows.append(np.hstack([_pad(p, height, p.shape[1]) for p in panels]))
    width = max(r.shape[1] for r in rows)
    return np.vstack([_pad(r, r.shape[0], width) for r in rows])


def _pad(img, height, width):
    out = np.zeros((height, width, 3), np.uint8)
    h, w = min(height, img.shape[0]), min(width, img.shape[1])
    out[:h, :w] = img[:h, :w]
    return out
