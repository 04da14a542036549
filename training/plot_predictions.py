"""Plots and the MAE report of one or more ``val_predictions.csv`` files (id, boneage, male,
pred): predicted vs true, Bland-Altman, error by age band.

    python training/plot_predictions.py runs/region/A_reg_both runs/region/raw_reg_both \
        --out docs/figures
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pandas as pd  # noqa: E402

from tf_boneage import plots  # noqa: E402
from tf_boneage.evaluation import format_report, mae_report  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", help="run folders holding val_predictions.csv")
    parser.add_argument("--out", required=True, help="folder for the PNGs")
    args = parser.parse_args(argv)
    out = Path(args.out)
    for run in map(Path, args.runs):
        table = pd.read_csv(run / "val_predictions.csv")
        name = run.name
        print(f"{name}: {format_report(mae_report(table))}")
        plots.predicted_vs_true(table.boneage, table.pred, out / f"{name}_scatter.png", name)
        plots.bland_altman(table.boneage, table.pred, out / f"{name}_bland_altman.png", name)
        plots.error_by_band(table.boneage, table.pred, out / f"{name}_by_band.png", name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
