"""Full int8 of one trained region network: which ops must stay float32 (accuracy, not speed).

    python benchmarks/int8_region.py runs/demo_rsna100/table/region/A_reg_both \\
        --cache runs/demo_rsna100/table/cache/manifest.csv

The network alone (no chain) is converted from a frozen fixed-shape function to float32, to
full int8, and to int8 with ``tflite.FLOAT_OPS`` / ``tflite.FLOAT_LAYERS`` kept float32 (what
the end-to-end ``int8`` export ships), calibrated on ``--representative`` train crops of the
preprocessing cache and run with LiteRT on the first ``--n`` test crops. Reports each
variant's MAE (months) and its mean / max |difference| from the Keras model.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import keras
import numpy as np
import pandas as pd
import tensorflow as tf
from common import table
from tensorflow.python.framework.convert_to_constants import (
    convert_variables_to_constants_v2,
)

import tf_boneage.models  # noqa: F401  (registers the custom layers)
from tf_boneage.export import tflite


def crops(cache: pd.DataFrame, root: Path, region: str, size) -> np.ndarray:
    """float32 (N, H, W, 1) in [0, 1] from the cache's region PNGs."""
    h, w = size
    out = []
    for rel in cache[f"region_{region}_path"]:
        im = cv2.imread(str(root / rel), cv2.IMREAD_GRAYSCALE)
        if im is None:
            raise ValueError(f"{root / rel}: not readable")
        if im.shape != (h, w):
            im = cv2.resize(im, (w, h), interpolation=cv2.INTER_AREA)
        out.append(im.astype(np.float32)[..., None] / 255.0)
    return np.stack(out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", type=Path, help="a region run folder (model.keras, config.yaml)")
    parser.add_argument("--cache", type=Path, required=True, help="the cache's manifest.csv")
    parser.add_argument("--representative", type=int, default=64)
    parser.add_argument("--n", type=int, default=200)
    args = parser.parse_args(argv)
    from ai_edge_litert.interpreter import Interpreter

    model = keras.models.load_model(args.run / "model.keras")
    region = next(
        line.split(":")[1].strip()
        for line in (args.run / "config.yaml").read_text().splitlines()
        if line.startswith("region:")
    )
    size = tuple(model.inputs[0].shape[1:3])
    with_sex = len(model.inputs) > 1
    cache = pd.read_csv(args.cache)
    cache = cache[cache["ok"].astype(bool)]
    train = cache[cache["split"] == "train"].sample(args.representative, random_state=0)
    test = cache[cache["split"] == "test"].head(args.n)
    x_tr, x_te = (crops(t, args.cache.parent, region, size) for t in (train, test))
    m_tr, m_te = (t["male"].astype(np.float32).to_numpy()[:, None] for t in (train, test))

    spec = [tf.TensorSpec([1, *size, 1], tf.float32)]
    spec += [tf.TensorSpec([1, 1], tf.float32)] if with_sex else []
    names = [t.name for t in model.inputs]
    fn = tf.function(lambda *a: model(dict(zip(names, a, strict=True)), training=False))
    frozen = convert_variables_to_constants_v2(fn.get_concrete_function(*spec))

    def representative():
        for i in range(len(x_tr)):
            yield [x_tr[i : i + 1]] + ([m_tr[i : i + 1]] if with_sex else [])

    def convert(variant, keep_float=False):
        conv = tf.lite.TFLiteConverter.from_concrete_functions([frozen])
        if variant == "float32":
            return conv.convert()
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = representative
        conv.target_spec.supported_ops = [
            tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
            tf.lite.OpsSet.TFLITE_BUILTINS,
        ]
        if not keep_float:
            return conv.convert()
        names = [
            n
            for _, n in tflite._op_outputs(convert("float32"))
            if any(f"/{layer}" in n for layer in tflite.FLOAT_LAYERS)
        ]
        options = tf.lite.experimental.QuantizationDebugOptions(
            denylisted_ops=list(tflite.FLOAT_OPS), denylisted_nodes=names
        )
        return tf.lite.experimental.QuantizationDebugger(
            converter=conv, debug_dataset=representative, debug_options=options
        ).get_nondebug_quantized_model()

    def run(blob):
        it = Interpreter(model_content=blob)
        it.allocate_tensors()
        inputs = sorted(it.get_input_details(), key=lambda d: len(d["shape"]) == 2)
        out = it.get_output_details()[0]["index"]
        ys = []
        for i in range(len(x_te)):
            it.set_tensor(inputs[0]["index"], x_te[i : i + 1])
            if with_sex:
                it.set_tensor(inputs[1]["index"], m_te[i : i + 1])
            it.invoke()
            ys.append(float(it.get_tensor(out).ravel()[0]))
        return np.array(ys)

    truth = test["boneage"].to_numpy(np.float32)
    inputs = {"image": x_te, "male": m_te} if with_sex else {names[0]: x_te}
    ref = model.predict(inputs, verbose=0).ravel()
    rows = [
        {"variant": "keras", "mae": np.abs(ref - truth).mean(), "mean_diff": 0.0, "max_diff": 0.0}
    ]
    for name, variant, keep in [
        ("float32", "float32", False),
        ("int8 (every op)", "int8", False),
        ("int8 (FLOAT_OPS, FLOAT_LAYERS float32)", "int8", True),
    ]:
        y = run(convert(variant, keep))
        d = np.abs(y - ref)
        rows.append(
            {
                "variant": name,
                "mae": np.abs(y - truth).mean(),
                "mean_diff": d.mean(),
                "max_diff": d.max(),
            }
        )
    print(f"{args.run.name}: {len(x_te)} test crops, {len(x_tr)} representative")
    print(table(rows, ["variant", "mae", "mean_diff", "max_diff"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
