"""The shipped model: found in a checkout and where a wheel installs it, named by every run,
never replaced by the demo's phantom model, intact (its files' SHA-256 as recorded)."""

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from cli_run import run_cli
from tiny_graph import _images

from tf_boneage.export import saved_model, shipped
from tf_boneage.inference import batch

ROOT = Path(__file__).resolve().parents[1]
TRAINING = {
    "preset": "rsna100",
    "data": shipped.TRAINING_DATA["rsna100"],
    "counts": {"train": 10464, "val": 500, "test": 500},
}


def _install(exported, root: Path, version: str, **meta) -> Path:
    """A copy of the tiny export as ``root/boneage_rsna100/version`` with ``meta`` merged into
    its metadata."""
    dest = root / shipped.NAME / version
    shutil.copytree(exported[1], dest)
    path = dest / "assets.extra" / saved_model.METADATA_FILE
    path.write_text(json.dumps({**json.loads(path.read_text()), **meta}))
    return dest


@pytest.fixture
def installed(exported, tmp_path, monkeypatch):
    """The tiny export installed as the shipped model in the second of two search roots."""
    share = tmp_path / "share"
    _install(exported, share, "1", training=TRAINING)
    monkeypatch.setattr(shipped, "roots", lambda: [tmp_path / "checkout", share])
    return share


def test_locate_takes_the_newest_version_of_the_first_root_that_has_one(
    exported, installed, tmp_path
):
    assert shipped.locate() == installed / shipped.NAME / "1"
    _install(exported, installed, "2", training=TRAINING)
    assert shipped.locate() == installed / shipped.NAME / "2"
    _install(exported, tmp_path / "checkout", "1", training=TRAINING)
    assert shipped.locate() == tmp_path / "checkout" / shipped.NAME / "1"


def test_locate_names_every_place_it_searched(tmp_path, monkeypatch):
    monkeypatch.setattr(shipped, "roots", lambda: [tmp_path / "a", tmp_path / "b"])
    with pytest.raises(FileNotFoundError) as err:
        shipped.locate()
    assert str(tmp_path / "a" / shipped.NAME) in str(err.value)
    assert str(tmp_path / "b" / shipped.NAME) in str(err.value)
    r = run_cli("predict", tmp_path / "x.png", "--sex", "F")
    assert r.returncode == 2 and "not installed" in r.stderr


def test_describe_names_model_version_data_and_resolution():
    meta = {"training": TRAINING, "input_size": [100, 100]}
    line = shipped.describe(Path("/m/boneage_rsna100/1"), meta)
    assert line == (
        "model boneage_rsna100 version 1: RSNA 2017 training films, 100 px copy "
        "(10,464 films); films resized to 100x100 px (/m/boneage_rsna100/1)"
    )
    native = shipped.describe(Path("/m/boneage_paper/3"), {"preset": "paper"})
    assert native.endswith("RSNA 2017 training films at full size; films at native size "
                           "(/m/boneage_paper/3)")  # fmt: skip


@pytest.mark.slow
def test_predict_without_model_uses_the_shipped_one_and_says_so(installed, tmp_path):
    import cv2

    film = tmp_path / "film.png"
    cv2.imwrite(str(film), _images(1, seed=2)[0])
    r = run_cli("predict", film, "--sex", "F")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "model boneage_rsna100 version 1: RSNA 2017 training films" in r.stderr
    assert str(installed / shipped.NAME / "1") in r.stderr
    assert "film.png" in r.stdout and "WARNING" not in r.stderr
    # the Python API: the same model, the same answer
    rows = batch.predict_files([film], sex="F")
    assert len(rows) == 1 and rows[0]["file"] == str(film)
    assert rows[0]["status"] in ("ok", "rejected")


def test_a_phantom_trained_model_given_by_hand_is_flagged(exported, tmp_path, capsys):
    demo = _install(exported, tmp_path / "demo_models", "1", preset="synthetic")
    assert shipped.resolve(demo) == demo
    err = capsys.readouterr().err
    assert "synthetic hand phantoms" in err
    assert "WARNING" in err and "trained on synthetic phantoms" in err
    assert shipped.resolve(demo, say=None) == demo  # silent on request
    assert capsys.readouterr().err == ""


def test_the_demo_writes_its_models_beside_its_run_not_into_saved_models():
    from tf_boneage import cli

    args = cli.build_parser().parse_args(["demo"])
    assert args.models is None  # demo.run: OUT/saved_models


@pytest.mark.slow
def test_a_wheel_carries_the_shipped_model_where_locate_looks(tmp_path):
    """Built from a copy of the checkout holding a stand-in model (the wheel's layout does not
    depend on what the model is)."""
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".git", ".venv", "runs", "saved_models", "*.egg-info", "build", "__pycache__"))  # fmt: skip
    stand_in = src / "saved_models" / shipped.NAME
    version = shipped.locate().name  # the version setup.cfg packs: the checkout's
    files = [f"{version}/{f}" for f in ("saved_model.pb", "fingerprint.pb",
             "variables/variables.index", "assets.extra/tf_boneage.json")] + ["MODEL_CARD.md"]  # fmt: skip
    for rel in files:
        (stand_in / rel).parent.mkdir(parents=True, exist_ok=True)
        (stand_in / rel).write_text(rel)
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
           "-w", str(tmp_path / "dist"), str(src)]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True, timeout=300)
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    share = [n.split(".data/data/", 1)[1] for n in names if ".data/data/" in n]
    want = {(shipped.SHARE / shipped.NAME / r).as_posix() for r in files}
    assert want == set(share)


def test_an_export_of_another_format_is_refused_with_the_command_that_remakes_it(
    exported, tmp_path
):
    old = _install(exported, tmp_path / "old", "1", format=None)
    with pytest.raises(ValueError, match="format None .*training/export.py"):
        shipped.resolve(old, say=None)
    r = run_cli("predict", tmp_path / "x.png", "--model", old, "--sex", "F")
    assert r.returncode == 2 and "export it again" in r.stderr


def test_roots_of_a_checkout_and_of_a_prefix_install(tmp_path):
    checkout = tmp_path / "repo"
    (checkout / "tf_boneage" / "export").mkdir(parents=True)
    (checkout / "setup.cfg").write_text("")
    here = checkout / "tf_boneage" / "export" / "shipped.py"
    assert shipped.roots(here)[0] == checkout / "saved_models"
    prefix = tmp_path / "prefix"
    here = prefix / "lib" / "python3.11" / "site-packages" / "tf_boneage" / "export" / "shipped.py"
    found = shipped.roots(here)
    assert prefix / shipped.SHARE in found and checkout / "saved_models" not in found
