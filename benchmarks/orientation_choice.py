"""Which orientation step, on real films? (issue 17 item 2)

    python benchmarks/orientation_choice.py --runs runs/t21 --orient-model runs/o22/orientation.keras \\
        --manifest runs/rsna100.csv --split val --limit 250 --out orientation_choice.md

Every film of ``--split`` (the first ``--limit``) is given in its eight orientations (four quarter
turns, normal and inverted); the whole chain (``Preprocessor.__call__``, as the export runs it:
the films squashed to ``--image-size``, ``--assume-aspect`` held upright) must undo what was
done. One row per step: the U-Net's mask mass with the outline check (what exports before the
classifier serve), the classifier alone, and the classifier whose proposal the outline check
must accept. The outline is the cache's (``RUNS/cache/outline.npy``), the U-Net and landmark
model the run's. Columns: the share of versions undone right, of upright films kept as they
are, of turned or inverted ones turned right, and the seconds it took.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import tensorflow as tf
from common import machine, split_arguments, split_rows, write_rows

from tf_boneage.data import io
from tf_boneage.preprocessing import chain as chain_lib
from tf_boneage.preprocessing import orientation


def score(pre, films: np.ndarray, batch: int, aspect: float) -> np.ndarray:
    """(8, N) bool: the chain undid orientation v of film n."""
    size = tf.constant([[1000.0, 1000.0 * aspect]])

    def run(x):
        out = pre(x, tf.tile(size, [tf.shape(x)[0], 1]), upright_size=True)
        return out["quarter_turns"], out["inverted"]

    fn = tf.function(run, reduce_retracing=True)
    right = np.zeros((8, len(films)), bool)
    for v in range(8):
        x = orientation.make(films, np.full(len(films), v)).numpy()
        for i in range(0, len(x), batch):
            turns, inv = fn(tf.constant(x[i : i + batch]))
            right[v, i : i + batch] = (turns.numpy() == v % 4) & (inv.numpy() == (v >= 4))
    return right


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", required=True, help="a training/table.py output folder")
    parser.add_argument("--orient-model", required=True, help="the orientation classifier")
    split_arguments(parser, "val", 250)
    parser.add_argument("--image-size", default="100x100", help="the chain's input size HxW")
    parser.add_argument("--assume-aspect", type=float, default=0.74)
    parser.add_argument("--frame", default="104x80", help="the canonical frame HxW")
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--out", required=True, help="markdown table (CSV beside it)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    runs = Path(args.runs)
    unet = sorted((runs / "seg").glob("round*/unet.keras"))[-1]
    marks = runs / "landmarks" / "landmarks.keras"
    outline = np.load(runs / "cache" / "outline.npy")
    rows = split_rows(args)
    size = tuple(int(v) for v in args.image_size.lower().split("x"))
    films = np.stack([chain_lib.to_input_size(io.load_image(p), size) for p in rows["image_path"]])
    films = films[..., None].astype(np.float32)
    steps = {
        "U-Net mask mass + outline check": (None, True),
        "classifier alone": (args.orient_model, False),
        "classifier + outline check": (args.orient_model, True),
    }
    out = []
    for name, (model, check) in steps.items():
        frame = tuple(int(v) for v in args.frame.lower().split("x"))
        pre = chain_lib.load(unet, marks, frame, orient=True, orient_model_path=model)
        pre.outline = tf.Variable(outline, trainable=False) if check else None
        start = time.perf_counter()
        right = score(pre, films, args.batch, args.assume_aspect)
        out.append(
            {
                "orientation step": name,
                "all versions right %": round(100 * right.mean(), 2),
                "upright kept %": round(100 * right[0].mean(), 1),
                "turned or inverted, right %": round(100 * right[1:].mean(), 2),
                "seconds": round(time.perf_counter() - start),
            }
        )
        print(out[-1], flush=True)
    header = (
        f"{len(films)} `{args.split}` films x 8 orientations, U-Net {unet}, classifier "
        f"{args.orient_model}; {machine()}; {time.perf_counter() - started:.0f} s\n\n"
    )
    write_rows(args.out, header, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
