"""Connected-component labelling of the mask cleanup: hooking + pointer jumping (the package's
``mask.component_labels``) against the label propagation it replaced, TensorFlow and LiteRT.

    python benchmarks/labelling.py --size 512 --repeats 3 --out labelling.md

Masks at the paper preset's U-Net size (``--size``), batch 1, both labelled (foreground and,
as hole filling does, background): a full-size phantom's exact hand mask; the same film's
pixels above 0.2 (the hand with the film's clutter and ragged edges, as a U-Net answers);
that mask with 5 % of its pixels flipped (specks and pinholes); thresholded smoothed noise
(tortuous components, the worst case for propagation); a snake (one path through the whole
image); a whole-film mask (what an untrained U-Net gives). For each: rounds of the new loop,
milliseconds of each algorithm (median of ``--repeats`` after a warm-up) in TensorFlow and in
LiteRT (float32 builtins, default threads), and whether both give OpenCV's partition.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import tensorflow as tf
from common import machine, median_seconds, write_report

from tf_boneage.preprocessing import mask


def propagation_labels(m: tf.Tensor, steps_per_check: int = 8) -> tf.Tensor:
    """The labelling used up to 2026-12-02 (commit de471a5), the reference: every pixel takes
    the largest label of its 3x3 neighbourhood, then the label at the pixel its label names
    (one jump), checked for change every ``steps_per_check`` steps. Steps grow with a
    component's geodesic length."""
    allowed = tf.cast(m > 0.5, tf.int32)
    shape = tf.shape(allowed)
    n = tf.size(allowed)
    labels = tf.reshape(tf.range(1, n + 1, dtype=tf.int32), shape) * allowed

    def jump(v):
        table = tf.concat([tf.zeros([1], tf.int32), tf.reshape(v, [-1])], 0)
        return tf.reshape(tf.gather(table, tf.reshape(v, [-1])), shape)

    def body(i, v, changed, a):
        new = v
        for _ in range(steps_per_check):
            new = jump(mask._max3x3(new) * a)
        return i + steps_per_check, new, tf.reduce_any(tf.not_equal(new, v)), tf.maximum(a, 0)

    start = [tf.constant(0), labels, tf.constant(True), allowed]
    _, labels, _, _ = tf.while_loop(lambda i, v, c, a: c, body, start)
    return labels


def test_masks(size: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Binary (size, size) float32 masks, named (module docstring)."""
    from tf_boneage.data.synthetic import render

    rng = np.random.default_rng(seed)
    phantom = render(120.0, True, rng, (2000, 1500))
    film = cv2.resize(phantom.image, (size, size), interpolation=cv2.INTER_AREA)
    exact = cv2.resize(phantom.mask.astype(np.float32), (size, size)) > 0.5
    ragged = film > 0.2
    noise = cv2.GaussianBlur(rng.normal(size=(size, size)).astype(np.float32), (0, 0), 2.0)
    snake = np.zeros((size, size), bool)
    snake[::2, 1 : size - 1] = True
    for r in range(1, size, 2):
        snake[r, size - 2 if r % 4 == 1 else 1] = True
    masks = {
        "phantom's exact hand mask": exact,
        "film above 0.2 (hand + clutter)": ragged,
        "film above 0.2, 5 % of pixels flipped": ragged ^ (rng.random(ragged.shape) < 0.05),
        "thresholded smoothed noise": noise > 0,
        "snake (one path through the image)": snake,
        "whole film": np.ones((size, size), bool),
    }
    return {k: v.astype(np.float32) for k, v in masks.items()}


def same_partition(labels: np.ndarray, m: np.ndarray) -> bool:
    """Whether ``labels`` (H, W) partition the foreground of ``m`` as OpenCV does (8-conn.)."""
    count, ref = cv2.connectedComponents(m.astype(np.uint8), connectivity=8)
    pairs = {(a, b) for a, b in zip(ref[m > 0], labels[m > 0], strict=True)}
    return len(pairs) == count - 1 == len({b for _, b in pairs}) and not labels[m == 0].any()


def litert_ms(fn, x: np.ndarray, repeats: int) -> tuple[float, np.ndarray]:
    """Milliseconds of ``fn`` converted to float32 TFLite builtins and run by LiteRT on ``x``,
    and its output."""
    from tf_boneage.export.tflite import Runner

    concrete = tf.function(fn).get_concrete_function(tf.TensorSpec(x.shape, tf.float32))
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], tf.Module())
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "labels.tflite"
        path.write_bytes(converter.convert())
        runner = Runner(path).runner
        (name,) = runner.get_input_details()
        out = runner(**{name: x})
        seconds = median_seconds(lambda: runner(**{name: x}), repeats)
    return 1000 * seconds, next(iter(out.values()))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=512, help="mask side (the U-Net's input)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-litert", action="store_true", help="TensorFlow only")
    parser.add_argument("--out", required=True, help="markdown table (CSV beside it)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    algorithms = {"hooking": mask.component_labels, "propagation": propagation_labels}
    rows = []
    for name, m in test_masks(args.size).items():
        for side, values in (("foreground", m), ("background", 1.0 - m)):
            x = values[None, ..., None]
            row = {"mask": name, "labelled": side, "area": float(values.mean())}
            for algo, fn in algorithms.items():
                f = tf.function(fn)
                labels = f(tf.constant(x)).numpy()[0, ..., 0]
                row[f"{algo} ok"] = same_partition(labels, values)
                row[f"{algo} TF ms"] = 1000 * median_seconds(
                    lambda f=f, x=x: f(tf.constant(x)), args.repeats
                )
                if not args.no_litert:
                    ms, out = litert_ms(fn, x, args.repeats)
                    row[f"{algo} LiteRT ms"] = ms
                    row[f"{algo} LiteRT ok"] = same_partition(out[0, ..., 0], values)
            rounds = mask.component_labels(tf.constant(x), max_rounds=1)
            for k in range(2, 65):  # the rounds the new loop needs: the first bound that does
                done = mask.component_labels(tf.constant(x), max_rounds=k)
                if bool(tf.reduce_all(done == rounds)):
                    row["rounds"] = k - 1
                    break
                rounds = done
            rows.append(row)
            print(row, flush=True)
    import pandas as pd

    frame = pd.DataFrame(rows)
    lite = not args.no_litert
    head = "| mask (labelled side) | area | rounds | hooking TF ms | propagation TF ms | TF ratio |"
    head += " hooking LiteRT ms | propagation LiteRT ms | LiteRT ratio |" if lite else ""
    lines = [head, "|" + "---|" * (9 if lite else 6)]
    for r in rows:
        ok = all(v for k, v in r.items() if k.endswith(" ok"))
        line = (
            f"| {r['mask']} ({r['labelled']}){'' if ok else ' **partition differs**'} "
            f"| {r['area']:.2f} | {r['rounds']} | {r['hooking TF ms']:.0f} "
            f"| {r['propagation TF ms']:.0f} | {r['propagation TF ms'] / r['hooking TF ms']:.1f} |"
        )
        if lite:
            line += (
                f" {r['hooking LiteRT ms']:.0f} | {r['propagation LiteRT ms']:.0f} "
                f"| {r['propagation LiteRT ms'] / r['hooking LiteRT ms']:.1f} |"
            )
        lines.append(line)
    header = (
        f"Connected components of {args.size} x {args.size} masks, batch 1, median of "
        f"{args.repeats}; {machine()}; {time.perf_counter() - started:.0f} s\n\n"
    )
    write_report(args.out, header, "\n".join(lines), frame)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
