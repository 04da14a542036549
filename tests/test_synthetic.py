import cv2
import numpy as np
import pandas as pd
import pytest

from tf_boneage.data import synthetic

AGES = [3, 18, 40, 70, 100, 130, 160, 190, 228]


def _clean(age, male=True, size=(128, 128)):
    return synthetic.render(age, male, np.random.default_rng(0), size, augment=False)


def test_same_seed_same_phantom_and_size():
    a = synthetic.render(100, True, np.random.default_rng(5), (80, 60))
    b = synthetic.render(100, True, np.random.default_rng(5), (80, 60))
    assert a.image.shape == a.mask.shape == (80, 60) and a.image.dtype == np.float32
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.landmarks, b.landmarks)


@pytest.mark.parametrize(
    "feature",
    ["carpals", "carpal_area", "epiphyses", "epiphysis_ratio", "fusion", "length", "width"],
)
def test_maturity_features_are_monotonic_in_age(feature):
    values = [synthetic.maturity_features(a, True)[feature] for a in range(1, 229, 3)]
    assert np.all(np.diff(values) >= 0) and values[-1] > values[0]


def test_girls_mature_earlier():
    for age in (30, 80, 150, 170):
        girl, boy = (synthetic.maturity_features(age, m) for m in (False, True))
        assert girl["carpal_area"] > boy["carpal_area"] or girl["fusion"] > boy["fusion"]


def test_carpal_bone_area_on_the_image_grows_with_age():
    areas = []
    for age in AGES:
        ph = _clean(age, size=(256, 256))
        cx, cy = ph.landmarks[2]
        unit = np.linalg.norm(ph.landmarks[0] - ph.landmarks[2])  # tip-capitate length
        top, bottom, half = int(cy - 0.04 * unit), int(cy + 0.2 * unit), int(0.25 * unit)
        box = ph.image[top:bottom, int(cx) - half : int(cx) + half]
        areas.append((box > 0.5).sum() / unit**2)  # bone area relative to hand size
    assert np.all(np.diff(areas) >= 0) and areas[-1] > 3 * max(areas[0], 1e-3)


def test_physis_gap_closes():
    """Along the middle finger, the dark gap between shaft and epiphysis disappears with fusion."""

    def gaps(age):
        ph = _clean(age, size=(256, 256))
        x = int(round(ph.landmarks[0, 0]))
        column = ph.image[int(ph.landmarks[0, 1]) : int(ph.landmarks[2, 1]), x - 1 : x + 2].max(1)
        bright = column > 0.45
        return int(np.sum(bright[1:] != bright[:-1]))  # bone/gap transitions

    assert gaps(60) > gaps(228)


def test_mask_covers_the_hand_and_nothing_else():
    for age in (20, 120, 220):
        ph = _clean(age)
        inside = cv2.erode(ph.mask, np.ones((3, 3), np.uint8)) > 0
        outside = cv2.dilate(ph.mask, np.ones((9, 9), np.uint8)) == 0
        assert ph.image[inside].min() > 0.05 + 0.1  # soft tissue at least
        np.testing.assert_allclose(ph.image[outside], 0.05, atol=2e-3)  # bare background


def test_markers_and_collimation_stay_outside_the_mask():
    rng = np.random.default_rng(1)
    for _ in range(20):
        ph = synthetic.render(rng.uniform(1, 228), bool(rng.random() < 0.5), rng, (96, 96))
        image = np.zeros((96, 96), np.float32)
        synthetic._marker(image, ph.mask, rng)
        assert not (image[ph.mask > 0] > 0).any()


def test_landmarks_fall_on_the_named_anatomy():
    for age in (12, 80, 200):
        ph = _clean(age, size=(160, 160))
        tip, thumb, capitate = ph.landmarks
        bone = ph.image > 0.05 + 0.22 + 0.2  # soft tissue plus most of a bone
        # the tip ends the middle finger: bone just below it, none above it in that column
        x, y = int(round(tip[0])), int(round(tip[1]))
        assert bone[y + 2 : y + 5, x].any() and not bone[: y - 2, x - 1 : x + 2].any()
        # the thumb tip is the thumb's distal end: on the thumb side, inside the hand
        assert thumb[0] > capitate[0] + 10 and ph.mask[int(thumb[1]), int(thumb[0])]
        # the capitate centre is ossified bone below the middle finger
        assert bone[int(round(capitate[1])), int(round(capitate[0]))]
        assert abs(capitate[0] - tip[0]) < 2


def test_right_hands_are_mirrored():
    rng = np.random.default_rng(0)
    sides = []
    for _ in range(60):
        ph = synthetic.render(120, True, rng, (64, 64))
        tip, thumb, cap = ph.landmarks
        axis = tip - cap
        side = np.sign(axis[0] * (thumb - cap)[1] - axis[1] * (thumb - cap)[0])
        sides.append((ph.right, side))
    rights = {s for r, s in sides if r}
    lefts = {s for r, s in sides if not r}
    assert rights and lefts and rights.isdisjoint(lefts)


def test_generate_is_worker_independent_and_writes_a_manifest(tmp_path):
    a = synthetic.generate(tmp_path / "a", n=64, size=(48, 40), seed=2, workers=1, progress=False)
    b = synthetic.generate(tmp_path / "b", n=64, size=(48, 40), seed=2, workers=2, progress=False)
    pd.testing.assert_frame_equal(a, b)
    for name in ("syn000000", "syn000063"):
        assert (tmp_path / "a/images" / f"{name}.png").read_bytes() == (
            tmp_path / "b/images" / f"{name}.png"
        ).read_bytes()
    m = pd.read_csv(tmp_path / "a" / "manifest.csv")
    assert {"id", "image_path", "boneage", "male", "split", "mask_path", "tip_x"} <= set(m.columns)
    assert m["split"].value_counts().to_dict() == {"train": 44, "val": 10, "test": 10}
    assert m[["tip_x", "tip_y", "capitate_x", "capitate_y"]].stack().between(0, 1).all()


def test_generate_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="0"):
        synthetic.generate(tmp_path, n=0)
    with pytest.raises(ValueError, match="16"):
        synthetic.generate(tmp_path, n=2, size=(16, 16))


def test_formats_and_size_ranges_read_back_as_the_same_phantoms(tmp_path):
    """Every input path of the paper preset: PNG 8 / 16 bit and DICOM 12 / 16 stored bits,
    MONOCHROME1 (stored inverted) and 2, films of varying sizes and aspects, each read back as
    the same phantom as its 16-bit PNG twin (the DICOM reader scales min-max), with its mask
    and sex at its own size and a chronological age from the DICOM dates."""
    from tf_boneage.data import io
    from tf_boneage.inference.predict import months_between

    kw = {"n": 8, "seed": 5, "workers": 1, "progress": False, "size_range": (200, 400)}
    formats = synthetic.FORMATS
    mixed = synthetic.generate(tmp_path / "mixed", formats=formats, **kw)
    twin = synthetic.generate(tmp_path / "twin", formats=("png16",), **kw)
    assert mixed["boneage"].tolist() == twin["boneage"].tolist()
    shapes = set()
    for k, (row, ref) in enumerate(zip(mixed.itertuples(), twin.itertuples(), strict=True)):
        fmt = formats[k % len(formats)]
        loaded = io.read_image(tmp_path / "mixed" / row.image_path)
        expected = io.load_image(tmp_path / "twin" / ref.image_path)
        h, w = expected.shape
        shapes.add((h, w))
        assert 200 <= h <= 400 and 0.69 <= w / h <= 0.96, (h, w)
        assert loaded.pixels.shape == (h, w)
        mask = cv2.imread(str(tmp_path / "mixed" / row.mask_path), 0)
        assert mask.shape == (h, w)
        if fmt.startswith("dicom"):
            lo, hi = expected.min(), expected.max()
            expected = (expected - lo) / (hi - lo)
            assert loaded.meta["sex"] == ("M" if row.male else "F")
            assert loaded.meta["photometric"] == (
                "MONOCHROME1" if "mono1" in fmt else "MONOCHROME2"
            )
            chrono = months_between(loaded.meta["birth_date"], loaded.meta["study_date"])
            assert abs(chrono - row.boneage) < 60
        tolerance = 2 / 4095 if fmt == "dicom12-mono1" else 2 / 255 if fmt == "png8" else 1e-3
        np.testing.assert_allclose(loaded.pixels, expected, atol=tolerance, err_msg=fmt)
    assert len(shapes) > 4  # sizes vary


def test_bad_formats_and_size_ranges_are_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown formats"):
        synthetic.generate(tmp_path, n=2, formats=("tiff",), progress=False)
    with pytest.raises(ValueError, match="size_range"):
        synthetic.generate(tmp_path, n=2, size_range=(300, 200), progress=False)
