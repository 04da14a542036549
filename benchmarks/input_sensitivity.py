"""How far an exported model's age moves when its input moves by less than one 16-bit step.

    python benchmarks/input_sensitivity.py --model saved_models/boneage/1 \
        --manifest run/synth/manifest.csv --split test --limit 12 --repeats 3

For each film: its ``decode``d pixels through ``predict_tflite`` (the signature TFLite
converts), then the same pixels plus uniform noise of +/-0.5 of a 16-bit step (1 / 65,535),
``--repeats`` times; the largest change of the age (months). This is the floor under any parity
bound between two numerical paths (SavedModel vs TFLite): a path that rounds differently moves
the input of the chain's thresholds (the mask at 0.5) by as much.
"""

from __future__ import annotations

import argparse

import numpy as np
import tensorflow as tf
from common import split_arguments, split_rows

from tf_boneage.data import io
from tf_boneage.inference import tflite_eval


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="a SavedModel version folder")
    split_arguments(parser, "test", 12)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    model = tf.saved_model.load(args.model)
    predict, decode = model.signatures["predict_tflite"], model.signatures["decode"]
    table = split_rows(args)
    rng = np.random.default_rng(0)
    moves = []
    for _, row in table.iterrows():
        decoded = decode(image_bytes=tf.constant([io.encoded_bytes(row["image_path"])]))
        x, size = decoded["images"].numpy(), decoded["original_size"]
        male = tf.constant([float(row["male"])], tf.float32)

        def age(pixels, male=male, size=size):
            out = predict(images=tf.constant(pixels), male=male, original_size=size)
            return float(out["bone_age_months"][0])

        base = age(x)
        move = max(abs(age(tflite_eval.jittered(x, rng)) - base) for _ in range(args.repeats))
        moves.append(move)
        print(f"{row['id']}: {base:.2f} months, largest move {move:.4f}", flush=True)
    moves = np.array(moves)
    print(f"largest move under +/-0.5 LSB: {moves.max():.4f} months; mean {moves.mean():.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
