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


def test_photometric_changes_keep_range_and_shape():
    aug = augment.BatchAugmenter(None, photometric=True)
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


def test_underexpose_by_hand():
    # black share 0.5: levels 0.25 / 0.5 / 0.75 / 1 -> 0 / 0 / 0.5 / 1; background stays 0
    img = tf.constant([0.0, 0.25, 0.5, 0.75, 1.0], shape=(1, 1, 5, 1))
    got = augment.underexpose(img, tf.constant([0.5]))
    np.testing.assert_allclose(got[0, 0, :, 0], [0.0, 0.0, 0.0, 0.5, 1.0], atol=1e-6)
    np.testing.assert_allclose(augment.underexpose(img, tf.constant([0.0])), img, atol=1e-7)


def test_underexpose_is_the_chains_equalisation_of_a_clipped_film():
    # a film darkened by 77 levels and clipped at 0, then equalised inside the hand, is the
    # equalised film with the share of the hand at or below the clip level sent to black
    from tf_boneage.preprocessing.contrast import equalize

    rng = np.random.default_rng(0)
    levels = rng.integers(20, 256, size=(1, 24, 20, 1))
    mask = np.zeros((1, 24, 20, 1), np.float32)
    mask[:, 3:21, 4:17] = 1.0
    film = (levels * mask / 255.0).astype(np.float32)
    dark = np.clip(levels - 77, 0, None) * mask / 255.0
    clean = equalize(film, mask).numpy()
    want = equalize(dark.astype(np.float32), mask).numpy()
    black = clean[(levels <= 77) & (mask > 0)].max()  # equalised level of the clip level
    got = augment.underexpose(tf.constant(clean), tf.constant([black])).numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert 0.1 < black < 0.5


def test_blur_by_hand():
    img = np.zeros((2, 5, 5, 1), np.float32)
    img[:, 2, 2] = 1.0
    got = augment.blur(tf.constant(img), tf.constant([1.0, 0.5])).numpy()[..., 0]
    kernel = np.outer([1, 2, 1], [1, 2, 1]) / 16.0
    np.testing.assert_allclose(got[0, 1:4, 1:4], kernel, atol=1e-6)
    assert got[0].sum() == pytest.approx(1.0)
    np.testing.assert_allclose(got[1, 2, 2], 0.5 + 0.5 * 0.25, atol=1e-6)
    np.testing.assert_allclose(got[1, 1, 1], 0.5 / 16, atol=1e-6)


@pytest.mark.parametrize(
    ("scale", "orders"),
    [((1.0, 1.0), (2, 2)), ((104 / 48, 80 / 64), (10, 4)), ((0.5, 1.3), (2, 4))],
)
def test_blur_orders_keep_the_frames_variance(scale, orders):
    assert augment.blur_orders(scale) == orders


def test_wider_blur_by_hand():
    # order 4 down the rows ([1, 4, 6, 4, 1] / 16, variance 1), order 2 across
    img = np.zeros((1, 7, 5, 1), np.float32)
    img[0, 3, 2] = 1.0
    got = augment.blur(tf.constant(img), tf.constant([1.0]), (4, 2)).numpy()[0, ..., 0]
    want = np.outer([1, 4, 6, 4, 1], [1, 2, 1]) / 64.0
    np.testing.assert_allclose(got[1:6, 1:4], want, atol=1e-6)
    assert got.sum() == pytest.approx(1.0)
    rows = np.arange(7) - 3.0
    assert (got.sum(axis=1) * rows**2).sum() == pytest.approx(1.0)  # variance n / 4


def test_enlarged_crops_get_the_wider_blur():
    img = np.zeros((1, 9, 9, 1), np.float32)
    img[0, 4, 4] = 1.0
    seed = tf.constant([0, 1])
    plain = augment.Degradation(blurred=1.0)
    wide = augment.Degradation(blurred=1.0, blur_scale=(2.0, 1.0))
    a = augment.random_degradation(tf.constant(img), seed, plain).numpy()[0, ..., 0]
    b = augment.random_degradation(tf.constant(img), seed, wide).numpy()[0, ..., 0]
    assert np.ptp(a[:, 4].nonzero()[0]) == 2  # 3 rows
    assert np.ptp(b[:, 4].nonzero()[0]) == 8  # order 8: 9 rows
    assert (a[4] > 0).sum() == (b[4] > 0).sum() == 3  # across: unchanged


def test_random_degradation_probabilities_and_seed():
    rng = np.random.default_rng(1)
    img = tf.constant(rng.uniform(0, 1, (64, 8, 8, 1)).astype(np.float32))
    seed = tf.constant([3, 4])
    none = augment.random_degradation(img, seed, augment.Degradation())
    np.testing.assert_array_equal(none, img)
    dark = augment.random_degradation(img, seed, augment.Degradation(underexposed=0.5)).numpy()
    changed = np.abs(dark - img.numpy()).max(axis=(1, 2, 3)) > 1e-6
    assert 15 < changed.sum() < 49  # about half of 64
    assert (dark <= img.numpy() + 1e-6).all()  # darker, never brighter
    again = augment.random_degradation(img, seed, augment.Degradation(underexposed=0.5))
    np.testing.assert_array_equal(again, dark)
    both = augment.random_degradation(img, seed, augment.Degradation(1.0, 0.5, 1.0)).numpy()
    assert (np.abs(both - img.numpy()).max(axis=(1, 2, 3)) > 1e-6).all()


def test_noise_stays_inside_the_hand_within_its_amplitude_and_splits_by_rows():
    rng = np.random.default_rng(2)
    img = rng.uniform(0.2, 0.8, (6, 8, 8, 1)).astype(np.float32)
    img[:, :, :3] = 0.0  # background: never noised (the outline does not move)
    seed = tf.constant([5, 6], tf.int64)
    amp = tf.constant([0.0, 0.01, 0.02, 0.03, 0.04, 0.05])
    out = augment.add_noise(tf.constant(img), amp, seed).numpy()
    moved = np.abs(out - img).max(axis=(1, 2, 3))
    assert moved[0] == 0 and (moved[1:] > 0).all()
    assert (moved <= amp.numpy() + 1e-7).all() and (moved[1:] > 0.8 * amp.numpy()[1:]).all()
    assert (out[:, :, :3] == 0).all()
    # rows 4 and 1 of the seeded batch, as a replica holding them draws them
    rows = augment.Rows(tf.constant([4, 1]), tf.constant(6))
    part = augment.add_noise(tf.constant(img[[4, 1]]), tf.gather(amp, [4, 1]), seed, rows)
    np.testing.assert_array_equal(part.numpy(), out[[4, 1]])
    # in the degradation: off by default, about half the crops at 0.5; the other draws kept
    crops = tf.constant(rng.uniform(0.1, 0.9, (64, 8, 8, 1)).astype(np.float32))
    plain = augment.Degradation(underexposed=0.5)
    noisy = augment.Degradation(underexposed=0.5, noisy=0.5, max_noise=0.04)
    a = augment.random_degradation(crops, seed, plain).numpy()
    b = augment.random_degradation(crops, seed, noisy).numpy()
    changed = np.abs(b - a).max(axis=(1, 2, 3))
    assert 15 < (changed > 0).sum() < 49 and changed.max() <= 0.04 + 1e-6
    assert not augment.Degradation(noisy=1.0, max_noise=0.0).active


def test_augmenter_degrades_only_when_asked():
    batch = {"image": tf.constant(np.full((4, 8, 8, 1), 0.6, np.float32))}
    plain = augment.BatchAugmenter(None, photometric=False, degrade=augment.Degradation())
    assert plain.degrade is None
    np.testing.assert_array_equal(plain(batch, tf.constant([1, 2]))["image"], batch["image"])
    dark = augment.BatchAugmenter(
        None, photometric=False, degrade=augment.Degradation(underexposed=1.0, max_black=0.5)
    )(batch, tf.constant([1, 2]))["image"].numpy()
    assert (dark < 0.6).all() and (dark >= 0.2 - 1e-6).all()  # (0.6 - q) / (1 - q), q <= 0.5


@pytest.mark.parametrize(
    "kwargs, bad",
    [
        ({"underexposed": 1.5}, "underexposed"),
        ({"blurred": -0.1}, "blurred"),
        ({"blur_scale": (0.0, 1.0)}, "blur_scale"),
        ({"max_black": 1.0}, "max_black"),
        ({"noisy": 2.0}, "noisy"),
        ({"max_noise": 1.0}, "max_noise"),
    ],
)
def test_invalid_degradation(kwargs, bad):
    with pytest.raises(ValueError, match=bad):
        augment.Degradation(**kwargs)


@pytest.mark.parametrize(
    ("cls", "override", "key"),
    [
        ("SegmentationConfig", "brightness=1.0", "brightness"),
        ("SegmentationConfig", "brightness=-0.1", "brightness"),
        ("LandmarkConfig", "underexposed=1.5", "underexposed"),
    ],
)
def test_exposure_settings_out_of_range_name_the_key(tmp_path, cls, override, key):
    from tf_boneage.training import config as config_lib

    manifest = tmp_path / "m.csv"
    manifest.write_text("id\n")
    with pytest.raises(config_lib.ConfigError, match=f"'{key}'"):
        config_lib.load(getattr(config_lib, cls), None, None, [f"manifest={manifest}", override])


def test_pipeline_brightness_out_of_range():
    from tf_boneage.data.pipeline import PipelineConfig

    with pytest.raises(ValueError, match="brightness"):
        PipelineConfig(brightness=1.2)


def test_brightness_range_is_a_setting():
    """Constant grey 0.5 (contrast changes leave a flat image flat): the brightness change
    shifts each image by at most the range given, and a range of 0.45 darkens some images
    below 0.4, which the default 0.1 never does; shifts past black clip to 0."""
    batch = {"image": tf.constant(np.full((64, 4, 4, 1), 0.5, np.float32))}

    def shifts(brightness):
        aug = augment.BatchAugmenter(None, photometric=True, brightness=brightness, contrast=0.0)
        return aug(batch, tf.constant([1, 2]))["image"].numpy()[:, 0, 0, 0] - 0.5

    default, wide = shifts(0.1), shifts(0.45)
    assert np.abs(default).max() <= 0.1 + 1e-5 and np.abs(wide).max() <= 0.45 + 1e-5
    assert (wide < -0.1).any() and (wide > 0.1).any()
    assert np.abs(default).max() > 0.02  # the default still shifts
    clipped = shifts(0.9)
    assert clipped.min() == -0.5  # 0.5 shifted past black is black


def test_landmark_task_darkens_training_images_when_asked():
    from tf_boneage.training import landmarks
    from tf_boneage.training.config import LandmarkConfig

    x = np.full((4, 8, 8, 1), 0.6, np.float32)
    y = np.zeros((4, 6), np.float32)
    strategy = tf.distribute.get_strategy()
    plain = landmarks.LandmarkTask(LandmarkConfig(size=8), strategy, x, y, None)
    assert plain.augmenter.degrade is None
    dark = landmarks.LandmarkTask(LandmarkConfig(size=8, underexposed=1.0), strategy, x, y, None)
    assert dark.augmenter.degrade.underexposed == 1.0
    dark.augmenter.brightness = dark.augmenter.contrast = 0.0  # the degradation alone
    dark.augmenter.ranges = None
    aug = augment.attach_rows({"image": tf.constant(x)}, tf.constant([1, 2]))["aug"]
    images, _ = dark.augment(tf.constant(x), tf.constant(y), aug)
    assert (images.numpy() < 0.6).all()  # every image darkened: (0.6 - q) / (1 - q)


def test_the_u_nets_default_brightness_is_the_augmenters():
    """The config keeps its own literal (configs load without TensorFlow): the same value."""
    from tf_boneage.data.pipeline import PipelineConfig
    from tf_boneage.training.config import SegmentationConfig

    assert SegmentationConfig().brightness == augment.BRIGHTNESS == PipelineConfig().brightness
