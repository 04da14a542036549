"""Robustness to how films are taken: MAE and QC rejections per transform.

    python benchmarks/robustness.py --model saved_models/boneage \
        --manifest demo_run/synth/manifest.csv --split test --limit 100 --out robustness.md

Every film of the split (first ``--limit``) under every transform of
``tf_boneage.inference.robustness.TRANSFORMS`` (seeded), through the SavedModel's
``serving_default`` in batches; QC is ``predict``'s own decision. Writes the markdown table
and the per-film CSV beside it. Per transform: the MAE of every film and its change over the
untouched films, the MAE of the films QC accepts, the same films' MAE untouched and the change
on them (what the transform cost the films it lets through: the goal is at most +10 %
or a rejection), and the share rejected.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
import tensorflow as tf
from common import split_arguments, split_rows, write_report
from tqdm import tqdm

from tf_boneage.data import io
from tf_boneage.export import load, saved_model
from tf_boneage.inference import predict, robustness


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="saved_models/NAME or a version")
    split_arguments(parser, "test", 100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument(
        "--only",
        nargs="*",
        default=None,
        help='these transforms only (shell wildcards: "upscaled *", "rotate*")',
    )
    parser.add_argument(
        "--aspect",
        type=float,
        default=None,
        help="width / height of the films the pixels show (default: the export's assumed "
        "aspect, if any): small rotations act on the film at its true proportions",
    )
    parser.add_argument(
        "--resampling",
        choices=sorted(robustness.RESAMPLING),
        default="lanczos",
        help="how the small rotations resample the film, once per turn (default lanczos: "
        "closest to a film taken turned; bilinear blurs as an in-graph warp does)",
    )
    parser.add_argument("--out", required=True, help="markdown table (CSV beside it)")
    args = parser.parse_args(argv)
    if args.split == "val":
        print("note: choose thresholds on val, report on test")
    rows = split_rows(args)
    version = saved_model.resolve(args.model)
    fn = load.saved_model(version).signatures["serving_default"]
    aspect = args.aspect or load.metadata(version).get("chain", {}).get("assume_aspect")
    print(f"small rotations on films of aspect {aspect or 'as stored'}")
    films = [io.load_image(p) for p in rows["image_path"]]
    names = robustness.select(args.only)
    if "untouched" not in names:  # every change is paired with the same films untouched
        names.insert(0, "untouched")
    records = []
    started = time.perf_counter()
    for name in tqdm(names, desc="transforms"):
        for start in range(0, len(rows), args.batch):
            part = rows.iloc[start : start + args.batch]
            data = [
                robustness.png16(
                    robustness.transformed(films[k], name, args.seed, k, aspect, args.resampling)
                )
                for k in part.index
            ]
            out = fn(
                image_bytes=tf.constant(data),
                male=tf.constant(part["male"].astype("float32").to_numpy()),
            )
            for j, k in enumerate(part.index):
                one = {key: np.asarray(value)[j] for key, value in out.items()}
                reason = predict.reason_of(one)
                records.append(
                    {
                        "transform": name,
                        "id": rows.loc[k, "id"],
                        "boneage": float(rows.loc[k, "boneage"]),
                        "pred": float(out["bone_age_months"][j]),
                        "rejected": bool(reason),
                        "reason": reason,
                        "quarter_turns": float(one.get("quarter_turns", 0.0)),
                        "inverted": float(one.get("inverted", 0.0)),
                        "registration_fit": float(one.get("registration_fit", np.nan)),
                        "bone_age_std": float(one["bone_age_std"]),
                        "uncertain": float(one.get("certainty_ok", 1.0)) < 0.5,
                    }
                )
    preds = pd.DataFrame(records)
    table = robustness.summarise(preds)
    text = robustness.markdown(table)
    header = (
        f"{len(rows)} `{args.split}` films of {args.manifest}, model {args.model}, seed "
        f"{args.seed}; small rotations resampled {args.resampling}; "
        f"{time.perf_counter() - started:.0f} s\n\n"
    )
    write_report(args.out, header, text, preds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
