"""The paper's table on the test split: MAE (months) of every region model and ensemble.

    python training/evaluate.py runs/region --out runs/region/table --figures docs/figures

Reads ``ensemble_predictions.csv`` (``training/ensemble.py``) and writes ``table.md`` and
``table.json`` (the paper's layout: rows region A, B, C and the linear ensemble of A, B, C;
columns regression both sexes / male / female, classification male / female, ensemble of the
sex-specific models; plus the raw-image baseline, the mean predictor and MAE by sex and age
band of the final ensemble) and plots of the best available row: predicted vs true,
Bland-Altman, error by age band. Only ``split == test`` rows are scored.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from common import write_json  # noqa: E402

from tf_boneage import plots  # noqa: E402
from tf_boneage.evaluation import age_band_table, mae_report  # noqa: E402

#: columns of the paper's table: (title, column suffix of the model, sex of the test rows)
COLUMNS = (
    ("both sexes, regression", "reg_both", None),
    ("male, regression", "reg_sex", True),
    ("female, regression", "reg_sex", False),
    ("male, classification", "cls_sex", True),
    ("female, classification", "cls_sex", False),
    ("ensemble", "ens_sex", None),
)
ROWS = (("region A", "A"), ("region B", "B"), ("region C", "C"),
        ("linear ensemble of A, B, C", "ABC"))  # fmt: skip
#: the paper's MAE (months, its own 1,000-image hold-out at full resolution)
PAPER = {("A", "reg_both"): 8.08, ("A", "reg_sex", False): 7.12, ("C", "reg_both"): 8.42,
         ("C", "reg_sex", False): 6.79, ("ABC", "reg_both"): 7.52, ("ABC", "reg_sex", True): 6.30,
         ("ABC", "reg_sex", False): 6.49, ("ABC", "cls_sex", True): 6.16,
         ("ABC", "cls_sex", False): 6.39, ("ABC", "ens_sex"): 6.10}  # fmt: skip


def column_name(row: str, suffix: str) -> str:
    if row == "ABC" and suffix == "ens_sex":
        return "final"
    return f"{row}_{suffix}"


def cell(test: pd.DataFrame, column: str, sex) -> dict | None:
    if column not in test or test[column].isna().all():
        return None
    part = test if sex is None else test[test["male"] == sex]
    return {"model": column, "n": len(part),
            "mae": float((part[column] - part["boneage"]).abs().mean())}  # fmt: skip


def build(table: pd.DataFrame) -> dict:
    test = table[table["split"] == "test"]
    if test.empty:
        raise ValueError("no test rows in the ensemble predictions")
    out = {"n_test": len(test), "cells": {}, "extra": {}}
    for _, row in ROWS:
        for title, suffix, sex in COLUMNS:
            out["cells"][f"{row}|{title}"] = cell(test, column_name(row, suffix), sex)
    for name in ("raw_reg_both", "A_reg_both", "demo"):
        if name in test:
            out["extra"][name] = mae_report(test.rename(columns={name: "pred"}))
    out["mean_predictor_mae"] = float((test.boneage - test.boneage.mean()).abs().mean())
    best = next((c for c in ("final", "demo", "ABC_reg_both", "A_reg_both") if c in test), None)
    if best:
        out["best"] = {"model": best, "report": mae_report(test.rename(columns={best: "pred"}))}
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
            values.append(f"**{c['mae']:.2f}**{paper}" if c else f"—{paper}")
        lines.append(f"| {label} | " + " | ".join(values) + " |")
    lines.append("")
    lines.append(f"Test rows: {doc['n_test']}; in brackets the paper's figure; mean predictor "
                 f"{doc['mean_predictor_mae']:.2f} months.")  # fmt: skip
    for name, rep in doc["extra"].items():
        lines.append(f"- `{name}` both sexes: {rep['all']['mae']:.2f} months "
                     f"(male {rep['male']['mae']:.2f}, female {rep['female']['mae']:.2f})")  # fmt: skip
    if "best" in doc:
        lines += ["", f"MAE by age band of `{doc['best']['model']}` (test):", "",
                  age_band_table(doc["best"]["report"])]  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", help="folder with ensemble_predictions.csv")
    parser.add_argument("--out", default=None, help="folder for table.md / table.json")
    parser.add_argument("--figures", default=None, help="folder for the PNG plots")
    args = parser.parse_args(argv)
    root = Path(args.runs)
    source = root / "ensemble_predictions.csv"
    if not source.is_file():
        parser.exit(2, f"error: {source} not found: run training/ensemble.py first\n")
    table = pd.read_csv(source)
    doc = build(table)
    out = Path(args.out or root / "table")
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "table.json", doc)
    text = markdown(doc)
    (out / "table.md").write_text(text)
    print(text)
    if args.figures and "best" in doc:
        test = table[table["split"] == "test"]
        name, truth = doc["best"]["model"], test["boneage"].to_numpy(float)
        pred = test[name].to_numpy(np.float64)
        figs = Path(args.figures)
        plots.predicted_vs_true(truth, pred, figs / f"table_{name}_scatter.png", f"{name} (test)")
        plots.bland_altman(truth, pred, figs / f"table_{name}_bland_altman.png", name)
        plots.error_by_band(truth, pred, figs / f"table_{name}_by_band.png", f"{name} (test)")
        print(f"plots -> {figs}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
