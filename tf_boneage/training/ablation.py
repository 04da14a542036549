"""Ablations on ``val``: runs compared with a base run on the same images, with intervals.

``tf-boneage train ablation --base base=RUN --variant qc=RUN2 --variant long=RUN3 --out A.md``
reads each run's ``predictions.csv`` (a region run folder, or any CSV with ``id``, ``boneage``,
``split`` and ``pred`` in months), keeps the ``val`` rows, and reports per run its MAE with a
bootstrap 95 % interval, the paired difference with the base (same images resampled together)
and the run's cost (``metrics.json``: epochs, wall minutes). The ``test`` split is refused:
choices are made on ``val`` only.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from tf_boneage.evaluation import bootstrap_mae, format_interval, paired_bootstrap


def _named(text: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=PATH")
    return name, Path(path)


def load_predictions(path: Path, split: str = "val") -> pd.DataFrame:
    """``id, boneage, pred`` (months) of the ``split`` rows of a run folder or CSV."""
    csv = path / "predictions.csv" if path.is_dir() else path
    if not csv.is_file():
        raise FileNotFoundError(f"{csv}: no predictions (has the run finished?)")
    table = pd.read_csv(csv)
    missing = {"id", "boneage", "pred", "split"} - set(table.columns)
    if missing:
        raise ValueError(f"{csv}: missing columns {sorted(missing)}")
    rows = table[table["split"] == split]
    if rows.empty:
        raise ValueError(f"{csv}: no {split!r} rows")
    return rows[["id", "boneage", "pred"]].astype({"id": str}).set_index("id")


def _cost(path: Path) -> tuple[str, str]:
    metrics = path / "metrics.json" if path.is_dir() else None
    if metrics is None or not metrics.is_file():
        return "", ""
    doc = json.loads(metrics.read_text())
    return str(doc.get("epochs", "")), f"{doc.get('seconds', 0) / 60:.1f}"


def compare(runs: list[tuple[str, Path]], split: str = "val", seed: int = 0) -> pd.DataFrame:
    """One row per run (the first is the base): MAE and interval, difference with the base
    and its interval (months), epochs, wall minutes. Every run must cover the same images."""
    if split == "test":
        raise ValueError("ablations are compared on val: the test split is for the final run")
    tables = {name: load_predictions(path, split) for name, path in runs}
    base_name = runs[0][0]
    base = tables[base_name]
    out = []
    for name, path in runs:
        table = tables[name]
        if set(table.index) != set(base.index):
            raise ValueError(
                f"{name} ({path}) and {base_name} were not evaluated on the same {split} images "
                f"({len(table)} vs {len(base)} rows, {len(set(table.index) ^ set(base.index))} "
                "differ): were they built from the same manifest?"
            )
        table = table.loc[base.index]
        err = (table["pred"] - table["boneage"]).abs().to_numpy()
        base_err = (base["pred"] - base["boneage"]).abs().to_numpy()
        mae = bootstrap_mae(err, seed=seed)
        diff = paired_bootstrap(base_err, err, seed=seed)
        epochs, minutes = _cost(path)
        out.append(
            {
                "run": name,
                "images": len(table),
                "mae": mae[0],
                "mae_low": mae[1],
                "mae_high": mae[2],
                "diff": diff[0],
                "diff_low": diff[1],
                "diff_high": diff[2],
                "epochs": epochs,
                "minutes": minutes,
            }
        )
    return pd.DataFrame(out)


def markdown(table: pd.DataFrame, split: str = "val") -> str:
    """The comparison as a markdown table (months; intervals are bootstrap 95 %)."""
    base = table.iloc[0]["run"]
    lines = [
        f"| run | {split} MAE (95 % CI) | vs {base} (95 % CI) | epochs | wall min |",
        "|---|---|---|---|---|",
    ]
    for k, row in table.iterrows():
        diff = (
            "base"
            if k == 0
            else format_interval(row["diff"], row["diff_low"], row["diff_high"], signed=True)
        )
        mae = format_interval(row["mae"], row["mae_low"], row["mae_high"])
        lines.append(f"| {row['run']} | {mae} | {diff} | {row['epochs']} | {row['minutes']} |")
    lines.append(f"\n{int(table.iloc[0]['images'])} {split} images, the same for every run.")
    return "\n".join(lines)


def main(argv=None) -> int:
    """``training/ablation.py`` / ``tf-boneage train ablation``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", type=_named, required=True, help="NAME=RUN (the reference)")
    parser.add_argument("--variant", type=_named, action="append", default=[], help="NAME=RUN")
    parser.add_argument("--split", default="val")
    parser.add_argument("--out", default=None, help="markdown file (and .csv beside it)")
    args = parser.parse_args(argv)
    try:
        table = compare([args.base, *args.variant], args.split)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    text = markdown(table, args.split)
    print(text)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
        table.to_csv(out.with_suffix(".csv"), index=False)
    return 0
