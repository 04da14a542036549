import hashlib

import cv2
import numpy as np
import pandas as pd
import pytest

from tf_boneage import cli
from tf_boneage.data import manifest


def _images(folder, ids):
    folder.mkdir(parents=True, exist_ok=True)
    for i in ids:
        cv2.imwrite(str(folder / f"{i}.png"), np.full((8, 6), 100, np.uint8))
    return folder


@pytest.mark.parametrize(
    ("header", "rows", "split"),
    [
        ("id,boneage,male", ["1,120,True", "2,36.5,False"], "train"),
        ("Image ID,male,Bone Age (months)", ["1,true,120", "2,FALSE,36.5"], "val"),
        ("Case ID,Sex,Ground truth bone age (Months)", ["1,M,120", "2,F,36.5"], "test"),
    ],
)
def test_each_rsna_layout(tmp_path, header, rows, split):
    csv = tmp_path / "labels.csv"
    csv.write_text("\n".join([header, *rows]) + "\n")
    images = _images(tmp_path / "images", [1, 2])
    table, report = manifest.build_manifest([manifest.read_rsna_csv(csv, images)])
    assert report.empty
    assert table["id"].tolist() == ["1", "2"]
    assert table["boneage"].tolist() == [120.0, 36.5]
    assert table["male"].tolist() == [True, False]
    assert table["split"].tolist() == [split, split]
    assert table["image_path"].tolist() == [str((images / f"{i}.png").resolve()) for i in (1, 2)]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("True", True),
        ("false", False),
        ("1", True),
        ("0", False),
        ("M", True),
        ("f", False),
        ("Male", True),
        ("FEMALE", False),
        (" m ", True),
        (True, True),
        ("", None),
        (np.nan, None),
    ],
)
def test_parse_sex(value, expected):
    assert manifest.parse_sex(value) is expected


def test_parse_sex_rejects_unknown_and_echoes_it():
    with pytest.raises(ValueError, match="'X'"):
        manifest.parse_sex("X")


def _bad_csv(tmp_path):
    images = _images(tmp_path / "images", [1, 2, 3, 5, 6, 7, 8, 9, 10])
    (images / "3.png").write_bytes(b"")  # unreadable
    lines = [
        "id,boneage,male",
        "1,100,True",
        "1,90,False",
        "3,100,True",
        "4,100,True",
        "5,,True",
        "6,abc,True",
        "7,0,False",
        "8,241,True",
        "9,100,X",
        "10,240,M",
        "2,nan,F",
    ]
    csv = tmp_path / "labels.csv"
    csv.write_text("\n".join(lines) + "\n")
    return csv, images


EXPECTED_PROBLEMS = [
    (3, "1", "duplicate id"),
    (4, "3", "empty"),
    (5, "4", "file not found"),
    (6, "5", "missing bone age"),
    (7, "6", "'abc' is not a number"),
    (8, "7", "outside (0, 240]"),
    (9, "8", "outside (0, 240]"),
    (10, "9", "unknown sex value 'X'"),
    (12, "2", "missing bone age"),
]


def test_strict_mode_lists_every_problem_with_file_and_line(tmp_path):
    csv, images = _bad_csv(tmp_path)
    before = hashlib.sha256(csv.read_bytes()).hexdigest()
    with pytest.raises(manifest.ManifestError) as info:
        manifest.build_manifest([manifest.read_rsna_csv(csv, images)])
    problems = info.value.problems
    assert [(p.line, p.id) for p in problems] == [(line, i) for line, i, _ in EXPECTED_PROBLEMS]
    for p, (_, _, text) in zip(problems, EXPECTED_PROBLEMS, strict=True):
        assert text in p.problem and p.file == str(csv)
    assert f"{csv}:3: id '1': duplicate id" in str(info.value)
    assert hashlib.sha256(csv.read_bytes()).hexdigest() == before  # input untouched


def test_lenient_mode_keeps_clean_rows_and_reports_the_rest(tmp_path):
    csv, images = _bad_csv(tmp_path)
    table, report = manifest.build_manifest([manifest.read_rsna_csv(csv, images)], strict=False)
    assert table["id"].tolist() == ["1", "10"]
    assert table["boneage"].tolist() == [100.0, 240.0]
    assert len(report) == len(EXPECTED_PROBLEMS)
    assert list(report.columns) == ["file", "line", "id", "problem"]


def test_missing_column_names_file_and_column(tmp_path):
    csv = tmp_path / "x.csv"
    csv.write_text("id,male\n1,True\n")
    with pytest.raises(manifest.ManifestError, match=r"x\.csv: missing required column.*boneage"):
        manifest.read_rsna_csv(csv, tmp_path)


def test_decode_check_catches_corrupt_pixels(tmp_path):
    images = _images(tmp_path / "images", [1])
    data = bytearray((images / "1.png").read_bytes())
    data[40:50] = b"\x00" * 10  # corrupt the compressed stream, keep header and IEND
    (images / "1.png").write_bytes(bytes(data))
    csv = tmp_path / "l.csv"
    csv.write_text("id,boneage,male\n1,10,True\n")
    raw = manifest.read_rsna_csv(csv, images)
    assert manifest.validate(raw, check_images="header")[1] == []
    problems = manifest.validate(raw, check_images="decode")[1]
    assert len(problems) == 1 and "cannot decode PNG" in problems[0].problem


def test_dicom_sex_fills_missing_sex(tmp_path):
    from test_io import _dicom

    images = tmp_path / "images"
    images.mkdir()
    _dicom(images / "7.dcm", np.ones((4, 4)), sex="F")
    csv = tmp_path / "l.csv"
    csv.write_text("id,boneage,male\n7,50,\n")
    table, _ = manifest.build_manifest([manifest.read_rsna_csv(csv, images)])
    assert table["male"].tolist() == [False]


def test_save_table_refuses_to_overwrite_an_input(tmp_path):
    csv = tmp_path / "labels.csv"
    csv.write_text("id,boneage,male\n")
    with pytest.raises(ValueError, match="refusing to overwrite"):
        manifest.save_table(pd.DataFrame({"a": [1]}), csv, protect=[csv])
    assert csv.read_text() == "id,boneage,male\n"


def test_cli_manifest_round_trip_and_refusals(tmp_path, capsys):
    folder = tmp_path / "rsna"
    _images(folder / "images", range(1, 31))
    rows = [f"{i},{12 * (i % 15) + 6},{i % 2 == 0}" for i in range(1, 31)]
    (folder / "labels.csv").write_text("id,boneage,male\n" + "\n".join(rows) + "\n")
    out = tmp_path / "m.csv"
    args = [
        str(folder),
        "--out",
        str(out),
        "--holdout",
        "val=6",
        "--split-out",
        str(tmp_path / "split.csv"),
    ]
    assert cli.main(["manifest", *args]) == 0
    table = manifest.load_manifest(out)
    assert len(table) == 30 and (table["split"] == "val").sum() == 6
    assert table["male"].dtype == "boolean"
    assert pd.read_csv(tmp_path / "split.csv").columns.tolist() == ["id", "split"]
    assert cli.main(["manifest", *args]) == 2  # exists, no --overwrite
    assert "exists" in capsys.readouterr().err
    # the saved split alone reproduces the split exactly (it was once silently ignored)
    again = tmp_path / "again.csv"
    split_file = str(tmp_path / "split.csv")
    assert (
        cli.main(["manifest", str(folder), "--out", str(again), "--previous-split", split_file])
        == 0
    )
    pd.testing.assert_series_equal(manifest.load_manifest(again)["split"], table["split"])
    (folder / "labels.csv").write_text("id,boneage,male\n1,999,True\n")
    assert cli.main(["manifest", *args, "--overwrite"]) == 1
    assert "outside (0, 240]" in capsys.readouterr().err
