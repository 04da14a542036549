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


@pytest.fixture(scope="module")
def poses(shared_data):
    from tf_boneage.preprocessing import pose

    table = manifest.build_manifest(
        [manifest.read_layout_dir(shared_data / "rsna100")], check_images="none"
    )[0]
    table = annotations.attach(
        table, annotations.read_handpose_csv(shared_data / "handpose" / "keypoints21.csv")
    )
    return pose.landmarks_from_pose(table.dropna(subset=["pose_wrist_x"]).reset_index(drop=True))


def test_pose_masks_contain_the_annotated_points(poses):
    from tf_boneage.preprocessing import pose

    inside = []
    for _, row in poses.iterrows():
        pts = pose.pose_points(row)
        m = pose.mask_from_pose(pts, (100, 100), (row["orig_h"], row["orig_w"]))
        inside.append(pose.points_inside(m, pts)[~np.isnan(pts).any(1)])
    assert np.concatenate(inside).mean() > 0.99


def test_annotated_landmarks_register_hands_as_left_hands(poses):
    import tensorflow as tf

    from tf_boneage.preprocessing import registration

    marks = tf.constant(poses[list(manifest.LANDMARK_COLUMNS)].to_numpy(np.float32))
    orig = tf.constant(poses[["orig_h", "orig_w"]].to_numpy(np.float32))
    fwd, right = registration.registration_matrix(marks, (100, 100), registration.PAPER, orig)
    labelled = (poses["hand_side"] == "right").to_numpy()
    assert labelled.sum() >= 1 and (right.numpy() == labelled).mean() > 0.97
    pts = registration.landmarks_to_frame(marks, fwd, (100, 100)).numpy()
    assert (pts[:, 1, 0] > registration.PAPER.width / 2).mean() > 0.97  # thumbs on the right
    np.testing.assert_allclose(pts[:, 0], np.tile(registration.PAPER.tip, (len(pts), 1)), atol=1e-2)


def test_registered60_background_is_one_clean_hand(shared_data):
    import tensorflow as tf

    from tf_boneage.preprocessing import mask

    img = io.load_image(shared_data / "registered60" / "images" / "1437.png")
    small = tf.image.resize(img[None, ..., None], (208, 160), method="nearest")
    hand = tf.cast(small > 0, tf.float32)
    cleaned = mask.clean_mask(hand).numpy()
    assert 0.2 < cleaned.mean() < 0.8
    assert cleaned.sum() >= 0.97 * hand.numpy().sum()  # the hand is one dominant component
