"""``tf-boneage predict`` with its real argument parsing, on a tiny export: in this process
through ``cli.main`` (the SavedModel loaded once), and once as a user runs it (a subprocess)."""

import json
import subprocess
import sys

import cv2
import numpy as np
import pandas as pd
import pytest
from cli_run import run_cli
from test_io import _dicom
from tiny_graph import _images

from tf_boneage.inference import predict
from tf_boneage.inference.gp_standards import gp_sd, sds


@pytest.fixture(scope="session")
def model(exported):
    """The pytest session's tiny export (tests/conftest.py)."""
    return exported[1]


@pytest.fixture
def inputs(tmp_path):
    """A folder with sub-folders: PNG 8 / 16 bit, JPEG, an inverted PNG, a corrupt file in the
    middle, DICOM with and without PatientSex."""
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    imgs = _images(4, seed=5)
    cv2.imwrite(str(folder / "a_8bit.png"), imgs[0])
    cv2.imwrite(str(folder / "sub" / "b_16bit.png"), imgs[1].astype(np.uint16) * 257)
    cv2.imwrite(str(folder / "c.jpg"), imgs[2])
    (folder / "d_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    cv2.imwrite(str(folder / "e_inverted.png"), 255 - imgs[3])
    _dicom(folder / "sub" / "f_male.dcm", imgs[0].astype(np.uint16) * 200, sex="M")
    _dicom(folder / "sub" / "g_nosex.dcm", imgs[1].astype(np.uint16) * 200, sex=None)
    (folder / "notes.txt").write_text("not an image")  # ignored inside folders
    return folder


def _predict_process(*args):
    return subprocess.run(
        [sys.executable, "-m", "tf_boneage.cli", "predict", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=600,
    )


def _predict(*args):
    return run_cli("predict", *args)


def test_folder_without_sex_uses_dicom_sex_and_reports_the_rest(model, inputs, tmp_path):
    out = tmp_path / "r.csv"
    r = _predict_process(inputs, "--model", model, "--out", out)
    assert r.returncode == 0, r.stderr[-2000:]
    table = pd.read_csv(out)
    assert list(table.columns) == list(predict.COLUMNS)
    assert len(table) == 7  # every image file, the .txt ignored
    by = {
        p.split("/")[-1]: row
        for p, row in zip(table["file"], table.to_dict("records"), strict=True)
    }
    male = by["f_male.dcm"]
    assert male["status"] in ("ok", "rejected") and male["sex"] == "M"
    assert male["sex_source"] == "DICOM PatientSex"
    # birth 2010-01-01, study 2020-06-15: 3818 days = 125.44 months
    assert male["chronological_age_months"] == pytest.approx(3818 / 30.4375)
    assert male["ba_minus_ca_months"] == pytest.approx(
        male["bone_age_months"] - male["chronological_age_months"], abs=0.02
    )
    assert male["interval_low_months"] < male["bone_age_months"] < male["interval_high_months"]
    for name in ("a_8bit.png", "b_16bit.png", "c.jpg", "g_nosex.dcm"):
        assert by[name]["status"] == "error" and "--sex" in by[name]["reason"]
    assert by["d_corrupt.png"]["status"] == "error"
    assert "d_corrupt.png" in r.stderr


def test_sex_flag_corrupt_file_in_the_middle_json_and_overwrite(model, inputs, tmp_path):
    out = tmp_path / "r.json"
    r = _predict(
        inputs,
        "--model",
        model,
        "--sex",
        "F",
        "--chronological-age",
        "10y6m",
        "--out",
        out,
        "--overlay",
        tmp_path / "ov",
        "--batch",
        "3",
    )
    assert r.returncode == 0, r.stderr[-2000:]
    doc = json.loads(out.read_text())
    assert doc["model"] == str(model)
    meta = json.loads((model / "assets.extra" / "tf_boneage.json").read_text())
    assert doc["chain"] == meta["chain"] and doc["chain"]["frame"] == [104, 80]  # read back
    rows = {x["file"].split("/")[-1]: x for x in doc["results"]}
    assert all(set(x) == set(predict.COLUMNS) for x in doc["results"])
    assert rows["d_corrupt.png"]["status"] == "error"
    good = [n for n in rows if n != "d_corrupt.png"]
    assert all(rows[n]["status"] in ("ok", "rejected") for n in good)  # others not lost
    assert rows["f_male.dcm"]["sex"] == "M"  # the file's own sex wins over --sex, flagged
    assert "--sex F ignored: the DICOM says M" in rows["f_male.dcm"]["flags"]
    assert rows["a_8bit.png"]["sex"] == "F" and rows["a_8bit.png"]["sex_source"] == "--sex"
    assert rows["a_8bit.png"]["chronological_age_months"] == 126
    assert "inverted image: fixed" in rows["e_inverted.png"]["flags"]
    # the inverted file, once fixed, gives the same answer as its positive twin would
    assert rows["a_8bit.png"]["sds_greulich_pyle"] == pytest.approx(
        (rows["a_8bit.png"]["bone_age_months"] - 126) / gp_sd(126, False), abs=0.01
    )
    overlays = sorted(p.name for p in (tmp_path / "ov").iterdir())
    aged = [n for n in good if rows[n]["bone_age_months"] is not None]
    assert aged == [n for n in good if rows[n]["status"] == "ok"]  # QC-rejected: no age
    assert len(overlays) == len(aged)  # an overlay per image with an age
    assert "a_8bit_overlay.png" in overlays or rows["a_8bit.png"]["status"] == "rejected"
    img = cv2.imread(str(tmp_path / "ov" / overlays[0]))
    assert img.shape[1] > img.shape[0]  # three panels side by side
    before = out.read_text()
    again = _predict(inputs, "--model", model, "--sex", "F", "--out", out)
    assert again.returncode == 2 and "exists" in again.stderr
    assert out.read_text() == before  # nothing overwritten
    third = _predict(
        inputs / "a_8bit.png", "--model", model, "--sex", "m", "--out", out, "--overwrite"
    )
    assert third.returncode == 0 and len(json.loads(out.read_text())["results"]) == 1


def test_bad_arguments_are_refused_before_any_work(model, tmp_path):
    r = _predict(tmp_path, "--model", model, "--chronological-age", "ten years")
    assert r.returncode == 2 and "10y6m" in r.stderr
    r = _predict(tmp_path, "--model", model)
    assert r.returncode == 2 and "no image or DICOM files" in r.stderr
    r = _predict(tmp_path, "--model", tmp_path / "nothing")
    assert r.returncode == 2 and "no SavedModel versions" in r.stderr
    r = _predict(tmp_path, "--model", model, "--out", tmp_path / "r.txt")
    assert r.returncode == 2 and ".csv or .json" in r.stderr


@pytest.mark.parametrize(
    ("text", "months"),
    [
        ("126", 126.0),
        ("10y6m", 126.0),
        ("10y", 120.0),
        ("1.5y", 18.0),
        ("7m", 7.0),
        ("10 y 6 m", 126.0),
    ],
)
def test_parse_age(text, months):
    assert predict.parse_age(text) == months


def test_greulich_pyle_sds_by_hand():
    # boys at 120 months: SD 9.79; halfway between 120 (9.79) and 132 (10.09): 9.94
    assert gp_sd(120, True) == pytest.approx(9.79)
    assert gp_sd(126, True) == pytest.approx(9.94)
    assert gp_sd(1, False) == pytest.approx(0.72)  # clamped at the ends
    assert sds(130.0, 120.0, True) == pytest.approx(10 / 9.79)
    assert predict.years_months(126.4) == "10y 6m"
    assert predict.months_between("20100101", "20110101") == pytest.approx(365 / 30.4375)


def test_qc_reasons():
    assert predict.qc_reason(0.01, 1.0).startswith("not a hand radiograph: no hand found")
    assert "2 of 4 checks failed" in predict.qc_reason(0.3, 0.5)
    assert predict.qc_reason(0.3, 1.0) == ""
    # a registration below the outline threshold is rejected, even with plausible landmarks
    reason = predict.qc_reason(0.3, 1.0, fit=0.41, fit_ok=False)
    assert reason.startswith("registration failed") and "fit 0.41" in reason
    # no hand at all is said first
    assert predict.qc_reason(0.01, 1.0, 0.0, False).startswith(
        "not a hand radiograph: no hand found"
    )
    # one film's graph outputs: the graph's own decisions, whatever this module's defaults say
    good = {"mask_area": 0.3, "landmark_plausibility": 1.0, "registration_fit": 0.8}
    good |= {k: 1.0 for k in ("registration_ok", "sharpness_ok", "exposure_ok", "mask_ok")}
    good |= {k: 1.0 for k in ("landmarks_ok", "content_ok", "grey_range_ok", "certainty_ok")}
    good |= {"sharpness": 0.6, "black_share": 0.0, "content_match": 0.9, "grey_range": 0.5}
    assert predict.reason_of(good) == ""
    bad_fit = {**good, "registration_fit": 0.5, "registration_ok": 0.0}
    assert predict.reason_of(bad_fit).startswith("registration failed")
    small = {**good, "mask_area": 0.02, "landmark_plausibility": 0.5}
    assert predict.reason_of(small) == ""  # the graph's limits said yes
    held = {**good, "mask_ok": 0.0}
    assert predict.reason_of(held).startswith("not a hand radiograph: no hand found")
    assert "checks failed" in predict.reason_of({**good, "landmarks_ok": 0.0})


def test_orientation_flags():
    assert predict.orientation_flags({"quarter_turns": 0.0, "inverted": 0.0}) == []
    flags = predict.orientation_flags({"quarter_turns": 3.0, "inverted": 1.0})
    assert flags == [
        "film turned 270 degrees: corrected",
        "film stored inverted (white background): corrected",
    ]


def test_interval_coverage_by_hand_and_script(model, tmp_path):
    from tf_boneage.export.calibration import coverage
    from tf_boneage.training.evaluation import coverage_main

    r = coverage([0, 0, 0, 0], [1, 2, 3, 10], [2, 2, 2, 2])
    assert r["mae"] == 4.0 and r["coverage_68"] == 0.5 and r["coverage_90"] == 0.75
    rows = []
    for k, img in enumerate(_images(4, seed=9)):
        p = tmp_path / f"i{k}.png"
        cv2.imwrite(str(p), img)
        rows.append(
            {
                "id": f"i{k}",
                "image_path": str(p),
                "boneage": 60.0 + 30 * k,
                "male": k % 2 == 0,
                "split": "test",
            }
        )
    pd.DataFrame(rows).to_csv(tmp_path / "m.csv", index=False)
    assert (
        coverage_main(
            [
                "--model",
                str(model),
                "--manifest",
                str(tmp_path / "m.csv"),
                "--out",
                str(tmp_path / "c.json"),
            ]
        )
        == 0
    )
    doc = json.loads((tmp_path / "c.json").read_text())
    assert doc["all"]["n"] == 4 and doc["male"]["n"] == 2
    assert 0.0 <= doc["all"]["coverage_68"] <= doc["all"]["coverage_90"] <= 1.0
    # against an offline table holding the model's own estimates of three of the films, one
    # member 2 months off on every film: agreement film by film
    from tf_boneage.export import load
    from tf_boneage.export.calibration import predict_rows

    table = pd.DataFrame(rows)
    out = predict_rows(load.saved_model(model).signatures["serving_default"], table)
    names = [f"m{j}" for j in range(out["member_months"].shape[1])]
    offline = table[["id", "boneage", "male", "split"]].assign(final=out["bone_age_months"])
    for j, name in enumerate(names):
        offline[name] = out["member_months"][:, j] + (2.0 if j == 0 else 0.0)
    (tmp_path / "t" / "region").mkdir(parents=True)
    offline.drop(index=3).to_csv(tmp_path / "t" / "region" / "ensemble_predictions.csv")
    (tmp_path / "t" / "region" / "ensembles.json").write_text(
        json.dumps({"final": {"models": names}})
    )
    args = ["--model", str(model), "--manifest", str(tmp_path / "m.csv"), "--out",
            str(tmp_path / "c2.json"), "--offline", str(tmp_path / "t")]  # fmt: skip
    assert coverage_main(args) == 0
    agree = json.loads((tmp_path / "c2.json").read_text())["offline"]
    assert agree["n"] == 3 and agree["not_in_table"] == 1
    assert agree["ensemble_mean_abs_difference"] < 1e-4 and abs(agree["mae_difference"]) < 1e-4
    assert agree["members"]["m0"] == pytest.approx(2.0, abs=1e-4)
    assert all(agree["members"][n] < 1e-4 for n in names[1:])


def test_signed_heat_colours_by_hand():
    from tf_boneage.inference.predict import signed_heat

    grey = np.full((1, 3, 3), 100, np.uint8)
    heat = np.array([[1.0, -0.5, 0.0]])
    got = signed_heat(grey, heat, strength=0.6).astype(int)
    # +1: 0.4 * 100 + 0.6 * red (BGR 0, 0, 255); -0.5: 0.7 * 100 + 0.3 * blue; 0: unchanged
    assert got[0, 0].tolist() == [40, 40, 40 + 153]
    assert got[0, 1].tolist() == [70 + 76, 70, 70]
    assert got[0, 2].tolist() == [100, 100, 100]


def test_overlay_is_drawn_from_what_the_model_answered(model, tmp_path):
    """The overlay's age, landmarks and input panel come from the SavedModel's own answer for
    the same bytes ``serving_default`` got (no second decode or resize in ``predict``)."""
    import tensorflow as tf

    loaded = tf.saved_model.load(str(model))
    path = tmp_path / "x.png"
    cv2.imwrite(str(path), _images(1, seed=11)[0])
    item = predict.prepare(path, "F", None)
    served = predict.run_model(loaded, [item])[0]
    png, age = predict.overlay(loaded, item, tmp_path / "ov" / "x_overlay.png")
    assert png.is_file() and cv2.imread(str(png)).shape[1] > cv2.imread(str(png)).shape[0]
    assert age == pytest.approx(float(served["bone_age_months"]), abs=1e-4)
    ex = loaded.signatures["explain_bytes"](
        image_bytes=tf.constant([item.png]), male=tf.constant([0.0])
    )
    np.testing.assert_allclose(ex["landmarks"].numpy()[0], served["landmarks"], atol=1e-5)
    decoded = loaded.signatures["decode"](image_bytes=tf.constant([item.png]))
    np.testing.assert_array_equal(ex["images"].numpy(), decoded["images"].numpy())
