"""What exposure changes do to the chain's hand mask, per U-Net.

    python benchmarks/exposure_masks.py --runs runs/table_a runs/table_b \
        --manifest runs/rsna100.csv --split val --limit 200 --out exposure_masks.md

For every ``training/table.py`` folder given, its U-Net (``seg/round*/unet.keras``, the last
round) segments the first ``--limit`` films of the split untouched and under each exposure
transform of ``tf_boneage.inference.robustness.TRANSFORMS`` (and darkenings by 10 and 20 %;
``--transforms`` for others of them, e.g. ``"burned-in text"``, seeded per film), through the chain's own ``Preprocessor.segment`` (the clean mask). Per transform: the median ratio of the mask's area to
the untouched film's, the share of films keeping at least 80 % of it, and the median share of
the hand clipped to black (``chain.black_share``). No model is trained or exported here.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import tensorflow as tf
from common import split_arguments, split_rows, write_rows

from tf_boneage.data import io
from tf_boneage.inference.robustness import TRANSFORMS, exposure
from tf_boneage.preprocessing import chain

#: the benchmark's exposure transforms and two milder darkenings
EXPOSURES = {
    **{k: TRANSFORMS[k] for k in ("brightness +30 %", "contrast +30 %", "contrast -30 %")},
    "brightness -10 %": lambda img, rng: exposure(img, brightness=-0.1),
    "brightness -20 %": lambda img, rng: exposure(img, brightness=-0.2),
    "brightness -30 %": TRANSFORMS["brightness -30 %"],
}

#: every transform the benchmark can apply
CHOICES = sorted({*TRANSFORMS, *EXPOSURES} - {"untouched"})


def unet_of(run: Path) -> Path:
    """The last round's U-Net of a ``training/table.py`` folder."""
    found = sorted(run.glob("seg/round*/unet.keras"))
    if not found:
        raise SystemExit(f"{run}: no seg/round*/unet.keras (train the segmentation step first)")
    return found[-1]


def masks(pre, films: list[np.ndarray], batch: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """(mask area share, black share of the hand), each (N,), of the chain's clean masks."""
    areas, blacks = [], []
    for start in range(0, len(films), batch):
        x = tf.constant(np.stack(films[start : start + batch])[..., None], tf.float32)
        m, _ = pre.segment(x)
        areas.append(m.numpy().mean(axis=(1, 2, 3)))
        blacks.append(chain.black_share(x, m).numpy())
    return np.concatenate(areas), np.concatenate(blacks)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", nargs="+", required=True, help="training/table.py folders")
    split_arguments(parser, "val", 200)
    parser.add_argument("--transforms", nargs="+", default=list(EXPOSURES), choices=CHOICES)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="markdown table (CSV beside it)")
    args = parser.parse_args(argv)
    rows = split_rows(args)
    films = [io.load_image(p) for p in rows["image_path"]]
    records = []
    for run in map(Path, args.runs):
        path = unet_of(run)
        pre = chain.load(path)
        base, _ = masks(pre, films)
        normalised = any(layer.name == "exposure" for layer in pre.unet.layers)
        for name in args.transforms:
            change = {**TRANSFORMS, **EXPOSURES}[name]
            changed = [
                np.asarray(change(f, np.random.default_rng([args.seed, k])), np.float32)
                for k, f in enumerate(films)
            ]
            area, black = masks(pre, changed)
            ratio = area / np.maximum(base, 1e-6)
            records.append(
                {
                    "U-Net": f"{run.name} ({'normalised' if normalised else 'as trained'})",
                    "transform": name,
                    "median area ratio": float(np.median(ratio)),
                    "kept >= 80 %": f"{100 * np.mean(ratio >= 0.8):.0f} %",
                    "median black share": float(np.median(black)),
                }
            )
    header = (
        f"# Hand masks under exposure changes\n\n{len(films)} `{args.split}` films of "
        f"{args.manifest}\n\n"
    )
    write_rows(args.out, header, records)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
