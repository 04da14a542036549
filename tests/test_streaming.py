"""Memory set by the batch, not by the number of films: the segmentation
step's evaluation and pseudo-labelling and the landmark step's inputs stream full-size films
from disk. The paper preset was killed at 24 GB on 80 full-size phantoms because every film's
full-size mask and probabilities were kept in lists (and 64 films were stacked at once)."""

import tracemalloc

import cv2
import numpy as np
import pytest

from tf_boneage.models import UNet
from tf_boneage.training import landmarks, segmentation


@pytest.fixture(scope="module")
def films(tmp_path_factory):
    """18 films: 16 of 800 x 640 and two of other sizes in the middle (8 and 16 bit)."""
    folder = tmp_path_factory.mktemp("films")
    rng = np.random.default_rng(0)
    paths = []
    for k in range(18):
        h, w = (800, 640) if k not in (7, 11) else (600, 900)
        img = rng.integers(0, 255, (h, w)).astype(np.uint8)
        img = cv2.GaussianBlur(img, (0, 0), 8)
        path = folder / f"f{k}.png"
        cv2.imwrite(str(path), img if k != 11 else img.astype(np.uint16) * 257)
        paths.append(str(path))
    return paths


def test_batches_of_films_group_one_size_within_the_pixel_budget(films):
    groups = list(segmentation.batches_of_films(films, batch=4, max_pixels=3 * 800 * 640))
    sizes = [[img.shape for _, img in g] for g in groups]
    assert all(len(set(s)) == 1 for s in sizes)  # one size per batch
    assert max(len(g) for g in groups) == 3  # the pixel budget, not the count of 4
    assert [p for g in groups for p, _ in g] == films  # every film, in order
    big = list(segmentation.batches_of_films(films[:2], batch=4, max_pixels=100))
    assert [len(g) for g in big] == [1, 1]  # a film over the budget goes alone


def _peak_mb(fn) -> float:
    tracemalloc.start()  # numpy's buffers are traced; TensorFlow's own are not
    try:
        fn()
        return tracemalloc.get_traced_memory()[1] / 1e6
    finally:
        tracemalloc.stop()


def test_segmenting_films_holds_one_batch_not_all_films(films):
    """Peak memory of consuming :func:`segmentation.iter_masks` over 6 and over 18 films:
    the same (the old list-returning version grew with the films: 3x from 6 to 18)."""
    unet = UNet((32, 32, 1), depth=2, base_filters=4)

    def consume(n):
        def go():
            for mask, prob in segmentation.iter_masks(unet, films[:n], 32, batch=2):
                assert mask.dtype == np.uint8 and prob.shape == mask.shape
                assert set(np.unique(mask)) <= {0, 1}

        return go

    consume(2)()  # trace the functions first
    few, many = _peak_mb(consume(6)), _peak_mb(consume(18))
    assert many < 1.3 * few, (few, many)


def test_landmark_inputs_are_small_whatever_the_films(films):
    import pandas as pd

    unet = UNet((32, 32, 1), depth=2, base_filters=4)
    rows = pd.DataFrame({"image_path": films})
    x = landmarks.enhanced_images(rows, unet, 24, raw=False)
    assert x.shape == (18, 24, 24, 1) and x.dtype == np.float32
    raw = landmarks.enhanced_images(rows.head(3), None, 24, raw=True)
    assert raw.shape == (3, 24, 24, 1)
    # the film of another size in the middle is itself, not its neighbour's
    alone = landmarks.enhanced_images(rows.iloc[[7]], unet, 24, raw=False)
    np.testing.assert_allclose(x[7], alone[0], atol=1e-5)


def test_landmark_inputs_on_disk_are_the_same_images_read_by_rows(films, tmp_path):
    import pandas as pd

    from tf_boneage.data.rowfile import RowFile

    unet = UNet((32, 32, 1), depth=2, base_filters=4)
    rows = pd.DataFrame({"image_path": films})
    kept = landmarks.enhanced_images(rows, unet, 24, raw=False)
    on_disk = landmarks.enhanced_images(rows, unet, 24, raw=False, out=tmp_path / "x.npy")
    assert isinstance(on_disk, RowFile) and on_disk.shape == kept.shape
    np.testing.assert_array_equal(on_disk[[5, 0, 17]], kept[[5, 0, 17]])
    np.testing.assert_array_equal(np.load(tmp_path / "x.npy"), kept)  # a standard .npy
    assert [p.name for p in tmp_path.iterdir()] == ["x.npy"]  # no partial file left


def test_row_file_reads_the_rows_asked_in_their_order(tmp_path):
    from tf_boneage.data.rowfile import RowFile, RowWriter

    x = np.arange(5 * 3 * 2, dtype=np.float32).reshape(5, 3, 2)
    writer = RowWriter(tmp_path / "a.npy", x.shape)
    writer.write(x[:2])
    assert not (tmp_path / "a.npy").exists()  # only complete files under the name
    writer.write(x[2:])
    f = writer.close()
    np.testing.assert_array_equal(f[[4, 1, 1]], x[[4, 1, 1]])
    np.testing.assert_array_equal(f[1:4], x[1:4])
    np.testing.assert_array_equal(f[-1], x[-1])
    np.testing.assert_array_equal(np.asarray(f), x)
    assert len(f) == 5 and f[[]].shape == (0, 3, 2)
    with pytest.raises(IndexError):
        f[[5]]
    np.save(tmp_path / "b.npy", x)  # numpy's own files too
    np.testing.assert_array_equal(RowFile(tmp_path / "b.npy")[[3, 0]], x[[3, 0]])
    short = RowWriter(tmp_path / "c.npy", (4, 3, 2))
    short.write(x[:3])
    with pytest.raises(ValueError, match="3 rows written of 4"):
        short.close()
    with pytest.raises(ValueError, match="rows of"):
        RowWriter(tmp_path / "d.npy", (4, 3, 2)).write(x[:, :2])
    assert not (tmp_path / "c.npy").exists()


def test_landmark_evaluation_batches_are_capped_by_pixels():
    """64 images of 96 px (the rsna100 preset), 8 of 512 px (the paper's): the validation and
    test batches of a large run are not larger than a small run's (64 images of 512 px made the
    step grow with the films: 6.6 GB at 80 full-size films, 8.7 GB at 400)."""
    assert landmarks.eval_batch((96, 96, 1)) == 64
    assert landmarks.eval_batch((512, 512, 1)) == 8
    part = np.array(["val"] * 20)
    task, _ = _task(np.zeros((20, 512, 512, 1), np.float32), part)
    assert [len(b[0]) for b in task.build_inputs("val")] == [8, 8, 4]


def _task(x, part, batch=3, seed=5):
    import tensorflow as tf

    from tf_boneage.training.config import LandmarkConfig

    cfg = LandmarkConfig(size=x.shape[1], batch_size=batch, seed=seed)
    y = np.arange(len(x) * 6, dtype=np.float32).reshape(-1, 6) / (6 * len(x))
    strategy = tf.distribute.get_strategy()
    return landmarks.LandmarkTask(cfg, strategy, x, y, part), y


def test_landmark_batches_read_from_disk_match_the_in_memory_ones(tmp_path):
    """The streamed training batches are the rows of the in-memory version's shuffle, in the
    same order (a known answer: row k carries the label k), and validation keeps file order."""
    import tensorflow as tf

    n = 20
    from tf_boneage.data.rowfile import RowFile

    x = np.random.default_rng(1).random((n, 8, 8, 1), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    part = np.array(["train"] * 14 + ["val"] * 6)
    task, y = _task(RowFile(tmp_path / "x.npy"), part)
    train_idx = np.flatnonzero(part == "train")
    expected = tf.data.Dataset.from_tensor_slices(train_idx).shuffle(1000, seed=5 + 2)
    order = [int(i) for i in expected]
    got = [(im.numpy(), pt.numpy()) for im, pt, _ in task.build_inputs("train", epoch=2)]
    assert len(got) == 14 // 3  # drop_remainder
    for b, (im, pt) in enumerate(got):
        rows = order[3 * b : 3 * b + 3]
        np.testing.assert_array_equal(im, x[rows])
        np.testing.assert_array_equal(pt, y[rows])
    val = list(task.build_inputs("val"))
    np.testing.assert_array_equal(np.concatenate([v[0] for v in val]), x[14:])


def test_landmark_training_inputs_hold_one_batch_not_all_films(tmp_path):
    """Peak traced memory of one epoch of training batches over 40 and over 400 rows of 64 px
    on disk: the same (the old ``from_tensor_slices`` of the whole array copied it twice)."""
    from tf_boneage.data.rowfile import RowWriter

    def epoch(n):
        writer = RowWriter(tmp_path / f"x{n}.npy", (n, 64, 64, 1))
        writer.write(np.full((n, 64, 64, 1), 0.5, np.float32))
        task, _ = _task(writer.close(), np.array(["train"] * n), batch=4)

        def go():
            for _ in task.build_inputs("train"):
                pass

        return go

    epoch(8)()
    few, many = _peak_mb(epoch(40)), _peak_mb(epoch(400))
    assert many < 1.5 * few + 1, (few, many)


def test_predict_rows_reads_in_batches_and_keeps_the_order():
    class Half:
        output_shape = (None, 6)

        def predict_on_batch(self, x):
            assert len(x) <= 4
            return np.repeat(x.reshape(len(x), -1)[:, :1], 6, axis=1) / 2

    x = np.arange(10, dtype=np.float32).reshape(10, 1, 1, 1)
    got = landmarks.predict_rows(Half(), x, np.array([9, 2, 5, 0, 7, 1]), batch=4)
    np.testing.assert_array_equal(got[:, 0], [4.5, 1, 2.5, 0, 3.5, 0.5])
    assert landmarks.predict_rows(Half(), x, np.array([], int)).shape == (0, 6)
