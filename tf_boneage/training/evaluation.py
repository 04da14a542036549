"""The paper's table on the test split: MAE (months) of every region model and ensemble.

    python training/evaluate.py runs/region --out runs/region/table --figures runs/region/figures

Reads ``ensemble_predictions.csv`` (``training/ensemble.py``) and writes ``table.md`` and
``table.json`` (the paper's layout: rows region A, B, C and the linear ensemble of A, B, C;
columns regression both sexes / male / female, classification male / female, ensemble of the
sex-specific models; plus the raw-image baseline, the mean predictor and MAE by sex and age
band of the final ensemble) and plots of the best available row: predicted vs true,
Bland-Altman, error by age band. Only ``split == test`` rows are scored.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from tf_boneage import plots
from tf_boneage.evaluation import age_band_table, bootstrap_mae, format_report, mae_report
from tf_boneage.training.runs import table_column
from tf_boneage.training.runtime import StepError, run_or_exit, write_json

#: columns of the paper's table: (title, column suffix of the model, sex of the test rows)
COLUMNS = (
    ("both sexes, regression", "reg_both", None),
    ("male, regression", "reg_sex", True),
    ("female, regression", "reg_sex", False),
    ("male, classification", "cls_sex", True),
    ("female, classification", "cls_sex", False),
    ("ensemble", "ens_sex", None),
)
ROWS = (
    ("region A", "A"),
    ("region B", "B"),
    ("region C", "C"),
    ("linear ensemble of A, B, C", "ABC"),
)
#: the paper's MAE (months, its own 1,000-image hold-out at full resolution)
PAPER = {
    ("A", "reg_both"): 8.08,
    ("A", "reg_sex", False): 7.12,
    ("C", "reg_both"): 8.42,
    ("C", "reg_sex", False): 6.79,
    ("ABC", "reg_both"): 7.52,
    ("ABC", "reg_sex", True): 6.30,
    ("ABC", "reg_sex", False): 6.49,
    ("ABC", "cls_sex", True): 6.16,
    ("ABC", "cls_sex", False): 6.39,
    ("ABC", "ens_sex"): 6.10,
}


def cell(test: pd.DataFrame, column: str, sex) -> dict | None:
    if column not in test or test[column].isna().all():
        return None
    part = test if sex is None else test[test["male"] == sex]
    mae, low, high = bootstrap_mae((part[column] - part["boneage"]).abs().to_numpy())
    return {"model": column, "n": len(part), "mae": mae, "low": low, "high": high}


def build(table: pd.DataFrame) -> dict:
    test = table[table["split"] == "test"]
    if test.empty:
        raise ValueError("no test rows in the ensemble predictions")
    out = {"n_test": len(test), "cells": {}, "extra": {}}
    for _, row in ROWS:
        for title, suffix, sex in COLUMNS:
            out["cells"][f"{row}|{title}"] = cell(test, table_column(row, suffix), sex)
    for name in ("raw_reg_both", "A_reg_both", "demo"):
        if name in test:
            out["extra"][name] = mae_report(test.rename(columns={name: "pred"}))
    out["mean_predictor_mae"] = float((test.boneage - test.boneage.mean()).abs().mean())
    best = next((c for c in ("final", "demo", "ABC_reg_both", "A_reg_both") if c in test), None)
    if best:
        out["best"] = {"model": best, "report": mae_report(test.rename(columns={best: "pred"}))}
        err = (test[best] - test["boneage"]).abs()
        out["best"]["extremes"] = {
            name: dict(
                zip(("mae", "low", "high"), bootstrap_mae(err[mask].to_numpy()), strict=True)
            )
            | {"n": int(mask.sum())}
            for name, mask in (
                ("under 2 years", test["boneage"] < 24),
                ("over 17 years", test["boneage"] > 204),
            )
            if mask.any()
        }
    return out


def markdown(doc: dict) -> str:
    head = "| | " + " | ".join(t for t, _, _ in COLUMNS) + " |"
    lines = [head, "|---" * (len(COLUMNS) + 1) + "|"]
    for label, row in ROWS:
        values = []
        for title, suffix, sex in COLUMNS:
            c = doc["cells"][f"{row}|{title}"]
            key = (row, suffix) if sex is None else (row, suffix, sex)
            paper = f" ({PAPER[key]:.2f})" if key in PAPER else ""
            ci = f" [{c['low']:.1f}-{c['high']:.1f}]" if c and "low" in c else ""
            values.append(f"**{c['mae']:.2f}**{ci}{paper}" if c else f"—{paper}")
        lines.append(f"| {label} | " + " | ".join(values) + " |")
    lines.append("")
    lines.append(
        f"Test rows: {doc['n_test']}; in square brackets the bootstrap 95 % interval, in round "
        f"ones the paper's figure; mean predictor {doc['mean_predictor_mae']:.2f} months."
    )
    for name, rep in doc["extra"].items():
        lines.append(
            f"- `{name}` both sexes: {rep['all']['mae']:.2f} months "
            f"(male {rep['male']['mae']:.2f}, female {rep['female']['mae']:.2f})"
        )
    if "best" in doc:
        lines += [
            "",
            f"MAE by age band of `{doc['best']['model']}` (test):",
            "",
            age_band_table(doc["best"]["report"]),
        ]
        for name, e in doc["best"].get("extremes", {}).items():
            lines.append(
                f"- {name}: {e['mae']:.2f} months [{e['low']:.1f}-{e['high']:.1f}] (n={e['n']})"
            )
    return "\n".join(lines) + "\n"


def run(root: str | Path, out: str | Path | None = None, figures: str | Path | None = None):
    """The table of ``root/ensemble_predictions.csv`` on its test rows: ``table.md`` and
    ``table.json`` in ``out`` (default ``root/table``), plots of the best row in ``figures``.
    Returns the table document."""
    root = Path(root)
    source = root / "ensemble_predictions.csv"
    if not source.is_file():
        raise StepError(f"{source} not found: fit the ensembles first (training/ensemble.py)")
    table = pd.read_csv(source)
    doc = build(table)
    out = Path(out or root / "table")
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "table.json", doc)
    text = markdown(doc)
    (out / "table.md").write_text(text)
    print(text)
    if figures and "best" in doc:
        test = table[table["split"] == "test"]
        name = doc["best"]["model"]
        plots.report_plots(
            test["boneage"].to_numpy(float),
            test[name].to_numpy(np.float64),
            figures,
            f"table_{name}",
            f"{name} (test)",
        )
        print(f"plots -> {figures}")
    return doc


def main(argv=None) -> int:
    """``training/evaluate.py RUNS`` / ``tf-boneage train evaluate RUNS``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", help="folder with ensemble_predictions.csv")
    parser.add_argument("--out", default=None, help="folder for table.md / table.json")
    parser.add_argument("--figures", default=None, help="folder for the PNG plots")
    args = parser.parse_args(argv)
    run_or_exit(parser, run, args.runs, args.out, args.figures)
    return 0


def interval_coverage(model, manifest, split: str = "test", batch: int = 32, offline=None) -> dict:
    """How honest is an exported model's uncertainty? Runs the end-to-end SavedModel
    (``serving_default``: image bytes + sex; ``model`` = ``saved_models/NAME`` or a version)
    over the ``split`` rows of ``manifest`` (``model`` None: the shipped model) and reports, overall and by sex, the MAE (months),
    the mean ``bone_age_std`` and how often the truth falls inside estimate +/- z * std for
    the nominal 68 % (z = 1) and 90 % (z = 1.645, what ``tf-boneage predict`` prints).
    ``offline``: the table folder the model was exported from (default: the one its
    metadata names, if it is there) to compare with film by film (:func:`offline_agreement`)."""

    from tf_boneage.data.manifest import load_manifest
    from tf_boneage.export import interval, load, saved_model, shipped
    from tf_boneage.export.calibration import coverage, predict_rows

    path = saved_model.resolve(model) if model else shipped.locate()
    fn = load.saved_model(path).signatures["serving_default"]
    rows = load_manifest(manifest)
    rows = rows[rows["split"] == split].reset_index(drop=True)
    if rows.empty:
        raise StepError(f"{manifest} has no {split!r} rows")
    out = predict_rows(fn, rows, batch, desc="coverage")
    pred, std = out["bone_age_months"], out["bone_age_std"]
    truth = rows["boneage"].to_numpy(float)
    report = {"model": str(path), "manifest": str(manifest), "split": split}
    for name, m in (
        ("all", np.ones(len(rows), bool)),
        ("male", (rows["male"] == True).to_numpy()),  # noqa: E712 (a pandas mask)
        ("female", (rows["male"] == False).to_numpy()),  # noqa: E712
    ):
        report[name] = coverage(truth[m], pred[m], std[m])
        # the model's own interval (inside 0-240 months)
        low, high = out["interval_low_months"][m], out["interval_high_months"][m]
        report[name]["interval_90"] = interval.coverage(truth[m], low, high)
        report[name]["interval_width"] = float(np.mean(high - low)) if m.any() else 0.0
        report[name]["interval_in_range"] = float(np.mean((low >= 0) & (high <= 240)))
    runs = load.metadata(path).get("runs")
    if offline is None and runs and (Path(runs) / "region" / ENSEMBLE_TABLE).is_file():
        offline = runs  # the table the model was exported from, where it still is
    if offline is not None and "member_months" in out:
        ensemble = load.metadata(path).get("ensemble", "final")
        report["offline"] = offline_agreement(rows, out, offline, ensemble)
    return report


#: the per-film predictions of every run and ensemble of a table (``training/ensemble.py``)
ENSEMBLE_TABLE = "ensemble_predictions.csv"


def offline_agreement(rows, out: dict, runs, ensemble: str = "final") -> dict:
    """The exported model against the offline table it was exported from, film by film (issue
    18: they must agree): ``rows`` (manifest rows), ``out`` the model's outputs on them
    (``bone_age_months`` (N,), ``member_months`` (N, M)), ``runs`` the table's folder. Returns
    the films both have, both MAEs and their difference, and the mean absolute difference of
    the ensemble and of each member (months)."""
    runs = Path(runs)
    table = pd.read_csv(runs / "region" / ENSEMBLE_TABLE, dtype={"id": str}).set_index("id")
    members = json.loads((runs / "region" / "ensembles.json").read_text())[ensemble]["models"]
    ids = rows["id"].astype(str).to_numpy()
    both = np.isin(ids, table.index) & table.reindex(ids)[ensemble].notna().to_numpy()
    if not both.any():
        raise StepError(f"{runs / 'region' / ENSEMBLE_TABLE}: none of these films")
    offline = table.loc[ids[both]]
    truth = rows["boneage"].to_numpy(float)[both]
    graph = out["bone_age_months"][both]
    doc = {
        "runs": str(runs),
        "ensemble": ensemble,
        "n": int(both.sum()),
        "not_in_table": int((~both).sum()),
        "export_mae": float(np.abs(graph - truth).mean()),
        "offline_mae": float(np.abs(offline[ensemble].to_numpy() - truth).mean()),
        "ensemble_mean_abs_difference": float(np.abs(graph - offline[ensemble].to_numpy()).mean()),
        "members": {
            name: float(np.abs(out["member_months"][both][:, j] - offline[name].to_numpy()).mean())
            for j, name in enumerate(members)
        },
    }
    doc["mae_difference"] = doc["export_mae"] - doc["offline_mae"]
    return doc


def coverage_lines(report: dict) -> list[str]:
    """One line per group (all, male, female) of an :func:`interval_coverage` report."""
    lines = []
    for key in ("all", "male", "female"):
        r = report[key]
        lines.append(
            f"  {key:6s} n={r['n']:4d}  MAE {r['mae']:5.2f}  mean std {r['mean_std']:5.2f}  "
            f"+/- 1 std: {100 * r['coverage_68']:5.1f} % (nominal 68)  "
            f"+/- 1.645 std: {100 * r['coverage_90']:5.1f} % (nominal 90)"
            + (
                f"  the 90 % interval: {100 * r['interval_90']:5.1f} %, mean width "
                f"{r['interval_width']:5.1f} months"
                if "interval_90" in r
                else ""
            )
        )
    return lines


def coverage_main(argv=None) -> int:
    """``training/interval_coverage.py`` / ``tf-boneage train coverage``."""
    parser = argparse.ArgumentParser(description=interval_coverage.__doc__.split("\n")[0])
    parser.add_argument(
        "--model", default=None, help="saved_models/NAME or a version (default: the shipped one)"
    )
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--out", default=None, help="JSON report")
    parser.add_argument(
        "--offline", default=None, help="table folder to compare with (default: the model's own)"
    )
    args = parser.parse_args(argv)
    try:
        report = interval_coverage(args.model, args.manifest, args.split, args.batch, args.offline)
    except (StepError, FileNotFoundError) as exc:
        parser.exit(2, f"error: {exc}\n")
    print("\n".join(coverage_lines(report)))
    if "offline" in report:
        o = report["offline"]
        print(
            f"  against the offline table ({o['runs']}, {o['n']} films): MAE {o['export_mae']:.2f} "
            f"exported vs {o['offline_mae']:.2f} offline ({o['mae_difference']:+.2f}); mean "
            f"|difference| {o['ensemble_mean_abs_difference']:.3f}, members "
            + ", ".join(f"{k} {v:.3f}" for k, v in o["members"].items())
        )
    if args.out:
        write_json(Path(args.out), report)
    return 0


def plot_predictions_main(argv=None) -> int:
    """``training/plot_predictions.py RUN...``: the MAE report and the three plots of each
    run's ``val_predictions.csv`` (id, boneage, male, pred)."""
    parser = argparse.ArgumentParser(description=plot_predictions_main.__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", help="run folders holding val_predictions.csv")
    parser.add_argument("--out", required=True, help="folder for the PNGs")
    args = parser.parse_args(argv)
    for folder in map(Path, args.runs):
        table = pd.read_csv(folder / "val_predictions.csv")
        print(f"{folder.name}: {format_report(mae_report(table))}")
        plots.report_plots(table.boneage, table.pred, args.out, folder.name)
    return 0
