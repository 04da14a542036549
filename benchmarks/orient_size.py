"""How small can the orientation step score its candidates?

    python benchmarks/orient_size.py --unet runs/table/seg/round0/unet.keras \\
        --manifest runs/rsna100.csv --split val --sizes 0 64 48 32 --out orient_size.md

Every film of ``--split`` (the first ``--limit``) is given at its four quarter turns, normal and
inverted (eight versions); the chain's orientation step (mask mass and ``ORIENT_MARGIN``, no
outline: the cache's and export's outline check is left out to measure the choice itself) must
find what was done. One row per ``--sizes`` entry (``ChainConfig.orient_size``; 0: the U-Net's
own size): the share of versions undone right, of upright films kept as they are, of turned or
inverted ones turned right, and the seconds it took.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import tensorflow as tf
from common import machine, split_arguments, split_rows, write_rows

from tf_boneage.data import io
from tf_boneage.preprocessing import chain as chain_lib


def versions(films: np.ndarray):
    """(quarter turns, inverted, films turned and / or inverted) for the eight versions."""
    for v in range(chain_lib.CANDIDATES):
        k, inverted = v % 4, v >= 4
        x = np.ascontiguousarray(np.rot90(films, k, axes=(1, 2)))
        yield k, inverted, (1.0 - x if inverted else x)


def score(pre, films: np.ndarray, batch: int) -> np.ndarray:
    """(8, N) bool: the step undid version v of film n."""
    fn = tf.function(lambda x: pre.orient(x)[1:3], reduce_retracing=True)
    right = np.zeros((chain_lib.CANDIDATES, len(films)), bool)
    for v, (k, inverted, x) in enumerate(versions(films)):
        for i in range(0, len(x), batch):
            turns, inv = fn(tf.constant(x[i : i + batch]))
            right[v, i : i + batch] = (turns.numpy() == k) & (inv.numpy() == inverted)
    return right


def main(argv=None) -> int:
    import keras

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--unet", required=True, help="the chain's U-Net (.keras)")
    split_arguments(parser, "val", 500)
    parser.add_argument("--image-size", default="100x100", help="the chain's input size HxW")
    parser.add_argument("--sizes", type=int, nargs="+", default=[0, 64, 48, 32])
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--out", required=True, help="markdown table (CSV beside it)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    unet = keras.saving.load_model(args.unet, compile=False)
    own = int(unet.input_shape[1])
    rows = split_rows(args)
    size = tuple(int(v) for v in args.image_size.lower().split("x"))
    films = np.stack([chain_lib.to_input_size(io.load_image(p), size) for p in rows["image_path"]])
    films = films[..., None].astype(np.float32)
    rows_out = []
    for orient_size in args.sizes:
        config = chain_lib.ChainConfig(unet_size=own, orient=True, orient_size=orient_size or None)
        start = time.perf_counter()
        right = score(chain_lib.Preprocessor(unet, None, config), films, args.batch)
        rows_out.append(
            {
                "candidates at (px)": orient_size or own,
                "share of the U-Net's size": round((orient_size or own) / own, 2),
                "all versions right %": round(100 * right.mean(), 1),
                "upright kept %": round(100 * right[0].mean(), 1),
                "turned or inverted, right %": round(100 * right[1:].mean(), 1),
                "seconds": round(time.perf_counter() - start),
            }
        )
        print(rows_out[-1], flush=True)
    header = (
        f"{len(films)} `{args.split}` films x 8 versions, U-Net {args.unet} ({own} px); "
        f"{machine()}; {time.perf_counter() - started:.0f} s\n\n"
    )
    write_rows(args.out, header, rows_out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
