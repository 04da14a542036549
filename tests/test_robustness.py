"""The robustness transforms and their summary, by hand."""

import numpy as np
import pandas as pd
import pytest

from tf_boneage.inference import robustness


def test_rotations_flips_and_inversion_by_hand():
    img = np.arange(6, dtype=np.float32).reshape(2, 3) / 10
    r90 = robustness.transformed(img, "rotate 90", 0, 0)
    assert r90.shape == (3, 2) and r90[0].tolist() == pytest.approx([0.3, 0.0])  # clockwise
    np.testing.assert_array_equal(robustness.transformed(img, "rotate 180", 0, 0), img[::-1, ::-1])
    np.testing.assert_array_equal(
        robustness.transformed(img, "flip horizontal", 0, 0), img[:, ::-1]
    )
    np.testing.assert_array_equal(robustness.transformed(img, "flip vertical", 0, 0), img[::-1])
    np.testing.assert_allclose(robustness.transformed(img, "inverted", 0, 0), 1 - img)


def test_exposure_and_resolution_by_hand():
    flat = np.full((8, 8), 0.5, np.float32)
    assert robustness.transformed(flat, "brightness +30 %", 0, 0).max() == pytest.approx(0.8)
    assert robustness.transformed(flat, "brightness -30 %", 0, 0).max() == pytest.approx(0.2)
    ramp = np.tile(np.linspace(0.2, 0.6, 8, dtype=np.float32), (8, 1))  # mean 0.4
    more = robustness.transformed(ramp, "contrast +30 %", 0, 0)
    np.testing.assert_allclose(more, (ramp - 0.4) * 1.3 + 0.4, atol=1e-6)
    checker = (np.indices((64, 64)).sum(0) % 2).astype(np.float32)
    half = robustness.transformed(checker, "resolution x0.5", 0, 0)
    assert half.shape == checker.shape and half.std() < 0.1 * checker.std()  # detail gone


def test_upscaled_films_are_a_smaller_image_scaled_back_by_each_kernel():
    rng = np.random.default_rng(2)
    img = rng.random((12, 18)).astype(np.float32)
    near = robustness.transformed(img, "upscaled nearest 1/3", 0, 0)
    assert near.shape == img.shape
    # a 4 x 6 image (each pixel the mean of a 3 x 3 block) with every pixel repeated 3 x 3
    blocks = img.reshape(4, 3, 6, 3).mean((1, 3))
    np.testing.assert_allclose(near, np.repeat(np.repeat(blocks, 3, 0), 3, 1), atol=1e-6)
    smooth = robustness.transformed(img, "upscaled bilinear 1/3", 0, 0)
    assert np.abs(np.diff(smooth, axis=1)).mean() < np.abs(np.diff(near, axis=1)).mean()
    names = robustness.select(["upscaled *"])
    assert len(names) == 20 and "upscaled lanczos 1/6" in names
    for name in names:  # every kernel keeps the size and the range
        out = robustness.transformed(img, name, 0, 0)
        assert out.shape == img.shape and out.min() >= 0 and out.max() <= 1, name
    assert robustness.select(["upscaled * 1/2", "rotate +1?"]) == [
        "rotate +10",
        "rotate +15",
        *(f"upscaled {k} 1/2" for k in robustness.UPSCALE_KERNELS),
    ]
    with pytest.raises(ValueError, match="no transform matches 'sharpened'"):
        robustness.select(["sharpened"])
    with pytest.raises(ValueError, match="kernel must be one of"):
        robustness.upscaled(img, 2, "gaussian")


def test_rotation_by_30_degrees_keeps_size_and_moves_the_content():
    img = np.zeros((100, 80), np.float32)
    img[10:20, 35:45] = 1.0  # a bright square near the top centre
    out = robustness.transformed(img, "rotate +30", 0, 0)
    assert out.shape == img.shape
    ys, xs = np.nonzero(out > 0.5)
    assert xs.mean() > 45  # clockwise: the top moves right
    # the control: there and back, the square is where it was, blurred only by the resampling
    back = robustness.transformed(img, "rotate +30 and back", 0, 0)
    ys, xs = np.nonzero(back > 0.5)
    assert abs(xs.mean() - 39.5) < 1 and abs(ys.mean() - 14.5) < 1
    assert 0 < np.abs(back - img).max() < 1  # not the film itself: interpolated twice
    # a corner of the film turns out of the frame and is lost (filled with the background)
    corner = np.zeros((100, 80), np.float32)
    corner[:8, :8] = 1.0
    assert robustness.transformed(corner, "rotate +30 and back", 0, 0)[:8, :8].max() < 0.5


def test_markers_are_burned_into_a_corner_reproducibly():
    img = np.zeros((400, 300), np.float32)
    a = robustness.transformed(img, "laterality marker", 3, 7)
    b = robustness.transformed(img, "laterality marker", 3, 7)
    np.testing.assert_array_equal(a, b)
    ys, xs = np.nonzero(a > 0.5)
    assert len(ys) and ys.max() < 200 and xs.min() > 150  # top right
    text = robustness.transformed(img, "burned-in text", 3, 7)
    ys, xs = np.nonzero(text > 0.5)
    assert ys.min() > 200 and xs.min() < 100  # bottom left


def test_summary_by_hand():
    preds = pd.DataFrame(
        {
            "transform": ["untouched"] * 2 + ["rotate 90"] * 2,
            "boneage": [100.0, 50.0, 100.0, 50.0],
            "pred": [110.0, 40.0, 130.0, 50.0],
            "rejected": [False, False, True, False],
        }
    )
    table = robustness.summarise(preds).set_index("transform")
    assert table.loc["untouched", "mae"] == 10.0 and table.loc["rotate 90", "mae"] == 15.0
    assert table.loc["rotate 90", "change"] == pytest.approx(0.5)
    assert table.loc["rotate 90", "mae_accepted"] == 0.0
    assert table.loc["rotate 90", "rejected"] == 0.5
    assert np.isnan(table.loc["rotate 90", "paired_change"])  # no ids: nothing to pair
    text = robustness.markdown(table.reset_index())
    assert "| rotate 90 | 2 | 15.00 | +50 % | 0.00 | nan | n/a | 50 % |" in text


def test_paired_change_compares_the_accepted_films_with_themselves():
    """Films a (error 2 untouched), b (20), c (8): darkened, QC keeps only b, now 22 off.
    Unpaired, the accepted MAE 22 is +100 % over the untouched 10; paired, b cost 10 %."""
    preds = pd.DataFrame(
        {
            "transform": ["untouched"] * 3 + ["brightness -30 %"] * 3,
            "id": ["a", "b", "c"] * 2,
            "boneage": [100.0, 100.0, 100.0] * 2,
            "pred": [102.0, 120.0, 92.0, 150.0, 122.0, 60.0],
            "rejected": [False, False, False, True, False, True],
        }
    )
    table = robustness.summarise(preds).set_index("transform")
    dark = table.loc["brightness -30 %"]
    assert dark["mae_accepted"] == 22.0 and dark["mae_same_untouched"] == 20.0
    assert dark["paired_change"] == pytest.approx(0.1)
    assert table.loc["untouched", "paired_change"] == pytest.approx(0.0)
    text = robustness.markdown(table.reset_index())
    assert "| 22.00 | 20.00 | +10 % | 67 % |" in text


def test_small_rotations_of_squashed_films_act_on_the_film_as_taken():
    """A 100 x 100 thumbnail of a film 0.74 as wide as high: rotated at the film's own
    proportions it equals the film rotated and then squashed (within interpolation), and
    differs from rotating the squashed pixels (a rotation plus a shear of the film)."""
    import cv2

    film = np.zeros((135, 100), np.float32)  # square pixels: 100 / 135 = 0.74
    film[20:110, 40:60] = 1.0  # a long bar, like a finger
    thumb = cv2.resize(film, (100, 100), interpolation=cv2.INTER_AREA)
    want = cv2.resize(robustness.transformed(film, "rotate +30", 0, 0), (100, 100))
    got = robustness.transformed(thumb, "rotate +30", 0, 0, aspect=100 / 135)
    sheared = robustness.transformed(thumb, "rotate +30", 0, 0)
    assert got.shape == thumb.shape
    assert np.abs(got - want).mean() < 0.25 * np.abs(sheared - want).mean()
    # the aspect leaves every other transform alone; a bad aspect is refused
    np.testing.assert_array_equal(
        robustness.transformed(thumb, "rotate 90", 0, 0, aspect=0.74),
        robustness.transformed(thumb, "rotate 90", 0, 0),
    )
    with pytest.raises(ValueError, match="aspect"):
        robustness.transformed(thumb, "rotate -15", 0, 0, aspect=0.0)


def test_rotation_matrix_by_hand():
    """Clockwise about the centre; at the film's proportions a square-pixel step of the true
    film is 1 / sy stored rows (here a film twice as high as wide stored square)."""
    m = robustness.rotation_matrix((3, 3), 90)
    np.testing.assert_allclose(m @ [2, 1, 1], [1, 2], atol=1e-9)  # right of centre -> below
    np.testing.assert_allclose(m @ [1, 1, 1], [1, 1], atol=1e-9)
    m = robustness.rotation_matrix((100, 100), 90, aspect=0.5)
    np.testing.assert_allclose(m @ [49.5, 49.5, 1], [49.5, 49.5], atol=1e-9)
    np.testing.assert_allclose(m @ [99.5, 49.5, 1], [49.5, 74.5], atol=1e-9)


def test_lanczos_resampling_keeps_the_detail_bilinear_blurs():
    """A film turned and turned back: one Lanczos pass each way loses a tenth of what two
    bilinear passes lose (the centre, away from the cut corners); an unknown kind is refused."""
    import cv2

    rng = np.random.default_rng(0)
    film = cv2.GaussianBlur(rng.random((100, 100)).astype(np.float32), (0, 0), 1.0)
    film = (film - film.min()) / (film.max() - film.min())

    def lost(kind):
        back = robustness.transformed(film, "rotate +30 and back", 0, 0, resampling=kind)
        assert back.min() >= 0 and back.max() <= 1
        return np.abs(back - film)[30:70, 30:70].mean()

    assert lost("lanczos") < 0.2 * lost("bilinear")
    with pytest.raises(ValueError, match="resampling"):
        robustness.transformed(film, "rotate +15", 0, 0, resampling="cubic")


@pytest.mark.parametrize(
    "name, degrees, aspect",
    [("rotate +30", 30, None), ("rotate -15", -15, 0.74), ("rotate 90", 90, None)]
    + [("rotate 180", 180, None)],
)
def test_points_turned_with_the_film_come_back(name, degrees, aspect):
    """A bright pixel's centre, found in the turned film, is carried back to where it was."""
    img = np.zeros((60, 40), np.float32)
    img[20, 12] = 1.0
    out = robustness.transformed(img, name, 0, 0, aspect)
    ys, xs = np.nonzero(out >= out.max() * 0.999)
    here = np.array([[xs.mean() + 0.5, ys.mean() + 0.5]])
    back = robustness.turned_back(here, degrees, img.shape, aspect)
    np.testing.assert_allclose(back[0], [12.5, 20.5], atol=0.75)
