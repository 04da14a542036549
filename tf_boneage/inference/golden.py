"""A golden file of per-film ages: what the shipped model answers, film by film, on the rsna100
``test`` split, so that a change to the chain, the graph or the export that moves any film's
age (or QC decision) is caught, with the films named.

    python -m tf_boneage.inference.golden --data ../shared/data \\
        --out tests/golden/boneage_rsna100_test.csv

The films go through ``predict``'s own path (:func:`.batch.run`, ``force=True`` so a rejected
film keeps its age beside its verdict). The file holds ids, sex, QC status and ages (months)
only: the films stay with their owner.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from tf_boneage.inference import batch

#: how far a film's age may move before the golden file fails it (months)
TOLERANCE = 0.5
SPLIT_FILE = Path("data_manifests") / "rsna100_split.csv"
COLUMNS = ("id", "male", "true_bone_age_months", "status", "bone_age_months")


def requests(data_root, split_csv, split: str = "test", limit: int | None = None) -> list:
    """:class:`.batch.Request` of the ``split`` films of the rsna100 copy under ``data_root``
    (``rsna100/images/ID.png`` and ``rsna100/labels.csv``), in the split file's order, with
    their sex and true age; ``limit`` keeps the first N."""
    root = Path(data_root) / "rsna100"
    labels = pd.read_csv(root / "labels.csv", dtype={"id": str}).set_index("id")
    ids = pd.read_csv(split_csv, dtype={"id": str})
    ids = ids.loc[ids["split"] == split, "id"].tolist()[:limit]
    out = []
    for key in ids:
        row = labels.loc[key]
        sex = "M" if str(row["male"]).lower() in ("true", "1") else "F"
        out.append(batch.Request(root / "images" / f"{key}.png", sex, truth=float(row["boneage"])))
    return out


def table(rows: list[dict]) -> pd.DataFrame:
    """``predict`` rows -> the golden file's columns (one row per film, by id)."""
    frame = pd.DataFrame(
        {
            "id": [Path(r["file"]).stem for r in rows],
            "male": [r["sex"] == "M" for r in rows],
            "true_bone_age_months": [r["true_bone_age_months"] for r in rows],
            "status": [r["status"] for r in rows],
            "bone_age_months": [r["bone_age_months"] for r in rows],
        }
    )
    return frame


def read(path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"id": str})


def mae(frame: pd.DataFrame) -> float:
    """MAE (months) of every film of ``frame``, rejected ones included (their forced ages)."""
    return float((frame["bone_age_months"] - frame["true_bone_age_months"]).abs().mean())


def moved(golden: pd.DataFrame, now: pd.DataFrame, tolerance: float = TOLERANCE) -> list[str]:
    """One line per film of ``now`` whose age moved by more than ``tolerance`` months from
    ``golden`` or whose QC status changed (ids missing from ``golden`` are named too)."""
    ref = golden.set_index("id")
    lines = []
    for r in now.itertuples(index=False):
        if r.id not in ref.index:
            lines.append(f"{r.id}: not in the golden file")
            continue
        g = ref.loc[r.id]
        delta = float(r.bone_age_months) - float(g["bone_age_months"])
        if abs(delta) > tolerance:
            lines.append(
                f"{r.id}: {g['bone_age_months']:.2f} -> {r.bone_age_months:.2f} months "
                f"({delta:+.2f})"
            )
        if r.status != g["status"]:
            lines.append(f"{r.id}: QC {g['status']} -> {r.status}")
    return lines


#: the age bands of the model card (years)
CARD_BANDS = ((0, 5), (5, 10), (10, 14), (14, 20))


def card_rows(frame: pd.DataFrame) -> list[dict]:
    """MAE (months) with its bootstrap 95 % interval for every film, the boys, the girls and
    each band of :data:`CARD_BANDS` (by the true age), on all films and on the films QC
    accepts: ``[{"films": label, "n": ..., "all": (mae, low, high), "accepted": (...)}]``."""
    from tf_boneage.evaluation import bootstrap_mae

    groups = [("all", frame), ("boys", frame[frame["male"]]), ("girls", frame[~frame["male"]])]
    for lo, hi in CARD_BANDS:
        years = frame["true_bone_age_months"] / 12.0
        groups.append((f"{lo}-{hi} years", frame[(years >= lo) & (years < hi)]))
    rows = []
    for label, part in groups:
        errors = (part["bone_age_months"] - part["true_bone_age_months"]).abs()
        ok = errors[part["status"] == "ok"]
        rows.append(
            {
                "films": label,
                "n": len(part),
                "accepted": len(ok),
                "mae_all": bootstrap_mae(errors.to_numpy()) if len(part) else None,
                "mae_accepted": bootstrap_mae(ok.to_numpy()) if len(ok) else None,
            }
        )
    return rows


def _cell(value) -> str:
    return "-" if value is None else f"{value[0]:.2f} [{value[1]:.1f}-{value[2]:.1f}]"


def card_markdown(frame: pd.DataFrame) -> str:
    """:func:`card_rows` as a Markdown table."""
    lines = [
        "| films | n | MAE, all films [95 %] | accepted by QC | MAE, accepted [95 %] |",
        "|---|---|---|---|---|",
    ]
    for r in card_rows(frame):
        lines.append(
            f"| {r['films']} | {r['n']} | {_cell(r['mae_all'])} | {r['accepted']} | "
            f"{_cell(r['mae_accepted'])} |"
        )
    return "\n".join(lines)


def predict_table(model, reqs: list, batch_size: int = 16) -> pd.DataFrame:
    """The golden columns of ``reqs`` read by the SavedModel version ``model`` through
    ``predict``'s path."""
    from tf_boneage.export import load

    return table(batch.run(load.saved_model(model), reqs, batch_size, force=True))


def main(argv=None) -> int:
    """Write the golden file (and its summary ``.json`` beside it) of the shipped model."""
    from tf_boneage.export import shipped

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="../shared/data (holds rsna100/)")
    parser.add_argument("--split-file", default=str(SPLIT_FILE))
    parser.add_argument("--split", default="test")
    parser.add_argument("--model", default=None, help="default: the shipped model")
    parser.add_argument("--out", required=True, help="golden CSV")
    args = parser.parse_args(argv)
    model = shipped.resolve(args.model)
    frame = predict_table(model, requests(args.data, args.split_file, args.split))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out, index=False)
    summary = {
        "model": f"{model.parent.name}/{model.name}",
        "split": args.split,
        "films": len(frame),
        "mae_all_films": round(mae(frame), 3),
        "mae_accepted": round(mae(frame[frame["status"] == "ok"]), 3),
        "rejected": int((frame["status"] != "ok").sum()),
    }
    out.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary))
    print(card_markdown(frame))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
