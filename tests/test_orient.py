"""The chain's orientation and polarity step: quarter turns and inverted films found
from the U-Net, landmarks turned back, registration the same as for the upright film."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_boneage.preprocessing import chain as chain_lib
from tf_boneage.preprocessing import registration
from tf_boneage.preprocessing.chain import ChainConfig, Preprocessor, rot90, turn_points

S = 32
FRAME = registration.Frame(52, 40)
SIZES = {"B": (16, 16)}
#: the fake landmark net's answer on any image: tip, thumb, capitate of an upright left hand
UPRIGHT_POINTS = np.array([0.5, 0.08, 0.82, 0.45, 0.5, 0.62], np.float32)


class UprightUnet(keras.layers.Layer):
    """Stands in for a U-Net that segments upright hands of normal polarity best: bright
    pixels (> 0.5) are 'hand', weighted down the image (1 at the top row, 0 at the bottom),
    and nothing on a film whose mean is bright (an inverted film)."""

    def call(self, x):
        rows = 1.0 - tf.linspace(0.0, 1.0, tf.shape(x)[1])[None, :, None, None]
        gate = tf.sigmoid(60.0 * (0.5 - tf.reduce_mean(x, [1, 2, 3], keepdims=True)))
        return tf.sigmoid(60.0 * (x - 0.5)) * rows * gate


class SideClassifier(keras.layers.Layer):
    """Stands in for an orientation classifier on :func:`film`-like films (a bright bar on a
    dark film): inverted when the film is mostly bright; the quarter turn from the half of the
    (normal) film that holds the bar: top 0, left 1, bottom 2, right 3. (B, S, S, 1) -> (B, 8)."""

    def call(self, x):
        inv = tf.sigmoid(60.0 * (tf.reduce_mean(x, [1, 2, 3]) - 0.5))[:, None]
        n = tf.where(inv[:, :, None, None] > 0.5, 1.0 - x, x)
        h = S // 2
        sides = [n[:, :h], n[:, :, :h], n[:, h:], n[:, :, h:]]  # top, left, bottom, right
        side = tf.nn.softmax(200.0 * tf.stack([tf.reduce_mean(v, [1, 2, 3]) for v in sides], 1))
        return tf.concat([side * (1.0 - inv), side * inv], 1)


def side_classifier():
    x = keras.Input((S, S, 1))
    return keras.Model(x, SideClassifier()(x))


def fake_models():
    x = keras.Input((S, S, 1))
    unet = keras.Model(x, UprightUnet()(x))
    y = keras.Input((S, S, 1))
    dense = keras.layers.Dense(6, kernel_initializer="zeros")
    marks = keras.Model(y, dense(keras.layers.Flatten()(y)))
    dense.set_weights([np.zeros((S * S, 6), np.float32), UPRIGHT_POINTS])
    return unet, marks


def film() -> np.ndarray:
    """(S, S) dark film with a bright textured bar in the top half (the 'hand')."""
    img = np.full((S, S), 0.1, np.float32)
    texture = np.random.default_rng(0).uniform(0.6, 1.0, (S, S)).astype(np.float32)
    img[1:14, 13:19] = texture[1:14, 13:19]
    img[10:14, 19:24] = texture[10:14, 19:24]  # a thumb: the shape is not mirror-symmetric
    return img


@pytest.fixture(scope="module")
def models():
    return fake_models()


def _chain(models, orient, orient_size=None, classifier=None):
    config = ChainConfig(unet_size=S, landmark_size=S, frame=FRAME, region_sizes=SIZES)
    config.orient, config.orient_size = orient, orient_size
    return Preprocessor(*models, config, classifier)


@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_rot90_is_numpys(k):
    x = np.random.default_rng(k).random((2, 5, 5, 3)).astype(np.float32)
    np.testing.assert_array_equal(rot90(tf.constant(x), k).numpy(), np.rot90(x, k, axes=(1, 2)))


@pytest.mark.parametrize("k", [1, 2, 3])
def test_turn_points_follows_the_pixel(k):
    # a pixel at row 2, column 6 of an 8 x 8 image: its centre, normalised
    img = np.zeros((8, 8), np.float32)
    img[2, 6] = 1.0
    turned = np.rot90(img, k)
    r, c = np.argwhere(turned == 1.0)[0]
    centre = tf.constant([[(6 + 0.5) / 8, (2 + 0.5) / 8]])
    np.testing.assert_allclose(turn_points(centre, k).numpy(), [[(c + 0.5) / 8, (r + 0.5) / 8]])
    # k turns then 4 - k turns: back where it was
    np.testing.assert_allclose(turn_points(turn_points(centre, k), 4 - k).numpy(), centre)


@pytest.mark.parametrize("inverted", [False, True])
def test_orient_finds_the_turn_and_the_polarity(models, inverted):
    pre = _chain(models, orient=True)
    films = np.stack([np.rot90(film(), k) for k in range(4)])
    if inverted:
        films = 1.0 - films
    probs, turns, inv, _ = pre.orient(tf.constant(films[..., None]))
    np.testing.assert_array_equal(turns.numpy(), [0, 1, 2, 3])
    np.testing.assert_array_equal(inv.numpy(), [inverted] * 4)
    # the mask is returned in the film's own orientation: the bar is where the film has it
    normal = 1.0 - films if inverted else films
    inside = probs.numpy()[..., 0] > 0.5
    np.testing.assert_array_equal(inside, normal > 0.5)


@pytest.mark.parametrize("inverted", [False, True])
def test_candidates_scored_small_choose_the_same_and_segment_at_full_size(models, inverted):
    """``orient_size``: the eight candidates scored by a copy of the U-Net at half the size;
    the chosen film then segmented at the U-Net's own size. Same turns, same polarity, the
    same registered films as scoring at full size."""
    films = np.stack([np.rot90(film(), k) for k in range(4)])
    batch = tf.constant((1.0 - films if inverted else films)[..., None])
    small = _chain(models, orient=True, orient_size=S // 2)
    assert small.orient_unet is not None and small.orient_unet.input_shape[1] == S // 2
    probs, turns, inv, as_given = small.orient(batch)
    assert probs.shape[1] == S // 2 and as_given.shape[1] == S // 2  # scored small
    np.testing.assert_array_equal(turns.numpy(), [0, 1, 2, 3])
    np.testing.assert_array_equal(inv.numpy(), [inverted] * 4)
    out, full = small(batch), _chain(models, orient=True)(batch)
    assert out["mask"].shape[1] == S  # the chosen film segmented at the U-Net's size
    for key in ("mask", "landmarks", "registered", "quarter_turns", "inverted"):
        np.testing.assert_allclose(out[key].numpy(), full[key].numpy(), atol=1e-5, err_msg=key)


def test_orient_size_the_unet_cannot_take_is_refused_by_name():
    from tf_boneage.models import UNet

    unet = UNet((S, S, 1), depth=2, base_filters=2)
    config = ChainConfig(unet_size=S, landmark_size=S, frame=FRAME, region_sizes=SIZES)
    config.orient, config.orient_size = True, 18
    with pytest.raises(ValueError, match="chain orient_size=18: UNet: input 18x18 must be"):
        Preprocessor(unet, None, config)
    config.orient_size = S  # the U-Net's own size: no copy
    assert Preprocessor(unet, None, config).orient_unet is None


def test_a_tie_keeps_the_film_as_given(models):
    pre = _chain(models, orient=True)
    blank = np.full((1, S, S, 1), 0.1, np.float32)  # no hand in any orientation
    _, turns, inv, _ = pre.orient(tf.constant(blank))
    assert int(turns[0]) == 0 and not bool(inv[0])


@pytest.mark.parametrize("k", [1, 2, 3])
def test_landmarks_are_turned_back_to_the_film(models, k):
    pre = _chain(models, orient=True)
    turned = np.rot90(film(), k)[None, ..., None].astype(np.float32)
    out = pre(tf.constant(turned))
    assert int(out["quarter_turns"][0]) == k
    expected = turn_points(tf.constant(UPRIGHT_POINTS.reshape(3, 2)), k).numpy().ravel()
    np.testing.assert_allclose(out["landmarks"].numpy()[0], expected, atol=1e-6)


def test_turned_and_inverted_films_register_like_the_upright_one(models):
    films = [film()] + [np.rot90(film(), k) for k in (1, 2, 3)] + [1.0 - film()]
    batch = tf.constant(np.stack(films)[..., None].astype(np.float32))
    out = _chain(models, orient=True)(batch)
    reg = out["registered"].numpy()
    assert reg[0].std() > 0.1  # the hand is in the frame
    for i in range(1, len(films)):
        np.testing.assert_allclose(reg[i], reg[0], atol=1e-4)
    np.testing.assert_array_equal(out["inverted"].numpy(), [False] * 4 + [True])
    # without the step the same films register somewhere else
    plain = _chain(models, orient=False)(batch)["registered"].numpy()
    assert all(np.abs(plain[i] - plain[0]).mean() > 0.01 for i in range(1, len(films)))


def test_the_spec_records_the_step_and_old_descriptions_ran_without_it(tmp_path):
    from tf_boneage.preprocessing.spec import ChainSpec

    doc = {
        "image_size": [100, 100],
        "unet_size": 96,
        "landmark_size": 96,
        "frame": [104, 80],
        "region_sizes": {"A": [104, 80]},
        "assume_aspect": None,
        "unet": "u.keras",
        "unet_sha256": "0" * 64,
    }
    assert ChainSpec.from_dict(doc).orient is False
    spec = ChainSpec.from_dict({**doc, "orient": True})
    assert ChainSpec.read(spec.write(tmp_path / "chain.json")).orient is True
    # the size the candidates are scored at: recorded, read back, None when not written
    assert spec.orient_size is None
    spec = ChainSpec.from_dict({**doc, "orient": True, "orient_size": 32})
    assert ChainSpec.read(spec.write(tmp_path / "small.json")).orient_size == 32
    for bad in (0, -16, 12.5, "32"):
        with pytest.raises(ValueError, match="orient_size"):
            ChainSpec.from_dict({**doc, "orient_size": bad})
    assert chain_lib.ORIENT_MARGIN > 0


@pytest.mark.slow
# the U-Net scoring at its own size is the same graph as scored small but for the copy's size
# (test_candidates_scored_small_choose_the_same_and_segment_at_full_size): not exported again
@pytest.mark.parametrize(
    "orient_size, classifier", [(S // 2, False), (None, True)], ids=["scored small", "classifier"]
)
def test_export_and_float32_tflite_turn_the_film_the_same_way(tmp_path, orient_size, classifier):
    """The orientation step inside the exported graph and its float32 TFLite conversion
    (built-in ops only): a film turned 90 degrees and inverted gets the upright film's age, and
    both paths say what they corrected; also with the candidates scored at a smaller size, and
    with an orientation classifier proposing and an outline accepting (one film at a time in
    TFLite: the upright one skips the check, the turned one runs it)."""
    from tf_boneage.data.io import png16_bytes
    from tf_boneage.export import saved_model, tflite
    from tf_boneage.export.end_to_end import BoneAgeGraph, members_from_spec
    from tf_boneage.models import RegionNet

    keras.utils.set_random_seed(0)
    region = RegionNet(
        (16, 16, 1),
        head="regression",
        filters=(4, 4, 8, 8, 8, 8),
        dense_units=8,
        pool_padding="same",
    )
    last = region.get_layer("unit_age")
    last.kernel.assign(last.kernel * 200.0)
    members = members_from_spec(["B_reg_both"], {"B_reg_both": region}.__getitem__)
    params = {s: {"weights": [1.0], "bias": 0.0} for s in ("male", "female")}
    pre = _chain(
        fake_models(),
        orient=True,
        orient_size=orient_size,
        classifier=side_classifier() if classifier else None,
    )
    if classifier:  # with an outline: the check runs in the graph (tf.cond) for turned films
        upright = tf.constant(film()[None, ..., None])
        pre.outline = tf.Variable(_chain(fake_models(), False)(upright)["occupancy"][0, ..., 0])
        pre.config.orient_trust = 0.99  # its ops in the graph, converted (built-in ops)
    graph = BoneAgeGraph(pre, members, params, (S, S))
    path = saved_model.export_end_to_end(graph, tmp_path / "oriented", metadata={"test": True})
    loaded = tf.saved_model.load(str(path))
    runner = tflite.Runner(
        tflite.write(tflite.convert(str(path), "float32"), tmp_path / "f32.tflite"),
        tflite.output_names(str(path)),
    )
    films = [film(), 1.0 - np.rot90(film(), 1)]
    served = loaded.signatures["serving_default"](
        image_bytes=tf.constant([png16_bytes(f) for f in films]), male=tf.constant([1.0, 1.0])
    )
    age = served["bone_age_months"].numpy()
    assert abs(age[1] - age[0]) < 1e-3
    np.testing.assert_array_equal(served["quarter_turns"].numpy(), [0, 1])
    np.testing.assert_array_equal(served["inverted"].numpy(), [0, 1])
    for k, f in enumerate(films):
        decoded = loaded.signatures["decode"](image_bytes=tf.constant([png16_bytes(f)]))
        lite = runner(
            images=decoded["images"].numpy(),
            male=np.array([1.0], np.float32),
            original_size=decoded["original_size"].numpy(),
        )
        keys = ("bone_age_months", "quarter_turns", "inverted", "registration_fit")
        for key in (*keys, "orientation_confidence"):
            assert abs(float(lite[key][0]) - float(served[key].numpy()[k])) <= 1e-3, (k, key)
    # the classifier's probability of what it proposed; 1 by definition without a classifier
    want = np.ones(2, np.float32)
    if classifier:
        from tf_boneage.preprocessing import orientation

        batch = tf.constant(np.stack(films)[..., None])
        want = orientation.classify(pre.orient_model, batch, pre.config.orient_margin)[2].numpy()
        assert (want < 1.0).all() and (want > 0.125).all(), want
    np.testing.assert_allclose(served["orientation_confidence"].numpy(), want, atol=1e-3)


def test_an_assumed_upright_aspect_turns_with_the_film(models):
    """A film squashed to a square (the 100 px RSNA copy: width 0.74 of the height assumed):
    turned by 90 degrees, the assumed size must turn with it to register like the upright."""
    pre = _chain(models, orient=True)
    size = tf.constant([[100.0, 74.0]])
    upright = pre(tf.constant(film()[None, ..., None]), size)["registered"].numpy()
    turned = tf.constant(np.rot90(film(), 1)[None, ..., None].copy())
    fixed = pre(turned, size, upright_size=True)["registered"].numpy()
    np.testing.assert_allclose(fixed, upright, atol=1e-4)
    as_given = pre(turned, size)["registered"].numpy()
    assert np.abs(as_given - upright).mean() > 0.005


def test_with_an_outline_the_turn_must_also_fit_it_better(models):
    """The mass picks a turn; with an outline the chain keeps the film as given unless the
    turned candidate's registration fits the outline better. A hand low on the film: the
    fake U-Net's mass prefers the half turn; an outline made from the film as given keeps it,
    one made from the half-turned film turns it."""
    low = tf.constant(np.roll(film(), 14, axis=0)[None, ..., None].astype(np.float32))
    pre = _chain(models, orient=True)
    assert int(pre(low)["quarter_turns"][0]) == 2  # mass alone
    as_given = _chain(models, orient=False)(low)["occupancy"].numpy()[0, ..., 0]
    pre.outline = tf.Variable(as_given)
    assert int(pre(low)["quarter_turns"][0]) == 0
    turned = pre.orient(low)
    pre.outline = None
    half = pre(low)["occupancy"].numpy()[0, ..., 0]
    pre.outline = tf.Variable(half)
    assert int(pre(low)["quarter_turns"][0]) == 2 and int(turned[1][0]) == 2


def _low_films(folder, n: int):
    """``n`` PNG films of a hand low on the film (the fake U-Net's mask mass prefers them
    half-turned), each with its own noise, and their manifest (all ``train``)."""
    import cv2
    import pandas as pd

    rng = np.random.default_rng(3)
    paths = []
    for i in range(n):
        img = np.clip(np.roll(film(), 14, axis=0) + rng.normal(0, 0.02, (S, S)), 0, 1)
        paths.append(folder / f"{i}.png")
        cv2.imwrite(str(paths[-1]), np.rint(img * 255).astype(np.uint8))
    return pd.DataFrame(
        {"id": [str(i) for i in range(n)], "image_path": [str(p) for p in paths],
         "boneage": 100.0, "male": True, "split": "train"}
    )  # fmt: skip


def test_the_cache_orients_against_an_outline_of_films_as_given(models, tmp_path):
    """Once the cache's orientation step decided by the U-Net's mask mass alone and
    turned or inverted a third of upright real films. The cache now first fits an outline on
    training films as given and turns a film only when that fits it better, as the export does:
    films the mass alone would half-turn stay as given; the outline is written, and the turns
    and inversions of every film are in ``qc.csv``."""
    from tf_boneage.preprocessing import cache

    table = _low_films(tmp_path, cache.OUTLINE_MIN_FILMS + 4)
    sizes = {"A": (16, 16), "B": (8, 8), "C": (8, 8)}
    config = ChainConfig(unet_size=S, landmark_size=S, frame=FRAME, region_sizes=sizes)
    config.orient = True
    pre = Preprocessor(*models, config)
    first = tf.constant(np.stack([_read_png(p) for p in table["image_path"][:2]])[..., None])
    assert (pre(first)["quarter_turns"].numpy() == 2).all()  # the mass alone: half turned
    out = tmp_path / "cache"
    cache.run(table, pre, out, (S, S), batch=16, progress=False)
    qc = _read_qc(out / "qc.csv")
    assert (qc["quarter_turns"] == 0).all() and not qc["inverted"].any()
    canonical = np.load(out / cache.OUTLINE_FILE)
    as_given = _chain(models, orient=False)(first)["occupancy"].numpy()[..., 0]
    assert canonical.shape == as_given.shape[1:]
    assert np.abs(canonical - as_given.mean(0)).max() < 0.05  # the mean of films as given
    assert pre.config.orient  # the step was off only while the outline was fitted
    # too few training films: no outline (said), the mass alone decides
    few = tmp_path / "few"
    pre.outline = None
    cache.run(table.head(8), pre, few, (S, S), batch=16, progress=False)
    assert not (few / cache.OUTLINE_FILE).exists()
    assert (_read_qc(few / "qc.csv")["quarter_turns"] == 2).all()


def _read_png(path) -> np.ndarray:
    import cv2

    return cv2.imread(str(path), cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255.0


def _read_qc(path):
    import pandas as pd

    return pd.read_csv(path, dtype={"id": str})


def test_the_table_cache_records_the_orient_size_of_its_preset(synth_dir, tmp_path):
    """``chain.orient_size`` and ``chain.landmark_passes`` of a preset reach the cache's chain
    and its ``chain.json`` (which the export reads back); a cache of those films built with
    another size is refused."""
    import json

    from tf_boneage.models import LandmarkNet, UNet
    from tf_boneage.training import table as table_lib

    keras.utils.set_random_seed(0)
    unet, marks = tmp_path / "unet.keras", tmp_path / "marks.keras"
    UNet((32, 32, 1), depth=2, base_filters=2).save(unet)
    LandmarkNet((32, 32, 1), filters=(2, 2, 2, 2, 2), dense_units=4).save(marks)
    spec = {
        "chain": {
            "frame": [52, 40],
            "image_size": [64, 64],
            "orient": True,
            "orient_size": 16,
            "landmark_passes": 2,
        },
        "regions": {"A": [16, 12], "B": [8, 8], "C": [8, 8]},
    }
    manifest = table_lib.build_cache(synth_dir / "manifest.csv", tmp_path / "c", unet, marks, spec)
    assert manifest.is_file()
    recorded = json.loads((tmp_path / "c" / "chain.json").read_text())
    assert recorded["orient"] is True and recorded["orient_size"] == 16
    assert recorded["landmark_passes"] == 2
    (tmp_path / "c" / "manifest.csv").unlink()  # unfinished: built again, by another chain
    spec["chain"]["orient_size"] = 8
    with pytest.raises(table_lib.StepError, match="orient_size"):
        table_lib.build_cache(synth_dir / "manifest.csv", tmp_path / "c", unet, marks, spec)


def test_a_finished_cache_without_a_classifier_skips_training_one(tmp_path, models, capsys):
    """A run folder whose cache was finished before the preset had a classifier: the
    table does not train one it would not use, and says so; an unfinished cache, or one built
    with a classifier, trains it."""
    from tf_boneage.preprocessing.spec import ChainSpec
    from tf_boneage.training.table import cache_wants_classifier

    folder = tmp_path / "cache"
    assert cache_wants_classifier(folder)  # no cache yet
    paths = {n: tmp_path / f"{n}.keras" for n in ("unet", "orient")}
    models[0].save(paths["unet"])
    constant_classifier(0).save(paths["orient"])
    pre = _chain(models, orient=True)
    ChainSpec.of_chain(pre, paths["unet"], None, None, None).write(folder / "chain.json")
    assert cache_wants_classifier(folder)  # described, but not finished: rebuilt with it
    (folder / "manifest.csv").write_text("id\n")
    assert not cache_wants_classifier(folder)
    assert "built without an orientation classifier" in capsys.readouterr().out
    with_it = _chain(models, orient=True, classifier=constant_classifier(0))
    spec = ChainSpec.of_chain(with_it, paths["unet"], None, None, None, paths["orient"])
    spec.write(folder / "chain.json")
    assert cache_wants_classifier(folder)


# --- the orientation classifier deciding (tf_boneage.models.orientation) ---------------------


def constant_classifier(c: int, size: int = S):
    """A classifier that says class ``c`` of any film (probability ~1)."""
    x = keras.Input((size, size, 1))
    dense = keras.layers.Dense(8, activation="softmax")
    model = keras.Model(x, dense(keras.layers.Flatten()(x)))
    dense.set_weights([np.zeros((size * size, 8), np.float32), np.eye(8, dtype=np.float32)[c] * 20])
    return model


@pytest.mark.parametrize("c", range(8))
def test_the_classifiers_class_turns_and_inverts_the_film_back(models, c):
    """A film in orientation ``c`` (made by ``orientation.make``) registers like the upright
    film without the step, when the classifier says ``c``; the chain reports the turn, the
    polarity and the classifier's confidence."""
    from tf_boneage.preprocessing import orientation

    upright = film()[None, ..., None]
    given = orientation.make(upright, [c])
    out = _chain(models, orient=True, classifier=constant_classifier(c))(given)
    assert int(out["quarter_turns"][0]) == c % 4 and bool(out["inverted"][0]) == (c >= 4)
    assert float(out["orientation_confidence"][0]) > 0.99
    plain = _chain(models, orient=False)(tf.constant(upright))
    for key in ("registered", "region_B"):
        np.testing.assert_allclose(out[key].numpy(), plain[key].numpy(), atol=1e-4, err_msg=key)


def test_the_classifier_reads_every_orientation_of_the_fake_film(models):
    """The test's stand-in classifier is right on all eight orientations (the export test
    below relies on it), and the chain with it undoes each of them."""
    from tf_boneage.preprocessing import orientation

    films = orientation.make(np.repeat(film()[None, ..., None], 8, 0), np.arange(8))
    turns, inverted, confidence = orientation.classify(side_classifier(), films)
    np.testing.assert_array_equal(turns.numpy() + 4 * inverted.numpy(), np.arange(8))
    assert (confidence.numpy() > 0.9).all()
    reg = _chain(models, orient=True, classifier=side_classifier())(films)["registered"].numpy()
    for i in range(1, 8):
        np.testing.assert_allclose(reg[i], reg[0], atol=1e-4)


def test_a_margin_keeps_the_film_as_given_unless_another_class_is_surer():
    from tf_boneage.preprocessing import orientation

    x = keras.Input((S, S, 1))
    dense = keras.layers.Dense(8, activation="softmax")
    model = keras.Model(x, dense(keras.layers.Flatten()(x)))
    logits = np.log(np.array([0.40, 0.0, 0.0, 0.45, 0.05, 0.05, 0.05, 0.0]) + 1e-9)
    dense.set_weights([np.zeros((S * S, 8), np.float32), logits.astype(np.float32)])
    blank = tf.zeros((1, S, S, 1))
    assert int(orientation.classify(model, blank)[0][0]) == 3  # the most probable
    turns, inverted, confidence = orientation.classify(model, blank, margin=0.1)
    assert int(turns[0]) == 0 and not bool(inverted[0])
    np.testing.assert_allclose(float(confidence[0]), 0.40, atol=1e-3)


def test_a_classifier_and_an_orient_size_are_refused_together(models):
    with pytest.raises(ValueError, match="orient_size.*classifier"):
        _chain(models, orient=True, orient_size=S // 2, classifier=constant_classifier(0))


def test_the_spec_records_the_classifier_and_a_changed_one_is_a_difference(tmp_path, models):
    from tf_boneage.preprocessing.spec import ChainSpec

    paths = {}
    for name, model in (("unet", models[0]), ("a", constant_classifier(0)), ("b", constant_classifier(1))):  # fmt: skip
        paths[name] = tmp_path / f"{name}.keras"
        model.save(paths[name])
    pre = _chain(models, orient=True, classifier=constant_classifier(0))
    with pytest.raises(ValueError, match="orientation model's path"):
        ChainSpec.of_chain(pre, paths["unet"], None, None, None)
    spec = ChainSpec.of_chain(pre, paths["unet"], None, None, None, paths["a"])
    assert spec.orient and spec.orient_model == str(paths["a"])
    again = ChainSpec.from_dict(spec.to_dict())
    assert again == spec
    other = ChainSpec.of_chain(pre, paths["unet"], None, None, None, paths["b"])
    assert [d.split(":")[0] for d in spec.differences(other)] == ["orient_model_sha256"]
    # the classifier's margin is recorded with it; a changed one is a difference, a description
    # written before it was recorded ran with the margin of the time (0.3)
    assert spec.orient_margin == pre.config.orient_margin == 0.3
    pre.config.orient_margin = 0.1
    wider = ChainSpec.of_chain(pre, paths["unet"], None, None, None, paths["a"])
    assert wider.orient_margin == 0.1
    assert [d.split(":")[0] for d in spec.differences(wider)] == ["orient_margin"]
    legacy = {k: v for k, v in spec.to_dict().items() if k != "orient_margin"}
    assert ChainSpec.from_dict(legacy).orient_margin == 0.3
    assert ChainSpec.from_dict({**legacy, "orient_model_sha256": None}).orient_margin is None
    with pytest.raises(ValueError, match="orient_margin"):
        ChainSpec.from_dict({**legacy, "orient_margin": 1.5})


def test_the_chain_turns_by_its_recorded_margin(models):
    """The config's margin decides: a classifier 0.45 sure of a quarter turn and 0.40 of the
    film as given turns it with margin 0, keeps it with 0.1 (the spec's number is used)."""
    x = keras.Input((S, S, 1))
    dense = keras.layers.Dense(8, activation="softmax")
    model = keras.Model(x, dense(keras.layers.Flatten()(x)))
    logits = np.log(np.array([0.40, 0.0, 0.0, 0.45, 0.05, 0.05, 0.05, 0.0]) + 1e-9)
    dense.set_weights([np.zeros((S * S, 8), np.float32), logits.astype(np.float32)])
    pre = _chain(models, orient=True, classifier=model)
    given = tf.constant(film()[None, ..., None])
    for margin, turns in ((0.0, 3), (0.1, 0)):
        pre.config.orient_margin = margin
        assert int(pre(given)["quarter_turns"][0]) == turns, margin


def test_with_an_outline_the_classifiers_turn_must_also_fit_it_better(models):
    """The classifier proposes, the outline accepts: a classifier that says 'half turned' of a
    film whose registration as given fits the outline is overruled; with an outline made from
    the half-turned film its turn stands."""
    low = tf.constant(np.roll(film(), 14, axis=0)[None, ..., None].astype(np.float32))
    pre = _chain(models, orient=True, classifier=constant_classifier(2))
    assert int(pre(low)["quarter_turns"][0]) == 2  # the classifier alone
    half = pre(low)["occupancy"].numpy()[0, ..., 0]
    as_given = _chain(models, orient=False)(low)["occupancy"].numpy()[0, ..., 0]
    pre.outline = tf.Variable(as_given)
    out = pre(low)
    assert int(out["quarter_turns"][0]) == 0 and not bool(out["inverted"][0])
    np.testing.assert_allclose(out["occupancy"].numpy()[0, ..., 0], as_given, atol=1e-5)
    pre.outline = tf.Variable(half)
    assert int(pre(low)["quarter_turns"][0]) == 2


def test_the_outline_check_runs_only_when_the_classifier_proposes_a_change(models):
    """A batch the classifier proposes as given skips the check (a U-Net and two landmark
    passes) and comes out as without an outline; one turned film in the batch runs it."""
    low = tf.constant(np.roll(film(), 14, axis=0)[None, ..., None].astype(np.float32))
    as_given = _chain(models, orient=False)(low)["occupancy"].numpy()[0, ..., 0]
    calls = []
    for c, expected_calls in ((0, 0), (2, 2)):  # the check fits the proposal and the film
        pre = _chain(models, orient=True, classifier=constant_classifier(c))
        plain = pre(low)
        pre.outline = tf.Variable(as_given)
        fit = pre.candidate_fit
        pre.candidate_fit = lambda *a, fit=fit: calls.append(1) or fit(*a)
        calls.clear()
        out = pre(low)
        assert len(calls) == expected_calls, c
        assert int(out["quarter_turns"][0]) == 0  # kept as given either way
        if c == 0:
            for key in ("mask", "landmarks", "registered", "mask_area"):
                np.testing.assert_array_equal(out[key].numpy(), plain[key].numpy(), key)


def _sure_of(probs) -> keras.Model:
    """A classifier that gives every film the class probabilities ``probs`` (8,)."""
    x = keras.Input((S, S, 1))
    dense = keras.layers.Dense(8, activation="softmax")
    model = keras.Model(x, dense(keras.layers.Flatten()(x)))
    logits = np.log(np.asarray(probs, np.float64) + 1e-9).astype(np.float32)
    dense.set_weights([np.zeros((S * S, 8), np.float32), logits])
    return model


@pytest.mark.parametrize(
    ("trust", "turns", "checks"),
    [(None, 0, 2), (0.9, 0, 2), (0.79, 3, 0), (0.81, 0, 2)],
)
def test_a_proposal_the_classifier_is_sure_of_stands_without_the_outline_check(
    models, trust, turns, checks
):
    """``orient_trust``: a classifier 0.80 sure of a quarter turn (0.10 of the film as given,
    margin 0.3 passed) of a film whose registration as given fits the outline: checked (trust
    None, or above 0.80) the outline keeps it as given; trusted from 0.79 (confidence >= trust)
    the turn stands and the check does not even run."""
    low = tf.constant(np.roll(film(), 14, axis=0)[None, ..., None].astype(np.float32))
    as_given = _chain(models, orient=False)(low)["occupancy"].numpy()[0, ..., 0]
    pre = _chain(models, orient=True, classifier=_sure_of([0.1, 0, 0, 0.8, 0.1, 0, 0, 0]))
    pre.config.orient_trust = trust
    pre.outline = tf.Variable(as_given)
    calls = []
    fit = pre.candidate_fit
    pre.candidate_fit = lambda *a: calls.append(1) or fit(*a)
    out = pre(low)
    assert int(out["quarter_turns"][0]) == turns and len(calls) == checks
    np.testing.assert_allclose(float(out["orientation_confidence"][0]), 0.8, atol=1e-5)


def test_trust_is_checked_against_each_film_of_a_batch(models):
    """In one batch a sure proposal stands and an unsure one is checked: a classifier surer of
    the quarter turn the brighter the film, a bright and a dark copy of a film whose
    registration as given fits the outline, the trust between their two confidences."""
    low = np.roll(film(), 14, axis=0).astype(np.float32)
    as_given = _chain(models, orient=False)(tf.constant(low[None, ..., None]))["occupancy"]
    x = keras.Input((S, S, 1))
    mean = keras.layers.GlobalAveragePooling2D()(x)
    dense = keras.layers.Dense(8, activation="softmax")
    model = keras.Model(x, dense(mean))
    # logits a + b * mean: class 3 grows with the film's brightness, the as-given class falls
    dense.set_weights(
        [np.array([[-16, 0, 0, 16, 0, 0, 0, 0]], np.float32), np.zeros(8, np.float32)]
    )
    pre = _chain(models, orient=True, classifier=model)
    batch = tf.constant(np.stack([low, low * 0.5])[..., None])
    out = pre(batch)
    confidence = out["orientation_confidence"].numpy()
    np.testing.assert_array_equal(out["quarter_turns"].numpy(), [3, 3])  # no outline: turned
    assert confidence[0] > confidence[1] + 0.05, confidence
    pre.config.orient_trust = float(confidence.mean())
    pre.outline = tf.Variable(as_given.numpy()[0, ..., 0])
    np.testing.assert_array_equal(pre(batch)["quarter_turns"].numpy(), [3, 0])


def test_the_spec_records_the_trust_with_the_classifier(tmp_path, models):
    """``orient_trust`` goes from the chain to its description and back, a changed one is a
    difference, descriptions written before it check every proposal, and only a chain with a
    classifier keeps one; out of (0, 1] it is refused by name."""
    from tf_boneage.preprocessing.spec import ChainSpec

    unet, classifier = tmp_path / "unet.keras", tmp_path / "c.keras"
    models[0].save(unet)
    constant_classifier(0).save(classifier)
    pre = _chain(models, orient=True, classifier=constant_classifier(0))
    pre.config.orient_trust = 0.95
    spec = ChainSpec.of_chain(pre, unet, None, None, None, classifier)
    assert spec.orient_trust == 0.95 and ChainSpec.from_dict(spec.to_dict()) == spec
    legacy = {k: v for k, v in spec.to_dict().items() if k != "orient_trust"}
    assert ChainSpec.from_dict(legacy).orient_trust is None
    assert [d.split(":")[0] for d in spec.differences(ChainSpec.from_dict(legacy))] == [
        "orient_trust"
    ]
    assert ChainSpec.from_dict({**legacy, "orient_model_sha256": None, "orient_trust": 0.9}).orient_trust is None  # fmt: skip
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="orient_trust"):
            ChainSpec.from_dict({**legacy, "orient_trust": bad})
        with pytest.raises(ValueError, match="orient_trust"):
            ChainConfig(orient_trust=bad)
