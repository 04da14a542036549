"""21-point hand pose (``../shared/data/handpose``) -> the paper's landmarks and bootstrap masks.

Offline tools (numpy / OpenCV), used to make training labels, never in the inference path.

Capitate proxy: the capitate is not annotated. It sits at the base of the third metacarpal; we
place it at ``CAPITATE_FRACTION = 0.7`` of the way from ``middle_finger1`` (third MCP joint) to
``wrist`` (the radiocarpal level). Why 0.7: the capitate centre lies about 1.17 third-metacarpal
lengths proximal to the MCP joint and the radiocarpal joint about 1.65 (0.71); on the expert
ossification boxes of ``../shared/data/ossification_roi`` the centre of the whole carpal box
lies at a median 0.74 of the way from the third MCP box to the midpoint of the radius and ulna
boxes (215 images), and the capitate is the distal-central carpal, slightly before that centre.
``tf-boneage contact-sheet --pose`` draws the proxy on real images.
"""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd

from tf_boneage.data.annotations import POSE_NAMES

CAPITATE_FRACTION = 0.7
FINGERS = ("thumb", "forefinger", "middle_finger", "ring_finger", "pinky_finger")


def pose_points(row: pd.Series) -> np.ndarray:
    """(21, 2) normalised points of one manifest row (NaN where not annotated)."""
    return np.array([[row[f"pose_{n}_x"], row[f"pose_{n}_y"]] for n in POSE_NAMES], float)


def capitate_between(mcp: np.ndarray, wrist: np.ndarray) -> np.ndarray:
    """The capitate proxy from the third MCP joint and the wrist point(s) (..., 2): the one
    place :data:`CAPITATE_FRACTION` is applied."""
    return mcp + CAPITATE_FRACTION * (wrist - mcp)


def capitate_proxy(points: np.ndarray) -> np.ndarray:
    """Capitate proxy (..., 2) from pose points (..., 21, 2) (any consistent coordinates)."""
    mcp = points[..., POSE_NAMES.index("middle_finger1"), :]
    wrist = points[..., POSE_NAMES.index("wrist"), :]
    return capitate_between(mcp, wrist)


def landmarks_from_pose(table: pd.DataFrame) -> pd.DataFrame:
    """Fill ``tip_*``, ``thumb_*`` and the ``capitate_*`` proxy from ``pose_*`` columns.

    Linear in the coordinates, so it is the same in normalised, resized or original pixels.
    """
    out = table.copy()
    mcp = out[["pose_middle_finger1_x", "pose_middle_finger1_y"]].to_numpy(float)
    wrist = out[["pose_wrist_x", "pose_wrist_y"]].to_numpy(float)
    cap = capitate_between(mcp, wrist)
    out["tip_x"], out["tip_y"] = out["pose_middle_finger4_x"], out["pose_middle_finger4_y"]
    out["thumb_x"], out["thumb_y"] = out["pose_thumb4_x"], out["pose_thumb4_y"]
    out["capitate_x"], out["capitate_y"] = cap[:, 0], cap[:, 1]
    return out


def mask_from_pose(points: np.ndarray, size: tuple[int, int], original_size=None) -> np.ndarray:
    """Draw a hand mask (uint8 {0, 1}, shape ``size`` = (H, W)) from (21, 2) normalised points.

    Fingers are thick polylines from their MCP joint to a little beyond the tip, the palm a
    polygon through the wrist and the MCP joints, the forearm a band of 0.6 hand lengths beyond
    the wrist (the distal radius and ulna; films often end before the border). Thickness follows the hand's length measured in square original pixels
    (``original_size`` = (H, W) when the image was resized without keeping aspect).
    """
    h, w = size
    oh, ow = original_size if original_size is not None else size
    sq = points * [ow, oh]  # square pixels
    pix = points * [w, h]
    scale = np.array([w / ow, h / oh])
    idx = {n: k for k, n in enumerate(POSE_NAMES)}
    length = np.linalg.norm(sq[idx["middle_finger4"]] - sq[idx["wrist"]])
    mask = np.zeros((h, w), np.uint8)
    shift = 4

    def fx(p):
        return np.round(np.asarray(p) * (1 << shift)).astype(np.int32)

    def thick(px_square):  # a thickness in square pixels -> image pixels (mean axis scale)
        return max(1, int(round(px_square * scale.mean())))

    for finger in FINGERS:
        chain = [sq[idx[f"{finger}{k}"]] for k in range(1, 5)]
        if np.isnan(chain).any():
            continue
        tip_dir = chain[3] - chain[2]
        chain.append(chain[3] + tip_dir / (np.linalg.norm(tip_dir) + 1e-9) * 0.03 * length)
        pts = [np.asarray(p) * scale for p in chain]
        width = (0.13 if finger == "thumb" else 0.11) * length
        for a, b in zip(pts[:-1], pts[1:], strict=True):
            cv2.line(mask, tuple(fx(a)), tuple(fx(b)), 1, thick(width), cv2.LINE_8, shift)
    palm_names = [
        "wrist",
        "thumb1",
        "thumb2",
        "forefinger1",
        "middle_finger1",
        "ring_finger1",
        "pinky_finger1",
    ]
    palm = np.array([pix[idx[n]] for n in palm_names])
    if not np.isnan(palm).any():
        # widen the palm at the wrist: points either side of the wrist across the hand axis
        axis = sq[idx["middle_finger1"]] - sq[idx["wrist"]]
        axis /= np.linalg.norm(axis) + 1e-9
        across = np.array([-axis[1], axis[0]]) * 0.17 * length
        wrist = sq[idx["wrist"]]
        extra = np.array([(wrist + across) * scale, (wrist - across) * scale])
        hull = cv2.convexHull(fx(np.vstack([palm, extra])).reshape(-1, 1, 2))
        cv2.fillConvexPoly(mask, hull, 1, cv2.LINE_8, shift)
        far = wrist - axis * 0.6 * length  # the distal forearm (radius and ulna epiphyses)
        band = np.array([wrist + across, wrist - across, far - across, far + across]) * scale
        cv2.fillConvexPoly(mask, fx(band).reshape(-1, 1, 2), 1, cv2.LINE_8, shift)
    return mask


def points_inside(mask: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Boolean per annotated point: inside ``mask`` (H, W) at its nearest pixel; NaN -> False."""
    h, w = mask.shape
    ok = ~np.isnan(points).any(1)
    out = np.zeros(len(points), bool)
    px = np.clip(np.floor(points[ok] * [w, h]).astype(int), 0, [w - 1, h - 1])
    out[ok] = mask[px[:, 1], px[:, 0]] > 0
    return out
