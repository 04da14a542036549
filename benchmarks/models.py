"""Training and inference images/s of every model at the paper's and the 100 px sizes on this
CPU, and achieved GFLOP/s as a fraction of the float32 matmul GFLOP/s measured in the same run.

    python benchmarks/models.py [--presets paper rsna100] [--batch 4]

Training FLOPs are counted as 3x the forward FLOPs (forward + two backward products).
"""

from __future__ import annotations

import argparse

import keras
import numpy as np
from common import best_rate, machine, matmul_gflops, table

from tf_boneage.models.presets import PRESETS, build
from tf_boneage.models.summary import model_flops

LOSSES = {"unet": "binary_crossentropy", "landmarks": "mse"}


def _batch(model, n):
    rng = np.random.default_rng(0)
    x = {i.name: rng.random((n, *i.shape[1:]), dtype=np.float32) for i in model.inputs}
    x = x if isinstance(model.input, dict) else next(iter(x.values()))
    out = model.outputs[0].shape[1:]
    y = rng.random((n, *out), dtype=np.float32)
    return x, (np.round(y) if len(out) == 3 else y * 200)


def run(presets, batch, repeats):
    peak = matmul_gflops()
    rows = []
    for preset in presets:
        for name in PRESETS[preset]:
            model = build(preset, name)
            flops = model_flops(model)
            x, y = _batch(model, batch)
            model.compile(
                keras.optimizers.Adam(1e-4), loss=LOSSES.get(name, "mae"), jit_compile=False
            )
            inf_rate = best_rate(lambda m=model, x=x: m.predict_on_batch(x), batch, repeats)
            train_rate = best_rate(lambda m=model, x=x, y=y: m.train_on_batch(x, y), batch, repeats)
            rows.append(
                {
                    "preset": preset,
                    "model": name,
                    "input": "x".join(map(str, model.inputs[0].shape[1:3])),
                    "GFLOPs/img": flops / 1e9,
                    "infer img/s": inf_rate,
                    "train img/s": train_rate,
                    "infer GFLOP/s": inf_rate * flops / 1e9,
                    "infer % of matmul": 100 * inf_rate * flops / 1e9 / peak,
                    "train % of matmul": 100 * train_rate * 3 * flops / 1e9 / peak,
                }
            )
            print(rows[-1], flush=True)
            keras.backend.clear_session()
    return peak, rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--presets", nargs="+", default=["paper", "rsna100"])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    peak, rows = run(args.presets, args.batch, args.repeats)
    print(f"\nmachine: {machine()}; float32 matmul peak {peak:.1f} GFLOP/s; batch {args.batch}\n")
    print(
        table(
            rows,
            [
                "preset",
                "model",
                "input",
                "GFLOPs/img",
                "infer img/s",
                "train img/s",
                "infer % of matmul",
                "train % of matmul",
            ],
        )
    )


if __name__ == "__main__":
    main()
