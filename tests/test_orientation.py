"""The orientation classifier: its eight classes made from an upright film, the
model, and its training stage on the embedded phantoms."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_boneage.models.orientation import CLASSES, OrientationNet
from tf_boneage.preprocessing import orientation


@pytest.mark.parametrize("c", range(8))
def test_make_is_numpys_turn_and_inversion(c):
    x = np.random.default_rng(c).random((3, 6, 6, 1)).astype(np.float32)
    expected = np.rot90(1.0 - x if c >= 4 else x, c % 4, axes=(1, 2))
    np.testing.assert_allclose(orientation.make(x, [c] * 3).numpy(), expected, atol=1e-7)


def test_make_gives_each_film_its_own_class():
    x = np.random.default_rng(0).random((8, 6, 6, 1)).astype(np.float32)
    classes = np.array([3, 0, 7, 1, 4, 2, 6, 5])
    made = orientation.make(x, classes).numpy()
    for i, c in enumerate(classes):
        np.testing.assert_allclose(made[i], orientation.make(x[i : i + 1], [c]).numpy()[0])


def test_the_net_gives_eight_probabilities_and_survives_a_round_trip(tmp_path):
    keras.utils.set_random_seed(0)
    net = OrientationNet((16, 16, 1), filters=(2, 4), dropout=0.1)
    x = np.random.default_rng(1).random((3, 16, 16, 1)).astype(np.float32)
    y = net.predict(x, verbose=0)
    assert y.shape == (3, CLASSES) and y.dtype == np.float32
    np.testing.assert_allclose(y.sum(1), 1.0, atol=1e-5)
    net.save(tmp_path / "o.keras")
    again = keras.saving.load_model(tmp_path / "o.keras")
    np.testing.assert_allclose(again.predict(x, verbose=0), y, atol=1e-6)


@pytest.mark.parametrize(
    "shape, kwargs, message",
    [
        ((16, 8, 1), {}, "square"),
        ((12, 12, 1), {"filters": (2, 4, 8)}, "multiple of 8"),
        ((16, 16, 1), {"filters": ()}, "non-empty"),
        ((16, 16, 1), {"dropout": 1.0}, "dropout"),
    ],
)
def test_bad_nets_are_refused_by_name(shape, kwargs, message):
    with pytest.raises(ValueError, match=message):
        OrientationNet(shape, **kwargs)


def test_the_config_refuses_bad_values_by_key(synth_dir):
    from tf_boneage.training import config as config_lib

    manifest = f"manifest={synth_dir / 'manifest.csv'}"
    for override, key in (("size=20", "size"), ("rotation=90", "rotation"), ("exposure=1", "exposure")):  # fmt: skip
        with pytest.raises(config_lib.ConfigError, match=key):
            config_lib.load(config_lib.OrientationConfig, None, None, [manifest, override])


def test_the_stage_trains_reports_every_orientation_and_resumes_as_done(synth_dir, tmp_path):
    """One epoch on the phantoms: the model, its history and a report with all eight
    orientations of every `val` film; val batches hold each film in a known class, training
    batches every class; run again, the finished stage returns its report at once."""
    from tf_boneage.training import config as config_lib
    from tf_boneage.training import orientation as stage

    cfg = config_lib.load(
        config_lib.OrientationConfig,
        None,
        None,
        [f"manifest={synth_dir / 'manifest.csv'}", f"out={tmp_path / 'o'}", "size=16",
         "filters=4,8", "epochs=1", "batch_size=8"],
    )  # fmt: skip
    report = stage.run(cfg)
    val = report["val"]
    assert val["films"] == 8 and report["train_films"] == 24
    assert set(val["per_orientation"]) == set(stage.NAMES)
    counts = np.array(val["confusion"]["counts"])
    assert counts.shape == (8, 8) and (counts.sum(1) == 8).all()  # every film, every class
    np.testing.assert_allclose(val["accuracy"], np.trace(counts) / 64)
    np.testing.assert_allclose(val["upright_kept"], counts[0, 0] / 8)
    assert (tmp_path / "o" / "orientation.keras").is_file()
    assert json.loads((tmp_path / "o" / "report.json").read_text()) == report
    # the batches: val films in class (index mod 8), made exactly; training classes all 8
    from tf_boneage.data.manifest import load_manifest

    table = load_manifest(synth_dir / "manifest.csv")
    films = stage.small_films(table[table["split"] == "val"]["image_path"], 16)
    task = stage.OrientationTask(cfg, tf.distribute.get_strategy(), films, np.array(["val"] * 8))
    x, y = next(iter(task.build_inputs("val")))
    np.testing.assert_array_equal(y.numpy(), np.arange(8) % 8)
    np.testing.assert_allclose(x.numpy(), orientation.make(films, np.arange(8)).numpy(), atol=1e-6)
    task.part = np.array(["train"] * 8)
    seen = np.concatenate(
        [task.augment(x, y, aug)[1].numpy() for e in range(6)
         for x, y, aug in task.build_inputs("train", e)]
    )  # fmt: skip
    assert set(seen) <= set(range(8)) and len(set(seen)) >= 6
    again = stage.run(cfg)
    assert again == report


def test_the_export_reads_the_classifier_from_the_cache_and_refuses_another(tmp_path):
    """``chain_of_runs``: the cache's ``chain.json`` names the classifier by hash; the export
    loads that file and refuses one of other weights; ``replace_orientation`` serves another
    one on purpose and records what the cache had."""
    from tf_boneage.models import LandmarkNet, UNet
    from tf_boneage.preprocessing.spec import ChainSpec
    from tf_boneage.training import export

    keras.utils.set_random_seed(0)
    runs = tmp_path / "runs"
    paths = {
        "unet": runs / "seg" / "round0" / "unet.keras",
        "marks": runs / "landmarks" / "landmarks.keras",
        "orient": runs / "orientation" / "orientation.keras",
    }
    for key, model in (
        ("unet", UNet((16, 16, 1), depth=2, base_filters=2)),
        ("marks", LandmarkNet((16, 16, 1), filters=(2, 2), dense_units=4)),
        ("orient", OrientationNet((16, 16, 1), filters=(2, 4))),
    ):
        paths[key].parent.mkdir(parents=True, exist_ok=True)
        model.save(paths[key])
    spec = ChainSpec.describe(
        paths["unet"], paths["marks"], 16, 16, (52, 40), {"A": (16, 12)}, (64, 64),
        orient=True, orient_model_path=paths["orient"],
    )  # fmt: skip
    spec.write(runs / "cache" / "chain.json")
    chain = export.chain_of_runs(runs, "synthetic")
    assert chain.orient_model == str(paths["orient"]) and chain.orient_size is None
    other = tmp_path / "other.keras"
    OrientationNet((16, 16, 1), filters=(2, 4)).save(other)
    served, record = export.replace_orientation(chain, other)
    assert (
        served.orient_model == str(other) and served.orient_model_sha256 != spec.orient_model_sha256
    )
    assert record["cache_orient_model_sha256"] == spec.orient_model_sha256
    with pytest.raises(FileNotFoundError, match="no orientation classifier"):
        export.replace_orientation(chain, tmp_path / "missing.keras")
    other.replace(paths["orient"])  # the run's classifier changed after the cache was built
    with pytest.raises(ValueError, match="not the orientation classifier the cache was built"):
        export.chain_of_runs(runs, "synthetic")


def test_the_chains_import_registers_the_classifier_for_loading():
    """The chain loads saved classifiers because importing it imports ``tf_boneage.models``,
    which registers ``OrientationNet`` (an export in a fresh process failed to load one when
    only the module defining it did)."""
    import tf_boneage.models
    from tf_boneage.preprocessing import chain  # noqa: F401  (imports tf_boneage.models)

    assert "OrientationNet" in tf_boneage.models.__all__
    assert keras.saving.get_registered_object("tf_boneage>OrientationNet") is OrientationNet
