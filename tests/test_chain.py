"""The preprocessing chain, its cache and its CLI on phantoms with known answers."""

import dataclasses
import subprocess
import sys

import cv2
import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from cli_run import run_cli

from tf_boneage.data.synthetic import render
from tf_boneage.models import LandmarkNet
from tf_boneage.preprocessing import cache, registration
from tf_boneage.preprocessing.chain import ChainConfig, Preprocessor
from tf_boneage.preprocessing.spec import ChainSpec, sha256

FRAME = registration.Frame(104, 80)
SIZES = {"A": (52, 40), "B": (32, 32), "C": (32, 40)}


def threshold_unet(size=32, level=0.16):
    """A 'U-Net' that marks pixels brighter than ``level``: sigmoid(60 (x - level))."""
    x = keras.Input((size, size, 1))
    conv = keras.layers.Conv2D(1, 1, activation="sigmoid", name="mask")
    model = keras.Model(x, conv(x))
    conv.set_weights([np.full((1, 1, 1, 1), 60.0, np.float32), np.array([-60.0 * level])])
    return model


def tiny_landmarks():
    return LandmarkNet((32, 32, 1), filters=(4, 8), dense_units=8, dropout=0.0)


@pytest.fixture(scope="module")
def chain():
    config = ChainConfig(unet_size=32, landmark_size=32, frame=FRAME, region_sizes=SIZES)
    return Preprocessor(threshold_unet(), tiny_landmarks(), config)


def test_chain_with_true_landmarks_registers_and_checks(chain):
    rng = np.random.default_rng(0)
    phantoms = [render(age, True, rng, (96, 96), augment=False) for age in (40, 120, 200)]
    images = tf.constant(np.stack([p.image for p in phantoms])[..., None])
    marks = tf.constant(np.stack([((p.landmarks + 0.5) / 96).ravel() for p in phantoms]))
    out = chain(images, landmarks=marks)
    assert out["registered"].shape == (3, 104, 80, 1)
    assert out["region_B"].shape == (3, 32, 32, 1)
    true_area = np.array([p.mask.mean() for p in phantoms])
    np.testing.assert_allclose(out["mask_area"].numpy(), true_area, atol=0.03)
    np.testing.assert_array_equal(out["landmark_plausibility"].numpy(), 1.0)
    assert not out["right"].numpy().any()
    pts = registration.landmarks_to_frame(marks, out["forward"], (96, 96)).numpy()
    np.testing.assert_allclose(pts[:, 0], np.tile(FRAME.tip, (3, 1)), atol=1e-3)
    # background removed: nothing outside the mask survives equalisation
    m = tf.image.resize(out["mask"], (96, 96), method="nearest").numpy()
    assert (out["enhanced"].numpy()[m == 0] == 0).all()


def test_implausible_landmarks_are_flagged(chain):
    ph = render(100, True, np.random.default_rng(1), (96, 96), augment=False)
    marks = ((ph.landmarks + 0.5) / 96).ravel().copy()
    marks[2:4] = marks[4:6] + 0.01  # thumb on the capitate: the distance-ratio check fails
    out = chain(tf.constant(ph.image[None, ..., None]), landmarks=tf.constant(marks[None]))
    assert float(out["landmark_plausibility"][0]) < 1.0


def _manifest_with_a_bad_file(synth_dir, tmp_path):
    from tf_boneage.data import manifest

    table = manifest.load_manifest(synth_dir / "manifest.csv").head(10).copy()
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"")
    table.loc[3, "image_path"] = str(bad)
    return table


def test_cache_resumes_and_reports_bad_files(chain, synth_dir, tmp_path):
    table = _manifest_with_a_bad_file(synth_dir, tmp_path)
    out = tmp_path / "cache"
    spec = ChainSpec(
        (64, 64), 32, 32, (104, 80), {"A": (104, 80)}, None, "u.keras", "0" * 64, "m", "1" * 64
    )
    cache.run(table.head(4), chain, out, (64, 64), batch=3, progress=False, spec=spec)
    first = pd.read_csv(out / "qc.csv", dtype={"id": str})  # "interrupted" after 4
    assert len(first) == 4 and ChainSpec.read(out / "chain.json") == spec
    other = dataclasses.replace(spec, unet_sha256="2" * 64)  # another U-Net: refused
    with pytest.raises(ValueError, match="unet_sha256"):
        cache.run(table, chain, out, (64, 64), batch=3, progress=False, spec=other)
    assert len(pd.read_csv(out / "qc.csv")) == 4  # before any work
    result = cache.run(table, chain, out, (64, 64), batch=3, progress=False, spec=spec)
    qc = pd.read_csv(out / "qc.csv", dtype={"id": str})
    assert len(qc) == 10 and qc["id"].is_unique  # the first four were not redone
    bad = qc[~qc["ok"].astype(bool)]
    assert (
        len(bad) == 1 and "broken.png" in bad["error"].iloc[0] and "empty" in bad["error"].iloc[0]
    )
    assert len(result) == 9
    for rel in ("image_path", "mask_path", "region_A_path", "region_C_path"):
        img = cv2.imread(str(out / result[rel].iloc[0]), 0)
        assert img is not None and img.ndim == 2
    assert cv2.imread(str(out / result["image_path"].iloc[0]), 0).shape == (104, 80)
    saved = pd.read_csv(out / "manifest.csv")
    assert {"boneage", "male", "split", "landmark_plausibility"} <= set(saved.columns)


@pytest.mark.slow
def test_cli_preprocess_and_contact_sheet(chain, synth_dir, tmp_path):
    unet, marks = tmp_path / "unet.keras", tmp_path / "marks.keras"
    chain.unet.save(unet)
    chain.landmark_model.save(marks)
    common = [
        "--manifest",
        str(synth_dir / "manifest.csv"),
        "--unet",
        str(unet),
        "--landmarks",
        str(marks),
        "--frame",
        "104x80",
        "--image-size",
        "64",
    ]
    run = [sys.executable, "-m", "tf_boneage.cli"]
    sheet = tmp_path / "sheet.png"
    r = subprocess.run(
        [*run, "contact-sheet", *common, "--out", str(sheet), "--n", "3"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    img = cv2.imread(str(sheet))
    assert img is not None and img.shape[0] == 3 * 208
    r = subprocess.run(
        [*run, "contact-sheet", *common, "--out", str(sheet)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 2 and "exists" in r.stderr
    r = run_cli("preprocess", *common, "--out", tmp_path / "c", "--limit", "5")
    assert r.returncode == 0, r.stderr
    assert "5 images ready" in r.stdout
    spec = ChainSpec.read(tmp_path / "c" / "chain.json")  # what built the cache, recorded
    assert spec.unet_sha256 == sha256(unet) and spec.landmarks_sha256 == sha256(marks)
    assert (spec.image_size, spec.frame) == ((64, 64), (104, 80))
    assert spec.unet_size == chain.unet.input_shape[1]
    common[common.index("--frame") + 1] = "96x72"
    r = run_cli("preprocess", *common, "--out", tmp_path / "c", "--limit", "8")
    assert r.returncode == 2 and "built by another chain" in r.stderr and "frame" in r.stderr
    # an orientation classifier: recorded with its hash; without --orient refused by name
    from tf_boneage.models import OrientationNet

    classifier = tmp_path / "orientation.keras"
    OrientationNet((16, 16, 1), filters=(2, 4)).save(classifier)
    given = [*common[:-4], "--frame", "104x80", "--image-size", "64"]
    given += ["--orient-model", str(classifier)]
    r = run_cli("preprocess", *given, "--out", tmp_path / "o", "--limit", "2")
    assert r.returncode == 2 and "needs the orientation step" in r.stderr
    r = run_cli("preprocess", *given, "--orient", "--out", tmp_path / "o", "--limit", "2")
    assert r.returncode == 0, r.stderr
    spec = ChainSpec.read(tmp_path / "o" / "chain.json")
    assert spec.orient and spec.orient_model_sha256 == sha256(classifier)


def test_the_cache_takes_original_sizes_as_the_graph_does():
    """With an assumed aspect every film is (1000, 1000 * aspect) held upright, even one whose
    row knows its size (the graph serves bytes alone); without, the rows' sizes (NaN unknown)."""
    table = pd.DataFrame({"orig_h": [2044.0, np.nan], "orig_w": [1514.0, np.nan]})
    sizes, upright = cache.original_sizes(table, 0.74)
    np.testing.assert_allclose(sizes, [[1000, 740], [1000, 740]])
    assert upright
    sizes, upright = cache.original_sizes(table, None)
    np.testing.assert_allclose(sizes, [[2044, 1514], [np.nan, np.nan]])
    assert not upright
    assert cache.original_sizes(pd.DataFrame({"id": ["a"]}), None)[0].shape == (1, 2)


class _LazyMarks(keras.Model):
    """A 'landmark net' for hand-made films of three dots (tip 1.0, thumb 0.6, capitate 0.3):
    the centroid of each dot (each found by its level, away from the dots found before it,
    whose resampled rims pass through the lower levels), with the tip-capitate axis turned
    halfway back to upright about the capitate, as a net that learnt upright hands
    under-reads a turn."""

    def __init__(self, lazy=0.5):
        super().__init__()
        self.lazy = lazy

    def call(self, x, training=False):
        s = tf.cast(tf.shape(x)[1], tf.float32)
        ys, xs = tf.meshgrid(tf.range(s) + 0.5, tf.range(s) + 0.5, indexing="ij")
        img = x[..., 0]
        found = []
        for low, high in ((0.8, 2.0), (0.5, 0.7), (0.2, 0.4)):
            w = tf.cast((img > low) & (img < high), tf.float32)
            for p in found:  # away from the dots already found
                dx, dy = xs[None] - p[:, :1, None], ys[None] - p[:, 1:, None]
                far = dx * dx + dy * dy > 25.0
                w *= tf.cast(far, tf.float32)
            total = tf.reduce_sum(w, [1, 2])
            found.append(
                tf.stack(
                    [tf.reduce_sum(w * xs, [1, 2]) / total, tf.reduce_sum(w * ys, [1, 2]) / total],
                    -1,
                )
            )
        tip, thumb, cap = (p / s for p in found)
        d = tip - cap
        angle = tf.atan2(d[:, 0], -d[:, 1]) * self.lazy  # clockwise from up, turned back
        c, si = tf.cos(angle)[:, None], tf.sin(angle)[:, None]

        def back(p):  # turn p about the capitate counter-clockwise by ``angle``
            v = p - cap
            return cap + tf.concat([c * v[:, :1] + si * v[:, 1:], -si * v[:, :1] + c * v[:, 1:]], 1)

        return tf.concat([back(tip), back(thumb), cap], 1)


def _dots(turn_deg, side=64):
    """A film of the three 5 x 5 dots of :class:`_LazyMarks`, the hand turned clockwise by
    ``turn_deg`` about the film's centre; returns (film (side, side), true points (3, 2))."""
    film = np.zeros((side, side), np.float32)
    c = side / 2
    up = np.array([[0.0, -20.0], [-12.0, 2.0], [0.0, 14.0]])  # tip, thumb, capitate from centre
    t = np.radians(turn_deg)
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    pts = up @ rot.T + c
    for (x, y), level in zip(pts, (1.0, 0.6, 0.3), strict=True):
        film[int(y) - 2 : int(y) + 3, int(x) - 2 : int(x) + 3] = level
    centres = np.array([[int(x) + 0.5, int(y) + 0.5] for x, y in pts]) / side
    return film, centres


@pytest.mark.parametrize("turn", [0, 30, -40])
def test_second_landmark_look_at_the_film_turned_upright_by_the_first(turn):
    """A net that reads half of a hand's turn (:class:`_LazyMarks`) misses a turn of T by T / 2
    with one look; the second look sees the film turned back by that T / 2, misses the T / 2
    left by T / 4, and its points carried back to the film miss by T / 4 (known answers, within
    the resampling of 5-pixel dots). An upright hand: both looks exact."""
    film, true = _dots(turn)
    x = tf.constant(film[None, ..., None])
    config = ChainConfig(unet_size=32, landmark_size=64, frame=FRAME, region_sizes=SIZES)

    def axis_angle(p):  # clockwise from up, degrees
        d = p[0] - p[2]
        return np.degrees(np.arctan2(d[0], -d[1]))

    for passes, missed in ((1, turn / 2), (2, turn / 4)):
        config = dataclasses.replace(config, landmark_passes=passes)
        pre = Preprocessor(threshold_unet(), _LazyMarks(), config)
        got = pre.landmarks(x).numpy().reshape(3, 2)
        assert axis_angle(true) - axis_angle(got) == pytest.approx(missed, abs=1.5), passes
        np.testing.assert_allclose(got[2], true[2], atol=1.0 / 64)  # the capitate: its centroid
        if turn == 0:
            np.testing.assert_allclose(got, true, atol=1.0 / 64)
    with pytest.raises(ValueError, match="landmark_passes"):
        ChainConfig(landmark_passes=3)


def test_upright_matrix_puts_the_tip_above_the_capitate_at_true_proportions():
    """The map's inverse carries tip and capitate onto one vertical line of the true film
    (the tip above), for films whose pixels are not square; a hand already upright maps to
    itself."""
    from tf_boneage.preprocessing import warp
    from tf_boneage.preprocessing.chain import upright_matrix

    rng = np.random.default_rng(3)
    pts = rng.uniform(0.2, 0.8, (5, 3, 2)).astype(np.float32)
    true = np.float32([[100, 74], [74, 100], [50, 50], [135, 100], [100, 135]])
    m = upright_matrix(tf.constant(pts), tf.constant(true), 96)
    moved = warp.apply(warp.invert_affine(m), tf.constant(pts * 96)).numpy() / 96
    tx = moved[..., 0] * true[:, 1:2]  # x in true pixels
    ty = moved[..., 1] * true[:, :1]
    np.testing.assert_allclose(tx[:, 0], tx[:, 2], atol=1e-3)
    assert (ty[:, 0] < ty[:, 2]).all()
    # lengths are kept in true pixels
    d0 = np.hypot(
        (pts[:, 0, 0] - pts[:, 2, 0]) * true[:, 1], (pts[:, 0, 1] - pts[:, 2, 1]) * true[:, 0]
    )
    np.testing.assert_allclose(ty[:, 2] - ty[:, 0], d0, rtol=1e-4)
    upright = np.float32([[[0.5, 0.2], [0.3, 0.5], [0.5, 0.8]]])
    same = upright_matrix(tf.constant(upright), tf.constant([[80.0, 60.0]]), 96).numpy()
    np.testing.assert_allclose(same[0], np.eye(3), atol=1e-5)
