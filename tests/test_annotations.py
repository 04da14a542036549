import json

import numpy as np
import pandas as pd
import pytest

from tf_boneage.data import annotations


def test_via_json_named_and_unnamed_points(tmp_path):
    doc = {
        "_via_img_metadata": {
            "a.png123": {
                "filename": "a.png",
                "size": 123,
                "regions": [
                    {
                        "shape_attributes": {"name": "point", "cx": 50, "cy": 10},
                        "region_attributes": {"landmark": "middle_tip"},
                    },
                    {
                        "shape_attributes": {"name": "point", "cx": 20, "cy": 160},
                        "region_attributes": {"landmark": "Capitate"},
                    },
                    {
                        "shape_attributes": {"name": "point", "cx": 90, "cy": 80},
                        "region_attributes": {"landmark": "thumb"},
                    },
                ],
            },
            "b.png9": {
                "filename": "b.png",
                "size": 9,
                "regions": [
                    {
                        "shape_attributes": {"name": "point", "cx": 10, "cy": 20},
                        "region_attributes": {},
                    },
                    {
                        "shape_attributes": {"name": "point", "cx": 30, "cy": 40},
                        "region_attributes": {},
                    },
                    {"shape_attributes": {"name": "rect", "x": 0, "y": 0}, "region_attributes": {}},
                    {
                        "shape_attributes": {"name": "point", "cx": 50, "cy": 60},
                        "region_attributes": {},
                    },
                ],
            },
        }
    }
    path = tmp_path / "via.json"
    path.write_text(json.dumps(doc))
    t = annotations.read_via_json(path, image_sizes={"a": (100, 200), "b": (100, 100)})
    a, b = t.set_index("id").loc["a"], t.set_index("id").loc["b"]
    assert (a.tip_x, a.tip_y, a.thumb_x, a.thumb_y, a.capitate_x, a.capitate_y) == (
        0.5,
        0.05,
        0.9,
        0.4,
        0.2,
        0.8,
    )
    assert (b.tip_x, b.thumb_y, b.capitate_x) == (0.1, 0.4, 0.5)
    with pytest.raises(ValueError, match="size of a.png unknown"):
        annotations.read_via_json(path)


def test_coco_keypoints(tmp_path):
    doc = {
        "images": [{"id": 7, "file_name": "1377.png", "width": 200, "height": 400}],
        "annotations": [{"image_id": 7, "keypoints": [20, 40, 2, 100, 100, 2, 0, 0, 0]}],
        "categories": [{"keypoints": ["thumb4", "middle_finger4", "capitate"]}],
    }
    path = tmp_path / "coco.json"
    path.write_text(json.dumps(doc))
    row = annotations.read_coco_keypoints(path).iloc[0]
    assert row.id == "1377" and (row.thumb_x, row.thumb_y) == (0.1, 0.1)
    assert (row.tip_x, row.tip_y) == (0.5, 0.25) and np.isnan(row.capitate_x)
    assert row.pose_thumb4_x == 0.1
    doc["annotations"][0]["image_id"] = 8
    path.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="unknown image_id 8"):
        annotations.read_coco_keypoints(path)


def test_attach_joins_by_id():
    m = pd.DataFrame({"id": ["1", "2"], "tip_x": [np.nan, 0.3]})
    a = pd.DataFrame({"id": ["1"], "tip_x": [0.7], "orig_w": [1000.0]})
    out = annotations.attach(m, a)
    assert out["tip_x"].tolist() == [0.7, 0.3]
    assert out["orig_w"].iloc[0] == 1000.0 and np.isnan(out["orig_w"].iloc[1])


@pytest.mark.realdata
def test_real_handpose_csv_imports_508_images(shared_data):
    t = annotations.read_handpose_csv(shared_data / "handpose" / "keypoints21.csv")
    assert len(t) == 508 and t["id"].is_unique
    raw = pd.read_csv(shared_data / "handpose" / "keypoints21.csv")
    k = 0
    assert t.tip_x.iloc[k] == pytest.approx(raw.middle_finger4_x.iloc[k] / raw.orig_w.iloc[k])
    assert t.thumb_y.iloc[k] == pytest.approx(raw.thumb4_y.iloc[k] / raw.orig_h.iloc[k])
    inside = t[["tip_x", "tip_y", "thumb_x", "thumb_y"]].stack()
    assert inside.between(0, 1).mean() > 0.99
    # on left hands the thumb lies to the right of the middle finger
    left = t[t.hand_side == "left"]
    assert (left.thumb_x > left.tip_x).mean() > 0.95
