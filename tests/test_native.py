"""Native-size serving: the paper-preset graph takes a film at its own size, finds
the hand and its landmarks on downscaled copies and warps regions A, B, C from the film's
full-resolution pixels into the 2080 x 1600 frame. The graph's chain is known exactly here
(``tiny_graph._native_graph``: whole-film mask, fixed landmarks), so a region crop is a pure
resampling of the film."""

import cv2
import numpy as np
import pytest
import tensorflow as tf
from tiny_graph import HAND, PAPER_SIZES, _film, _native_graph

#: region A of the 2000 x 1600 film under the fixed landmarks (film pixels, from the graph's
#: own forward map: x 213-1387, y 227-1752; the crop samples it every ~3.1 film pixels)
GRATING = (800, 1200, 600, 1000)  # y0, y1, x0, x1: well inside region A


@pytest.fixture(scope="module")
def native():
    return _native_graph()


def _png(img: np.ndarray, bits: int = 8) -> bytes:
    scale = 65535 if bits == 16 else 255
    data = np.clip(np.rint(img * scale), 0, scale).astype(np.uint16 if bits == 16 else np.uint8)
    return cv2.imencode(".png", data)[1].tobytes()


def _grating(film: np.ndarray, period: int = 12) -> np.ndarray:
    """Vertical stripes (half a period bright, half dark) inside :data:`GRATING`."""
    y0, y1, x0, x1 = GRATING
    out = film.copy()
    stripes = ((np.arange(x1 - x0) // (period // 2)) % 2).astype(np.float32)
    out[y0:y1, x0:x1] = 0.3 + 0.4 * stripes[None, :]
    return out


def _crops(graph, png: bytes) -> dict:
    out, _ = graph.chain_bytes(tf.constant([png]), graph._predict_keys())
    return {k: v.numpy()[0] for k, v in out.items()}


def _detail(crop: np.ndarray) -> float:
    """Mean |difference| of horizontally adjacent pixels in the middle of region A's crop
    (where the grating lands), in grey levels of [0, 1]."""
    h, w = crop.shape[:2]
    patch = crop[int(0.45 * h) : int(0.55 * h), int(0.35 * w) : int(0.6 * w), 0]
    return float(np.abs(np.diff(patch, axis=1)).mean())


def test_the_chain_is_the_known_one(native):
    out = _crops(native, _png(_film()))
    np.testing.assert_allclose(out["landmarks"], HAND, atol=1e-6)
    assert out["mask_area"] == pytest.approx(1.0) and out["landmark_plausibility"] == 1.0
    for region, size in PAPER_SIZES.items():
        assert out[f"region_{region}"].shape == (*size, 1)


def test_fine_detail_of_a_full_size_film_survives_in_region_a(native):
    """A grating of 12 film pixels (about 4 crop pixels) inside region A: the native graph
    keeps it in the crop; the same film squeezed to a 100 px input (the 100 px preset's path)
    loses it; the plain film has no such detail."""
    film = _film()
    plain, striped = _png(film), _png(_grating(film))
    native_striped = _detail(_crops(native, striped)["region_A"])
    native_plain = _detail(_crops(native, plain)["region_A"])
    small = _native_graph(input_size=(100, 100))
    small_striped = _detail(_crops(small, striped)["region_A"])
    assert native_striped > 0.15  # the stripes' contrast, equalised, survives (0.25)
    assert native_plain < 0.01 and small_striped < 0.1 * native_striped  # 0.008


def test_one_film_at_two_resolutions_gives_the_same_crops(native):
    """The film at 2000 x 1600 (16-bit) and at 1000 x 800 (8-bit): every region crop agrees
    within 0.005 grey levels on average and 0.06 at most (resampling and quantisation only;
    measured 0.0006 / 0.03), the ages within 1 month."""
    film = _film()
    half = cv2.resize(film, (800, 1000), interpolation=cv2.INTER_AREA)
    full, low = _crops(native, _png(film, 16)), _crops(native, _png(half, 8))
    for region in PAPER_SIZES:
        diff = np.abs(full[f"region_{region}"] - low[f"region_{region}"])
        assert diff.mean() < 0.005 and diff.max() < 0.06, (region, diff.mean(), diff.max())
    ages = native.predict_bytes(tf.constant([_png(film, 16), _png(half)]), tf.constant([1.0, 1.0]))
    a, b = ages["bone_age_months"].numpy()
    assert np.isfinite([a, b]).all() and abs(a - b) < 1.0


def test_a_batch_of_films_of_different_sizes_and_aspects(native):
    """One request with films of 2000 x 1600, 600 x 500 and 3000 x 2400 px (8 and 16 bit):
    each answered as when sent alone."""
    films = [_film(2000, 1600, 0), _film(600, 500, 1), _film(3000, 2400, 2)]
    pngs = [_png(films[0]), _png(films[1], 16), _png(films[2])]
    male = tf.constant([1.0, 0.0, 1.0])
    together = native.predict_bytes(tf.constant(pngs), male)["bone_age_months"].numpy()
    alone = [
        native.predict_bytes(tf.constant([p]), male[k : k + 1])["bone_age_months"].numpy()[0]
        for k, p in enumerate(pngs)
    ]
    np.testing.assert_allclose(together, alone, atol=1e-4)


@pytest.mark.slow
def test_native_export_savedmodel_and_float32_tflite_agree_on_a_full_size_film(tmp_path):
    """The exported native-size graph: ``serving_default`` on the encoded film, its
    ``predict_tflite`` (any H, W) converted to float32 TFLite and run on the decoded film at
    2000 x 1600 and at 1200 x 960 (the interpreter resizes its input): the same answers; with
    the paper preset's second landmark look (``landmark_passes`` 2), which moves the points."""
    import json

    from tf_boneage.export import saved_model, tflite

    tilted = [0.62, 0.16, 0.85, 0.6, 0.5, 0.7]  # the tip right of the capitate
    graph = _native_graph(landmark_passes=2, hand=tilted)
    one_look = _native_graph(hand=tilted).preprocessor.landmarks
    film = _film()[None, ..., None].astype(np.float32)
    enhanced = tf.constant(film)
    moved = graph.preprocessor.landmarks(enhanced).numpy() - one_look(enhanced).numpy()
    assert np.abs(moved).max() > 0.01  # a turned hand: the second look moves it
    path = saved_model.export_end_to_end(graph, tmp_path / "paper", metadata={"test": True})
    meta = json.loads((path / "assets.extra" / "tf_boneage.json").read_text())
    assert meta["input_size"] is None  # native: no size to squeeze films to
    loaded = tf.saved_model.load(str(path))
    runner = tflite.Runner(
        tflite.write(tflite.convert(str(path), "float32"), tmp_path / "f32.tflite"),
        tflite.output_names(str(path)),
    )
    for h, w in ((2000, 1600), (1200, 960)):
        film = cv2.resize(_grating(_film()), (w, h), interpolation=cv2.INTER_AREA)
        png = _png(film, 16)
        served = loaded.signatures["serving_default"](
            image_bytes=tf.constant([png]), male=tf.constant([0.0])
        )
        decoded = loaded.signatures["decode"](image_bytes=tf.constant([png]))
        assert decoded["images"].shape == (1, h, w, 1)  # as it is: no resize before the chain
        lite = runner(
            images=decoded["images"].numpy(),
            male=np.array([0.0], np.float32),
            original_size=decoded["original_size"].numpy(),
        )
        for key in ("bone_age_months", "mask_area", "landmark_plausibility"):
            assert abs(float(lite[key][0]) - float(served[key].numpy()[0])) <= 0.05, (h, key)
        np.testing.assert_allclose(lite["landmarks"][0], served["landmarks"].numpy()[0], atol=1e-5)
    # explain_bytes for the overlay: the registered frame at 2080 x 1600, a square preview
    ex = loaded.signatures["explain_bytes"](image_bytes=tf.constant([png]), male=tf.constant([0.0]))
    assert (
        ex["registered"].shape == (1, 2080, 1600, 1)
        and ex["images"].shape[1] == ex["images"].shape[2]
    )
