"""Deterministic, stratified, stable hold-out splits.

Every id gets a seeded hash value ``u`` in [0, 1) (SHA-256 of ``seed:id``: no global RNG state,
the same on every machine). Rows are grouped into strata by sex and age band; inside each stratum
the ids with the smallest ``u`` are held out, with quotas proportional to the stratum's size
(largest-remainder rounding, so the hold-out has exactly the requested size).

Stability when rows are added: pass the previous split (``previous``). Ids already in it keep
their split whatever else changed; a new id goes to a hold-out when its ``u`` falls below that
hold-out's fraction of the previous split, so new rows are split in the same proportions and
no image ever moves because another was added. The split files in ``data_manifests/`` hold ids
and split names only.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pandas as pd

#: Age bands in months for stratification (lower edges; the last band is open).
AGE_BANDS = (0, 24, 60, 96, 120, 144, 168, 192)


def hash_unit(ids, seed: int) -> np.ndarray:
    """Seeded uniform value in [0, 1) for each id (float64, shape (N,))."""
    out = np.empty(len(ids), np.float64)
    for k, rid in enumerate(ids):
        digest = hashlib.sha256(f"{seed}:{rid}".encode()).digest()
        out[k] = int.from_bytes(digest[:8], "big") / 2.0**64
    return out


def strata(table: pd.DataFrame, bands=AGE_BANDS) -> pd.Series:
    """Stratum label per row: ``'M|band'`` / ``'F|band'`` / ``'?|band'`` (unknown sex)."""
    band = np.searchsorted(np.asarray(bands, float), table["boneage"].to_numpy(float), "right")
    sex = table["male"].map(lambda m: "?" if pd.isna(m) else ("M" if m else "F"))
    return sex.astype(str) + "|" + pd.Series(band, index=table.index).astype(str)


def _quotas(sizes: pd.Series, total: int) -> pd.Series:
    """Split ``total`` over strata proportionally to ``sizes`` (largest remainder)."""
    exact = sizes / sizes.sum() * total
    quota = np.floor(exact).astype(int)
    rest = total - int(quota.sum())
    order = (exact - quota).sort_values(ascending=False, kind="stable").index[:rest]
    quota[order] += 1
    return quota


def assign_split(
    table: pd.DataFrame,
    holdout: dict[str, int] | None = None,
    seed: int = 0,
    previous: pd.DataFrame | None = None,
) -> pd.Series:
    """Split name for every row of ``table`` (columns ``id``, ``boneage``, ``male``).

    Args:
        table: canonical manifest rows.
        holdout: size of each hold-out split, e.g. ``{"val": 1000}`` (the paper's), or
            ``{"val": 200, "test": 200}``; every other row is ``train``.
        seed: seed of the id hash.
        previous: an earlier split (columns ``id``, ``split``); its ids keep their split.

    Returns:
        ``pd.Series`` of split names aligned with ``table.index``.

    Raises:
        ValueError: when the hold-outs ask for more rows than there are, or a size is negative.
    """
    holdout = {"val": 1000} if holdout is None else dict(holdout)
    for name, size in holdout.items():
        if size < 0 or name == "train":
            raise ValueError(f"invalid hold-out {name!r}: {size!r}")
    u = pd.Series(hash_unit(table["id"].astype(str).tolist(), seed), index=table.index)
    result = pd.Series("train", index=table.index, dtype=object)
    if previous is not None and len(previous):
        known = dict(zip(previous["id"].astype(str), previous["split"], strict=True))
        is_known = table["id"].astype(str).isin(known)
        result[is_known] = table.loc[is_known, "id"].astype(str).map(known)
        fractions = previous["split"].value_counts(normalize=True)
        edge = 0.0
        for name in holdout:
            lo, edge = edge, edge + float(fractions.get(name, 0.0))
            result[~is_known & (u >= lo) & (u < edge)] = name
        return result
    if sum(holdout.values()) > len(table):
        raise ValueError(
            f"hold-outs {holdout} need {sum(holdout.values())} rows, the manifest has {len(table)}"
        )
    groups = strata(table)
    free = pd.Series(True, index=table.index)
    for name, size in holdout.items():
        avail = groups[free]
        quota = _quotas(avail.value_counts(), size)
        for stratum, count in quota.items():
            members = u[free & (groups == stratum)].sort_values(kind="stable")
            chosen = members.index[:count]
            result[chosen] = name
            free[chosen] = False
    return result


def refine(table: pd.DataFrame, source: str, holdout: dict[str, int], seed: int = 1) -> pd.Series:
    """Carve new hold-outs out of the rows currently in split ``source``, stratified as in
    :func:`assign_split`; other rows keep their split. Used once to turn the first 1,000-image
    ``val`` of ``data_manifests/rsna100_split.csv`` into ``val`` 500 + ``test`` 500 (the
    ensemble is fitted on ``val``, the table is reported on ``test``).

    Returns the new split names aligned with ``table.index``.
    """
    result = table["split"].astype(object).copy()
    rows = table[result == source]
    if rows.empty:
        raise ValueError(f"no rows in split {source!r} to refine")
    names = assign_split(rows, holdout, seed)
    result[rows.index] = names.where(names != "train", source)
    return result


def save_split(table: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write the ids-only split definition (``id,split``) atomically."""
    from tf_boneage.data.manifest import save_table

    return save_table(table[["id", "split"]], path)


def load_split(path: str | os.PathLike) -> pd.DataFrame:
    """Read a split definition written by :func:`save_split`."""
    table = pd.read_csv(path, dtype=str)
    if list(table.columns) != ["id", "split"]:
        raise ValueError(f"{path}: a split file has exactly the columns id,split")
    return table
