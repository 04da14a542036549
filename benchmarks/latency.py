"""Latency of an end-to-end model as a user calls it: SavedModel and TFLite, a 100 px film and a
full-size film, batch 1 and 8, on this CPU.

    python benchmarks/latency.py --small ../shared/data/rsna100/images/1377.png \\
        --large ../shared/data/raw10/IMG.png --tflite-dir build/tflite/boneage_rsna100/1

Every path starts from the film's encoded PNG bytes. SavedModel: ``serving_default`` (decode,
resize and the chain in the graph), B copies of the film per call. TFLite: the SavedModel's
``decode`` signature (decoding stays outside the .tflite) then one ``predict_tflite`` invoke per
film (the .tflite has a fixed batch of 1, so batch 8 is 8 invokes). Median of ``--repeats``
calls after a warm-up; milliseconds per film. Without ``--model``: the shipped model.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import tensorflow as tf
from common import machine, median_seconds, table

from tf_boneage.export import shipped, tflite


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="default: the shipped model")
    parser.add_argument("--small", required=True, help="a film at the training resolution")
    parser.add_argument("--large", required=True, help="a full-size film")
    parser.add_argument("--tflite-dir", default=None, help="folder of VARIANT.tflite files")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2, help="LiteRT threads")
    args = parser.parse_args(argv)
    model = shipped.resolve(args.model)
    loaded = tf.saved_model.load(str(model))
    serve, decode = loaded.signatures["serving_default"], loaded.signatures["decode"]
    runners = {}
    if args.tflite_dir:
        for path in sorted(Path(args.tflite_dir).glob("*.tflite")):
            runners[path.stem] = tflite.Runner(path, threads=args.threads)
    rows = []
    for label, film in (("100 px film", args.small), ("full-size film", args.large)):
        blob = Path(film).read_bytes()
        for batch in args.batches:
            blobs = tf.constant([blob] * batch)
            male = tf.ones([batch], tf.float32)
            seconds = median_seconds(
                lambda b=blobs, m=male: serve(image_bytes=b, male=m), args.repeats
            )
            rows.append({"path": "SavedModel", "input": label, "batch": batch,
                         "ms / film": 1000 * seconds / batch})  # fmt: skip
            for name, runner in runners.items():

                def run(b=batch, r=runner, blob=blob):
                    for _ in range(b):
                        d = decode(image_bytes=tf.constant([blob]))
                        r(images=d["images"].numpy(), male=[1.0],
                          original_size=d["original_size"].numpy())  # fmt: skip

                seconds = median_seconds(run, args.repeats)
                rows.append({"path": f"TFLite {name} (+ decode)", "input": label, "batch": batch,
                             "ms / film": 1000 * seconds / batch})  # fmt: skip
    print(f"machine: {machine()}; model {model}")
    print(table(rows, ["path", "input", "batch", "ms / film"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
