"""Full-size real films through a model trained on small copies: each film at its own size against the same film
downscaled to the model's input size the way the rsna100 copy was made (area resampling, aspect
not kept).

    python benchmarks/full_size_films.py --data ../shared/data --out runs/full_size_films

``registered60`` (labelled; its films are already segmented and registered by the paper's
authors' group) is read both ways through ``predict``'s path (``force``: a rejected film keeps
its age beside its verdict); MAE by group: RSNA's own test films (never seen by any rsna100
model), films of our ``test`` split, and RSNA training films our models learnt from at 100 px.
``raw10`` (unlabelled raw films) is read at its own size with overlays written to
``OUT/overlays`` to be looked at. Per-film rows go to ``OUT/films.csv``.
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
    rows = []
    for kind, reqs in (("native", native), ("input size", small)):
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
    raw = [batch.Request(p, "F") for p in sorted((data / "raw10").glob("*.png"))]
    got = batch.run(loaded, raw, 4, overlay_dir=out / "overlays", overwrite=True, force=True)
    for g in got:
        print(f"raw10 {Path(g['file']).name}: {g['bone_age_months']} months, {g['status']} "
              f"{g['reason']} {g['flags']}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
