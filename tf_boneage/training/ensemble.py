"""Fit the paper's linear ensembles on the validation predictions of the region runs.

    python training/ensemble.py runs/region

Reads every ``RUNS/*/predictions.csv`` written by ``training/region.py`` (run folder names
like ``A_reg_both``, ``B_cls_male``; see ``training/table.py``), fits each ensemble of
:data:`ENSEMBLES` whose members all exist with per-sex non-negative least squares on the
``val`` rows only, and writes beside the runs:

- ``ensembles.json``: members, per-sex weights and intercepts, the prior rows that pulled
  them towards the equal blend (:data:`tf_boneage.ensemble.PRIOR_ROWS`, or the preset's
  ``table.prior_rows``), 5-fold cross-validated MAE on val (months) of every fitted ensemble
  with that prior and without one (``val_cv_mae_unregularised``);
- ``ensemble_predictions.csv``: one row per hold-out image (val and test), one column per
  model and ensemble (months). The test rows are predicted, never used to fit.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from tf_boneage.data.manifest import save_table
from tf_boneage.ensemble import PRIOR_ROWS, LinearEnsemble, cross_val_mae, wide_table
from tf_boneage.training.runs import ENSEMBLES
from tf_boneage.training.runtime import StepError, run_or_exit, write_json


def read_runs(root: Path) -> dict[str, pd.DataFrame]:
    """``{run folder name: predictions table}`` of every finished run under ``root``."""
    return {p.parent.name: pd.read_csv(p) for p in sorted(root.glob("*/predictions.csv"))}


def fit_all(table: pd.DataFrame, prior_rows: float = PRIOR_ROWS) -> tuple[dict, pd.DataFrame]:
    val = table[table["split"] == "val"]
    doc = {}
    for name, members in ENSEMBLES.items():
        if not all(m in table for m in members):
            print(f"{name}: skipped (missing {[m for m in members if m not in table]})")
            continue
        try:
            ens = LinearEnsemble(members, prior_rows=prior_rows).fit(val)
        except ValueError as exc:  # per-sex NNLS needs more val rows than members
            sexes = val["male"].astype(bool).value_counts().to_dict()
            print(
                f"{name}: skipped: {exc} (val rows: {sexes.get(True, 0)} boys, "
                f"{sexes.get(False, 0)} girls)"
            )
            continue
        table[name] = ens.predict(table)
        try:
            cv = cross_val_mae(val, members, prior_rows=prior_rows)
            cv0 = cross_val_mae(val, members, prior_rows=0.0)
            print(
                f"{name}: val 5-fold CV MAE {cv:.2f} months "
                f"({prior_rows:g} prior rows; {cv0:.2f} without)"
            )
        except ValueError as exc:  # too few validation rows per sex and fold
            cv = cv0 = None
            print(f"{name}: fitted; no cross-validation ({exc})")
        doc[name] = {
            "models": members,
            "params": ens.params,
            "val_cv_mae": cv,
            "val_cv_mae_unregularised": cv0,
        }
    return doc, table


def run(root: str | Path, prior_rows: float = PRIOR_ROWS) -> dict:
    """Fit every ensemble whose members exist under ``root`` (weights pulled towards the
    equal blend by ``prior_rows`` pseudo-rows); write ``ensembles.json`` and
    ``ensemble_predictions.csv``; return the ``ensembles.json`` document."""
    root = Path(root)
    runs = read_runs(root)
    if not runs:
        raise StepError(f"no */predictions.csv under {root}: train the region runs first")
    print(f"{len(runs)} runs: {', '.join(runs)}")
    doc, table = fit_all(wide_table(runs), prior_rows)
    if not doc:
        raise StepError(
            "no ensemble could be fitted (see above): the val split is too small or a run "
            "is missing"
        )
    write_json(root / "ensembles.json", doc)
    save_table(table, root / "ensemble_predictions.csv")
    print(f"-> {root / 'ensembles.json'}, {root / 'ensemble_predictions.csv'}")
    return doc


def main(argv=None) -> int:
    """``training/ensemble.py RUNS`` / ``tf-boneage train ensemble RUNS``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", help="folder holding one sub-folder per region run")
    parser.add_argument(
        "--prior-rows",
        type=float,
        default=PRIOR_ROWS,
        help=f"pseudo-rows pulling the weights towards the equal blend (default {PRIOR_ROWS:g})",
    )
    args = parser.parse_args(argv)
    run_or_exit(parser, run, args.runs, args.prior_rows)
    return 0
