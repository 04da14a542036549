"""Training scripts end to end on tiny synthetic sets (subprocesses, as a user runs them)."""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from tf_boneage.training import config as config_lib

ROOT = Path(__file__).resolve().parents[1]


def _run(script, *args, env=None, timeout=600):
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    return subprocess.run(
        [sys.executable, str(ROOT / "training" / script), *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
    )


def _in_process(main, *args):
    """A stage's ``main(argv)`` in this process (its refusals need no TensorFlow start-up of
    their own): returncode, stdout and stderr as :func:`_run` gives them."""
    import contextlib
    import io
    import types

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:
            code = exc.code
    return types.SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())


# ---- configs ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("region=D", "region"),
        ("head=ordinal", "head"),
        ("sex=other", "sex"),
        ("epochs=0", "epochs"),
        ("dropout=1.5", "dropout"),
        ("learning_rate=2", "learning_rate"),
        ("image_size=4x4", "image_size"),
        ("strategy=tpu", "strategy"),
        ("precision=float64", "precision"),
        ("colour=red", "colour"),
        ("batch_size=many", "batch_size"),
        ("underexposed=1.5", "underexposed"),
        ("blurred=-0.2", "blurred"),
        ("noisy=1.5", "noisy"),
        ("max_noise=1.0", "max_noise"),
    ],
)
def test_bad_config_values_name_the_key(tmp_path, override, key):
    manifest = tmp_path / "m.csv"
    manifest.write_text("id\n")
    with pytest.raises(config_lib.ConfigError, match=f"'{key}'"):
        config_lib.load(
            config_lib.RegionConfig, "synthetic", None, [f"manifest={manifest}", override]
        )


def test_config_layers_and_coercion(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text("id\n")
    yml = tmp_path / "c.yaml"
    yml.write_text("epochs: 7\nregion: B\n")
    cfg = config_lib.load(
        config_lib.RegionConfig,
        "rsna100",
        str(yml),
        [f"manifest={manifest}", "image_size=48x64", "dropout=0.1"],
    )
    assert (cfg.epochs, cfg.region, cfg.image_size, cfg.dropout) == (7, "B", (48, 64), 0.1)
    assert cfg.batch_size == config_lib.read_preset("rsna100")["region"]["batch_size"]
    config_lib.save(cfg, tmp_path / "out" / "config.yaml")
    again = config_lib.load(config_lib.RegionConfig, None, str(tmp_path / "out" / "config.yaml"))
    assert again == cfg


def test_a_run_folder_refuses_other_settings(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text("id\n")
    cfg = config_lib.load(config_lib.RegionConfig, "rsna100", None, [f"manifest={manifest}"])
    saved = tmp_path / "run" / "config.yaml"
    config_lib.check_unchanged(cfg, saved)  # no run yet: nothing to compare
    config_lib.save(cfg, saved)
    config_lib.check_unchanged(cfg, saved)  # the same settings
    moved = dataclasses.replace(cfg, out="elsewhere", manifest="other.csv")
    config_lib.check_unchanged(moved, saved)  # where things are may change
    for key, value in (("epochs", cfg.epochs + 1), ("tta", 1), ("image_size", (48, 64))):
        with pytest.raises(config_lib.ConfigError, match=f"'{key}'.*made with {key}="):
            config_lib.check_unchanged(dataclasses.replace(cfg, **{key: value}), saved)
    # a key the saved run predates counts as its default
    text = saved.read_text().replace("bin_sigma: 12.0\n", "")
    saved.write_text(text)
    config_lib.check_unchanged(cfg, saved)
    with pytest.raises(config_lib.ConfigError, match="'bin_sigma'"):
        config_lib.check_unchanged(dataclasses.replace(cfg, bin_sigma=6.0), saved)


def test_a_run_folder_refuses_a_manifest_of_other_content(tmp_path):
    rows = "id,boneage,male,split,image_path\n1,120,1,train,a/1.png\n2,60,0,val,a/2.png\n"
    first = tmp_path / "m.csv"
    first.write_text(rows)
    cfg = config_lib.load(config_lib.RegionConfig, "rsna100", None, [f"manifest={first}"])
    saved = tmp_path / "run" / "config.yaml"
    config_lib.save(cfg, saved)
    assert (saved.parent / config_lib.DIGEST_FILE).is_file()
    # the same films elsewhere, rows in another order: the same data
    moved = tmp_path / "moved.csv"
    header, one, two = rows.replace("a/", "/data/b/").splitlines()
    moved.write_text("\n".join([header, two, one]) + "\n")
    assert config_lib.manifest_digest(moved) == config_lib.manifest_digest(first)
    config_lib.check_unchanged(dataclasses.replace(cfg, manifest=str(moved)), saved)
    # one label, one split, one film more: refused under the key `manifest`
    for text in (
        rows.replace("1,120,1", "1,121,1"),
        rows.replace("0,val", "0,test"),
        rows + "3,90,1,train,a/3.png\n",
    ):
        other = tmp_path / "other.csv"
        other.write_text(text)
        with pytest.raises(config_lib.ConfigError, match="'manifest'.*other content"):
            config_lib.check_unchanged(dataclasses.replace(cfg, manifest=str(other)), saved)


def test_bad_config_fails_before_training(synth_dir, tmp_path):
    r = _run(
        "region.py",
        "--preset",
        "synthetic",
        "--set",
        f"manifest={synth_dir / 'manifest.csv'}",
        "input=raw",
        "head=ordinal",
        f"out={tmp_path / 'r'}",
    )
    assert r.returncode == 2 and "'head'" in r.stderr
    assert not (tmp_path / "r").exists()


# ---- region script end to end, resume, distribution --------------------------------------


def _region(synth_dir, out, *extra, env=None):
    return _run(
        "region.py",
        "--preset",
        "synthetic",
        "--set",
        f"manifest={synth_dir / 'manifest.csv'}",
        "input=raw",
        "epochs=2",
        "batch_size=8",
        f"out={out}",
        *extra,
        env=env,
    )


@pytest.mark.slow
@pytest.mark.parametrize("bins", ["bin_loss_weight=0", "bin_loss_weight=2"])
def test_region_script_end_to_end(synth_dir, tmp_path, bins):
    # bin_loss_weight > 0 trains by the task's own step (MAE + bin cross-entropy)
    r = _region(synth_dir, tmp_path / "r", "sex=input", "head=classification", bins, "blurred=0.5")
    assert r.returncode == 0, r.stderr[-2000:]
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert metrics["epochs"] == 2 and metrics["val"]["all"]["n"] == 8
    assert len(metrics["blur_orders"]) == 2 and min(metrics["blur_orders"]) >= 2
    history = pd.read_csv(tmp_path / "r" / "history.csv")
    assert list(history["epoch"]) == [0, 1] and (history["loss"] > 0).all()
    preds = pd.read_csv(tmp_path / "r" / "val_predictions.csv")
    assert list(preds.columns) == ["id", "boneage", "male", "pred"]
    assert preds["pred"].between(1, 240).all()
    for name in ("config.yaml", "model.keras", "history.csv", "state.json"):
        assert (tmp_path / "r" / name).exists()
    # TensorBoard on both paths: the validation loss of each epoch, as history.csv has it
    val = _scalars(tmp_path / "r" / "tensorboard" / "validation", "epoch_loss")
    assert sorted(val) == [0, 1]
    np.testing.assert_allclose([val[0], val[1]], history["val_loss"], rtol=1e-5)
    assert sorted(_scalars(tmp_path / "r" / "tensorboard" / "train", "epoch_loss")) == [0, 1]


def _scalars(folder, tag) -> dict:
    """{step: value} of ``tag`` in the TensorBoard event files of ``folder``."""
    import tensorflow as tf

    out = {}
    for path in sorted(folder.glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                if value.tag == tag:
                    out[event.step] = float(tf.make_ndarray(value.tensor))
    return out


@pytest.mark.slow
def test_kill_and_resume_gives_the_uninterrupted_result(synth_dir, tmp_path):
    env = {"TF_BONEAGE_DETERMINISTIC": "1"}
    whole = _region(synth_dir, tmp_path / "whole", env=env)
    assert whole.returncode == 0, whole.stderr[-2000:]
    first = _region(synth_dir, tmp_path / "cut", "--stop-after", "1", env=env)
    assert first.returncode == 0 and "run again to resume" in first.stdout
    assert not (tmp_path / "cut" / "metrics.json").exists()
    second = _region(synth_dir, tmp_path / "cut", env=env)
    assert second.returncode == 0 and "resuming at epoch 2/2" in second.stdout
    a = pd.read_csv(tmp_path / "whole" / "val_predictions.csv")
    b = pd.read_csv(tmp_path / "cut" / "val_predictions.csv")
    pd.testing.assert_series_equal(a["pred"], b["pred"], atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize(
    "head", [(), ("head=classification", "bin_loss_weight=2")], ids=["fit", "own step"]
)
def test_mirrored_strategy_over_two_logical_cpus(synth_dir, tmp_path, head):
    # "own step": the bin loss trains by strategy.run over the task's step, whose optimizer
    # slots must exist before the step is traced (with two replicas it failed otherwise)
    env = {"TF_BONEAGE_CPU_DEVICES": "2"}
    r = _region(synth_dir, tmp_path / "m", "strategy=mirrored", *head, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "2 replica(s)" in r.stdout
    assert (tmp_path / "m" / "metrics.json").exists()


def _free_ports(n):
    import socket

    socks = [socket.socket() for _ in range(n)]
    for sock in socks:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in socks]
    for sock in socks:
        sock.close()
    return ports


@pytest.mark.slow
def test_two_multi_worker_processes_on_localhost_agree_on_the_weights(synth_dir, tmp_path):
    import keras
    import numpy as np

    import tf_boneage.models  # noqa: F401  (registers the custom layers)

    workers = [f"127.0.0.1:{p}" for p in _free_ports(2)]
    procs = []
    for index in range(2):
        env = dict(
            os.environ,
            TF_CPP_MIN_LOG_LEVEL="2",
            TF_CONFIG=json.dumps(
                {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
            ),
        )
        cmd = [
            sys.executable,
            str(ROOT / "training" / "region.py"),
            "--preset",
            "synthetic",
            "--set",
            f"manifest={synth_dir / 'manifest.csv'}",
            "input=raw",
            "epochs=1",
            "batch_size=8",
            "max_train=16",
            "strategy=multi-worker",
            f"out={tmp_path / 'mw'}",
        ]
        procs.append(
            subprocess.Popen(
                cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
        )
    outputs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err[-2000:]
        assert "2 replica(s)" in out and "epoch 1/1 - loss" in out
    chief = tmp_path / "mw"
    other = chief / "worker1"  # the non-chief keeps its own copy
    assert (chief / "metrics.json").exists() and (other / "metrics.json").exists()
    a = keras.saving.load_model(chief / "checkpoint.keras")
    b = keras.saving.load_model(other / "checkpoint.keras")
    # gradients are all-reduced: the trained weights are identical on both workers
    for x, y in zip(a.trainable_weights, b.trainable_weights, strict=True):
        np.testing.assert_array_equal(x.numpy(), y.numpy())
    # and they did move from the initialisation
    assert a.optimizer.iterations.numpy() == 1
    # batch-norm moving statistics are per worker until the final recalibration equalises them
    fa = keras.saving.load_model(chief / "model.keras").get_weights()
    fb = keras.saving.load_model(other / "model.keras").get_weights()
    for x, y in zip(fa, fb, strict=True):
        np.testing.assert_allclose(x, y, atol=1e-6)


# ---- helpers of the real-data scripts, by hand ---------------------------------------------


def test_segmentation_quality_filter():
    import numpy as np

    from tf_boneage.training.segmentation import quality_filter

    mask = np.zeros((100, 100), np.uint8)
    mask[20:90, 30:70] = 1  # 28 % of the image, 70 % of its height
    prob = mask * 0.95
    assert quality_filter(mask, prob)
    assert not quality_filter(mask, mask * 0.6)  # not confident
    small = np.zeros_like(mask)
    small[40:50, 40:50] = 1
    assert not quality_filter(small, small * 0.99)  # 1 % area
    noisy = prob.copy()
    noisy[:10, :] = 0.9  # confident pixels the cleanup discarded
    assert not quality_filter(mask, noisy)


def test_landmark_errors_by_hand():
    import numpy as np

    from tf_boneage.training.landmarks import errors

    rows = pd.DataFrame(
        {
            "tip_x": [0.5],
            "tip_y": [0.1],
            "thumb_x": [0.8],
            "thumb_y": [0.4],
            "capitate_x": [0.5],
            "capitate_y": [0.7],
            "orig_w": [750.0],
            "orig_h": [1000.0],
        }
    )
    pred = np.array([[0.5, 0.13, 0.8, 0.4, 0.54, 0.7]])  # tip 3 % down, capitate 4 % right
    e = errors(pred, rows, 100)
    assert e["tip"]["px_input"] == pytest.approx(3.0)
    assert e["tip"]["px_original"] == pytest.approx(30.0)  # 0.03 * 1000
    assert e["capitate"]["px_original"] == pytest.approx(30.0)  # 0.04 * 750
    assert e["tip"]["pct_tip_capitate"] == pytest.approx(100 * 30.0 / 600.0)  # axis 0.6 * 1000
    assert e["thumb"]["px_input"] == 0.0
    assert errors(pred, rows, 512)["tip"]["px_input"] == pytest.approx(0.03 * 512)


def test_labelled_rows_take_each_films_own_size(tmp_path):
    """Films of several sizes (the paper phantoms): each row's ``orig_w`` / ``orig_h`` from its
    own header, a size the manifest gives is kept."""
    import numpy as np

    from tf_boneage.data import io
    from tf_boneage.training.landmarks import labelled_rows

    paths = []
    for k, (h, w) in enumerate([(30, 20), (50, 40), (64, 48)]):
        paths.append(tmp_path / f"{k}.png")
        io.write_png(paths[-1], np.zeros((h, w), np.float32))
    marks = {c: [0.5] * 3 for c in ("tip_x", "tip_y", "thumb_x", "thumb_y")}
    marks.update(capitate_x=[0.5] * 3, capitate_y=[0.7] * 3)
    table = pd.DataFrame({"image_path": [str(p) for p in paths], "split": ["train"] * 3, **marks})
    rows = labelled_rows(table, 0)
    assert rows["orig_w"].tolist() == [20.0, 40.0, 48.0]
    assert rows["orig_h"].tolist() == [30.0, 50.0, 64.0]
    given = labelled_rows(table.assign(orig_w=[200.0, None, None], orig_h=[300.0, None, None]), 0)
    assert given["orig_w"].tolist() == [200.0, 40.0, 48.0]
    assert given["orig_h"].tolist() == [300.0, 50.0, 64.0]


@pytest.mark.slow
def test_segmentation_and_landmark_scripts_on_the_synthetic_default(synth_dir, tmp_path):
    seg = _run(
        "segmentation.py",
        "--preset",
        "synthetic",
        "--set",
        f"manifest={synth_dir / 'manifest.csv'}",
        f"out={tmp_path / 'seg'}",
        "size=32",
        "rounds=2",
        "epochs=1",
        "batch_size=8",
        "strategy=mirrored",
        env={"TF_BONEAGE_CPU_DEVICES": "2"},
    )
    assert seg.returncode == 0, seg.stderr[-2000:]
    report = json.loads((tmp_path / "seg" / "report.json").read_text())
    assert report["pose_images"] == {"train": 24, "val": 8, "test": 8}
    assert 0.0 <= report["round0"]["points_inside"] <= 1.0 and "round1" not in report
    assert "no further rounds" in seg.stdout
    marks = _run(
        "landmarks.py",
        "--preset",
        "synthetic",
        "--set",
        f"manifest={synth_dir / 'manifest.csv'}",
        f"unet={tmp_path / 'seg' / 'round0' / 'unet.keras'}",
        f"out={tmp_path / 'lm'}",
        "size=32",
        "epochs=2",
    )
    assert marks.returncode == 0, marks.stderr[-2000:]
    result = json.loads((tmp_path / "lm" / "report.json").read_text())
    assert result["test_images"] == 8 and result["errors"]["mean"]["px_input"] > 0
    assert (tmp_path / "lm" / "landmarks.keras").exists()
    assert (tmp_path / "seg" / "config.yaml").exists() and (
        tmp_path / "lm" / "config.yaml"
    ).exists()
    assert len(pd.read_csv(tmp_path / "lm" / "history.csv")) == 2
    from tf_boneage.training import landmarks

    bad = _in_process(
        landmarks.main,
        "--preset",
        "synthetic",
        "--set",
        f"manifest={synth_dir / 'manifest.csv'}",
        "unet=missing.keras",
    )
    assert bad.returncode == 2 and "'unet'" in bad.stderr


@pytest.mark.slow
def test_region_runs_train_two_at_a_time_in_processes_of_one_thread(demo_run, tmp_path):
    """The table's region step with ``region_workers=2`` on a copy of the demo's table (its
    cache): two runs trained at once in spawned processes of one thread, each finished with
    its predictions, metrics and log; one row of steps.csv covers both, the children's CPU
    seconds counted; a second call finds them done."""
    import re
    import shutil

    from conftest import DEMO_ARGS

    from tf_boneage.training import table as table_lib

    result, run, _ = demo_run
    assert result.returncode == 0, result.stderr[-3000:]
    out = tmp_path / "table"
    shutil.copytree(run / "table", out, ignore=shutil.ignore_patterns("region", "steps.csv"))
    manifest = run / "synth" / "manifest.csv"
    sets = list(DEMO_ARGS[DEMO_ARGS.index("--set") + 1 :])
    only = ["B_reg_male", "B_cls_male"]  # the same rows: one decoded store, written by both
    said = _in_process(
        lambda argv: table_lib.run(
            "synthetic", manifest, out, 1, only=only, sets=sets, until="regions",
            region_workers=2,
        ),
        [],
    )  # fmt: skip
    assert said.returncode is None, said.stderr[-3000:]
    for name in only:
        assert (out / "region" / name / "predictions.csv").is_file()
        assert "region B" in (out / "region" / name / "train.log").read_text()
    assert not list((out / "cache").rglob("*.partial"))
    children = re.findall(r"region (\w+): (\d+) s, (\d+) CPU s, val MAE", said.stdout)
    assert sorted(c[0] for c in children) == sorted(only), said.stdout
    steps = pd.read_csv(out / "steps.csv")
    row = steps[steps["step"] == "region networks (2, 2 at a time)"]
    assert len(row) == 1, steps
    assert float(row["cpu_seconds"].iloc[0]) >= 0.9 * sum(int(c[2]) for c in children)
    again = _in_process(
        lambda argv: table_lib.run(
            "synthetic", manifest, out, 1, only=only, sets=sets, until="regions",
            region_workers=2,
        ),
        [],
    )  # fmt: skip
    assert again.stdout.count(": done (") == 3 + len(only), again.stdout


def test_driver_resumes_the_demo_table_and_exports_it(demo_run, tmp_path):
    """training/table.py on the table the pytest session's demo trained (in process): every run of the
    demo there, every step skipped when run again by the driver; training/export.py refuses
    what does not match the cache before any work, and the export the demo made with it
    (tf_boneage.training.export.run) records the chain the cache was built with."""
    from conftest import DEMO_ARGS

    from tf_boneage.training import export
    from tf_boneage.training import table as table_lib
    from tf_boneage.training.runs import DEMO_RUNS

    result, run, models = demo_run
    assert result.returncode == 0, result.stderr[-3000:]
    out, manifest = run / "table", run / "synth" / "manifest.csv"
    runs = sorted(p.name for p in (out / "region").iterdir() if (p / "predictions.csv").exists())
    assert runs == sorted(DEMO_RUNS)
    table = json.loads((out / "region" / "table" / "table.json").read_text())
    assert table["cells"]["A|both sexes, regression"]["model"] == "A_reg_both"
    assert "raw_reg_both" in table["extra"] and "demo" in table["extra"]
    sets = DEMO_ARGS[DEMO_ARGS.index("--set") + 1 :]
    args = ["--preset", "synthetic", "--manifest", str(manifest), "--out", str(out),
            "--epochs", "1", "--only", *DEMO_RUNS, "--set", *sets]  # fmt: skip
    again = _in_process(table_lib.main, *args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count(": done (") == 3 + len(DEMO_RUNS)  # seg, landmarks, cache, runs
    # every call appends its steps' wall and CPU seconds: the demo's call, then this one
    steps = pd.read_csv(out / "steps.csv")
    assert list(steps["step"]).count("segmentation") == 2
    assert {"ensemble", "evaluate", f"region {DEMO_RUNS[0]}"} <= set(steps["step"])
    assert (steps["seconds"] >= 0).all() and (steps["cpu_seconds"] >= 0).all()
    assert "| region A |" in again.stdout
    # --until: the finished steps up to the cache, nothing after them (in process)
    log = []
    assert table_lib.run("synthetic", manifest, out, 1, sets=sets, log=log, until="cache") is None
    assert [title for title, _ in log] == ["segmentation", "landmarks", "preprocess (cache)"]
    with pytest.raises(table_lib.StepError, match="until='region'"):
        table_lib.run("synthetic", manifest, out, until="region")
    exp = ["--runs", str(out), "--preset", "synthetic", "--name", "b", "--root",
           str(tmp_path / "sm"), "--ensemble", "demo", "--manifest", str(manifest)]  # fmt: skip
    bad = _in_process(export.main, *exp, "--calibrate", "test")
    assert bad.returncode == 2 and "test split" in bad.stderr
    # a U-Net other than the one the cache recorded (chain.json): refused before any work
    other = _in_process(export.main, *exp, "--unet", str(out / "landmarks" / "landmarks.keras"))
    assert other.returncode == 2 and "not the U-Net the cache was built with" in other.stderr
    assert not (tmp_path / "sm").exists()
    # the demo's export (export.run, as the driver calls it): too few val phantoms per sex to
    # fit a scale, recorded as not fitted with its reason; no registration QC on so few films
    version = models / "boneage" / "1"
    meta = json.loads((version / "assets.extra" / "tf_boneage.json").read_text())
    assert meta["ensemble"] == "demo"
    assert "scale" not in meta["std_calibration"] and "std_error" in meta["std_calibration"]
    assert "registration_qc" not in meta["std_calibration"]
    recorded = json.loads((out / "cache" / "chain.json").read_text())  # written by the cache
    for key in ("image_size", "frame", "region_sizes", "unet_sha256", "landmarks_sha256"):
        assert meta["chain"][key] == recorded[key], key
    assert meta["chain"]["unet_size"] > 0 and meta["chain"]["landmark_size"] > 0
    assert meta["unet"] == "last round" and meta["networks"]["regions"]
    # the outline the cache's orientation step used travels into the graph
    from tf_boneage.export import load

    loaded = load.saved_model(version)
    np.testing.assert_allclose(loaded.outline.numpy(), np.load(out / "cache" / "outline.npy"))
    assert (models / "models.config").is_file()
    # --geometry-from: another run's U-Net and landmark net (other input sizes) served on
    # purpose, both sides recorded; a source without a landmark net refused before any work
    from tf_boneage.models import LandmarkNet, UNet
    from tf_boneage.preprocessing.spec import sha256

    source = tmp_path / "real"
    (source / "seg" / "round0").mkdir(parents=True)
    UNet((32, 32, 1), depth=2, base_filters=2).save(source / "seg" / "round0" / "unet.keras")
    exp_geo = [*exp, "--calibrate", "none", "--geometry-from", str(source)]
    refused = _in_process(export.main, *exp_geo)
    assert refused.returncode == 2 and "no landmark net" in refused.stderr
    assert not (tmp_path / "sm").exists()
    (source / "landmarks").mkdir()
    LandmarkNet((24, 24, 1), filters=(2, 2), dense_units=4).save(
        source / "landmarks" / "landmarks.keras"
    )
    served = _in_process(export.main, *exp_geo, "--stages")
    assert served.returncode == 0, served.stderr[-3000:]
    assert "geometry_replaced" in served.stdout + served.stderr
    version = tmp_path / "sm" / "b" / "1"
    meta = json.loads((version / "assets.extra" / "tf_boneage.json").read_text())
    record = meta["geometry_replaced"]
    assert record["served_unet_sha256"] == sha256(source / "seg" / "round0" / "unet.keras")
    assert record["cache_unet_sha256"] == recorded["unet_sha256"]
    assert record["cache_landmarks_sha256"] == recorded["landmarks_sha256"]
    assert (meta["chain"]["unet_size"], meta["chain"]["landmark_size"]) == (32, 24)
    assert meta["chain"]["frame"] == recorded["frame"]  # the rest of the chain as cached
    film = pd.read_csv(manifest)["image_path"].iloc[0]
    film = Path(film) if Path(film).is_absolute() else manifest.parent / film
    answer = load.saved_model(version).signatures["serving_default"](
        image_bytes=tf.constant([film.read_bytes()]), male=tf.constant([1.0])
    )
    assert np.isfinite(answer["bone_age_months"].numpy()).all()
    # --stages: every network as its own SavedModel, the served (replaced) U-Net among them
    stage = tf.saved_model.load(str(tmp_path / "sm" / "b_unet" / "1"))
    (spec,) = stage.signatures["serving_default"].structured_input_signature[1].values()
    assert tuple(spec.shape[1:3]) == (32, 32)
    stages = {p.parent.parent.name for p in (tmp_path / "sm").glob("b_*/1/saved_model.pb")}
    assert {"b_unet", "b_landmarks"} < stages and len(stages) >= 3  # and the region networks


def test_qc_filter_drops_implausible_training_rows_only():
    from tf_boneage.training.region import qc_filtered

    rows = pd.DataFrame(
        {
            "id": list("abcd"),
            "mask_area": [0.3, 0.3, 0.01, 0.3],
            "landmark_plausibility": [1.0, 0.75, 1.0, 0.5],
        }
    )
    assert list(qc_filtered(rows, 1.0)["id"]) == ["a"]  # d implausible, c without a hand
    assert list(qc_filtered(rows, 0.75)["id"]) == ["a", "b"]
    with pytest.raises(config_lib.ConfigError, match="train_min_plausibility"):
        qc_filtered(rows.drop(columns="mask_area"), 1.0)


@pytest.mark.slow
def test_posthoc_reproduces_a_run_and_makes_its_variants(demo_run, tmp_path):
    """``training/posthoc.py`` on a region run of the pytest session's demo: with the run's own weights
    and one view it gives the run's ``predictions.csv`` (same rows, same estimates); the
    un-recalibrated checkpoint and three test-time views give other estimates for the same
    rows, which ``tf-boneage train ablation`` compares on val."""
    from tf_boneage.training import ablation, posthoc

    result, run, _ = demo_run
    assert result.returncode == 0, result.stderr[-3000:]
    region = run / "table" / "region" / "B_reg_both"
    own = pd.read_csv(region / "predictions.csv", dtype={"id": str})
    same = posthoc.run(region, tmp_path / "same")
    assert list(same["id"]) == list(own["id"])
    np.testing.assert_allclose(same["pred"], own["pred"], atol=1e-3)
    raw = posthoc.run(region, tmp_path / "raw", weights="checkpoint")
    tta = posthoc.run(region, tmp_path / "tta", tta=3)
    for variant in (raw, tta):
        assert list(variant["id"]) == list(own["id"])
        assert np.abs(variant["pred"] - own["pred"]).max() > 1e-3
    doc = json.loads((tmp_path / "tta" / "posthoc.json").read_text())
    assert doc["tta"] == 3 and doc["weights"] == "model"
    # the variant is a region run of its own: the export would average the same 3 views
    from tf_boneage.export.end_to_end import run_tta

    assert run_tta(tmp_path / "tta") == 3 and run_tta(region) == 1
    assert (tmp_path / "tta" / "model.keras").stat().st_size == (
        region / "model.keras"
    ).stat().st_size
    assert json.loads((tmp_path / "tta" / "metrics.json").read_text())["tta"] == 3
    table = ablation.compare(
        [("base", region), ("raw", tmp_path / "raw"), ("tta", tmp_path / "tta")]
    )
    assert len(table) == 3


def test_enlargement_is_against_the_frame(tmp_path):
    """A cached crop's blur scale: the network's input over the region's box in frame pixels
    (the frame from the cache's chain.json); raw inputs and caches without one: 1."""
    from tf_boneage.preprocessing.regions import REGIONS
    from tf_boneage.training.region import enlargement

    (tmp_path / "manifest.csv").write_text("id\n")
    cfg = config_lib.RegionConfig(manifest=str(tmp_path / "manifest.csv"), region="B")
    cfg = dataclasses.replace(cfg, image_size=(48, 64))
    assert enlargement(cfg) == (1.0, 1.0)  # no chain.json
    (tmp_path / "chain.json").write_text(json.dumps({"frame": [104, 80]}))
    with pytest.raises(ValueError, match="chain.json: missing"):  # not a chain's record
        enlargement(cfg)
    from tf_boneage.preprocessing.spec import ChainSpec

    spec = ChainSpec(
        image_size=(100, 100),
        unet_size=96,
        landmark_size=96,
        frame=(104, 80),
        region_sizes={"B": (48, 64)},
        assume_aspect=0.74,
        unet="unet.keras",
        unet_sha256="a" * 64,
    )
    spec.write(tmp_path / "chain.json")
    y0, x0, y1, x1 = REGIONS["B"]
    want = (48 / ((y1 - y0) * 104), 64 / ((x1 - x0) * 80))  # 1.65, 1.67
    assert enlargement(cfg) == pytest.approx(want)
    assert 1.6 < want[0] < 1.7 and 1.6 < want[1] < 1.7
    whole = dataclasses.replace(cfg, region="A", image_size=(104, 80))
    assert enlargement(whole) == pytest.approx((1.0, 1.0))
    assert enlargement(dataclasses.replace(cfg, input="raw")) == (1.0, 1.0)
