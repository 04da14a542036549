"""QC of the registration against a canonical outline: hand-computed fits,
the threshold's quantile, and failed registrations caught through the chain."""

import numpy as np
import pytest
import tensorflow as tf
from test_orient import _chain, fake_models, film

from tf_boneage.export import outline

H, W = outline.SIZE


def _half(axis: int) -> np.ndarray:
    grid = np.zeros((H, W), np.float32)
    if axis == 0:
        grid[: H // 2] = 1.0
    else:
        grid[:, : W // 2] = 1.0
    return grid


@pytest.mark.parametrize(
    "occ, ref, expected",
    [
        (_half(0), _half(0), 1.0),  # the same hand
        (_half(0), 1.0 - _half(0), 0.0),  # nothing where hands go
        (_half(1), _half(0), 0.5),  # a quarter shared: 2 * N/4 / (N/2 + N/2)
        (np.zeros((H, W)), _half(0), 0.0),  # an empty frame
        (np.ones((H, W)), _half(0), 2 / 3),  # a frame filled evenly: 2 * N/2 / (N + N/2)
    ],
)
def test_fit_by_hand_in_numpy_and_in_the_graph(occ, ref, expected):
    np.testing.assert_allclose(outline.fit(occ[None], ref), [expected], atol=1e-6)
    got = outline.fit_tf(tf.constant(occ[None, ..., None], tf.float32), tf.constant(ref))
    np.testing.assert_allclose(got.numpy(), [expected], atol=1e-6)


def test_fit_of_nothing_against_nothing_is_zero_not_nan():
    zero = np.zeros((H, W))
    assert outline.fit(zero[None], zero)[0] == 0.0
    assert float(outline.fit_tf(tf.zeros((1, H, W, 1)), tf.zeros((H, W)))[0]) == 0.0


def test_threshold_rejects_at_most_the_share():
    fits = np.arange(1, 101) / 100.0
    assert outline.threshold(fits, 0.01) == 0.01  # the smallest: nothing strictly below
    thr = outline.threshold(fits, 0.05)
    assert thr == 0.05 and (fits < thr).sum() == 4
    assert outline.threshold(np.r_[fits, np.nan], 0.01) == 0.01  # NaN ignored


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: outline.threshold(np.ones(10)), "at least 50"),
        (lambda: outline.threshold(np.ones(60), 1.0), "share"),
        (lambda: outline.mean_outline(np.ones((3, H, W))), "at least 50"),
    ],
)
def test_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def _films(n: int, seed: int) -> np.ndarray:
    """Good films: the bar of test_orient shifted by up to 2 pixels, textures reseeded."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        img = np.roll(film(), tuple(rng.integers(-2, 3, 2)), (0, 1))
        img = np.where(img > 0.5, rng.uniform(0.6, 1.0, img.shape), img)
        out.append(img.astype(np.float32))
    return np.stack(out)[..., None]


def test_failed_registrations_fall_below_the_threshold_good_films_do_not():
    models = fake_models()
    chain, plain = _chain(models, orient=True), _chain(models, orient=False)
    canonical = outline.mean_outline(chain(tf.constant(_films(60, 0)))["occupancy"].numpy())
    val = outline.fit(chain(tf.constant(_films(60, 1)))["occupancy"].numpy(), canonical)
    thr = outline.threshold(val)

    good = outline.fit(chain(tf.constant(_films(100, 2)))["occupancy"].numpy(), canonical)
    assert (good < thr).mean() <= 0.05
    ups = tf.constant(_films(20, 3)[:, ::-1, ::-1].copy())  # upside down, no orientation step
    upside_down = outline.fit(plain(ups)["occupancy"].numpy(), canonical)
    rng = np.random.default_rng(4)
    wrong = tf.constant(rng.uniform(0.05, 0.95, (20, 6)).astype(np.float32))
    misplaced = outline.fit(
        chain(tf.constant(_films(20, 5)), landmarks=wrong)["occupancy"].numpy(), canonical
    )
    noise = rng.uniform(0.0, 1.0, (10, 32, 32, 1)).astype(np.float32)
    gradient = np.tile(np.linspace(0.0, 1.0, 32, dtype=np.float32), (10, 32, 1))[..., None]
    junk = outline.fit(chain(tf.constant(np.r_[noise, gradient]))["occupancy"].numpy(), canonical)
    caught = np.r_[upside_down, misplaced, junk] < thr
    assert caught.mean() >= 0.95, (upside_down, misplaced, junk, thr)


def test_content_match_by_hand_in_numpy_and_in_the_graph():
    rng = np.random.default_rng(0)
    template = rng.random((H, W)).astype(np.float32)
    weights = _half(0)  # only the top half counts
    maps = np.stack(
        [
            template,  # the mean hand itself: 1
            0.5 * template + 0.2,  # brighter or darker, less contrast: still 1
            1.0 - template,  # the negative: -1
            np.where(weights > 0, template, rng.random((H, W))),  # junk where hands never are
            np.full((H, W), 0.3),  # flat: 0, not NaN
        ]
    ).astype(np.float32)
    expected = [1.0, 1.0, -1.0, 1.0, 0.0]
    np.testing.assert_allclose(outline.match(maps, template, weights), expected, atol=1e-6)
    got = outline.match_tf(tf.constant(maps[..., None]), tf.constant(template), weights)
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-5)
    # by hand: cells (1, 2, 3) against (1, 3, 2), equal weights: cov 0.5 / (1 * 1)
    small = np.zeros((H, W))
    small.flat[:3], tmpl, w = [1, 2, 3], np.zeros((H, W)), np.zeros((H, W))
    tmpl.flat[:3], w.flat[:3] = [1, 3, 2], 1.0
    assert outline.match(small[None], tmpl, w)[0] == pytest.approx(0.5)


def test_joint_thresholds_reject_at_most_the_share_together():
    fits = np.arange(1, 201) / 200.0
    matches = fits[::-1].copy()  # the worst fits are the best matches: no overlap
    lo_fit, lo_match, rejected = outline.joint_thresholds(fits, matches, 0.02)
    assert rejected <= 0.02 and rejected == ((fits < lo_fit) | (matches < lo_match)).mean()
    # 0.015 is the third-smallest: 2 films (1 %) strictly below it in each, 2 % together
    assert lo_fit == pytest.approx(0.015) and lo_match == pytest.approx(0.015)
    # the same films fail both: each check may then take the whole share
    lo_fit, lo_match, rejected = outline.joint_thresholds(fits, fits.copy(), 0.02)
    assert lo_fit == pytest.approx(0.02) and rejected == pytest.approx(0.015)
    with pytest.raises(ValueError, match="at least 50"):
        outline.joint_thresholds(fits[:10], matches[:10])


def test_content_match_tells_hands_from_junk_through_the_chain():
    """The chain's ``content`` maps: the template of good films, their matches above the
    joint threshold, upside-down films (no orientation step) and noise below it."""
    models = fake_models()
    chain, plain = _chain(models, orient=True), _chain(models, orient=False)
    train = chain(tf.constant(_films(60, 0)))
    canonical = outline.mean_outline(train["occupancy"].numpy())
    template = outline.mean_outline(train["content"].numpy())
    val = chain(tf.constant(_films(60, 1)))
    _, lo_match, _ = outline.joint_thresholds(
        outline.fit(val["occupancy"].numpy(), canonical),
        outline.match(val["content"].numpy(), template, canonical),
    )
    good = outline.match(chain(tf.constant(_films(50, 2)))["content"].numpy(), template, canonical)
    assert (good < lo_match).mean() <= 0.05
    ups = tf.constant(_films(20, 3)[:, ::-1, ::-1].copy())
    upside_down = outline.match(plain(ups)["content"].numpy(), template, canonical)
    noise = np.random.default_rng(4).uniform(0.0, 1.0, (10, 32, 32, 1)).astype(np.float32)
    junk = outline.match(chain(tf.constant(noise))["content"].numpy(), template, canonical)
    assert (np.r_[upside_down, junk] < lo_match).mean() >= 0.95, (upside_down, junk, lo_match)


def test_step_share_by_hand():
    from tf_boneage.preprocessing.chain import step_share

    full = tf.ones((1, 4, 4, 1))
    # rows 0 0 .1 .1 .2 .2 .3 .3 (columns equal): down the columns nothing changes; across,
    # places 1-5 are textured (|x[i+2] - x[i-1]| >= 0.1) and places 2 and 4 flat: 2 of 5
    row = np.array([0, 0, 0.1, 0.1, 0.2, 0.2, 0.3, 0.3], np.float32)
    img = np.tile(row, (8, 1))[None, ..., None]
    assert float(step_share(tf.constant(img), full)[0]) == pytest.approx(0.4)
    # the same film turned a quarter: the same places, down the columns
    turned = np.ascontiguousarray(np.rot90(img[0, ..., 0]))[None, ..., None]
    assert float(step_share(tf.constant(turned), full)[0]) == pytest.approx(0.4)
    # a ramp has no flat place; half a 16-bit step of noise parts no equal pair
    ramp = np.tile(np.arange(8, dtype=np.float32) / 20, (8, 1))[None, ..., None]
    assert float(step_share(tf.constant(ramp), full)[0]) == 0.0
    noise = np.random.default_rng(1).uniform(-0.5, 0.5, img.shape).astype(np.float32) / 65535
    assert float(step_share(tf.constant(img + noise), full)[0]) == pytest.approx(0.4)
    # outside the hand does not count; nothing textured (or a film of 1 pixel): 0
    left = np.zeros((1, 4, 4, 1), np.float32)
    left[0, :, :2] = 1.0  # the hand: pixels 0-3 of each row, so places 1-3 (2 is flat)
    assert float(step_share(tf.constant(img), tf.constant(left))[0]) == pytest.approx(1 / 3)
    assert float(step_share(tf.zeros((1, 8, 8, 1)), full)[0]) == 0.0
    assert float(step_share(tf.ones((1, 1, 1, 1)), full)[0]) == 0.0
    # random detail scaled up 3 times by repeating pixels: 2 of 3 places flat
    rng = np.random.default_rng(0)
    small = rng.random((1, 20, 20, 1)).astype(np.float32)
    up = np.repeat(np.repeat(small, 3, 1), 3, 2)
    assert float(step_share(tf.constant(small), full)[0]) < 0.05
    assert float(step_share(tf.constant(up), full)[0]) == pytest.approx(2 / 3, abs=0.03)


def test_sharpness_and_black_share_by_hand():
    from tf_boneage.preprocessing.chain import black_share, sharpness

    full = tf.ones((1, 8, 8, 1))
    # a one-pixel checkerboard: both block means are flat 0.5, both residuals 0.5: ratio 1
    board = (np.indices((16, 16)).sum(0) % 2).astype(np.float32)[None, ..., None]
    assert float(sharpness(tf.constant(board), full)[0]) == pytest.approx(1.0)
    # a film scaled up from half its size keeps little detail in its finest octave
    rng = np.random.default_rng(0)
    sharp = rng.random((1, 64, 64, 1)).astype(np.float32)
    up = tf.image.resize(tf.nn.avg_pool2d(sharp, 2, 2, "VALID"), (64, 64), "bilinear")
    s_sharp, s_up = float(sharpness(sharp, full)[0]), float(sharpness(up, full)[0])
    assert s_up < 0.6 * s_sharp
    # a quarter of the hand black, the rest grey; outside the hand does not count
    img = np.full((1, 8, 8, 1), 0.5, np.float32)
    img[0, :2, :4] = 0.0  # 8 black pixels in the left half
    img[0, :, 4:] = 0.0  # black, but outside the mask
    hand = np.zeros((1, 8, 8, 1), np.float32)
    hand[0, :, :4] = 1.0  # 32 hand pixels
    assert float(black_share(tf.constant(img), tf.constant(hand))[0]) == pytest.approx(0.25)


def test_black_map_in_the_canonical_frame_by_hand():
    """The film's black pixels, carried into the canonical frame's 52 x 40 grid by its
    registration: a film whose top half is black, registered as it lies, has the top cells
    black (the boundary row shared bilinearly); shifted half a frame down, the top of the
    frame lies outside the film (0, not black) and the film's black top fills the bottom."""
    from tf_boneage.preprocessing.chain import black_map
    from tf_boneage.preprocessing.registration import Frame

    frame = Frame(104, 80)
    film = np.ones((1, 104, 80, 1), np.float32)
    film[0, :52] = 0.0
    same = tf.eye(3)[None]
    got = black_map(tf.constant(film), same, frame).numpy()[0, ..., 0]
    assert got.shape == (52, 40)
    np.testing.assert_allclose(got[1:25, 1:39], 1.0)
    np.testing.assert_allclose(got[27:], 0.0)
    # samples at rows 49.75 .. 51.25: 1, 1, 1, 0.75; at the film's edge a quarter of the
    # outermost samples' weight falls outside the film (0)
    np.testing.assert_allclose(got[25, 1:39], 0.9375)
    np.testing.assert_allclose(got[1:25, 0], 0.9375)
    down = tf.constant([[[1.0, 0.0, 0.0], [0.0, 1.0, 52.0], [0.0, 0.0, 1.0]]])
    got = black_map(tf.constant(film), down, frame).numpy()[0, ..., 0]
    np.testing.assert_allclose(got[:25], 0.0)  # outside the film
    np.testing.assert_allclose(got[27:51, 1:39], 1.0)


def test_core_share_by_hand():
    """The mean black share over the outline's core (cells at or above ``CORE_LEVEL``); no
    core (an outline not fitted): 0, never NaN."""
    canonical = np.zeros(outline.SIZE, np.float32)
    canonical[10:20, 10:20] = 0.95  # the core: 100 cells
    canonical[20:30, 10:20] = 0.85  # not the core
    maps = np.zeros((2, *outline.SIZE, 1), np.float32)
    maps[0, 10:15, 10:20] = 1.0  # half the core black
    maps[1, 20:30, 10:20] = 1.0  # black outside the core only
    got = outline.core_share_tf(tf.constant(maps), tf.constant(canonical)).numpy()
    np.testing.assert_allclose(got, [0.5, 0.0])
    none = outline.core_share_tf(tf.constant(maps), tf.fill(outline.SIZE, 0.5)).numpy()
    np.testing.assert_array_equal(none, [0.0, 0.0])


@pytest.mark.parametrize(
    "black, certain, ok",
    [
        (0.01, True, True),  # a clean film
        (0.01, False, True),  # clean but uncertain: flagged by predict, not rejected here
        (0.05, True, True),  # above the doubt level, the networks agree: read
        (0.05, False, False),  # above the doubt level and they disagree: under-exposed
        (0.2, True, False),  # above the largest black share accepted
        (0.1, True, True),  # at the limit: accepted
    ],
)
def test_exposure_check_table(black, certain, ok):
    from tf_boneage.export.end_to_end import exposure_ok

    got = exposure_ok(tf.constant([black]), tf.constant([certain]), 0.1, 0.02)
    assert bool(got.numpy()[0]) is ok


def test_image_limits_by_hand_and_errors():
    from tf_boneage.export.calibration import image_limits

    sharp = np.arange(1, 201) / 200.0  # 0.005 .. 1
    black = np.arange(0, 200) / 1000.0  # 0 .. 0.199
    low, high = image_limits(sharp, black, share=0.01)
    assert low == pytest.approx(0.01) and high == pytest.approx(0.197)
    assert (sharp < low).sum() <= 2 and (black > high).sum() <= 2
    assert image_limits(sharp, np.zeros(200))[1] > 0  # all-clean films: a limit above 0
    # with the same films halved: midway between the halved films' top and the films' bottom
    low, _ = image_limits(sharp, black, halved=np.full(200, 0.002), share=0.01)
    assert low == pytest.approx((0.01 + 0.002) / 2)
    assert image_limits(sharp, black, halved=np.full(200, 0.5), share=0.01)[0] == 0.01
    with pytest.raises(ValueError, match="at least 50"):
        image_limits(sharp[:10], black[:10])


def test_predict_says_why_an_image_is_rejected():
    from tf_boneage.inference import predict

    ok = {"mask_area": 0.3, "landmark_plausibility": 1.0, "registration_fit": 0.8}
    ok |= {"registration_ok": 1.0, "sharpness": 0.6, "black_share": 0.01}
    ok |= {"sharpness_ok": 1.0, "exposure_ok": 1.0, "mask_ok": 1.0, "landmarks_ok": 1.0}
    ok |= {"content_match": 0.9, "content_ok": 1.0, "grey_range": 0.5, "grey_range_ok": 1.0}
    ok |= {"certainty_ok": 1.0, "bone_age_std": 9.0}
    assert predict.reason_of(ok) == ""
    with pytest.raises(KeyError, match="content_ok"):  # every QC output is the graph's own
        predict.reason_of({k: v for k, v in ok.items() if k != "content_ok"})
    dark = {**ok, "black_share": 0.4, "exposure_ok": 0.0}
    assert predict.reason_of(dark) == "under-exposed: 40 % of the hand is black"
    doubt = {**dark, "black_share": 0.05, "certainty_ok": 0.0}
    assert predict.reason_of(doubt) == (
        "under-exposed: 5 % of the hand is black and the networks disagree"
    )
    blurred = {**ok, "sharpness": 0.31, "sharpness_ok": 0.0}
    reason = predict.reason_of(blurred)
    assert reason.startswith("low resolution") and "0.31" in reason
    stepped = {**ok, "step_share": 0.64, "steps_ok": 0.0}
    reason = predict.reason_of(stepped)
    assert reason.startswith("low resolution") and "scaled up" in reason and "0.64" in reason
    assert predict.reason_of({**stepped, "steps_ok": 1.0}) == ""
    # a registered image that does not look like a hand: said before low resolution
    junk = {**blurred, "content_match": 0.12, "content_ok": 0.0}
    reason = predict.reason_of(junk)
    assert reason.startswith("not a hand radiograph") and "content match 0.12" in reason
    assert predict.reason_of({**ok, "content_match": 0.9, "content_ok": 1.0}) == ""
    # a film with no grey range left: said first (its mask is empty too, for that reason)
    flat = {**dark, "mask_area": 0.01, "mask_ok": 0.0, "grey_range": 0.03, "grey_range_ok": 0.0}
    reason = predict.reason_of(flat)
    assert reason.startswith("badly exposed") and "span only 3 %" in reason
    assert predict.reason_of({**ok, "grey_range": 0.5, "grey_range_ok": 1.0}) == ""
    # networks that disagree: a flag, not a rejection
    unsure = {**ok, "bone_age_std": 23.6, "certainty_ok": 0.0}
    assert predict.reason_of(unsure) == ""
    (flag,) = predict.certainty_flags(unsure)
    assert flag.startswith("uncertain") and "std 24 months" in flag
    assert predict.certainty_flags({**unsure, "certainty_ok": 1.0}) == []
    assert predict.certainty_flags(ok) == []


def test_range_limit_by_hand_and_errors():
    from tf_boneage.export.calibration import range_limit

    grey = np.linspace(0.1, 1.0, 400)  # the 1 % quantile is the 4th smallest: 0.1 + 3 * step
    assert range_limit(grey, share=0.01) == pytest.approx((0.1 + 3 * 0.9 / 399) / 2)
    with pytest.raises(ValueError, match="at least 50"):
        range_limit(grey[:10])


def test_std_limit_by_hand_and_errors():
    from tf_boneage.export.calibration import std_limit

    std = np.arange(1.0, 401.0)  # the 99.75 % quantile of 400 is the 399th smallest
    assert std_limit(std, share=0.0025) == 399.0
    assert std_limit(std, share=0.01) == 396.0
    assert std_limit(std) == 400.0  # 0.2 %: the 399.2th, so the 400th
    with pytest.raises(ValueError, match="at least 50"):
        std_limit(std[:49])


def test_failure_makers():
    from tf_boneage.inference import failures

    rng = np.random.default_rng(0)
    marks = np.array([[0.5, 0.1, 0.8, 0.5, 0.5, 0.7]], np.float32)
    np.testing.assert_allclose(failures.swapped(marks), [[0.5, 0.7, 0.8, 0.5, 0.5, 0.1]])
    assert failures.random_landmarks(5, rng).shape == (5, 6)
    for kind in failures.NOT_HANDS:
        a = failures.not_a_hand(kind, (40, 30), np.random.default_rng(1))
        b = failures.not_a_hand(kind, (40, 30), np.random.default_rng(1))
        assert a.shape == (40, 30) and a.dtype == np.float32 and 0 <= a.min() <= a.max() <= 1
        np.testing.assert_array_equal(a, b)  # seeded
    with pytest.raises(ValueError, match="unknown kind"):
        failures.not_a_hand("cat", (8, 8), rng)
    x = rng.random((2, 6, 6))
    np.testing.assert_allclose(failures.correlation(x, x), [1.0, 1.0])
    np.testing.assert_allclose(failures.correlation(x, -x), [-1.0, -1.0])
    assert failures.correlation(np.ones((1, 4)), x[:1, 0, :4])[0] == 0.0


def test_calibration_fits_the_outline_template_and_joint_thresholds(tmp_path):
    """``calibrate`` with training films: the outline and content template are the means of
    their maps, the two thresholds turn away at most 1 % of the calibration films together,
    and the graph's ``content_match`` is the numpy correlation with the template it holds."""
    from tiny_graph import _graph, _labelled_rows

    from tf_boneage.export import calibration

    graph = _graph(seed=1)  # a graph of its own: calibration changes it
    rows = _labelled_rows(tmp_path, 60, seed=5, step=2.0)
    maps = calibration.occupancies(graph, rows, batch=20)
    report = calibration.calibrate(graph, rows, batch=20, outline_rows=rows)
    qc = report["registration_qc"]
    np.testing.assert_allclose(graph.outline.numpy(), outline.mean_outline(maps["occupancy"]))
    template = graph.content_template.numpy()
    np.testing.assert_allclose(template, outline.mean_outline(maps["content"]))
    assert float(graph.qc_min_match.numpy()) == pytest.approx(qc["min_content_match"])
    assert float(graph.qc_min_fit.numpy()) == pytest.approx(qc["min_registration_fit"])
    out = calibration.predict_rows(tf.function(graph.predict_bytes), rows, batch=20)
    want = outline.match(maps["content"], template, graph.outline.numpy())
    np.testing.assert_allclose(out["content_match"], want, atol=1e-4)
    rejected = (out["registration_fit"] < qc["min_registration_fit"]) | (
        out["content_match"] < qc["min_content_match"]
    )
    assert rejected.mean() == pytest.approx(qc["rejected"]) and qc["rejected"] <= 0.01


def test_calibration_fits_the_qc_thresholds_on_more_films(tmp_path):
    """``calibrate(qc_rows=...)``: the registration and image thresholds are fitted on the
    labelled rows and the extra films together, the interval on the labelled rows alone."""
    from tiny_graph import _graph, _labelled_rows

    from tf_boneage.export import calibration

    graph = _graph(seed=1)
    rows = _labelled_rows(tmp_path, 60, seed=5, step=2.0)
    (tmp_path / "x").mkdir()
    extra = _labelled_rows(tmp_path / "x", 40, seed=9, step=2.0)
    report = calibration.calibrate(graph, rows, batch=20, outline_rows=rows, qc_rows=extra)
    qc = report["registration_qc"]
    assert qc["qc_films"] == 100 and report["n"] == 60
    fn = tf.function(graph.predict_bytes)
    out = {k: np.concatenate([v, w]) for (k, v), w in zip(
        calibration.predict_rows(fn, rows, batch=20).items(),
        calibration.predict_rows(fn, extra, batch=20).values(),
        strict=True,
    )}  # fmt: skip
    rejected = (out["registration_fit"] < qc["min_registration_fit"]) | (
        out["content_match"] < qc["min_content_match"]
    )
    assert (
        rejected.mean() == pytest.approx(qc["rejected"]) and qc["rejected"] <= outline.REJECT_SHARE
    )
    image = (out["sharpness"] < qc["min_sharpness"]) | (out["black_share"] > qc["max_black_share"])
    image |= out["grey_range"] < qc["min_grey_range"]
    assert image.mean() == pytest.approx(qc["rejected_by_image_checks"])
    # the least grey range accepted: half the 0.15 % quantile of all 100 films, in the graph
    share = calibration.IMAGE_REJECT_SHARE
    least = np.quantile(out["grey_range"], share, method="inverted_cdf") / 2
    assert qc["min_grey_range"] == pytest.approx(least) and least > 0
    assert float(graph.qc_min_range.numpy()) == pytest.approx(least)
    from tf_boneage.data.io import png16_bytes

    flat = np.full((60, 50), 0.4, np.float32)  # one grey level: no range at all
    got = fn(image_bytes=tf.constant([png16_bytes(flat)]), male=tf.constant([1.0]))
    assert float(got["grey_range"][0]) == 0.0 and float(got["grey_range_ok"][0]) == 0.0
    # the largest black share accepted is the 99.85 % quantile of all 100 films
    assert qc["max_black_share"] == pytest.approx(
        max(np.quantile(out["black_share"], 1 - share, method="inverted_cdf"), 1e-6)
    )
    # with disagreeing networks, the 95 % quantile (at most the largest): in the graph
    doubt = np.quantile(out["black_share"], 0.95, method="inverted_cdf")  # as every limit
    doubt = min(qc["max_black_share"], max(doubt, 1e-6))
    assert qc["doubt_black_share"] == pytest.approx(doubt)
    assert float(graph.qc_doubt_black.numpy()) == pytest.approx(doubt)
    # the largest std accepted: the 99.8 % quantile of the labelled rows' calibrated std
    # alone (the 60th of 60: none of them turned away), in the graph and applied
    std = out["bone_age_std"][:60]
    limit = report["certainty_qc"]["max_std"]  # its own key, not the registration checks'
    assert "scale" in report and "max_std" not in qc
    assert limit == pytest.approx(std.max(), rel=1e-5)
    assert float(graph.qc_max_std.numpy()) == pytest.approx(limit)
    np.testing.assert_array_equal(out["certainty_ok"], out["bone_age_std"] <= limit)
    graph.set_std_limit(float(np.median(std)))
    from tf_boneage.data.io import encoded_bytes

    half = fn(image_bytes=tf.constant([encoded_bytes(p) for p in rows["image_path"]]),
              male=tf.constant(rows["male"].astype("float32").to_numpy()))  # fmt: skip
    np.testing.assert_array_equal(half["certainty_ok"].numpy(), std <= np.median(std))
    with pytest.raises(ValueError, match="max_std"):
        graph.set_std_limit(0.0)


def test_calibration_keeps_the_outline_the_cache_oriented_with(tmp_path):
    """``calibrate(canonical=...)`` (the training cache's ``outline.npy``): the graph holds that
    outline from the first film on (its orientation step turns films as the cache did), it is
    not refitted, and the thresholds are fitted against it."""
    from tiny_graph import _graph, _labelled_rows

    from tf_boneage.export import calibration

    graph = _graph(seed=1)
    rows = _labelled_rows(tmp_path, 60, seed=5, step=2.0)
    given = np.tile(np.linspace(0.9, 0.1, outline.SIZE[0])[:, None], (1, outline.SIZE[1]))
    report = calibration.calibrate(graph, rows, batch=20, outline_rows=rows, canonical=given)
    np.testing.assert_allclose(graph.outline.numpy(), given)
    assert graph.preprocessor.outline is graph.outline
    qc = report["registration_qc"]
    assert qc["outline_from"] == "cache"
    out = calibration.predict_rows(tf.function(graph.predict_bytes), rows, batch=20)
    occ = calibration.occupancies(graph, rows, batch=20)["occupancy"]
    np.testing.assert_allclose(out["registration_fit"], outline.fit(occ, given), atol=1e-4)
    assert qc["min_registration_fit"] <= np.quantile(out["registration_fit"], 0.011)


def test_tradeoff_by_hand():
    import pandas as pd

    from tf_boneage.inference import failures

    val = pd.DataFrame(
        {"category": "val", "fit": np.arange(1, 201) / 200.0, "match": 1.0, "other": False}
    )
    good = pd.DataFrame({"category": "good", "fit": [0.003, 0.5, 0.9, 0.9], "match": 1.0})
    good["other"] = [False, False, False, True]  # one rejected by another check
    bad = pd.DataFrame({"category": "bad", "fit": [0.001, 0.012, 0.9], "match": [1.0, 1.0, -1]})
    bad["other"] = False
    table = failures.tradeoff(pd.concat([val, good, bad]), shares=(0.01, 0.05))
    # 1 %: the fit quantile 0.01 (one val film below it); matches all 1.0 -> least match 1.0
    first = table.iloc[0]
    assert first["least fit"] == 0.01 and first["fitting films rejected %"] == 0.5
    assert first["good %"] == 50.0  # 0.003 below the fit, plus the other check's film
    assert first["bad %"] == pytest.approx(100 * 2 / 3, abs=0.1)  # 0.001 and the -1 match
    assert table.iloc[1]["bad %"] == 100.0  # 5 %: 0.012 falls below too
    # fitted on val and 200 more films (fits 0.5-1.0): 1 % of 400 is the 4th lowest, 0.02,
    # which 3 films fall below (0.75 %); the extra films are not a reported category
    train = pd.DataFrame(
        {"category": "train", "fit": 0.5 + np.arange(200) / 400.0, "match": 1.0, "other": False}
    )
    both = failures.tradeoff(pd.concat([val, train, good, bad]), (0.01,), fit=("val", "train"))
    row = both.iloc[0]
    assert row["least fit"] == 0.02 and row["fitting films rejected %"] == 0.75
    assert "train %" not in both and row["good %"] == 50.0
