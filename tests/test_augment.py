import math

import numpy as np
import pytest
import tensorflow as tf

from tf_boneage.data import augment


def _dot_image(h, w, x, y):
    img = np.zeros((h, w, 1), np.float32)
    img[y, x, 0] = 1.0
    return img


def _centroid(img):
    ys, xs = np.nonzero(img[..., 0] > 1e-3)
    weights = img[ys, xs, 0]
    return np.array([(xs * weights).sum(), (ys * weights).sum()]) / weights.sum()


def test_pure_shift_by_hand():
    # identity rotation/scale, shift (+3, -2) px: a dot at (5, 6) lands at (8, 4)
    f = augment.affine_matrix(
        tf.constant([0.0]),
        tf.constant([1.0]),
        tf.constant([3.0]),
        tf.constant([-2.0]),
        tf.constant([1.0]),
        16,
        16,
    )
    out = augment.warp(_dot_image(16, 16, 5, 6)[None], f).numpy()[0]
    assert out[4, 8, 0] == pytest.approx(1.0) and out.sum() == pytest.approx(1.0)
    pts = augment.transform_points(tf.constant([[5.5 / 16, 6.5 / 16]]), f, 16, 16).numpy()
    np.testing.assert_allclose(pts * 16 - 0.5, [[8.0, 4.0]], atol=1e-5)


def test_mirror_and_quarter_turn_by_hand():
    h = w = 9  # centre (4, 4)
    mirror = augment.affine_matrix(
        tf.constant([0.0]),
        tf.constant([1.0]),
        tf.constant([0.0]),
        tf.constant([0.0]),
        tf.constant([-1.0]),
        h,
        w,
    )
    assert _centroid(augment.warp(_dot_image(h, w, 1, 2)[None], mirror).numpy()[0]) == (
        pytest.approx([7.0, 2.0])
    )
    turn = augment.affine_matrix(
        tf.constant([math.pi / 2]),
        tf.constant([1.0]),
        tf.constant([0.0]),
        tf.constant([0.0]),
        tf.constant([1.0]),
        h,
        w,
    )
    # +90 deg with y down: (x, y) - c = (3, 0) -> (0, 3): the dot at (7, 4) goes to (4, 7)
    np.testing.assert_allclose(
        _centroid(augment.warp(_dot_image(h, w, 7, 4)[None], turn).numpy()[0]), [4, 7], atol=1e-4
    )


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_random_affine_moves_dot_and_landmark_together(seed):
    h, w, rng = 40, 32, np.random.default_rng(seed)
    xs, ys = rng.integers(10, 22, 4), rng.integers(12, 28, 4)
    images = np.stack([_dot_image(h, w, x, y) for x, y in zip(xs, ys, strict=True)])
    points = np.stack([(xs + 0.5) / w, (ys + 0.5) / h], -1).astype(np.float32)
    ranges = augment.AffineRange(rotation=30, scale=(0.8, 1.2), shift=0.1, mirror=0.5)
    f = augment.random_affine(4, h, w, tf.constant([seed, 7]), ranges)
    moved = augment.warp(tf.constant(images), f).numpy()
    expected = augment.transform_points(tf.constant(points), f, h, w).numpy()
    for k in range(4):
        got = _centroid(moved[k])
        want = expected[k] * [w, h] - 0.5
        assert np.linalg.norm(got - want) < 1.0


def test_augmenter_moves_masks_with_images_and_is_seeded():
    rng = np.random.default_rng(0)
    mask = np.zeros((2, 24, 24, 1), np.float32)
    mask[:, 6:18, 8:14] = 1.0
    image = mask * 0.8 + 0.1
    aug = augment.BatchAugmenter(augment.AffineRange(20, (0.9, 1.1), 0.1, 0.5), photometric=False)
    batch = {
        "image": tf.constant(image),
        "mask": tf.constant(mask),
        "landmarks": tf.constant(rng.random((2, 6)), tf.float32),
    }
    out = aug(batch, tf.constant([1, 2]))
    warped_img, warped_mask = out["image"].numpy(), out["mask"].numpy()
    assert set(np.unique(warped_mask)) <= {0.0, 1.0}
    # the bright rectangle of the image and the mask agree except along the border
    agree = (warped_img > 0.5) == (warped_mask > 0.5)
    assert agree.mean() > 0.97
    again = aug(batch, tf.constant([1, 2]))
    np.testing.assert_array_equal(again["mask"].numpy(), warped_mask)
    other = aug(batch, tf.constant([3, 4]))
    assert not np.array_equal(other["mask"].numpy(), warped_mask)


def test_photometric_layers_keep_range_and_shape():
    aug = augment.BatchAugmenter(None, photometric=True, seed=5)
    image = tf.random.stateless_uniform((3, 8, 8, 1), (1, 1))
    out = aug({"image": image}, tf.constant([0, 0]))["image"].numpy()
    assert out.shape == (3, 8, 8, 1) and out.min() >= 0 and out.max() <= 1
    assert not np.allclose(out, image.numpy())


@pytest.mark.parametrize(
    ("kwargs", "bad"),
    [
        ({"rotation": -1}, "-1"),
        ({"scale": (1.2, 1.1)}, "1.2"),
        ({"shift": 1.5}, "1.5"),
        ({"mirror": 2.0}, "2.0"),
    ],
)
def test_invalid_ranges(kwargs, bad):
    with pytest.raises(ValueError, match=bad.replace(".", r"\.").replace("(", r"\(")):
        augment.AffineRange(**kwargs)
