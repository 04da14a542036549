"""Every scalar output of an export (QC scores, std, flags) for good films of three sets.

    python benchmarks/qc_scores.py --model saved_models/boneage_rsna100 --manifest runs/rsna100.csv \
        --out qc_scores.md

``val`` and ``test`` whole, and ``--extra`` of the ``train`` films the export fits its QC
thresholds on besides ``val`` (``calibration.qc_extra_rows``, the export's own sample),
through ``serving_default``. Writes per set the share rejected, the share of accepted films
flagged uncertain (``certainty_ok``) and their MAE; the per-film CSV
``OUT.films.csv`` holds every output, for thresholds tried afterwards.
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
import tensorflow as tf
from common import write_rows
from tqdm import tqdm

from tf_boneage.data.io import encoded_bytes
from tf_boneage.data.manifest import load_manifest
from tf_boneage.export import calibration, load, saved_model
from tf_boneage.inference import predict


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="saved_models/NAME or a version")
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--extra", type=int, default=500, help="fitting train films")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--out", required=True, help="markdown table (CSV beside it)")
    args = parser.parse_args(argv)
    table = load_manifest(args.manifest)
    sets = {
        "val": table[table["split"] == "val"],
        "test": table[table["split"] == "test"],
        "train (fit)": calibration.qc_extra_rows(table).head(args.extra),
    }
    fn = load.saved_model(saved_model.resolve(args.model)).signatures["serving_default"]
    films = []
    for name, rows in sets.items():
        rows = rows.reset_index(drop=True)
        for start in tqdm(range(0, len(rows), args.batch), desc=name, unit="batch"):
            part = rows.iloc[start : start + args.batch]
            out = fn(
                image_bytes=tf.constant([encoded_bytes(p) for p in part["image_path"]]),
                male=tf.constant(part["male"].astype("float32").to_numpy()),
            )
            out = {k: np.asarray(v) for k, v in out.items()}
            for j in range(len(part)):
                one = {k: v[j] for k, v in out.items()}
                films.append(
                    {
                        "set": name,
                        "id": part["id"].iloc[j],
                        "boneage": float(part["boneage"].iloc[j]),
                        "reason": predict.reason_of(one),
                        **{k: float(v) for k, v in one.items() if np.ndim(v) == 0},
                    }
                )
    per_film = pd.DataFrame(films)
    per_film["error"] = (per_film["bone_age_months"] - per_film["boneage"]).abs()
    summary = []
    for name, part in per_film.groupby("set", sort=False):
        accepted = part[part["reason"] == ""]
        flagged = accepted[accepted["certainty_ok"] < 0.5] if "certainty_ok" in accepted else []
        summary.append(
            {
                "films": name,
                "n": len(part),
                "rejected %": round(100 * (part["reason"] != "").mean(), 1),
                "accepted MAE": round(float(accepted["error"].mean()), 2),
                "flagged uncertain": len(flagged),
                "flagged MAE": round(float(flagged["error"].mean()), 1) if len(flagged) else "",
            }
        )
    header = f"Good films through {args.model} ({args.manifest})\n\n"
    write_rows(args.out, header, summary)
    per_film.to_csv(f"{args.out}.films.csv", index=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
