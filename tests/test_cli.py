import subprocess
import sys

import pandas as pd


def _run(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "tf_boneage.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
    )


def test_synth_command_writes_dataset_and_refuses_to_overwrite(tmp_path):
    out = tmp_path / "ds"
    r = _run(
        "synth", "--out", str(out), "--n", "12", "--size", "48x40", "--holdout", "val=2,test=2"
    )
    assert r.returncode == 0, r.stderr
    assert "wrote 12 phantoms of 48x40 px" in r.stdout
    m = pd.read_csv(out / "manifest.csv")
    assert len(m) == 12 and (out / m["image_path"][0]).is_file()
    before = (out / "manifest.csv").read_bytes()
    r = _run("synth", "--out", str(out), "--n", "5")
    assert r.returncode == 2 and "--overwrite" in r.stderr
    assert (out / "manifest.csv").read_bytes() == before


def test_bad_arguments_are_reported_by_argparse(tmp_path):
    r = _run("synth", "--size", "big")
    assert r.returncode == 2 and "size 'big'" in r.stderr
    r = _run("manifest", "--out", str(tmp_path / "m.csv"), "--holdout", "val")
    assert r.returncode == 2 and "NAME=COUNT" in r.stderr


def test_lenient_manifest_writes_report(tmp_path, synth_dir):
    images = synth_dir / "images"
    csv = tmp_path / "labels.csv"
    csv.write_text("id,boneage,male\nsyn000000,100,True\nsyn000001,abc,True\nmissing,5,F\n")
    r = _run(
        "manifest",
        "--csv",
        str(csv),
        "--images",
        str(images),
        "--out",
        str(tmp_path / "m.csv"),
        "--lenient",
    )
    assert r.returncode == 0, r.stderr
    assert len(pd.read_csv(tmp_path / "m.csv")) == 1
    report = pd.read_csv(tmp_path / "m.skipped.csv")
    assert report["id"].astype(str).tolist() == ["syn000001", "missing"]
    assert report["line"].tolist() == [3, 4]
