"""Real RSNA radiographs in ../shared/data (skipped on a machine without them)."""

import numpy as np
import pytest

from tf_boneage.data import annotations, io, manifest, pipeline

pytestmark = pytest.mark.realdata


def test_rsna100_loads_as_11464_rows_without_errors(shared_data):
    raw = manifest.read_layout_dir(shared_data / "rsna100")
    table, problems = manifest.validate(raw, check_images="header")
    assert problems == [] and len(table) == 11464
    assert table["boneage"].between(1, 228).all() and table["male"].notna().all()


def test_rsna100_attach_handpose_and_decode(shared_data):
    table = manifest.build_manifest(
        [manifest.read_layout_dir(shared_data / "rsna100")], check_images="exists"
    )[0]
    poses = annotations.read_handpose_csv(shared_data / "handpose" / "keypoints21.csv")
    table = annotations.attach(table, poses)
    with_points = table.dropna(subset=["tip_x", "thumb_x"])
    assert len(with_points) == 508
    image = io.load_image(with_points["image_path"].iloc[0])
    assert image.shape == (100, 100) and 0.0 <= image.min() < image.max() <= 1.0
    cfg = pipeline.PipelineConfig(image_size=(100, 100), batch_size=4, shuffle=False)
    features, age = next(iter(pipeline.region_dataset(table.head(4), cfg)))
    np.testing.assert_allclose(
        features["image"].numpy()[0, ..., 0], io.load_image(table["image_path"].iloc[0]), atol=1e-5
    )


def test_full_resolution_images_sniff(shared_data):
    info = io.sniff(shared_data / "registered60" / "images" / "1437.png")
    assert (info.format, info.width, info.height) == ("png", 1600, 2080)
