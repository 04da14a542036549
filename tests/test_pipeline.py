import numpy as np
import pytest

from tf_boneage.data import manifest, pipeline
from tf_boneage.data.augment import AffineRange, Degradation


@pytest.fixture(scope="module")
def table(synth_dir):
    return manifest.load_manifest(synth_dir / "manifest.csv")


def _cfg(**kw):
    base = dict(image_size=(32, 24), batch_size=8, deterministic=True, seed=1)
    base.update(kw)
    return pipeline.PipelineConfig(**base)


def test_segmentation_batches(table):
    image, mask = next(iter(pipeline.segmentation_dataset(table, _cfg(augment=True))))
    assert image.shape == (8, 32, 24, 1) and mask.shape == (8, 32, 24, 1)
    assert image.dtype.name == mask.dtype.name == "float32"
    assert set(np.unique(mask.numpy())) <= {0.0, 1.0} and mask.numpy().mean() > 0.05
    assert image.numpy().min() >= 0.0 and image.numpy().max() <= 1.0


def test_landmark_batches_keep_normalised_points(table):
    ds = pipeline.landmark_dataset(table, _cfg(shuffle=False))
    image, points = next(iter(ds))
    assert image.shape == (8, 32, 24, 1) and points.shape == (8, 6)
    np.testing.assert_allclose(
        points.numpy(), table[list(manifest.LANDMARK_COLUMNS)].to_numpy(np.float32)[:8]
    )


def test_region_batches(table):
    features, age = next(iter(pipeline.region_dataset(table, _cfg(shuffle=False))))
    assert features["image"].shape == (8, 32, 24, 1) and features["male"].shape == (8, 1)
    np.testing.assert_allclose(age.numpy(), table["boneage"].to_numpy()[:8])
    np.testing.assert_allclose(features["male"].numpy()[:, 0], table["male"].to_numpy(float)[:8])


def test_region_batches_degrade_only_when_asked(table):
    # no geometric or photometric change: the degradation alone tells the batches apart
    plain = dict(shuffle=False, augment=True, affine=AffineRange(0, (1, 1), 0, 0))
    plain["photometric"] = False
    clean = next(iter(pipeline.region_dataset(table, _cfg(**plain))))[0]["image"].numpy()
    same = pipeline.region_dataset(table, _cfg(degrade=Degradation(), **plain))
    np.testing.assert_allclose(next(iter(same))[0]["image"].numpy(), clean, atol=1e-6)
    dark = pipeline.region_dataset(table, _cfg(degrade=Degradation(underexposed=1.0), **plain))
    dark = next(iter(dark))[0]["image"].numpy()
    assert (dark <= clean + 1e-6).all() and dark.mean() < clean.mean()


def test_deterministic_mode_repeats_exactly(table):
    cfg = _cfg(augment=True, affine=AffineRange(20, (0.9, 1.1), 0.05, 0.3))
    first = [b[1].numpy() for b in pipeline.landmark_dataset(table, cfg)]
    second = [b[1].numpy() for b in pipeline.landmark_dataset(table, cfg)]
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)
    assert sum(len(a) for a in first) == len(table)


def test_cache_and_epochs_differ_when_shuffled(table, tmp_path):
    ds = pipeline.region_dataset(table, _cfg(cache=str(tmp_path / "c"), batch_size=40))
    e1, e2 = (next(iter(ds))[1].numpy() for _ in range(2))
    assert sorted(e1) == sorted(e2) and not np.array_equal(e1, e2)


def test_dicom_rows_decode_through_pydicom(tmp_path):
    from test_io import _dicom

    path = _dicom(tmp_path / "a.dcm", np.arange(48).reshape(6, 8), sex="M")
    rows = manifest.build_manifest([manifest.read_rsna_csv(_csv(tmp_path), tmp_path)])[0]
    assert rows["image_path"].iloc[0] == str(path.resolve())
    features, _ = next(iter(pipeline.region_dataset(rows, _cfg(image_size=(6, 8), batch_size=1))))
    img = features["image"].numpy()[0, ..., 0]
    np.testing.assert_allclose(img, np.arange(48).reshape(6, 8) / 47.0, atol=1e-5)


def _csv(folder):
    path = folder / "labels.csv"
    path.write_text("id,boneage,male\na,10,M\n")
    return path


def test_missing_columns_are_named(table):
    with pytest.raises(ValueError, match="mask_path"):
        pipeline.segmentation_dataset(table.drop(columns="mask_path"), _cfg())
    with pytest.raises(ValueError, match="image_size"):
        pipeline.PipelineConfig(image_size=(0, 5))


def test_one_resize_for_pipelines_and_graph():
    """The tf.data pipelines resize with the chain's own warp.resize: static and unknown
    shapes give the same pixels, and a 2 x 2 block mean is computed by hand."""
    import numpy as np
    import tensorflow as tf

    from tf_boneage.preprocessing import warp

    x = np.random.default_rng(0).random((2, 203, 157, 1)).astype(np.float32)

    def dynamic(images, size):
        spec = tf.TensorSpec([None, None, None, 1])
        return tf.function(lambda t: warp.resize(t, size), input_signature=[spec])(images)

    np.testing.assert_allclose(
        warp.resize(tf.constant(x), (64, 48)), dynamic(x, (64, 48)), atol=1e-6
    )
    # 4 x 4 -> 2 x 2: exactly the mean of each 2 x 2 block
    img = np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1)
    expected = np.array([[2.5, 4.5], [10.5, 12.5]], np.float32)
    np.testing.assert_allclose(dynamic(img, (2, 2))[0, ..., 0], expected)
    np.testing.assert_allclose(warp.resize(tf.constant(img), (2, 2))[0, ..., 0], expected)


@pytest.mark.parametrize("cache", [False, True], ids=["streamed", "cached"])
def test_a_shuffled_epoch_decodes_about_a_batch_before_its_first_batch(
    tmp_path, monkeypatch, cache
):
    """The shuffle holds file names, not decoded films. Counting the decodes
    (DICOM rows: each one is a Python call) before the first batch of a shuffled epoch: a few
    batches' worth when streamed (the shuffle buffer of decoded films filled with every film
    before it yielded one: all of them), every film when the set is cached in memory; each
    epoch still holds every film once, in another order."""
    import pandas as pd
    from test_io import _dicom

    n, decoded = 64, []
    rows = []
    for i in range(n):
        path = _dicom(
            tmp_path / f"{i}.dcm", np.full((6, 8), i, np.uint16) + np.eye(6, 8, dtype=np.uint16)
        )
        rows.append({"image_path": str(path), "male": True, "boneage": float(i)})
    table = pd.DataFrame(rows)
    real = pipeline._decode_dicom
    monkeypatch.setattr(pipeline, "_decode_dicom", lambda p: decoded.append(p) or real(p))
    cfg = pipeline.PipelineConfig(image_size=(6, 8), batch_size=2, seed=3, cache=cache)
    ds = pipeline.region_dataset(table, cfg)
    it = iter(ds)
    next(it)
    assert len(decoded) == n if cache else len(decoded) <= n // 4, len(decoded)
    first = np.concatenate([y.numpy() for _, y in ds])
    second = np.concatenate([y.numpy() for _, y in ds])
    assert sorted(first) == sorted(second) == list(range(n))
    assert not np.array_equal(first, second)
