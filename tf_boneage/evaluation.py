"""Bone-age accuracy: MAE in months overall, by sex and by age band."""

from __future__ import annotations

import pandas as pd

#: Age bands for reporting (months): [lower, upper).
BANDS = ((0, 24), (24, 60), (60, 96), (96, 120), (120, 144), (144, 168), (168, 192), (192, 241))


def mae_report(table: pd.DataFrame, pred: str = "pred", truth: str = "boneage") -> dict:
    """MAE of ``table[pred]`` vs ``table[truth]`` (months): overall, male, female, per band;
    each entry ``{"n": count, "mae": months}``; the mean predictor's MAE for reference."""
    err = (table[pred] - table[truth]).abs()

    def entry(mask) -> dict:
        n = int(mask.sum())
        return {"n": n, "mae": float(err[mask].mean()) if n else float("nan")}

    everyone = pd.Series(True, index=table.index)
    out = {"all": entry(everyone)}
    if "male" in table:
        male = table["male"].astype("boolean")
        out["male"] = entry(male.fillna(False).astype(bool))
        out["female"] = entry((~male).fillna(False).astype(bool))
    out["bands"] = {
        f"{lo}-{hi}": entry((table[truth] >= lo) & (table[truth] < hi)) for lo, hi in BANDS
    }
    out["mean_predictor_mae"] = float((table[truth] - table[truth].mean()).abs().mean())
    return out


def format_report(report: dict) -> str:
    """One line: overall, male, female MAE."""
    parts = [f"MAE {report['all']['mae']:.2f} months (n={report['all']['n']})"]
    for key in ("male", "female"):
        if key in report and report[key]["n"]:
            parts.append(f"{key} {report[key]['mae']:.2f}")
    parts.append(f"mean predictor {report['mean_predictor_mae']:.2f}")
    return ", ".join(parts)


def age_band_table(report: dict) -> str:
    rows = ["| band (months) | n | MAE |", "|---|---|---|"]
    for band, e in report["bands"].items():
        if e["n"]:
            rows.append(f"| {band} | {e['n']} | {e['mae']:.2f} |")
    return "\n".join(rows)
