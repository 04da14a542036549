"""``predict`` over whole batches: no age for what QC rejects (unless ``--force``), outputs
unique per input, ``--labels CSV`` with per-image sex and true ages; in process (``cli.main``)
on the pytest session's tiny export."""

import re
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from cli_run import run_cli
from tiny_graph import _images

from tf_boneage.inference import labels, predict


@pytest.fixture
def model(exported):
    return exported[1]


def _write(folder: Path, names, seed=7):
    folder.mkdir(parents=True, exist_ok=True)
    for name, img in zip(names, _images(len(names), seed=seed), strict=True):
        cv2.imwrite(str(folder / name), img)


# --- QC-rejected images get no age --------------------------------------------------------


def test_a_rejected_row_has_no_age_unless_forced():
    item = predict.Prepared(Path("x.png"), male=True, sex_source="--sex")
    out = {"bone_age_months": 100.0, "bone_age_std": 10.0, "mask_area": 0.01}
    out |= {"interval_low_months": 80.0, "interval_high_months": 120.0}
    out |= {"landmark_plausibility": 1.0, "registration_fit": 0.9, "content_match": 0.9}
    out |= {"sharpness": 0.6, "black_share": 0.0, "grey_range": 0.5, "mask_ok": 0.0}
    out |= {"quarter_turns": 0.0, "inverted": 0.0}
    out |= {k: 1.0 for k in ("landmarks_ok", "registration_ok", "content_ok", "sharpness_ok")}
    out |= {k: 1.0 for k in ("exposure_ok", "grey_range_ok", "certainty_ok")}
    r = predict.row(item, out)
    assert r["status"] == "rejected" and r["reason"].startswith(
        "not a hand radiograph: no hand found"
    )
    assert r["bone_age_months"] is None and r["interval_low_months"] is None
    assert r["mask_area"] == 0.01  # the QC numbers stay: they say why
    forced = predict.row(item, out, force=True, truth=90.0)
    assert forced["status"] == "rejected" and forced["bone_age_months"] == 100.0
    assert "QC rejected: age given by --force" in forced["flags"]
    assert forced["true_bone_age_months"] == 90.0
    ok = predict.row(item, {**out, "mask_area": 0.3, "mask_ok": 1.0})
    assert ok["status"] == "ok" and ok["bone_age_months"] == 100.0 and ok["flags"] == ""
    # networks that disagree: the age is given, and flagged
    unsure = {**out, "mask_area": 0.3, "mask_ok": 1.0, "certainty_ok": 0.0, "bone_age_std": 31}
    unsure = predict.row(item, unsure)
    assert unsure["status"] == "ok" and unsure["bone_age_months"] == 100.0
    assert (
        unsure["flags"].startswith("uncertain: the networks disagree")
        and "31 months" in unsure["flags"]
    )


def test_predict_prints_no_age_for_rejected_images_and_force_marks_them(
    model, tmp_path, monkeypatch
):
    _write(tmp_path / "in", ["a.png", "b.png"])
    real = predict.run_model

    def no_hand(loaded, items):  # the model's answers, every mask now too small for QC
        return [{**o, "mask_area": 0.01, "mask_ok": 0.0} for o in real(loaded, items)]

    monkeypatch.setattr(predict, "run_model", no_hand)
    out = tmp_path / "r.csv"
    r = run_cli("predict", tmp_path / "in", "--model", model, "--sex", "F", "--out", out,
                "--overlay", tmp_path / "ov")  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    table = pd.read_csv(out)
    assert (table["status"] == "rejected").all() and table["bone_age_months"].isna().all()
    assert table["reason"].str.startswith("not a hand radiograph: no hand found").all()
    assert r.stdout.count("REJECTED, no age") == 2 and "months, 90 %" not in r.stdout
    assert not (tmp_path / "ov").exists()  # no overlay for an image without an age
    forced = run_cli("predict", tmp_path / "in", "--model", model, "--sex", "F", "--out", out,
                     "--overwrite", "--force")  # fmt: skip
    assert forced.returncode == 0, forced.stderr[-2000:]
    table = pd.read_csv(out)
    assert table["bone_age_months"].notna().all() and (table["status"] == "rejected").all()
    assert table["flags"].str.contains("age given by --force").all()


# --- outputs unique per input -------------------------------------------------------------


def test_output_names_by_hand():
    names = predict.output_names(
        [Path("/d/rot/2040.png"), Path("/d/orig/2040.png"), Path("/d/x/1.png")]
    )
    assert names == ["rot__2040", "orig__2040", "1"]
    assert predict.output_names([Path("/d/a.png"), Path("/d/a.jpg")]) == ["a_png", "a_jpg"]
    deep = predict.output_names([Path("/d/p/q/x.png"), Path("/d/r/x.png")])
    assert deep == ["p__q__x", "r__x"]
    # a clash that survives the path: numbered
    clash = predict.output_names([Path("/d/p/x.png"), Path("/d/q/x.png"), Path("/d/p__x.png")])
    assert clash == ["p__x", "q__x", "p__x-2"]


def test_collect_lists_a_file_given_twice_once(tmp_path):
    _write(tmp_path / "in", ["a.png"])
    files = predict.collect([str(tmp_path / "in"), str(tmp_path / "in" / "a.png")])
    assert files == [tmp_path / "in" / "a.png"]


def test_two_inputs_with_one_name_get_two_overlays(model, tmp_path):
    """``rot/2040.png`` and ``orig/2040.png`` in one call: two overlays, neither overwritten."""
    _write(tmp_path / "rot", ["2040.png"], seed=1)
    _write(tmp_path / "orig", ["2040.png"], seed=2)
    out = tmp_path / "r.csv"
    r = run_cli("predict", tmp_path / "rot" / "2040.png", tmp_path / "orig", "--model", model,
                "--sex", "M", "--out", out, "--overlay", tmp_path / "ov", "--force")  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    table = pd.read_csv(out)
    assert sorted(Path(p).name for p in table["overlay"]) == [
        "orig__2040_overlay.png",
        "rot__2040_overlay.png",
    ]
    a, b = (cv2.imread(p) for p in table["overlay"])
    assert not np.array_equal(a, b)  # two pictures, of two different films


# --- --labels CSV -------------------------------------------------------------------------


def test_labels_csv_parsing_by_hand(tmp_path):
    path = tmp_path / "l.csv"
    path.write_text(
        "id,male,boneage,chronological_age,birth_date,study_date\n"
        "1,True,120,10y6m,,\n"
        "2,False,,,2010-01-01,20110101\n"
        "3,maybe,ten,,,\n"
    )
    rows = labels.read(path)
    assert [(r.line, r.key, r.sex) for r in rows] == [(2, "1", "M"), (3, "2", "F"), (4, "3", None)]
    assert rows[0].chronological == 126.0 and rows[0].truth == 120.0 and rows[0].problem == ""
    assert rows[1].chronological == pytest.approx(365 / 30.4375) and rows[1].truth is None
    assert "male 'maybe'" in rows[2].problem and "boneage 'ten'" in rows[2].problem


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name,sex\na,M\n", "needs a 'file' or 'id' column"),
        ("id,age\na,3\n", "needs a 'sex' (M/F) or 'male'"),
        ("", "is empty"),
    ],
)
def test_unusable_labels_csv_names_the_file(tmp_path, text, message):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(labels.LabelsError, match=re.escape(message)) as err:
        labels.read(path)
    assert str(path) in str(err.value)


def test_labels_match_by_path_name_and_stem(tmp_path):
    files = [tmp_path / "a" / "1.png", tmp_path / "b" / "1.png", tmp_path / "b" / "2.png"]
    rows = [
        labels.Label(2, "a/1.png", "M", None, None),  # a path relative to the CSV
        labels.Label(3, "2", "F", None, None),  # a stem
        labels.Label(4, "1.png", "F", None, None),  # fits two inputs: neither
        labels.Label(5, "9", "F", None, None),  # no such image
    ]
    m = labels.match(files, rows, tmp_path / "labels.csv")
    assert m.by_file[files[0]].line == 2 and m.by_file[files[2]].line == 3
    assert m.by_file[files[1]] is None
    assert m.unmatched_rows == ["line 4 (1.png): 2 inputs share it", "line 5 (9): no image among the inputs"]  # fmt: skip


def test_predict_with_labels_mixed_sexes_true_ages_and_plots(model, tmp_path):
    _write(tmp_path / "in", ["1.png", "2.png", "3.png", "4.png"])
    csv = tmp_path / "labels.csv"
    csv.write_text(
        "id,male,boneage\n1,True,100\n2,False,50\n3,yes,80\n4,maybe,70\n77,False,12\n"
    )  # 3: sex given as yes (a valid M); 4: a bad sex; 77: no image
    (tmp_path / "in" / "5.png").write_bytes(cv2.imencode(".png", _images(1, seed=9)[0])[1])
    out = tmp_path / "res" / "r.csv"
    r = run_cli("predict", tmp_path / "in", "--model", model, "--labels", csv, "--out", out,
                "--force")  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    table = pd.read_csv(out).set_index(pd.read_csv(out)["file"].map(lambda p: Path(p).stem))
    assert table.loc["1", "sex"] == "M" and table.loc["2", "sex"] == "F"
    assert table.loc["1", "sex_source"] == "labels line 2" and table.loc["3", "sex"] == "M"
    assert table.loc["4", "status"] == "error" and "'maybe'" in table.loc["4", "reason"]
    assert table.loc["5", "status"] == "error" and "no row in" in table.loc["5", "reason"]
    assert "line 6 (77): no image among the inputs" in r.stderr and "5.png" in r.stderr
    truth = {"1": 100.0, "2": 50.0, "3": 80.0}
    assert table["true_bone_age_months"].dropna().to_dict() == truth
    mae = np.mean([abs(table.loc[k, "bone_age_months"] - v) for k, v in truth.items()])
    assert f"MAE {mae:.2f} months on 3 images" in r.stdout
    within = np.mean([abs(table.loc[k, "bone_age_months"] - v) <= 12 for k, v in truth.items()])
    assert f"{100 * within:.0f} % within 12 months" in r.stdout
    for kind in ("vs_true", "bland_altman"):
        png = tmp_path / "res" / f"r_{kind}.png"
        assert cv2.imread(str(png)) is not None, kind
    # without --out: the figures and no plots, said
    again = run_cli("predict", tmp_path / "in" / "1.png", "--model", model, "--labels", csv,
                    "--force")  # fmt: skip
    assert "MAE" in again.stdout and "pass --out" in again.stdout
    bad = run_cli("predict", tmp_path / "in", "--model", model, "--labels", tmp_path / "no.csv")
    assert bad.returncode == 2 and "no.csv" in bad.stderr
