"""Augmentation in the train step: the same tensors as the tf.data pipeline made for the same
seeds (also when a batch is split over replicas), the ops on the replicas' devices and none in
the tf.data graph."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from tf_boneage.data import augment, manifest, pipeline
from tf_boneage.data.augment import AffineRange, Degradation


@pytest.fixture(scope="module")
def table(synth_dir):
    return manifest.load_manifest(synth_dir / "manifest.csv")


def _cfg(device: bool, **kw):
    base = dict(
        image_size=(32, 24),
        batch_size=8,
        seed=4,
        augment=True,
        affine=AffineRange(20, (0.9, 1.1), 0.05, 0.5),
        degrade=Degradation(underexposed=0.5, blurred=0.5),
        deterministic=True,
        device_augment=device,
    )
    base.update(kw)
    return pipeline.PipelineConfig(**base)


def _halves(x, n):
    """The first ``n`` rows and the rest of every tensor of a nest (two replicas' shares)."""
    first = tf.nest.map_structure(lambda t: t[:n], x)
    second = tf.nest.map_structure(lambda t: t[n:], x)
    return first, second


@pytest.mark.parametrize("stage", ["segmentation", "landmark", "region"])
def test_the_train_step_augments_as_the_pipeline_did(table, stage):
    """The same stateless draws and the same ops: equal within float rounding (1e-5 of the
    grey range; a batch split in two inverts its warp matrices in smaller batches, which
    rounds differently by up to 5e-6)."""
    build = getattr(pipeline, f"{stage}_dataset")
    host = list(build(table, _cfg(False)).take(3))
    device = list(build(table, _cfg(True)).take(3))
    augmenter = pipeline.augmenter_of(_cfg(True))
    for (hx, hy), (dx, dy, aug) in zip(host, device, strict=True):
        image = dx["image"] if stage == "region" else dx
        batch = {"image": image}
        if stage == "segmentation":
            batch["mask"] = dy
        if stage == "landmark":
            batch["landmarks"] = dy
        seed, rows = augment.rows_of(aug)
        out = augmenter(batch, seed, rows)
        want = hx["image"] if stage == "region" else hx
        np.testing.assert_allclose(out["image"].numpy(), want.numpy(), atol=1e-6)
        if stage != "region":
            np.testing.assert_allclose(out[list(batch)[1]].numpy(), hy.numpy(), atol=1e-6)
        # two replicas, each with its share of the rows, make the same tensors
        parts = []
        for part_batch, part_aug in zip(_halves(batch, 3), _halves(aug, 3), strict=True):
            s, r = augment.rows_of(part_aug)
            parts.append(augmenter(part_batch, s, r)["image"].numpy())
        np.testing.assert_allclose(np.concatenate(parts), want.numpy(), atol=1e-5)


def test_an_empty_share_of_a_batch_draws_nothing():
    batch = augment.attach_rows({"image": tf.zeros([4, 8, 8, 1])}, tf.constant([1, 2]))
    empty = tf.nest.map_structure(lambda t: t[:0], batch)
    seed, rows = augment.rows_of(empty["aug"])
    out = augment.BatchAugmenter()({"image": empty["image"]}, seed, rows)
    assert out["image"].shape == (0, 8, 8, 1)


def _ops(graph_def) -> set[str]:
    ops = {n.op for n in graph_def.node}
    for fn in graph_def.library.function:
        ops |= {n.op for n in fn.node_def}
    return ops


def test_the_tf_data_graph_holds_no_augmentation_when_the_step_does(table):
    from tensorflow.core.framework import graph_pb2

    def ops_of(ds):
        graph = graph_pb2.GraphDef()
        graph.ParseFromString(ds._as_serialized_graph().numpy())
        return _ops(graph)

    assert "ImageProjectiveTransformV3" in ops_of(pipeline.region_dataset(table, _cfg(False)))
    on_device = ops_of(pipeline.region_dataset(table, _cfg(True)))
    assert not {"ImageProjectiveTransformV3", "DepthwiseConv2dNative"} & on_device


SCRIPT = textwrap.dedent(
    """
    import json, sys
    import tensorflow as tf
    from tf_boneage.training import runtime
    runtime.split_cpu(2)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    from tf_boneage.data import manifest
    from tf_boneage.training import config as config_lib
    from tf_boneage.training.region import RegionTask
    rows = manifest.load_manifest(sys.argv[1])
    cfg = config_lib.RegionConfig(manifest=sys.argv[1], input="raw", image_size=(32, 24),
        filters=(4, 4, 8, 8, 8, 8), dense_units=8, batch_size=4, underexposed=0.5,
        blurred=0.5)
    task = RegionTask(cfg, strategy, rows)
    with strategy.scope():
        model = task.compiled_model()
        model.optimizer.build(model.trainable_variables)
    ds = task.build_inputs("train", 0)
    dist = strategy.experimental_distribute_dataset(ds)

    @tf.function
    def step(*batch):
        return strategy.run(lambda *b: task.train_step(model, *b), args=batch)

    batch = next(iter(dist))
    graph = step.get_concrete_function(*batch).graph
    devices = sorted({op.device for op in graph.get_operations()
                      if op.type == "ImageProjectiveTransformV3"})
    step(*batch)
    print(json.dumps(devices))
    """
)


@pytest.mark.slow
def test_under_mirrored_strategy_each_replica_augments_on_its_device(synth_dir):
    r = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(synth_dir / "manifest.csv")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    import json

    devices = json.loads(r.stdout.strip().splitlines()[-1])
    assert len(devices) == 2, devices
    assert devices[0].endswith("CPU:0") and devices[1].endswith("CPU:1")


@pytest.mark.parametrize("device", [False, True])
def test_the_decoded_store_gives_the_batches_of_decoding_every_epoch(table, tmp_path, device):
    """Region crops decoded once into a uint8 store and read back by rows: the same
    shuffle, batches, seeds and pixels as decoding the PNGs; a store of other films is never
    read (its digest names other files)."""
    from tf_boneage.data import decoded

    size = (64, 64)  # the phantoms' own size: no resize, so the store is used
    cfg = dict(image_size=size, shuffle=True, deterministic=True, device_augment=device)
    plain = list(pipeline.region_dataset(table, _cfg(device, **cfg)).take(3))
    stored = list(pipeline.region_dataset(table, _cfg(device, decoded=str(tmp_path), **cfg)))
    stores = list(tmp_path.glob("decoded_64x64_*.npy"))
    assert len(stores) == 1
    for a, b in zip(plain, stored[:3], strict=True):
        tf.nest.map_structure(lambda u, v: np.testing.assert_allclose(u, v, atol=1e-6), a, b)
    # another epoch reads the same store; other films (one fewer) make another
    again = list(pipeline.region_dataset(table, _cfg(device, decoded=str(tmp_path), **cfg)))
    assert len(again) == len(stored) and len(list(tmp_path.glob("*.npy"))) == 1
    pipeline.region_dataset(table.iloc[1:], _cfg(device, decoded=str(tmp_path), **cfg))
    assert len(list(tmp_path.glob("*.npy"))) == 2
    # films that would need a resize are decoded as before, no store
    assert decoded.open_store(table["image_path"], (32, 24), tmp_path / "none") is None


@pytest.mark.slow
def test_the_gpu_smoke_check_runs_every_stage_on_the_cpu_and_says_so():
    from pathlib import Path

    bench = Path(__file__).resolve().parents[1] / "benchmarks"
    r = subprocess.run(
        [sys.executable, "gpu_smoke.py"], cwd=bench, capture_output=True, text=True, timeout=900
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "no GPU on this machine" in r.stdout
    rows = [line for line in r.stdout.splitlines() if line.startswith("| ")][1:]
    stages = [line.split("|")[1].strip() for line in rows]
    assert stages == ["segmentation", "landmarks", "orientation", "region A", "region B",
                      "region C"]  # fmt: skip
    for line in rows:  # films/s measured, the input's share in [0, 1]
        films, waiting = (float(v) for v in line.split("|")[2:4])
        assert films > 0 and 0 <= waiting <= 1
