"""Landmark annotations -> canonical landmark columns.

The paper labelled 3 landmarks with the VGG Image Annotator (VIA): the middle-finger tip
(``tip``), the thumb tip (``thumb``) and the capitate centre (``capitate``). Imports:

* VIA 2 JSON (a project file or an exported region file) with ``point`` regions,
* COCO keypoint JSON (``categories[].keypoints`` names),
* the flattened 21-point CSV of ``../shared/data/handpose`` (COCO names ``wrist``,
  ``thumb1..4``, ``forefinger1..4``, ``middle_finger1..4``, ``ring_finger1..4``,
  ``pinky_finger1..4`` as ``NAME_x, NAME_y, NAME_v`` in original pixels).

Every importer returns one row per image with ``id``, the six canonical columns
``tip_x .. capitate_y`` in normalised coordinates (fraction of width / height; NaN when the
point is absent) and ``orig_w, orig_h`` (pixels). 21-point poses also keep every point as
``pose_NAME_x`` / ``pose_NAME_y`` (normalised) for the mask and capitate-proxy work later on.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from tf_boneage.data.manifest import LANDMARK_COLUMNS

POSE_NAMES = ("wrist",) + tuple(
    f"{finger}{k}"
    for finger in ("thumb", "forefinger", "middle_finger", "ring_finger", "pinky_finger")
    for k in range(1, 5)
)

#: Names accepted for each landmark (lower case; VIA attribute values or COCO keypoint names).
ALIASES = {
    "tip": ("tip", "middle_tip", "middle_finger_tip", "middle_finger4", "third_finger_tip"),
    "thumb": ("thumb", "thumb_tip", "thumb4"),
    "capitate": ("capitate", "capitate_center", "capitate_centre"),
}
_ALIAS_TO_KEY = {alias: key for key, names in ALIASES.items() for alias in names}


def _landmark_key(name: str) -> str | None:
    return _ALIAS_TO_KEY.get(str(name).strip().lower())


def _empty_row(image_id: str, width: float, height: float) -> dict:
    row = {"id": str(image_id), "orig_w": float(width), "orig_h": float(height)}
    row.update(dict.fromkeys(LANDMARK_COLUMNS, np.nan))
    return row


def read_handpose_csv(path: str | os.PathLike) -> pd.DataFrame:
    """Import the flattened 21-point pose CSV (``../shared/data/handpose/keypoints21.csv``).

    Points with visibility 0 are NaN. The capitate is not annotated there (NaN); its proxy is
    derived by the preprocessing stage. Extra columns kept: ``hand_side`` (left/right).
    """
    raw = pd.read_csv(path, dtype={"id": str})
    need = ["id", "orig_w", "orig_h"] + [f"{n}_{a}" for n in POSE_NAMES for a in "xyv"]
    missing = [c for c in need if c not in raw.columns]
    if missing:
        raise ValueError(f"{path}: not a 21-point pose CSV, missing column(s) {missing[:6]}")
    w = raw["orig_w"].to_numpy(float)
    h = raw["orig_h"].to_numpy(float)
    out = pd.DataFrame({"id": raw["id"].astype(str), "orig_w": w, "orig_h": h})
    for name in POSE_NAMES:
        visible = raw[f"{name}_v"].to_numpy(float) > 0
        out[f"pose_{name}_x"] = np.where(visible, raw[f"{name}_x"].to_numpy(float) / w, np.nan)
        out[f"pose_{name}_y"] = np.where(visible, raw[f"{name}_y"].to_numpy(float) / h, np.nan)
    out["tip_x"], out["tip_y"] = out["pose_middle_finger4_x"], out["pose_middle_finger4_y"]
    out["thumb_x"], out["thumb_y"] = out["pose_thumb4_x"], out["pose_thumb4_y"]
    out["capitate_x"] = np.nan
    out["capitate_y"] = np.nan
    if "hand_side_label" in raw.columns:
        out["hand_side"] = raw["hand_side_label"].astype(str)
    return out


def read_coco_keypoints(path: str | os.PathLike) -> pd.DataFrame:
    """Import COCO keypoint JSON: ``images`` (id, file_name, width, height), ``annotations``
    (image_id, keypoints ``[x, y, v] * K``) and ``categories[].keypoints`` (names).

    The image id of the manifest is the file name without extension.
    """
    doc = json.loads(Path(path).read_text())
    try:
        names = doc["categories"][0]["keypoints"]
        images = {img["id"]: img for img in doc["images"]}
        annotations = doc["annotations"]
    except (KeyError, IndexError, TypeError) as exc:
        raise ValueError(f"{path}: not a COCO keypoint file ({exc!r} missing)") from exc
    rows = []
    for ann in annotations:
        img = images.get(ann.get("image_id"))
        if img is None:
            raise ValueError(f"{path}: annotation refers to unknown image_id {ann.get('image_id')}")
        width, height = float(img["width"]), float(img["height"])
        row = _empty_row(Path(img["file_name"]).stem, width, height)
        points = np.asarray(ann["keypoints"], float).reshape(-1, 3)
        for name, (x, y, v) in zip(names, points, strict=True):
            nx, ny = (x / width, y / height) if v > 0 else (np.nan, np.nan)
            if name in POSE_NAMES:
                row[f"pose_{name}_x"], row[f"pose_{name}_y"] = nx, ny
            key = _landmark_key(name)
            if key:
                row[f"{key}_x"], row[f"{key}_y"] = nx, ny
        rows.append(row)
    return pd.DataFrame(rows)


def read_via_json(
    path: str | os.PathLike,
    image_sizes: dict[str, tuple[int, int]] | None = None,
    images_dir: str | os.PathLike | None = None,
) -> pd.DataFrame:
    """Import VIA 2 JSON with three ``point`` regions per image.

    A point's landmark comes from any region attribute whose value is a known name (see
    :data:`ALIASES`, e.g. ``{"landmark": "capitate"}``); unnamed points are taken in the order
    the paper lists them: middle-finger tip, thumb tip, capitate. VIA does not store image
    sizes, so give ``image_sizes`` (id -> (width, height)) or ``images_dir`` to read them.
    """
    from tf_boneage.data.io import sniff

    doc = json.loads(Path(path).read_text())
    entries = doc.get("_via_img_metadata", doc)
    if not isinstance(entries, dict):
        raise ValueError(f"{path}: not a VIA 2 JSON file")
    rows = []
    for entry in entries.values():
        if not isinstance(entry, dict) or "filename" not in entry:
            raise ValueError(f"{path}: VIA entry without 'filename': {str(entry)[:80]}")
        image_id = Path(entry["filename"]).stem
        if image_sizes and image_id in image_sizes:
            width, height = image_sizes[image_id]
        elif images_dir is not None:
            info = sniff(Path(images_dir) / entry["filename"])
            width, height = info.width, info.height
        else:
            raise ValueError(f"{path}: size of {entry['filename']} unknown; pass images_dir")
        row = _empty_row(image_id, width, height)
        order = iter(("tip", "thumb", "capitate"))
        for region in entry.get("regions", []):
            shape = region.get("shape_attributes", {})
            if shape.get("name") != "point":
                continue
            named = [_landmark_key(v) for v in region.get("region_attributes", {}).values()]
            key = next((k for k in named if k), None) or next(order, None)
            if key is None:
                raise ValueError(f"{path}: {entry['filename']} has more than 3 unnamed points")
            row[f"{key}_x"] = float(shape["cx"]) / width
            row[f"{key}_y"] = float(shape["cy"]) / height
        rows.append(row)
    return pd.DataFrame(rows)


def read_any(path: str | os.PathLike, images_dir: str | os.PathLike | None = None) -> pd.DataFrame:
    """Read hand keypoints from a 21-point pose CSV, a COCO keypoint JSON or a VIA JSON."""
    path = Path(path)
    if path.suffix.lower() == ".csv":
        return read_handpose_csv(path)
    doc = json.loads(path.read_text())
    if isinstance(doc, dict) and "annotations" in doc and "images" in doc:
        return read_coco_keypoints(path)
    return read_via_json(path, images_dir=images_dir)


def attach(manifest: pd.DataFrame, annotations: pd.DataFrame) -> pd.DataFrame:
    """Left-join annotation columns onto the manifest by ``id`` (annotations win over NaN)."""
    ann = annotations.drop_duplicates("id").set_index("id")
    out = manifest.copy()
    ids = out["id"].astype(str)
    for col in ann.columns:
        values = ids.map(ann[col])
        out[col] = values if col not in out.columns else out[col].where(values.isna(), values)
    return out
