"""Keeping a table run's small text reports."""

import pytest

from tf_boneage.training import reports


def _run(root):
    files = {
        "steps.csv": "step,seconds\n",
        "seg/report.json": "{}",
        "seg/round0/unet.keras": "weights",
        "cache/chain.json": "{}",
        "cache/A/1.png": "pixels",
        "region/table/table.md": "| table |",
        "region/A_reg_male/metrics.json": "{}",
        "region/A_reg_male/config.yaml": "epochs: 18\n",
        "region/A_reg_male/history.csv": "epoch,loss\n",
        "region/A_reg_male/model.keras": "weights",
        "region/A_reg_male/predictions.csv": "id,pred\n",
        "region/unfinished/config.yaml": "epochs: 18\n",  # no metrics: not a finished run
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def test_keeps_the_reports_and_nothing_else(tmp_path):
    run = _run(tmp_path / "run")
    written = reports.keep(run, tmp_path / "kept")
    got = sorted(str(p.relative_to(tmp_path / "kept")) for p in written)
    assert got == sorted(
        [
            "steps.csv",
            "seg/report.json",
            "cache/chain.json",
            "region/table/table.md",
            "region/A_reg_male/config.yaml",
            "region/A_reg_male/metrics.json",
            "region/A_reg_male/history.csv",
        ]
    )
    assert (tmp_path / "kept" / "region/A_reg_male/config.yaml").read_text() == "epochs: 18\n"
    # run again after the run moved on: the copies follow
    (run / "steps.csv").write_text("step,seconds\nsegmentation,364\n")
    reports.keep(run, tmp_path / "kept")
    assert "364" in (tmp_path / "kept" / "steps.csv").read_text()


def test_a_large_file_or_no_reports_is_refused_and_nothing_written(tmp_path):
    run = _run(tmp_path / "run")
    (run / "region/A_reg_male/history.csv").write_text("x" * (reports.MAX_BYTES + 1))
    with pytest.raises(ValueError, match="history.csv: over"):
        reports.keep(run, tmp_path / "kept")
    assert not (tmp_path / "kept").exists()
    with pytest.raises(ValueError, match="no reports"):
        reports.keep(tmp_path / "empty", tmp_path / "kept")


def test_command_line(tmp_path, capsys):
    run = _run(tmp_path / "run")
    assert reports.main([str(run), "--out", str(tmp_path / "kept")]) == 0
    assert "7 report files" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        reports.main([str(tmp_path / "nothing"), "--out", str(tmp_path / "k2")])
    assert exc.value.code == 2
