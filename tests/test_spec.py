"""ChainSpec: the chain's settings recorded with an artifact (round trips, hashes, refusals)."""

import dataclasses
import hashlib
import json

import pytest

from tf_boneage.preprocessing.spec import CHAIN_FILE, ChainSpec, settle, sha256


def _spec(**kw):
    base = dict(
        image_size=(100, 100),
        unet_size=96,
        landmark_size=96,
        frame=(104, 80),
        region_sizes={"A": (104, 80), "B": (48, 64)},
        assume_aspect=0.74,
        unet="runs/seg/round0/unet.keras",
        unet_sha256="a" * 64,
        landmarks="runs/landmarks/landmarks.keras",
        landmarks_sha256="b" * 64,
    )
    return ChainSpec(**{**base, **kw})


def test_round_trip_through_json(tmp_path):
    spec = _spec()
    path = spec.write(tmp_path / "x" / CHAIN_FILE)
    assert ChainSpec.read(path) == spec
    doc = json.loads(path.read_text())
    assert doc["frame"] == [104, 80] and doc["region_sizes"]["B"] == [48, 64]
    native = _spec(image_size=None, assume_aspect=None)
    assert ChainSpec.from_dict(native.to_dict()) == native
    # lists from JSON become the same tuples as given
    assert ChainSpec.from_dict({**spec.to_dict(), "frame": [104, 80]}).frame == (104, 80)


def test_describe_hashes_the_model_files(tmp_path):
    unet, marks = tmp_path / "u.keras", tmp_path / "m.keras"
    unet.write_bytes(b"unet weights")
    marks.write_bytes(b"x" * 3_000_000)  # more than one read block
    spec = ChainSpec.describe(unet, marks, 96, 96, (2080, 1600), {"A": (500, 375)})
    assert spec.unet_sha256 == hashlib.sha256(b"unet weights").hexdigest()
    assert spec.landmarks_sha256 == hashlib.sha256(b"x" * 3_000_000).hexdigest()
    assert sha256(marks) == spec.landmarks_sha256
    assert spec.image_size is None and spec.assume_aspect is None


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"frame": (104,)}, "frame: expected"),
        ({"frame": (0, 80)}, "positive"),
        ({"region_sizes": {}}, "at least one region"),
        ({"region_sizes": {"A": "big"}}, "region A"),
        ({"image_size": (100, -1)}, "image_size"),
        ({"assume_aspect": 0.0}, "assume_aspect"),
        ({"landmark_passes": 3}, "landmark_passes"),
    ],
)
def test_bad_settings_are_named(change, match):
    with pytest.raises(ValueError, match=match):
        _spec(**change)


def test_bad_documents_name_the_file_and_key(tmp_path):
    doc = _spec().to_dict()
    del doc["frame"]
    (tmp_path / "a.json").write_text(json.dumps({**doc, "colour": "red"}))
    with pytest.raises(ValueError, match=r"a.json: missing \['frame'\], unknown \['colour'\]"):
        ChainSpec.read(tmp_path / "a.json")
    (tmp_path / "b.json").write_text("{not json")
    with pytest.raises(ValueError, match="b.json: not JSON"):
        ChainSpec.read(tmp_path / "b.json")
    with pytest.raises(FileNotFoundError, match="no chain description"):
        ChainSpec.read(tmp_path / "none.json")


def test_differences_ignore_paths_and_name_each_setting():
    a = _spec()
    assert a.differences(_spec(unet="elsewhere/unet.keras", landmarks=None)) == []
    diff = a.differences(_spec(frame=(96, 72), unet_sha256="c" * 64))
    assert len(diff) == 2
    assert diff[0].startswith("frame: (96, 72) here, (104, 80) in the artifact")
    assert diff[1].startswith("unet_sha256:")


def test_settle_records_once_then_refuses_another_chain(tmp_path):
    first = settle(tmp_path, _spec())
    assert (tmp_path / CHAIN_FILE).is_file() and first == _spec()
    assert settle(tmp_path, _spec(unet="moved/unet.keras")) == first  # same weights
    before = (tmp_path / CHAIN_FILE).read_text()
    with pytest.raises(ValueError, match="built by another chain") as err:
        settle(tmp_path, _spec(image_size=(256, 256), region_sizes={"A": (500, 375)}))
    assert "image_size" in str(err.value) and "region_sizes" in str(err.value)
    assert (tmp_path / CHAIN_FILE).read_text() == before  # nothing overwritten


def test_orient_trust_replaced_on_record_only_with_a_classifier(capsys):
    """An export may serve a trust its cache did not have: said, both recorded; refused by
    name for a chain without a classifier, and out of (0, 1]."""
    from tf_boneage.training.export import replace_orient_trust

    with pytest.raises(ValueError, match="orientation classifier"):
        replace_orient_trust(_spec(), 0.95)
    oriented = _spec(orient=True, orient_model="o.keras", orient_model_sha256="c" * 64)
    served, record = replace_orient_trust(oriented, 0.95)
    assert served.orient_trust == 0.95 and record == {"cache": None, "served": 0.95}
    assert "orient_trust_replaced" in capsys.readouterr().out
    with pytest.raises(ValueError, match="orient_trust"):
        replace_orient_trust(oriented, 1.5)


def test_landmark_passes_recorded_read_back_and_replaced_on_record(capsys):
    """A description written before the setting existed ran one look; an export may serve two
    looks instead of its cache's one, and says so and records both."""
    from tf_boneage.training.export import replace_landmark_passes

    spec = _spec(landmark_passes=2)
    assert ChainSpec.from_dict(spec.to_dict()).landmark_passes == 2
    old = spec.to_dict()
    del old["landmark_passes"]
    assert ChainSpec.from_dict(old).landmark_passes == 1
    assert _spec().differences(spec) == ["landmark_passes: 2 here, 1 in the artifact"]
    served, record = replace_landmark_passes(_spec(), 2)
    assert served.landmark_passes == 2 and record == {"cache": 1, "served": 2}
    assert "landmark_passes_replaced" in capsys.readouterr().out
    with pytest.raises(ValueError, match="landmark_passes"):
        replace_landmark_passes(_spec(), 0)


def test_preprocessor_is_the_chain_the_description_names(tmp_path):
    """The models' files, frame, region sizes and landmark looks of a description reach the
    chain it builds; the sizes are the saved models' own."""
    from tf_boneage.models import LandmarkNet, UNet

    unet, marks = tmp_path / "u.keras", tmp_path / "m.keras"
    UNet((32, 32, 1), depth=2, base_filters=4).save(unet)
    LandmarkNet((24, 24, 1), filters=(4, 8), dense_units=8, dropout=0.0).save(marks)
    spec = ChainSpec.describe(
        unet, marks, 32, 24, (52, 40), {"A": (52, 40), "B": (24, 32)}, landmark_passes=2
    )
    pre = spec.preprocessor()
    c = pre.config
    assert (c.unet_size, c.landmark_size, c.landmark_passes) == (32, 24, 2)
    assert (c.frame.height, c.frame.width) == (52, 40)
    assert c.region_sizes == {"A": (52, 40), "B": (24, 32)}
    assert not c.orient and pre.orient_model is None
    one = dataclasses.replace(spec, landmark_passes=1).preprocessor()
    assert one.config.landmark_passes == 1
    import keras

    x = keras.Input((16, 16, 1))
    classifier = tmp_path / "o.keras"
    keras.Model(x, keras.layers.Dense(8, "softmax")(keras.layers.Flatten()(x))).save(classifier)
    sure = dataclasses.replace(
        spec, orient=True, orient_model=str(classifier), orient_model_sha256=sha256(classifier)
    )
    assert sure.orient_trust is None and sure.preprocessor().config.orient_trust is None
    sure = dataclasses.replace(sure, orient_trust=0.95)
    pre = sure.preprocessor()
    assert pre.orient_model is not None and pre.config.orient_trust == 0.95
