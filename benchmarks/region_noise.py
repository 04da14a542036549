"""How far one region network's age moves when its film changes invisibly: region networks
(``.keras`` files of one region) compared on the same crops, made by an export's chain.

    python benchmarks/region_noise.py --model saved_models/boneage_rsna100 \\
        --manifest runs/rsna100.csv --split test --limit 100 --male \\
        --networks plain=runs/table/region/B_reg_male/model.keras \\
                   noisy=runs/noisy/B_reg_male/model.keras

Each film of the split (boys with ``--male``, girls without) goes through the export's chain
(a graph rebuilt from it) untouched and changed: +/- 1 grey level of noise on the film with the
landmarks held at the untouched film's, JPEG at quality 95, a shift by one pixel. Every network
reads the region's crops of each, averaged over its test-time views (``--tta``) as the graph
does. Per network: the MAE of the untouched crops, and per change the median and largest move of
its age (months) and the share of films that moved by at most half a month.
"""

from __future__ import annotations

import argparse

import cv2
import keras
import numpy as np
import pandas as pd
import tensorflow as tf
from common import shifted_one_pixel, split_arguments, split_rows

import tf_boneage.models  # noqa: F401  (registers the custom layers)
from tf_boneage.data import io
from tf_boneage.export import rebuild, saved_model
from tf_boneage.export.end_to_end import _Head


def _jpeg(img: np.ndarray) -> np.ndarray:
    data = cv2.imencode(
        ".jpg", np.round(img * 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 95]
    )
    return cv2.imdecode(data[1], cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255.0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="the export whose chain makes the crops")
    split_arguments(parser, "test", 100)
    parser.add_argument("--male", action="store_true", help="boys' films (default girls')")
    parser.add_argument("--networks", nargs="+", required=True, help="NAME=model.keras ...")
    parser.add_argument("--tta", type=int, default=5, help="test-time views (the graph's)")
    parser.add_argument("--batch", type=int, default=25)
    args = parser.parse_args(argv)
    graph = rebuild.rebuild(saved_model.resolve(args.model))
    rows = split_rows(args)
    rows = rows[rows["male"].astype(bool) == args.male].reset_index(drop=True)
    heads, region = {}, None
    for spec in args.networks:
        name, _, path = spec.partition("=")
        model = keras.saving.load_model(path, compile=False)
        size = tuple(model.inputs[0].shape[1:3])
        found = [r for r, s in graph.preprocessor.config.region_sizes.items() if tuple(s) == size]
        if not found or (region is not None and found[0] != region):
            raise SystemExit(f"{path}: input {size} is not one region of the chain's")
        region, heads[name] = found[0], _Head(model, args.tta)
    rng = np.random.default_rng(0)
    ages = {name: {} for name in heads}
    upright = graph.assume_aspect is not None

    def crops(imgs, landmarks=None):
        """The chain's outputs of films (H, W) sent as 16-bit PNGs, ``landmarks`` held."""
        images, sizes = graph.decode(tf.constant([io.png16_bytes(i) for i in imgs]))
        return graph.preprocessor(images, sizes, landmarks=landmarks, upright_size=upright)

    for start in range(0, len(rows), args.batch):
        part = rows.iloc[start : start + args.batch]
        films = [io.load_image(p) for p in part["image_path"]]
        male = tf.fill([len(films)], float(args.male))
        base = crops(films)
        level = [np.clip(f + rng.integers(-1, 2, f.shape) / 255.0, 0, 1) for f in films]
        variants = {
            "untouched": base[f"region_{region}"],
            "+/- 1 grey level, landmarks held": crops(level, base["landmarks"])[f"region_{region}"],
            "JPEG quality 95": crops([_jpeg(f) for f in films])[f"region_{region}"],
            "1-pixel shift": crops([shifted_one_pixel(f) for f in films])[f"region_{region}"],
        }
        for name, head in heads.items():
            for change, c in variants.items():
                ages[name].setdefault(change, []).append(head(c, male)[0].numpy())
    truth = rows["boneage"].to_numpy(float)
    table = []
    for name in heads:
        got = {change: np.concatenate(v) for change, v in ages[name].items()}
        row = {
            "network": name,
            "MAE untouched": round(float(np.abs(got["untouched"] - truth).mean()), 2),
        }
        for change, value in got.items():
            if change == "untouched":
                continue
            move = np.abs(value - got["untouched"])
            row[f"{change}: median"] = round(float(np.median(move)), 2)
            row[f"{change}: <= 0.5"] = f"{100 * np.mean(move <= 0.5):.0f} %"
            row[f"{change}: largest"] = round(float(move.max()), 1)
        table.append(row)
    print(f"region {region}, {len(rows)} {'boys' if args.male else 'girls'}' {args.split} films")
    print(pd.DataFrame(table).T.to_string(header=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
