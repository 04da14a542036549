"""float32 TFLite vs the SavedModel, output by output, on the same decoded tensors.

    python benchmarks/parity_outputs.py --model saved_models/boneage_rsna100_demo/1 \\
        --manifest runs/demo_rsna100/manifest.csv --split test --limit 200

Per output of ``predict_tflite``: the largest and the median |difference| over the images.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import tensorflow as tf
from common import split_arguments, split_rows

from tf_boneage.export import saved_model, tflite


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--tflite", help="default saved_models/tflite/NAME/V/float32.tflite")
    split_arguments(parser, "test", 200)
    args = parser.parse_args(argv)
    model = saved_model.resolve(args.model)
    path = args.tflite or f"saved_models/tflite/{model.parent.name}/{model.name}/float32.tflite"
    loaded = tf.saved_model.load(str(model))
    decode, reference = loaded.signatures["decode"], loaded.signatures["predict_tflite"]
    runner = tflite.Runner(path)
    rows = split_rows(args)
    diffs: dict[str, list[float]] = {}
    for image_path, male in zip(rows["image_path"], rows["male"], strict=True):
        x = decode(image_bytes=tf.constant([tf.io.read_file(str(image_path)).numpy()]))
        inputs = {
            "images": x["images"].numpy(),
            "male": np.array([float(male)], np.float32),
            "original_size": x["original_size"].numpy(),
        }
        a = reference(**{k: tf.constant(v) for k, v in inputs.items()})
        b = runner(**inputs)
        for key, value in b.items():
            diff = np.abs(np.asarray(a[key].numpy(), np.float64) - value).max()
            diffs.setdefault(key, []).append(float(diff))
    print(f"{model} vs {path}: {len(rows)} images of {args.split}")
    print("| output | max abs diff | median |\n|---|---|---|")
    for key, values in sorted(diffs.items()):
        print(f"| {key} | {max(values):.3g} | {np.median(values):.3g} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
