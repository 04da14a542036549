"""Does the interval fitted on one half of ``val`` cover 90 % of the other?

    python benchmarks/interval_halves.py --films qc_scores.md.films.csv \\
        --manifest runs/rsna100.csv --repeats 300 --out interval_halves.md

``--films``: a per-film CSV of an export's outputs (``benchmarks/qc_scores.py`` writes one:
``set``, ``id``, ``boneage``, ``bone_age_months``, ``bone_age_std``); its ``--split`` films
(never ``test``), their sex from ``--manifest``. Each repeat splits them at random into two
halves, fits the interval's factors on one (:func:`tf_boneage.export.interval.fit`, the
split-conformal rank and the plain quantile) and measures on the other: the coverage (all,
boys, girls) and the mean width, averaged over the repeats (seeded).
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
from common import write_rows

from tf_boneage.export import interval


def halves(truth, pred, std, male, repeats: int, seed: int = 0) -> list[dict]:
    """One row per rule ("conformal rank", "plain quantile"): mean coverage of the held-out
    half (all, boys, girls, in %) and mean width (months) over ``repeats`` random halves."""
    rng = np.random.default_rng(seed)
    got = {True: [], False: []}
    for _ in range(repeats):
        order = rng.permutation(len(truth))
        a, b = order[: len(order) // 2], order[len(order) // 2 :]
        for conformal in got:
            table = interval.fit(truth[a], pred[a], std[a], male[a], conformal=conformal)
            low, high = interval.bounds(pred[b], std[b], interval.factors(table, pred[b], male[b]))
            inside = (truth[b] >= low) & (truth[b] <= high)
            got[conformal].append(
                (
                    inside.mean(),
                    inside[male[b]].mean(),
                    inside[~male[b]].mean(),
                    (high - low).mean(),
                )
            )
    rows = []
    for conformal, values in got.items():
        mean = np.mean(values, axis=0)
        rows.append(
            {
                "rule": "conformal rank" if conformal else "plain quantile",
                "covers %": round(100 * mean[0], 1),
                "boys %": round(100 * mean[1], 1),
                "girls %": round(100 * mean[2], 1),
                "mean width (months)": round(mean[3], 1),
            }
        )
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--films", required=True, help="per-film CSV of an export's outputs")
    parser.add_argument("--manifest", required=True, help="for each film's sex")
    parser.add_argument("--split", default="val")
    parser.add_argument("--repeats", type=int, default=300)
    parser.add_argument("--out", required=True, help="markdown table (CSV beside it)")
    args = parser.parse_args(argv)
    if args.split == "test":
        parser.error("--split test: the test split is for reporting only")
    films = pd.read_csv(args.films)
    films = films[films["set"] == args.split].merge(
        pd.read_csv(args.manifest)[["id", "male"]], on="id"
    )
    if films.empty:
        parser.error(f"{args.films}: no {args.split!r} films")
    columns = ("boneage", "bone_age_months", "bone_age_std")
    truth, pred, std = (films[c].to_numpy(np.float64) for c in columns)
    rows = halves(truth, pred, std, films["male"].to_numpy(bool), args.repeats)
    header = (
        f"{len(films)} `{args.split}` films of {args.films}, {args.repeats} random halves "
        "(fitted on one, measured on the other)\n\n"
    )
    write_rows(args.out, header, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
