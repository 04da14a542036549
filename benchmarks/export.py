"""SavedModel vs TFLite variants: latency per radiograph and throughput on this CPU.

    python benchmarks/export.py --model saved_models/boneage --manifest demo_run/synth/manifest.csv

Inputs are decoded once by the SavedModel's ``decode`` signature (decoding is outside the
.tflite); every path then runs on the same tensors. Latency: batch 1, median of ``--repeats``
calls after a warm-up. Throughput: the SavedModel's ``predict_images`` at batch 16 (TFLite
models have a fixed batch of 1: their throughput is 1 / latency). Also the end-to-end
``serving_default`` from PNG bytes at batch 1 and 16 (decode included).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import tensorflow as tf
from common import machine, median_seconds, table

from tf_boneage.data.manifest import load_manifest
from tf_boneage.export import saved_model, tflite


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="saved_models/boneage")
    parser.add_argument("--tflite-dir", default=None)
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args(argv)
    model = saved_model.resolve(args.model)
    folder = Path(args.tflite_dir or Path("saved_models/tflite") / model.parent.name / model.name)
    loaded = tf.saved_model.load(str(model))
    rows = load_manifest(args.manifest).head(16)
    blobs = [Path(p).read_bytes() for p in rows["image_path"]]
    male = rows["male"].astype("float32").to_numpy()
    dec = loaded.signatures["decode"](image_bytes=tf.constant(blobs))
    images, sizes = dec["images"], dec["original_size"]
    one = {"images": images[:1], "male": tf.constant(male[:1]), "original_size": sizes[:1]}
    results = []

    def add(name, seconds_per_call, batch, size_mb):
        results.append(
            {
                "path": name,
                "batch": batch,
                "latency ms/img": 1000 * seconds_per_call / batch,
                "throughput img/s": batch / seconds_per_call,
                "size MB": size_mb,
            }
        )

    sm_size = sum(f.stat().st_size for f in model.rglob("*") if f.is_file()) / 1e6
    serve = loaded.signatures["serving_default"]
    add(
        "SavedModel serving_default (PNG bytes)",
        median_seconds(
            lambda: serve(image_bytes=tf.constant(blobs[:1]), male=tf.constant(male[:1])),
            args.repeats,
        ),
        1,
        sm_size,
    )
    add(
        "SavedModel serving_default (PNG bytes)",
        median_seconds(
            lambda: serve(image_bytes=tf.constant(blobs), male=tf.constant(male)),
            max(3, args.repeats // 4),
        ),
        len(blobs),
        sm_size,
    )
    ref = loaded.signatures["predict_tflite"]
    add(
        "SavedModel predict_tflite (tensors)",
        median_seconds(lambda: ref(**one), args.repeats),
        1,
        sm_size,
    )
    batch = loaded.signatures["predict_images"]
    add(
        "SavedModel predict_images (tensors)",
        median_seconds(
            lambda: batch(images=images, male=tf.constant(male), original_size=sizes),
            max(3, args.repeats // 4),
        ),
        len(blobs),
        sm_size,
    )
    inputs = {k: v.numpy() for k, v in one.items()}
    for path in sorted(folder.glob("*.tflite")):
        runner = tflite.Runner(path, threads=2)
        add(
            f"TFLite {path.stem}",
            median_seconds(lambda r=runner: r(**inputs), args.repeats),
            1,
            path.stat().st_size / 1e6,
        )
    base = results[2]["latency ms/img"]
    for r in results:
        r["vs SavedModel batch 1"] = r["latency ms/img"] / base
    print(f"machine: {machine()}; model {model}; {len(blobs)} images of {args.manifest}")
    print(
        table(
            results,
            [
                "path",
                "batch",
                "latency ms/img",
                "throughput img/s",
                "size MB",
                "vs SavedModel batch 1",
            ],
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
