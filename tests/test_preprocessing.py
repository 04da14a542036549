"""Preprocessing steps on synthetic inputs with known answers (and real data where present)."""

import math

import cv2
import numpy as np
import pytest
import tensorflow as tf

from tf_boneage.data import augment
from tf_boneage.data.synthetic import render
from tf_boneage.preprocessing import contrast, mask, regions, registration, warp

FRAME = registration.Frame(208, 160)


# ---- warp ---------------------------------------------------------------------------------


def test_gather_warp_matches_image_projective_transform():
    rng = np.random.default_rng(0)
    images = tf.constant(rng.random((2, 20, 16, 1)), tf.float32)
    fwd = augment.affine_matrix(
        tf.constant([0.3, -0.2]),
        tf.constant([1.1, 0.9]),
        tf.constant([1.5, -2.0]),
        tf.constant([0.5, 1.0]),
        tf.constant([1.0, -1.0]),
        20,
        16,
    )
    reference = augment.warp(images, fwd).numpy()
    # augment's matrices act on index coordinates; ours on continuous ones (shift by 0.5)
    shift = tf.constant([[1.0, 0, 0.5], [0, 1.0, 0.5], [0, 0, 1.0]])
    inverse = shift @ tf.linalg.inv(fwd) @ tf.linalg.inv(shift)
    ours = warp.warp_affine(images, inverse, (20, 16)).numpy()
    inner = (slice(None), slice(2, -2), slice(2, -2))  # borders differ only in fill handling
    np.testing.assert_allclose(ours[inner], reference[inner], atol=1e-5)


def test_identity_warp_is_exact():
    images = tf.random.stateless_uniform((1, 7, 9, 2), (1, 2))
    out = warp.warp_affine(images, tf.eye(3)[None], (7, 9))
    np.testing.assert_allclose(out, images, atol=1e-6)


# ---- registration -------------------------------------------------------------------------


def _similarity(angle, scale, tx, ty, mirror):
    c, s = math.cos(angle) * scale, math.sin(angle) * scale
    flip = np.diag([-1.0 if mirror else 1.0, 1.0, 1.0])
    return np.array([[c, -s, tx], [s, c, ty], [0, 0, 1.0]]) @ flip


@pytest.mark.parametrize(
    ("angle", "scale", "tx", "ty", "mirror"),
    [
        (0.0, 1.0, 0.0, 0.0, False),
        (0.4, 0.6, 30.0, -10.0, False),
        (-0.7, 1.3, -5.0, 12.0, True),
        (2.5, 0.8, 100.0, 40.0, True),
    ],
)
def test_known_affine_is_recovered(angle, scale, tx, ty, mirror):
    # canonical landmarks with the thumb on the right (left hand), then a known map away
    canon = np.array([[*FRAME.tip, 1], [120.0, 90.0, 1], [*FRAME.capitate, 1]])
    known = _similarity(angle, scale, tx, ty, mirror)
    observed = (known @ canon.T).T[:, :2]
    size = (300, 280)
    norm = observed / [size[1], size[0]]
    fwd, right = registration.registration_matrix(tf.constant(norm.reshape(1, 6)), size, FRAME)
    np.testing.assert_allclose(fwd.numpy()[0], np.linalg.inv(known), atol=1e-4)
    assert bool(right.numpy()[0]) is mirror


def test_non_square_pixels_use_the_original_size():
    # a hand photographed on a 750 x 1000 (w x h) film, stored squashed at 100 x 100
    canon = np.array([[*FRAME.tip], [120.0, 90.0], [*FRAME.capitate]])
    known = _similarity(0.3, 4.0, 50.0, 20.0, False)
    orig = (known @ np.c_[canon, np.ones(3)].T).T[:, :2]  # original pixels (x, y)
    norm = orig / [750.0, 1000.0]
    fwd, _ = registration.registration_matrix(
        tf.constant(norm.reshape(1, 6)), (100, 100), FRAME, tf.constant([[1000.0, 750.0]])
    )
    pts = registration.landmarks_to_frame(tf.constant(norm.reshape(1, 6)), fwd, (100, 100))
    np.testing.assert_allclose(pts.numpy()[0], canon, atol=1e-3)
    # assuming square pixels instead distorts the thumb (no similarity can undo the stretch)
    fwd_sq, _ = registration.registration_matrix(tf.constant(norm.reshape(1, 6)), (100, 100), FRAME)
    wrong = registration.landmarks_to_frame(tf.constant(norm.reshape(1, 6)), fwd_sq, (100, 100))
    assert np.abs(wrong.numpy()[0, 1] - canon[1]).max() > 2.0


def test_phantom_registration_and_mirror():
    rng = np.random.default_rng(4)
    for _ in range(6):
        ph = render(120, True, rng, (128, 128))
        norm = (ph.landmarks + 0.5) / 128.0
        image = ph.image[None, ..., None]
        reg, fwd, right = registration.register(
            tf.constant(image), tf.constant(norm.reshape(1, 6)), FRAME
        )
        assert bool(right[0]) == ph.right
        pts = registration.landmarks_to_frame(tf.constant(norm.reshape(1, 6)), fwd, (128, 128))[0]
        np.testing.assert_allclose(pts[0], FRAME.tip, atol=1e-3)
        np.testing.assert_allclose(pts[2], FRAME.capitate, atol=1e-3)
        assert pts[1, 0] > FRAME.width / 2  # thumb on the right: a left hand after registration
        assert reg.shape == (1, 208, 160, 1)


# ---- mask cleanup and contrast ------------------------------------------------------------


def test_small_components_are_removed_and_holes_filled():
    m = np.zeros((1, 20, 20, 1), np.float32)
    m[0, 4:16, 4:14] = 1.0  # the hand: 120 px
    m[0, 8:10, 8:10] = 0.0  # a hole
    m[0, 1:3, 17:19] = 1.0  # a marker: 4 px
    m[0, 18:20, 0:6] = 1.0  # an edge: 12 px
    out = mask.clean_mask(tf.constant(m)).numpy()[0, ..., 0]
    expected = np.zeros((20, 20))
    expected[4:16, 4:14] = 1.0
    np.testing.assert_array_equal(out, expected)


def test_components_are_8_connected_and_labelled():
    m = np.zeros((1, 6, 6, 1), np.float32)
    m[0, 0, 0] = m[0, 1, 1] = m[0, 2, 2] = 1.0  # diagonal: one component
    m[0, 5, 0] = 1.0
    labels = mask.component_labels(tf.constant(m)).numpy()[0, ..., 0]
    assert len(np.unique(labels[labels > 0])) == 2
    assert labels[0, 0] == labels[2, 2]


def test_equalize_inside_mask_by_hand():
    img = np.array([[0.2, 0.2, 0.4, 0.9]], np.float32)[None, ..., None]
    msk = np.array([[1, 1, 1, 0]], np.float32)[None, ..., None]
    out = contrast.equalize(tf.constant(img), tf.constant(msk), bins=11).numpy()[0, 0, :, 0]
    # levels 2, 2, 4 inside: cdf = 2/3 at level 2, 1 at level 4 -> (cdf - 2/3) / (1 - 2/3)
    np.testing.assert_allclose(out, [0.0, 0.0, 1.0, 0.0], atol=1e-6)
    ramp = np.linspace(0.1, 0.3, 64, dtype=np.float32).reshape(1, 8, 8, 1)
    eq = contrast.equalize(tf.constant(ramp), tf.ones_like(ramp)).numpy()
    assert eq.min() == 0.0 and eq.max() == 1.0 and np.all(np.diff(eq.ravel()) >= 0)


def test_remove_background_resizes_mask():
    img = tf.ones((1, 8, 8, 1))
    m = np.zeros((1, 4, 4, 1), np.float32)
    m[0, :2] = 1
    out = mask.remove_background(img, tf.constant(m)).numpy()[0, ..., 0]
    assert out[:4].all() and not out[4:].any()


# ---- regions ------------------------------------------------------------------------------


def test_region_crop_composes_registration():
    rng = np.random.default_rng(2)
    ph = render(150, False, rng, (160, 160))
    norm = tf.constant(((ph.landmarks + 0.5) / 160.0).reshape(1, 6))
    image = tf.constant(ph.image[None, ..., None])
    reg, fwd, _ = registration.register(image, norm, FRAME)
    crop = regions.extract(image, fwd, "A", (104, 80), FRAME)
    direct = tf.image.resize(reg, (104, 80), method="area")
    assert float(tf.reduce_mean(tf.abs(crop - direct))) < 0.03
    pts = registration.landmarks_to_frame(norm, fwd, (160, 160))
    assert bool(regions.inside(pts[0, 2], "B", FRAME))  # capitate in the carpal region
    assert not bool(regions.inside(pts[0, 0], "C", FRAME))  # finger tip outside C
    with pytest.raises(ValueError, match="'D'"):
        regions.box_pixels("D")


def test_closed_form_affine_inverse():
    fwd = tf.constant([_similarity(0.7, 1.3, 5.0, -2.0, True)], tf.float32)
    np.testing.assert_allclose(
        warp.invert_affine(fwd).numpy()[0], np.linalg.inv(fwd.numpy()[0]), atol=1e-5
    )


def test_resize_pools_before_large_downscales():
    stripes = np.tile(np.array([0.0, 1.0], np.float32), (64, 32))[None, ..., None]  # 64 x 64
    out = warp.resize(tf.constant(stripes), (8, 8)).numpy()
    np.testing.assert_allclose(out, 0.5, atol=1e-6)  # averaged, not aliased to 0 or 1
    small = warp.resize(tf.constant(stripes[:, :10, :10]), (9, 9))
    assert small.shape == (1, 9, 9, 1)


def test_chain_graph_converts_to_tflite_builtins():
    """The preprocessing graph converts with TFLite built-in ops only (decoding stays outside).

    Before ``invert_affine`` and ``resize`` it needed MatrixInverse and ScaleAndTranslate.
    Runtime parity of the converted chain is tested with the export: converting a concrete function that
    holds Keras 3 models gave zero / NaN outputs here (the mask-cleanup, equalisation and warp
    ops alone match TF exactly, see ``test_preprocessing_ops_run_in_litert``)."""
    from test_chain import threshold_unet, tiny_landmarks

    from tf_boneage.preprocessing.chain import ChainConfig, Preprocessor

    pre = Preprocessor(
        threshold_unet(),
        tiny_landmarks(),
        ChainConfig(32, 32, FRAME, {"A": (52, 40), "B": (32, 32), "C": (32, 40)}),
    )

    @tf.function(input_signature=[tf.TensorSpec([1, 96, 96, 1], tf.float32)])
    def serve(x):
        out = pre(x)
        return {k: out[k] for k in ("region_A", "region_B", "landmarks", "mask_area")}

    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [serve.get_concrete_function()], pre
    )
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    assert len(converter.convert()) > 10_000


@pytest.mark.parametrize("step", ["labels", "largest", "fill", "equalize", "warp"])
def test_preprocessing_ops_run_in_litert(step):
    from ai_edge_litert.interpreter import Interpreter

    ops = {
        "labels": lambda t: mask.component_labels(tf.cast(t > 0.16, tf.float32)),
        "largest": lambda t: mask.largest_component(tf.cast(t > 0.16, tf.float32)),
        "fill": lambda t: mask.fill_holes(tf.cast(t > 0.16, tf.float32)),
        "equalize": lambda t: contrast.equalize(t, tf.cast(t > 0.16, tf.float32)),
        "warp": lambda t: warp.warp_affine(
            t, tf.constant([[[0.9, 0.1, 3.0], [-0.1, 1.1, -2.0], [0, 0, 1.0]]]), (50, 40)
        ),
    }
    fn = tf.function(
        tf.autograph.experimental.do_not_convert(ops[step]),
        input_signature=[tf.TensorSpec([1, 96, 96, 1], tf.float32)],
    )
    converter = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    interpreter = Interpreter(model_content=converter.convert())
    interpreter.allocate_tensors()
    x = render(120, True, np.random.default_rng(0), (96, 96), augment=False).image
    x = x[None, ..., None].astype(np.float32)
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    got = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    np.testing.assert_allclose(got, fn(tf.constant(x)).numpy(), atol=1e-5)


def _random_masks(n, size, seed):
    """Blobby random masks: thresholded smoothed noise (many components, holes, long paths)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        noise = cv2.GaussianBlur(rng.random(size).astype(np.float32), (0, 0), 1.5)
        out.append((noise > np.quantile(noise, 0.45)).astype(np.float32))
    return np.stack(out)[..., None]


def test_components_and_holes_match_opencv_on_random_masks():
    masks = _random_masks(3, (40, 48), seed=1)
    snake = np.zeros((40, 48), np.float32)  # one long path: 20 rows joined at alternate ends
    snake[::2, 2:46] = 1.0
    for r in range(1, 40, 2):
        snake[r, 45 if r % 4 == 1 else 2] = 1.0
    masks = np.concatenate([masks, snake[None, ..., None]])
    labels = mask.component_labels(tf.constant(masks)).numpy()[..., 0]
    filled = mask.fill_holes(tf.constant(masks)).numpy()[..., 0]
    for k, m in enumerate(masks[..., 0].astype(np.uint8)):
        count, ref = cv2.connectedComponents(m, connectivity=8)
        # the same partition: one label per OpenCV component and one component per label
        pairs = {(a, b) for a, b in zip(ref[m > 0], labels[k][m > 0], strict=True)}
        assert len(pairs) == count - 1 == len({b for _, b in pairs}), k
        assert np.all(labels[k][m == 0] == 0)
        # holes: background components that touch no border pixel (8-connected)
        bg_count, bg = cv2.connectedComponents(1 - m, connectivity=8)
        edge = set(bg[0]) | set(bg[-1]) | set(bg[:, 0]) | set(bg[:, -1])
        expected = (m > 0) | ~np.isin(bg, list(edge))
        np.testing.assert_array_equal(filled[k] > 0, expected, err_msg=str(k))
    assert len(np.unique(labels[3][labels[3] > 0])) == 1  # the snake is one component


def test_labelling_rounds_grow_with_log_of_the_path_not_its_length():
    """A snake of 8,128 pixels (64 rows joined at alternate ends): plain label propagation
    needs one step per pixel of the path; hooking trees onto their neighbours and jumping
    pointers joins it in about log2(8,128) = 13 rounds or fewer. Ten rounds must do."""
    n = 128
    snake = np.zeros((n, n), np.float32)
    snake[::2, 1 : n - 1] = 1.0
    for r in range(1, n, 2):
        snake[r, n - 2 if r % 4 == 1 else 1] = 1.0
    labels = mask.component_labels(tf.constant(snake[None, ..., None]), max_rounds=10)
    labels = labels.numpy()[0, ..., 0]
    assert np.unique(labels[snake > 0]).tolist() == [np.flatnonzero(snake)[-1] + 1]  # largest
    assert np.all(labels[snake == 0] == 0)
    # and the bound is a real bound: two rounds leave the snake in pieces
    few = mask.component_labels(tf.constant(snake[None, ..., None]), max_rounds=2).numpy()
    assert len(np.unique(few[few > 0])) > 1


def _opencv_clean(m: np.ndarray) -> np.ndarray:
    """Largest 8-connected component, holes filled, by OpenCV: the reference."""
    _, lab = cv2.connectedComponents(m.astype(np.uint8), connectivity=8)
    areas = np.bincount(lab.ravel())
    areas[0] = 0
    hand = (lab == areas.argmax()).astype(np.uint8)
    _, bg = cv2.connectedComponents(1 - hand, connectivity=8)
    edge = (set(bg[0]) | set(bg[-1]) | set(bg[:, 0]) | set(bg[:, -1])) - {0}
    return (~np.isin(bg, list(edge))).astype(np.float32)


def test_mask_cleanup_survives_float16_tflite():
    """The op that broke float16 TFLite: component labels carried as floats were folded into a
    constant index image that float16 conversion stores in half precision (integers above
    2,048 rounded), so pinholes and specks near the wrist came out wrong. Labels are int32 now;
    the float16 model's cleanup equals OpenCV's on a speckled hand mask."""
    from ai_edge_litert.interpreter import Interpreter

    size = 64
    rng = np.random.default_rng(0)
    m = np.zeros((size, size), np.uint8)
    cv2.ellipse(m, (32, 46), (14, 16), 0, 0, 360, 1, -1)  # palm
    for k, x in enumerate((20, 27, 34, 41)):
        cv2.rectangle(m, (x, 8 + 2 * k), (x + 4, 40), 1, -1)  # fingers
    cv2.rectangle(m, (24, 56), (40, 63), 1, -1)  # wrist at the bottom edge
    m = np.where(rng.random(m.shape) < 0.08, 1 - m, m).astype(np.float32)  # specks, pinholes
    assert mask.component_labels(tf.constant(m[None, ..., None])).dtype == tf.int32

    @tf.function(input_signature=[tf.TensorSpec([1, size, size, 1], tf.float32)])
    def clean(t):
        return {"mask": mask.clean_mask(t)}

    converter = tf.lite.TFLiteConverter.from_concrete_functions([clean.get_concrete_function()])
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_types = [tf.float16]
    interpreter = Interpreter(model_content=converter.convert())
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], m[None, ..., None])
    interpreter.invoke()
    got = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])[0, ..., 0]
    expected = _opencv_clean(m)
    np.testing.assert_array_equal(clean(m[None, ..., None])["mask"][0, ..., 0], expected)
    np.testing.assert_array_equal(got, expected)


def test_grey_quantiles_and_stretch_by_hand():
    from tf_boneage.preprocessing import contrast

    # 100 pixels at levels 0..99 / 255; the q-quantile is the least level whose cumulative
    # share reaches q (numpy's inverted_cdf): 1st percentile level 0, 99th level 98
    img = (np.arange(100, dtype=np.float32) / 255.0).reshape(1, 10, 10, 1)
    low, high = contrast.grey_quantiles(tf.constant(img), (0.01, 0.99))
    want = np.quantile(np.arange(100), [0.01, 0.99], method="inverted_cdf")
    np.testing.assert_allclose([low.numpy()[0] * 255, high.numpy()[0] * 255], want, atol=1e-4)
    assert tuple(want) == (0, 98)
    out = contrast.stretch(tf.constant(img)).numpy()
    assert out.min() == 0.0 and out.max() == 1.0
    np.testing.assert_allclose(out.ravel()[50], 50 / 98.0, atol=1e-5)


def test_stretch_undoes_a_shift_and_a_gain_that_clip_nothing():
    from tf_boneage.preprocessing import contrast

    rng = np.random.default_rng(0)
    levels = rng.integers(100, 230, size=(2, 32, 24, 1))
    film = levels / 255.0
    darker = (levels - 77) / 255.0  # 30 % of the range darker, nothing clipped
    flatter = (levels - 100) * 0.5 / 255.0 + 0.2  # half the contrast (whole levels: even)
    a = contrast.stretch(tf.constant(film, tf.float32)).numpy()
    np.testing.assert_allclose(contrast.stretch(tf.constant(darker, tf.float32)), a, atol=1e-5)
    got = contrast.stretch(tf.constant(flatter, tf.float32)).numpy()
    assert np.abs(got - a).max() < 2 / 255  # rounding to half-levels
    with pytest.raises(ValueError, match="low < high"):
        from tf_boneage.models.layers import GreyStretch

        GreyStretch(0.9, 0.1)


def test_unet_with_exposure_normalisation_round_trips(tmp_path):
    import keras

    from tf_boneage.models.unet import UNet

    model = UNet((32, 32, 1), depth=2, base_filters=4, normalize=True)
    assert model.get_layer("exposure").low == 0.01
    x = np.random.default_rng(1).uniform(0.3, 0.6, (2, 32, 32, 1)).astype(np.float32)
    path = tmp_path / "unet.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.get_layer("exposure").high == 0.99
    np.testing.assert_allclose(loaded(x), model(x), atol=1e-6)
    # the same film darker: the same mask
    np.testing.assert_allclose(model(x - 77 / 255.0), model(x), atol=0.02)
    assert "exposure" not in [layer.name for layer in UNet((32, 32, 1), depth=2).layers]
