"""Which orientation step, on real films?

    python benchmarks/orientation_choice.py --runs runs/table --manifest runs/rsna100.csv \
        --split val --limit 250 --trust 0.9 0.95 0.99 --out orientation_choice.md

Every film of ``--split`` (the first ``--limit``) is given in its eight orientations (four quarter
turns, normal and inverted); the whole chain (``Preprocessor.__call__``, as the export runs it:
the run's recorded chain, ``RUNS/cache/chain.json``, with its landmark looks; the films squashed
to ``--image-size``, ``--assume-aspect`` held upright) must undo what was done. One row per step:
the classifier alone, the classifier whose proposal the outline check must accept, and (from
those two runs, exactly as the graph combines them) the same with proposals of at least each
``--trust`` confidence standing unchecked (``ChainConfig.orient_trust``; ``--run-trust P`` also
runs the graph so, to check the combination); ``--mask-mass`` adds the
U-Net's mask mass with the outline check (exports before the classifier). The outline is the
cache's (``RUNS/cache/outline.npy``); ``--orient-model`` replaces the chain's classifier. Columns:
the share of versions undone right, of upright films kept as they are, of turned or inverted
ones turned right, and the seconds it took. The per-film CSV beside the table (``*_films.csv``)
has each version's proposal, its confidence and what the check made of it.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np
import tensorflow as tf
from common import machine, split_arguments, split_rows, write_rows

from tf_boneage.data import io
from tf_boneage.preprocessing import chain as chain_lib
from tf_boneage.preprocessing import orientation


def score(pre, films: np.ndarray, batch: int, aspect: float) -> dict:
    """Per version v and film n, (8, N) arrays: ``right`` (the chain undid orientation v of
    film n), ``turns``, ``inverted`` and ``confidence`` (what the chain chose and the
    classifier's probability of its proposal)."""
    size = tf.constant([[1000.0, 1000.0 * aspect]])

    def run(x):
        out = pre(x, tf.tile(size, [tf.shape(x)[0], 1]), upright_size=True)
        return out["quarter_turns"], out["inverted"], out["orientation_confidence"]

    fn = tf.function(run, reduce_retracing=True)
    got = {k: np.zeros((8, len(films)), t) for k, t in (("turns", int), ("inverted", bool))}
    got["confidence"] = np.zeros((8, len(films)), np.float32)
    for v in range(8):
        x = orientation.make(films, np.full(len(films), v)).numpy()
        for i in range(0, len(x), batch):
            out = fn(tf.constant(x[i : i + batch]))
            for key, value in zip(("turns", "inverted", "confidence"), out, strict=True):
                got[key][v, i : i + batch] = value.numpy()
    want = np.arange(8)[:, None]
    got["right"] = (got["turns"] == want % 4) & (got["inverted"] == (want >= 4))
    return got


def trusted(alone: dict, checked: dict, trust: float) -> np.ndarray:
    """(8, N) bool right of the classifier + outline check with proposals of at least ``trust``
    confidence standing unchecked (``ChainConfig.orient_trust``), from a run of the classifier
    alone and one with the check: a proposed change the classifier is that sure of is the
    classifier's, anything else the check's (the graph's rule)."""
    proposed = (alone["turns"] != 0) | alone["inverted"]
    return np.where(proposed & (alone["confidence"] >= trust), alone["right"], checked["right"])


def summary(name: str, right: np.ndarray, seconds) -> dict:
    return {
        "orientation step": name,
        "all versions right %": round(100 * right.mean(), 2),
        "upright kept %": round(100 * right[0].mean(), 1),
        "turned or inverted, right %": round(100 * right[1:].mean(), 2),
        "upright turned (films)": int((~right[0]).sum()),
        "turned or inverted, wrong (versions)": int((~right[1:]).sum()),
        "seconds": seconds,
    }


def main(argv=None) -> int:
    import pandas as pd

    from tf_boneage.preprocessing.spec import CHAIN_FILE, ChainSpec, sha256

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", required=True, help="a training/table.py output folder")
    parser.add_argument("--orient-model", default=None, help="replace the chain's classifier")
    split_arguments(parser, "val", 250)
    parser.add_argument("--image-size", default="100x100", help="the chain's input size HxW")
    parser.add_argument("--assume-aspect", type=float, default=0.74)
    parser.add_argument("--trust", type=float, nargs="*", default=[0.9, 0.95, 0.99])
    parser.add_argument("--mask-mass", action="store_true", help="add the mask-mass step")
    parser.add_argument(
        "--run-trust",
        type=float,
        default=None,
        metavar="P",
        help="also run the graph with orient_trust P (checks the rows combined from two runs)",
    )
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--out", required=True, help="markdown table (CSV beside it)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    runs = Path(args.runs)
    spec = ChainSpec.read(runs / "cache" / CHAIN_FILE)
    if args.orient_model:
        spec = dataclasses.replace(
            spec, orient_model=args.orient_model, orient_model_sha256=sha256(args.orient_model)
        )
    spec = dataclasses.replace(spec, orient_trust=None)  # the check on every proposal
    outline = np.load(runs / "cache" / "outline.npy")
    rows = split_rows(args)
    size = tuple(int(v) for v in args.image_size.lower().split("x"))
    films = np.stack([chain_lib.to_input_size(io.load_image(p), size) for p in rows["image_path"]])
    films = films[..., None].astype(np.float32)
    steps = {
        "classifier alone": (True, False, None),
        "classifier + outline check": (True, True, None),
    }
    if args.mask_mass:
        steps = {"U-Net mask mass + outline check": (False, True, None), **steps}
    if args.run_trust is not None:
        name = f"classifier + outline check, trusted from {args.run_trust:g} (run)"
        steps[name] = (True, True, args.run_trust)
    got, out = {}, []
    for name, (classifier, check, trust) in steps.items():
        pre = spec.preprocessor()
        pre.config.orient_trust = trust
        if not classifier:
            pre.orient_model = None
        pre.outline = tf.Variable(outline, trainable=False) if check else None
        start = time.perf_counter()
        got[name] = score(pre, films, args.batch, args.assume_aspect)
        out.append(summary(name, got[name]["right"], round(time.perf_counter() - start)))
        print(out[-1], flush=True)
    alone, checked = got["classifier alone"], got["classifier + outline check"]
    for trust in args.trust:
        right = trusted(alone, checked, trust)
        out.append(summary(f"classifier + outline check, trusted from {trust:g}", right, "-"))
        print(out[-1], flush=True)
    per_film = []
    for v in range(8):
        for n, film_id in enumerate(rows["id"]):
            per_film.append(
                {
                    "id": film_id,
                    "version": v,
                    "proposed_turns": int(alone["turns"][v, n]),
                    "proposed_inverted": bool(alone["inverted"][v, n]),
                    "confidence": float(alone["confidence"][v, n]),
                    "proposal_right": bool(alone["right"][v, n]),
                    "checked_right": bool(checked["right"][v, n]),
                }
            )
    films_csv = Path(args.out).with_name(Path(args.out).stem + "_films.csv")
    pd.DataFrame(per_film).to_csv(films_csv, index=False)
    header = (
        f"{len(films)} `{args.split}` films x 8 orientations, chain of {runs} "
        f"({spec.landmark_passes} landmark look(s)), classifier {spec.orient_model}; "
        f"{machine()}; {time.perf_counter() - started:.0f} s\n\n"
    )
    write_rows(args.out, header, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
