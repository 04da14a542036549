"""Time per image of each stage of the preprocessing chain, one ``tf.function`` per stage.

    python benchmarks/chain_stages.py --unet runs/demo_rsna100/table/seg/round0/unet.keras \\
        --landmarks runs/demo_rsna100/table/landmarks/landmarks.keras \\
        --manifest runs/demo_rsna100/manifest.csv

A batch of ``--batch`` radiographs of the manifest (resized to 100 x 100), best of 3 calls
after a warm-up: the whole chain (without and with the orientation step, and with the
orientation checked against a canonical outline), then U-Net, mask cleanup (largest component, hole filling),
contrast and landmarks on that batch's own intermediate tensors.
"""

from __future__ import annotations

import argparse
import sys

import cv2
import numpy as np
import tensorflow as tf
from common import best_rate, machine, table

from tf_boneage.data.manifest import load_manifest
from tf_boneage.preprocessing import chain, mask, warp


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--unet", required=True)
    parser.add_argument("--landmarks", required=True)
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args(argv)
    pre = chain.load(args.unet, args.landmarks, (104, 80))
    paths = load_manifest(args.manifest)["image_path"].head(args.batch)
    pixels = [cv2.resize(cv2.imread(str(p), cv2.IMREAD_GRAYSCALE), (100, 100)) for p in paths]
    x = tf.constant(np.stack(pixels).astype(np.float32)[..., None] / 255.0)
    size = tf.constant([[2000.0, 1480.0]] * len(pixels))
    small = warp.resize(x, (pre.config.unet_size,) * 2)
    probs = pre.unet(small, training=False)
    binary = tf.cast(probs >= 0.5, tf.float32)
    hand = mask.largest_component(binary)
    enhanced = pre.enhance(x, mask.fill_holes(hand))
    oriented = chain.load(args.unet, args.landmarks, (104, 80), orient=True)
    checked = chain.load(args.unet, args.landmarks, (104, 80), orient=True)
    checked.outline = tf.Variable(tf.fill(chain.OUTLINE_SIZE, 0.5))  # the cost, not the answer
    stages = {
        "whole chain": (lambda a, b: pre(a, b), x, size),
        "whole chain + orientation (8 U-Net candidates)": (lambda a, b: oriented(a, b), x, size),
        "whole chain + orientation checked against the outline": (
            lambda a, b: checked(a, b),
            x,
            size,
        ),
        "U-Net": (lambda a: pre.unet(a, training=False), small),
        "mask: largest component": (mask.largest_component, binary),
        "mask: fill holes": (mask.fill_holes, hand),
        "contrast": (pre.enhance, x, hand),
        "landmarks": (pre.landmarks, enhanced),
    }
    rows = []
    for name, (fn, *inputs) in stages.items():
        compiled = tf.function(fn)
        rate = best_rate(
            lambda c=compiled, i=inputs: tf.nest.map_structure(lambda t: t.numpy(), c(*i)),
            len(pixels),
        )
        rows.append({"stage": name, "ms/image": round(1000 / rate, 2)})
    print(f"machine: {machine()}; batch {len(pixels)} of {args.manifest}")
    print(table(rows, ["stage", "ms/image"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
