"""The table driver's bookkeeping: epochs per run and the steps report (no training)."""

import csv

import pytest

from tf_boneage.training import table as table_lib
from tf_boneage.training.runs import Run, table_runs


@pytest.mark.parametrize(
    "run, epochs, share, expected",
    [
        (Run("A", "regression", "male"), 18, 0.5, 18),  # sex-specific: the table's epochs
        (Run("B", "classification", "female"), 18, 0.5, 18),
        (Run("A", "regression", "both"), 18, 0.5, 9),  # both sexes: half
        (Run("A", "regression", "both", "raw"), 18, 0.5, 9),  # the raw baseline is both sexes
        (Run("C", "regression", "both"), 7, 0.5, 4),  # 3.5 rounds to even: 4
        (Run("C", "regression", "both"), 1, 0.5, 1),  # never 0
        (Run("C", "regression", "both"), 12, 1.0, 12),  # the default share changes nothing
    ],
)
def test_run_epochs_by_hand(run, epochs, share, expected):
    assert table_lib.run_epochs(run, epochs, share) == expected


def test_rsna100_preset_halves_the_both_sexes_runs_only():
    from tf_boneage.training import config as config_lib

    table = config_lib.read_preset("rsna100")["table"]
    share = table["both_sexes_epoch_share"]
    got = {r.name: table_lib.run_epochs(r, table["epochs"], share) for r in table_runs()}
    assert {n for n, e in got.items() if e != table["epochs"]} == {
        "A_reg_both",
        "B_reg_both",
        "C_reg_both",
        "raw_reg_both",
    }
    assert got["A_reg_both"] == table["epochs"] // 2


def _refused_before_any_work(monkeypatch, tmp_path, table: dict, match: str, **kwargs):
    """The synthetic preset with ``table`` keys changed: ``table.run`` raises a StepError
    matching ``match`` and writes nothing."""
    from tf_boneage.training import config as config_lib

    preset = config_lib.read_preset("synthetic")
    preset["table"] = {**preset["table"], **table}
    monkeypatch.setattr(config_lib, "read_preset", lambda name: preset)
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,age_months\n")
    with pytest.raises(table_lib.StepError, match=match):
        table_lib.run("synthetic", manifest, tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("share", [0.0, -0.5, 1.5])
def test_a_share_outside_0_1_is_refused_before_any_work(monkeypatch, tmp_path, share):
    table = {"both_sexes_epoch_share": share}
    _refused_before_any_work(monkeypatch, tmp_path, table, "both_sexes_epoch_share")


@pytest.mark.parametrize(("given", "preset_value"), [(0, 2), (-1, 2), (None, 0)])
def test_fewer_than_one_region_worker_is_refused_before_any_work(
    monkeypatch, tmp_path, given, preset_value
):
    table = {"region_workers": preset_value}
    _refused_before_any_work(monkeypatch, tmp_path, table, "region_workers", region_workers=given)


def test_steps_report_appends_each_finished_step_and_keeps_a_resumed_call(tmp_path):
    report = tmp_path / "run" / "steps.csv"
    log = []
    steps = table_lib.Steps(2, log, report)
    assert steps("first", lambda x: x + 1, 1) == 2
    with pytest.raises(table_lib.StepError, match="step 'second' failed: broken"):
        steps("second", _fail)
    table_lib.Steps(1, None, report)("second", lambda: None)  # the same command again
    rows = list(csv.DictReader(report.open()))
    assert [r["step"] for r in rows] == ["first", "second"]  # the failed call wrote no row
    assert [title for title, _ in log] == ["first"]
    for row in rows:
        assert float(row["seconds"]) >= 0 and float(row["cpu_seconds"]) >= 0
        assert row["finished"][:4].isdigit()


def _fail():
    raise table_lib.StepError("broken")
