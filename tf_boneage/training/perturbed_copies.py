"""Copies of a split's films changed as nobody would see: the training films the chain then
registers and crops again, so that region networks can learn to read a film and its invisible
changes alike (the changes of ``benchmarks/stability.py``).

    python training/perturbed_copies.py --manifest runs/rsna100.csv --split train \\
        --sex male --out runs/perturbed

Each film gets one copy with one change drawn for it (seeded by ``--seed`` and its row): JPEG
at a quality of 85-98, +/- 1 grey level of noise, a shift by one pixel (across or down), a turn
by 0.5-2 degrees either way (Lanczos), or a slight blur (a Gaussian of 0.3-0.6 px) rounded to
8 bits. Writes ``OUT/images/ID.png`` (or ``.jpg``) and ``OUT/manifest.csv``: the manifest's
rows with ``id`` suffixed ``_p``, the copy's path and the change made, ready for ``tf-boneage
preprocess``. Nothing of the source is changed.

``--combine CACHE ...`` instead joins the manifests of caches built by one chain (their
``chain.json`` must be equal) into ``OUT/manifest.csv`` with absolute paths, beside a copy of
that ``chain.json``: the training manifest of a region run on the films and their copies.

    python training/perturbed_copies.py --combine runs/table/cache runs/perturbed/cache \
        --out runs/perturbed/combined
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from tqdm import tqdm

from tf_boneage.data import io
from tf_boneage.data.manifest import load_manifest
from tf_boneage.inference import robustness
from tf_boneage.preprocessing.spec import CHAIN_FILE

CHANGES = ("jpeg", "noise", "shift", "turn", "blur")
PATH_COLUMNS = ("image_path", "mask_path", "region_A_path", "region_B_path", "region_C_path")


def combine(caches, out: Path) -> pd.DataFrame:
    """The manifests of ``caches`` (folders) joined, paths made absolute; ``OUT/manifest.csv``
    and ``OUT/chain.json`` written. Raises ``ValueError`` when their chains differ."""
    chains = [(Path(c) / CHAIN_FILE).read_text() for c in caches]
    if any(c != chains[0] for c in chains):
        raise ValueError(f"the caches {caches} were not built by one chain (chain.json differs)")
    parts = []
    for cache in caches:
        part = pd.read_csv(Path(cache) / "manifest.csv", dtype={"id": str})
        for column in PATH_COLUMNS:
            if column in part:
                part[column] = [
                    str((Path(cache) / p).resolve()) if isinstance(p, str) else p
                    for p in part[column]
                ]
        parts.append(part)
    table = pd.concat(parts, ignore_index=True)
    if table["id"].duplicated().any():
        raise ValueError(f"ids repeat across {caches}")
    out.mkdir(parents=True, exist_ok=True)
    (out / CHAIN_FILE).write_text(chains[0])
    table.to_csv(out / "manifest.csv", index=False)
    return table


def changed(img: np.ndarray, rng: np.random.Generator) -> tuple[str, np.ndarray | bytes]:
    """One change drawn for film ``img`` (H, W) in [0, 1]: ``(description, film)``; a JPEG
    change returns the encoded bytes (the film as a JPEG file holds it)."""
    kind = CHANGES[int(rng.integers(len(CHANGES)))]
    eight = np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)
    if kind == "jpeg":
        quality = int(rng.integers(85, 99))
        return f"JPEG {quality}", cv2.imencode(".jpg", eight, [cv2.IMWRITE_JPEG_QUALITY, quality])[
            1
        ].tobytes()
    if kind == "noise":
        return "noise 1", np.clip(img + rng.integers(-1, 2, img.shape) / 255.0, 0, 1)
    if kind == "shift":
        axis = int(rng.integers(2))
        moved = (
            np.concatenate([img[:1], img[:-1]], 0)
            if axis == 0
            else np.concatenate([img[:, :1], img[:, :-1]], 1)
        )
        return f"shift {'down' if axis == 0 else 'across'}", moved
    if kind == "turn":
        degrees = float(rng.uniform(0.5, 2.0) * rng.choice([-1, 1]))
        return f"turn {degrees:+.2f}", robustness.rotate(img, degrees)
    sigma = float(rng.uniform(0.3, 0.6))
    return f"blur {sigma:.2f}", np.round(cv2.GaussianBlur(img, (0, 0), sigma) * 255) / 255.0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--manifest")
    parser.add_argument("--combine", nargs="+", default=None, help="cache folders to join")
    parser.add_argument("--split", default="train")
    parser.add_argument("--sex", choices=("male", "female", "both"), default="both")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    if args.combine:
        table = combine(args.combine, Path(args.out))
        print(
            f"{len(table)} rows of {len(args.combine)} caches -> {Path(args.out) / 'manifest.csv'}"
        )
        return 0
    if not args.manifest:
        parser.error("--manifest is required (or --combine)")
    table = load_manifest(args.manifest)
    rows = table[table["split"] == args.split]
    if args.sex != "both":
        rows = rows[rows["male"].astype(bool) == (args.sex == "male")]
    out = Path(args.out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    made = []
    for k, row in enumerate(tqdm(rows.itertuples(index=False), total=len(rows), desc="copies")):
        rng = np.random.default_rng([args.seed, k])
        what, film = changed(io.load_image(row.image_path), rng)
        name = f"{row.id}_p"
        if isinstance(film, bytes):
            path = out / "images" / f"{name}.jpg"
            path.write_bytes(film)
        else:
            path = out / "images" / f"{name}.png"
            path.write_bytes(io.png16_bytes(film))
        made.append(
            {**row._asdict(), "id": name, "image_path": str(path.resolve()), "change": what}
        )
    pd.DataFrame(made).to_csv(out / "manifest.csv", index=False)
    print(f"{len(made)} copies -> {out / 'manifest.csv'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
