"""Preprocessed cache: the whole chain run once over a manifest so training never repeats it.

For every image it writes the mask, the registered image, the region crops A / B / C (8-bit
PNGs), and a QC row (landmarks, right hand, mask area and confidence, landmark plausibility,
error); at the end a canonical manifest of the cache (``manifest.csv``, one row per image that
passed, ``region_A_path`` ...). Decoding runs in a parallel tf.data pipeline, the chain on
batches, and PNG writing in a thread pool. Resumable: ``qc.csv`` is appended batch by batch,
and ids already in it are skipped. A file that cannot be read is recorded with its error and
the rest go on. Nothing outside ``out_dir`` is written. ``chain.json`` records the chain that
built the cache (:mod:`~tf_boneage.preprocessing.spec`).

A chain with the orientation step (``orient``) is checked against a canonical outline: the U-Net's
mask mass alone cannot tell an upright film from its inverse or its turns once the U-Net was
trained on turned and inverted films (such a U-Net, on rsna100, turned 12-19 % and inverted 30 %
of upright RSNA films when it decided alone, and its region networks learnt from those crops).
Before the first film, the cache fits ``outline.npy``, the mean registered occupancy of up to
:data:`OUTLINE_FILMS` training films run through the chain **as given** (orientation off), and
the chain then turns or inverts a film only when that fits the outline better, as the exported
graph does. The export reads the same outline back (``training/export.py``).
"""

from __future__ import annotations

import dataclasses
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import tensorflow as tf
from tqdm import tqdm

from tf_boneage.data import io
from tf_boneage.data.manifest import save_table
from tf_boneage.preprocessing.chain import Preprocessor, to_input_size
from tf_boneage.preprocessing.spec import ChainSpec, settle

#: the canonical outline the cache's orientation step is checked against (52, 40) float32
OUTLINE_FILE = "outline.npy"
#: training films the canonical outline is the mean of (a seeded sample)
OUTLINE_FILMS = 256
#: fewest films to fit an outline on
OUTLINE_MIN_FILMS = 50

QC_COLUMNS = [
    "id",
    "ok",
    "error",
    "right_hand",
    "mask_area",
    "mask_confidence",
    "landmark_plausibility",
    "tip_x",
    "tip_y",
    "thumb_x",
    "thumb_y",
    "capitate_x",
    "capitate_y",
    "quarter_turns",
    "inverted",
]


def original_sizes(table: pd.DataFrame, aspect: float | None) -> tuple[np.ndarray, bool]:
    """(N, 2) float32 original (h, w) of ``table``'s films as the exported graph takes them,
    and whether they are assumptions about the film held upright (the chain's
    ``upright_size``). With an assumed width/height ``aspect`` every film gets (1000, 1000 *
    aspect), even one whose manifest row has ``orig_h`` / ``orig_w``: the graph serves a film
    from its bytes alone and assumes the aspect, so the cache registers as it will (the
    rsna100 cache once used the 508 known sizes of rsna100, 25 of them test films, and its crops
    differed from the graph's there). Without ``aspect``: ``orig_h`` / ``orig_w`` (NaN where
    unknown)."""
    n = len(table)
    if aspect is not None:
        return np.tile(np.float32([1000.0, 1000.0 * aspect]), (n, 1)), True
    h = table["orig_h"].to_numpy(float) if "orig_h" in table else np.full(n, np.nan)
    w = table["orig_w"].to_numpy(float) if "orig_w" in table else np.full(n, np.nan)
    return np.stack([h, w], -1).astype(np.float32), False


def _png(path: Path, image: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.tmp.png")
    cv2.imwrite(str(tmp), np.clip(np.rint(image * 255), 0, 255).astype(np.uint8))
    os.replace(tmp, path)


def _load(part: pd.DataFrame, image_size) -> tuple[list, list, list]:
    """Decode the rows ``part``: (images, positions in ``part`` that decoded, QC rows of the
    files that could not be read)."""
    images, good, failed = [], [], []
    for k, (rid, path) in enumerate(zip(part["id"], part["image_path"], strict=True)):
        try:
            img = io.load_image(path)
            images.append(to_input_size(img, image_size) if image_size is not None else img)
            good.append(k)
        except io.ImageError as exc:
            failed.append({"id": str(rid), "ok": False, "error": str(exc)})
    return images, good, failed


def _batches(table: pd.DataFrame, sizes: np.ndarray, image_size, batch: int):
    """(part, images (b, H, W, 1), original sizes (b, 2), good positions, failed QC rows)
    for every ``batch`` rows of ``table``; ``images`` is None when none decoded."""
    for start in range(0, len(table), batch):
        part = table.iloc[start : start + batch]
        images, good, failed = _load(part, image_size)
        stacked = np.stack(images)[..., None] if good else None
        yield part, stacked, sizes[start + np.array(good, int)], good, failed


def outline_sample(table: pd.DataFrame) -> pd.DataFrame:
    """The films the canonical outline is the mean of: up to :data:`OUTLINE_FILMS` ``train``
    rows of ``table`` (all rows without a ``split`` column), a sample seeded by 0, re-indexed.
    The cache fits the outline on them and the export its content template, so both read the
    same films."""
    rows = table[table["split"] == "train"] if "split" in table else table
    return rows.sample(n=min(len(rows), OUTLINE_FILMS), random_state=0).reset_index(drop=True)


def fit_outline(
    table: pd.DataFrame,
    chain: Preprocessor,
    image_size,
    assume_aspect: float | None,
    batch: int = 32,
    progress: bool = True,
) -> np.ndarray | None:
    """The canonical outline (52, 40) float32 in [0, 1]: the mean registered ``occupancy`` of
    up to :data:`OUTLINE_FILMS` ``train`` rows of ``table`` (all rows without a ``split``
    column; a seeded sample) run through ``chain`` as given, its orientation step off. None
    (said) when fewer than :data:`OUTLINE_MIN_FILMS` films can be read."""
    rows = outline_sample(table)
    config = chain.config
    chain.config = dataclasses.replace(config, orient=False)
    maps = []
    try:
        sizes, upright = original_sizes(rows, assume_aspect)
        run_chain = tf.function(
            lambda x, s: chain(x, s, upright_size=upright)["occupancy"], reduce_retracing=True
        )
        bar = tqdm(total=len(rows), desc="outline", unit="img", disable=not progress)
        for part, images, size, _, _ in _batches(
            rows, sizes, image_size, 1 if image_size is None else batch
        ):
            if images is not None:
                maps.append(run_chain(tf.constant(images), tf.constant(size)).numpy())
            bar.update(len(part))
        bar.close()
    finally:
        chain.config = config
    occ = np.concatenate(maps) if maps else np.zeros((0, 1))
    if len(occ) < OUTLINE_MIN_FILMS:
        print(
            f"warning: {len(occ)} training films (fewer than {OUTLINE_MIN_FILMS}): no outline; "
            "the orientation step decides by the U-Net's mask mass alone"
        )
        return None
    return occ.reshape(len(occ), *occ.shape[1:3]).mean(0).astype(np.float32)


def _outline(table, chain, out: Path, image_size, assume_aspect, batch, progress):
    """``out/outline.npy``, fitted (:func:`fit_outline`) and written first if missing."""
    path = out / OUTLINE_FILE
    if path.is_file():
        return np.load(path)
    canonical = fit_outline(table, chain, image_size, assume_aspect, batch, progress)
    if canonical is not None:
        tmp = path.with_name(f".{path.name}.tmp.npy")
        np.save(tmp, canonical)
        os.replace(tmp, path)
    return canonical


def run(
    table: pd.DataFrame,
    chain: Preprocessor,
    out_dir: str | os.PathLike,
    image_size: tuple[int, int] | None = (100, 100),
    batch: int = 32,
    assume_aspect: float | None = None,
    progress: bool = True,
    spec: ChainSpec | None = None,
) -> pd.DataFrame:
    """Run the chain over ``table`` (canonical manifest) into ``out_dir``; return the cache
    manifest. Images are resized to ``image_size`` (h, w) before the chain (the 100 px data
    are already that size); ``None`` keeps each file's own size (one image per batch).
    ``spec``: the chain's description, recorded as ``out_dir/chain.json`` (a cache started by
    another chain is refused: ``ValueError`` naming the differences). A chain with the
    orientation step gets the cache's outline (module docstring) unless it has one."""
    out = Path(out_dir)
    if spec is not None:
        if spec.image_size != (tuple(image_size) if image_size is not None else None):
            raise ValueError(f"spec image_size {spec.image_size} != image_size {image_size}")
        settle(out, spec)
    for sub in ("masks", "registered", "region_A", "region_B", "region_C"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    qc_path = out / "qc.csv"
    done = set()
    if qc_path.exists():
        old = pd.read_csv(qc_path, dtype={"id": str})
        if list(old.columns) != QC_COLUMNS:
            raise ValueError(
                f"{qc_path}: written by an older version (columns {list(old.columns)}); "
                "build the cache into a new folder"
            )
        done = set(old["id"])
    if image_size is None:  # native sizes differ between files: one image per batch
        batch = 1
    if chain.config.orient and chain.outline is None:
        canonical = _outline(table, chain, out, image_size, assume_aspect, batch, progress)
        if canonical is not None:
            chain.outline = tf.constant(canonical)
    todo = table[~table["id"].astype(str).isin(done)].reset_index(drop=True)
    sizes, upright = original_sizes(todo, assume_aspect)
    run_chain = tf.function(lambda x, s: chain(x, s, upright_size=upright), reduce_retracing=True)
    bar = tqdm(
        total=len(table), initial=len(done), desc="preprocessing", unit="img", disable=not progress
    )
    with ThreadPoolExecutor(2) as pool:
        for part, images, size, good, rows in _batches(todo, sizes, image_size, batch):
            if good:
                result = run_chain(tf.constant(images), tf.constant(size))
                result = {k: v.numpy() for k, v in result.items()}
                writes = []
                for j, k in enumerate(good):
                    rid = str(part["id"].iloc[k])
                    writes.append(
                        pool.submit(_png, out / "masks" / f"{rid}.png", result["mask"][j, ..., 0])
                    )
                    writes.append(
                        pool.submit(
                            _png, out / "registered" / f"{rid}.png", result["registered"][j, ..., 0]
                        )
                    )
                    for name in ("A", "B", "C"):
                        writes.append(
                            pool.submit(
                                _png,
                                out / f"region_{name}" / f"{rid}.png",
                                result[f"region_{name}"][j, ..., 0],
                            )
                        )
                    lm = result["landmarks"][j]
                    rows.append(
                        {
                            "id": rid,
                            "ok": True,
                            "error": "",
                            "right_hand": bool(result["right"][j]),
                            "mask_area": float(result["mask_area"][j]),
                            "mask_confidence": float(result["mask_confidence"][j]),
                            "landmark_plausibility": float(result["landmark_plausibility"][j]),
                            **dict(zip(QC_COLUMNS[7:13], map(float, lm), strict=True)),
                            "quarter_turns": int(result["quarter_turns"][j]),
                            "inverted": bool(result["inverted"][j]),
                        }
                    )
                for w in writes:
                    w.result()
            frame = pd.DataFrame(rows, columns=QC_COLUMNS)
            frame.to_csv(qc_path, mode="a", header=not qc_path.exists(), index=False)
            bar.update(len(part))
    bar.close()
    return write_manifest(table, out)


def write_manifest(table: pd.DataFrame, out: Path) -> pd.DataFrame:
    """Join the QC rows onto the input manifest; keep rows that passed; write ``manifest.csv``."""
    qc = pd.read_csv(out / "qc.csv", dtype={"id": str}).drop_duplicates("id", keep="last")
    keep = [c for c in ("id", "boneage", "male", "split", "orig_w", "orig_h") if c in table]
    merged = table[keep].assign(id=table["id"].astype(str)).merge(qc, on="id", how="inner")
    merged = merged[merged["ok"].astype(bool)].copy()
    merged["image_path"] = [f"registered/{i}.png" for i in merged["id"]]
    merged["mask_path"] = [f"masks/{i}.png" for i in merged["id"]]
    for name in ("A", "B", "C"):
        merged[f"region_{name}_path"] = [f"region_{name}/{i}.png" for i in merged["id"]]
    save_table(merged, out / "manifest.csv")
    return merged
