"""Full-size real films through a model trained on small copies: each film at its own size against the same film
downscaled to the model's input size the way the rsna100 copy was made (area resampling, aspect
not kept).

    python benchmarks/full_size_films.py --data ../shared/data --out runs/full_size_films

``registered60`` (labelled; its films are already segmented and registered by the paper's
authors' group) is read both ways through ``predict``'s path (``force``: a rejected film keeps
its age beside its verdict); MAE by group: RSNA's own test films (never seen by any rsna100
model), films of our ``test`` split, and RSNA training films our models learnt from at 100 px.
``raw10`` (unlabelled raw films) is read at its own size with overlays written to
``OUT/overlays`` to be looked at. Per-film rows go to ``OUT/films.csv``. ``--turns`` also
reads each ``registered60`` film turned at its own size and then downscaled (a film taken
turned: the small copy is resampled once, by the downscale) against the same films untouched.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from tf_boneage.export import load, shipped
from tf_boneage.inference import batch

SPLIT_FILE = Path("data_manifests") / "rsna100_split.csv"


def downscaled(src: Path, dest: Path, size: tuple[int, int]) -> Path:
    """``src`` resized to ``size`` (h, w) (area resampling, aspect not kept), 8-bit PNG."""
    img = cv2.imread(str(src), cv2.IMREAD_UNCHANGED)
    if img.dtype != np.uint8:
        img = (img / 257.0).round().astype(np.uint8)
    dest.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(dest), cv2.resize(img, (size[1], size[0]), interpolation=cv2.INTER_AREA))
    return dest


def turned_copy(src: Path, dest: Path, degrees: float, size: tuple[int, int]) -> Path:
    """``src`` turned by ``degrees`` at its own size (one Lanczos resampling, square pixels:
    a film taken turned) and then downscaled as :func:`downscaled` does, 8-bit PNG."""
    from tf_boneage.data import io
    from tf_boneage.inference import robustness

    img = robustness.rotate(io.load_image(src), degrees)
    dest.parent.mkdir(parents=True, exist_ok=True)
    small = cv2.resize(img, (size[1], size[0]), interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(dest), np.round(np.clip(small, 0, 1) * 255).astype(np.uint8))
    return dest


def turn_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Per turn of ``frame`` (rows of :func:`main`: input ``turned D``), the films QC accepts
    turned against the same films untouched at the input size: MAE both ways and the change."""
    base = frame[frame["input"] == "input size"].set_index("id")["error"]
    rows = []
    for kind, part in frame[frame["input"].str.startswith("turned")].groupby("input", sort=False):
        ok = part[part["status"] == "ok"]
        same = base.loc[ok["id"]]
        rows.append(
            {
                "turn": kind.removeprefix("turned "),
                "films": len(part),
                "accepted": len(ok),
                "MAE turned": round(float(ok["error"].mean()), 2),
                "MAE untouched": round(float(same.mean()), 2),
                "change": f"{100 * (ok['error'].mean() / same.mean() - 1):+.0f} %",
            }
        )
    return pd.DataFrame(rows)


def group_of(labels: pd.DataFrame, split_csv) -> pd.Series:
    """``rsna test`` / ``our test`` / ``rsna100 train or val`` for each registered60 film."""
    splits = pd.read_csv(split_csv, dtype={"id": str}).set_index("id")["split"]
    ours = labels["id"].map(splits)
    return pd.Series(
        np.where(
            labels["rsna_split"] == "rsna_test",
            "RSNA test (unseen)",
            np.where(ours == "test", "our test split", "rsna100 train / val"),
        ),
        index=labels.index,
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="../shared/data")
    parser.add_argument("--model", default=None, help="default: the shipped model")
    parser.add_argument("--split-file", default=str(SPLIT_FILE))
    parser.add_argument("--out", required=True)
    parser.add_argument(
        "--turns",
        type=float,
        nargs="*",
        default=[],
        help="also read each film turned by these degrees at its own size, then downscaled "
        "(films taken turned), against the same films untouched",
    )
    args = parser.parse_args(argv)
    data, out = Path(args.data), Path(args.out)
    model = shipped.resolve(args.model)
    loaded = load.saved_model(model)
    labels = pd.read_csv(data / "registered60" / "labels.csv", dtype={"id": str})
    labels["group"] = group_of(labels, args.split_file)
    height, width = load.metadata(model)["input_size"]  # the size its training films had
    native, small = [], []
    for r in labels.itertuples():
        film = data / "registered60" / "images" / f"{r.id}.png"
        sex = "M" if str(r.male).lower() == "true" else "F"
        native.append(batch.Request(film, sex, truth=float(r.boneage)))
        small_film = downscaled(film, out / "small" / film.name, (height, width))
        small.append(batch.Request(small_film, sex, truth=float(r.boneage)))
    kinds = [("native", native), ("input size", small)]
    for degrees in args.turns:
        reqs = [
            batch.Request(
                turned_copy(r.path, out / f"turned{degrees:+g}" / r.path.name, degrees,
                            (height, width)),
                r.sex,
                truth=r.truth,
            )
            for r in native
        ]  # fmt: skip
        kinds.append((f"turned {degrees:+g}", reqs))
    rows = []
    for kind, reqs in kinds:
        got = batch.run(loaded, reqs, 8, force=True)
        for lab, g in zip(labels.itertuples(), got, strict=True):
            rows.append(
                {
                    "id": lab.id,
                    "group": lab.group,
                    "input": kind,
                    "true": float(lab.boneage),
                    "age": g["bone_age_months"],
                    "status": g["status"],
                    "reason": g["reason"],
                }
            )
    frame = pd.DataFrame(rows)
    frame["error"] = (frame["age"] - frame["true"]).abs()
    out.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out / "films.csv", index=False)
    summary = frame.groupby(["group", "input"]).agg(
        films=("id", "size"),
        mae=("error", "mean"),
        rejected=("status", lambda s: int((s != "ok").sum())),
    )
    print(f"model {model}")
    print(summary.round(2).to_string())
    paired = frame.pivot(index="id", columns="input", values="age")
    print(f"native - input size, mean {np.mean(paired['native'] - paired['input size']):+.2f} months, "
          f"mean absolute {np.mean(np.abs(paired['native'] - paired['input size'])):.2f}")  # fmt: skip
    if args.turns:
        print(turn_table(frame).to_string(index=False))
    raw = [batch.Request(p, "F") for p in sorted((data / "raw10").glob("*.png"))]
    got = batch.run(loaded, raw, 4, overlay_dir=out / "overlays", overwrite=True, force=True)
    for g in got:
        print(f"raw10 {Path(g['file']).name}: {g['bone_age_months']} months, {g['status']} "
              f"{g['reason']} {g['flags']}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
