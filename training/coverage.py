"""How honest is the exported model's uncertainty? Coverage of its intervals on labelled images.

    python training/coverage.py --model saved_models/boneage --manifest runs/rsna100.csv \
        --split test --out runs/coverage.json

Runs the end-to-end SavedModel (``serving_default``, image bytes + sex) over the rows of a
split and reports the MAE (months), the mean ``bone_age_std`` and how often the true age
falls inside estimate +/- z * std for the nominal 68 % (z = 1) and 90 % (z = 1.645, the
interval ``tf-boneage predict`` prints) intervals, overall and by sex.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from common import write_json  # noqa: E402
from tqdm import tqdm  # noqa: E402

from tf_boneage.cli import _model_version  # noqa: E402
from tf_boneage.data.manifest import load_manifest  # noqa: E402
from tf_boneage.inference.predict import INTERVAL_Z  # noqa: E402


def coverage(truth, pred, std) -> dict:
    err = np.abs(np.asarray(pred) - np.asarray(truth))
    std = np.asarray(std)
    return {"n": int(len(err)), "mae": float(err.mean()), "mean_std": float(std.mean()),
            "coverage_68": float((err <= std).mean()),
            "coverage_90": float((err <= INTERVAL_Z * std).mean())}  # fmt: skip


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="saved_models/boneage")
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--out", default=None, help="JSON report")
    args = parser.parse_args(argv)
    model = _model_version(args.model)
    fn = tf.saved_model.load(str(model)).signatures["serving_default"]
    rows = load_manifest(args.manifest)
    rows = rows[rows["split"] == args.split].reset_index(drop=True)
    pred, std = [], []
    for start in tqdm(range(0, len(rows), args.batch), desc="coverage", unit="batch"):
        part = rows.iloc[start : start + args.batch]
        out = fn(image_bytes=tf.constant([Path(p).read_bytes() for p in part["image_path"]]),
                 male=tf.constant(part["male"].astype("float32").to_numpy()))  # fmt: skip
        pred.append(out["bone_age_months"].numpy())
        std.append(out["bone_age_std"].numpy())
    pred, std = np.concatenate(pred), np.concatenate(std)
    report = {"model": str(model), "manifest": args.manifest, "split": args.split,
              "all": coverage(rows["boneage"], pred, std)}  # fmt: skip
    for name, sex in (("male", True), ("female", False)):
        m = (rows["male"] == sex).to_numpy()
        report[name] = coverage(rows["boneage"][m], pred[m], std[m])
    for key in ("all", "male", "female"):
        r = report[key]
        print(f"{key}: n={r['n']} MAE {r['mae']:.2f} months, mean std {r['mean_std']:.2f}, "
              f"coverage 68 % -> {100 * r['coverage_68']:.1f} %, "
              f"90 % -> {100 * r['coverage_90']:.1f} %")  # fmt: skip
    if args.out:
        write_json(Path(args.out), report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
