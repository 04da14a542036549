"""``python -m tf_boneage.models.summary``: every model at the paper's and the 100 px sizes.

Columns: parameters, forward FLOPs per image (2 per multiply-add, convolution and dense layers;
batch norm, activations and pooling are under 1 % and left out) and where the parameters are
(convolutional body vs dense head).
"""

from __future__ import annotations

import argparse

import keras
import numpy as np


def layer_flops(layer) -> int:
    """Forward FLOPs per image of one layer (0 for layers without multiply-adds)."""
    if isinstance(layer, keras.layers.Conv2DTranspose):
        _, h, w, cin = layer.input.shape
        kh, kw = layer.kernel_size
        return 2 * h * w * kh * kw * cin * layer.filters
    if isinstance(layer, keras.layers.Conv2D):
        _, h, w, cout = layer.output.shape
        kh, kw = layer.kernel_size
        return 2 * h * w * kh * kw * layer.input.shape[-1] * cout
    if isinstance(layer, keras.layers.Dense):
        return 2 * layer.input.shape[-1] * layer.units
    return 0


def model_flops(model: keras.Model) -> int:
    """Forward FLOPs per image of a functional model."""
    return int(sum(layer_flops(layer) for layer in model.layers))


def parameter_split(model: keras.Model) -> tuple[int, int]:
    """(parameters in convolutional layers and their batch norms, parameters in dense layers)."""
    dense = sum(
        layer.count_params() for layer in model.layers if isinstance(layer, keras.layers.Dense)
    )
    return model.count_params() - dense, dense


def rows(presets=("paper", "rsna100")):
    from tf_boneage.models.presets import PRESETS, build

    for preset in presets:
        for name in PRESETS[preset]:
            model = build(preset, name)
            body, head = parameter_split(model)
            total = model.count_params()
            shape = model.inputs[0].shape[1:3]
            yield {
                "preset": preset,
                "model": name,
                "input": f"{shape[0]}x{shape[1]}",
                "params": total,
                "gflops": model_flops(model) / 1e9,
                "body": body / total,
                "head": head / total,
            }
            keras.backend.clear_session()


def format_table(table) -> str:
    lines = [
        "| preset | model | input | parameters | GFLOPs / image | conv body | dense head |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for r in table:
        lines.append(
            f"| {r['preset']} | {r['model']} | {r['input']} | {r['params']:,} | "
            f"{r['gflops']:.3f} | {r['body']:.1%} | {r['head']:.1%} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--presets", nargs="+", default=["paper", "rsna100"])
    args = parser.parse_args(argv)
    np.set_printoptions(suppress=True)
    print(format_table(list(rows(args.presets))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
