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

import tensorflow as tf  # noqa: E402
from common import write_json  # noqa: E402

from tf_boneage.data.manifest import load_manifest  # noqa: E402
from tf_boneage.export import saved_model  # noqa: E402
from tf_boneage.export.calibration import coverage, predict_rows  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="saved_models/boneage")
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--out", default=None, help="JSON report")
    args = parser.parse_args(argv)
    model = saved_model.resolve(args.model)
    fn = tf.saved_model.load(str(model)).signatures["serving_default"]
    rows = load_manifest(args.manifest)
    rows = rows[rows["split"] == args.split].reset_index(drop=True)
    out = predict_rows(fn, rows, args.batch, desc="coverage")
    pred, std = out["bone_age_months"], out["bone_age_std"]
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
