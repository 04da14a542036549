"""A full-size film to an age with the paper preset: time per stage and peak memory.

    python benchmarks/full_size.py --size 2000x1500 --repeats 3 --tflite float32 float16 \
        --unet-orientation --out full_size.md

The graph has the paper preset's architectures (``models.presets.PRESETS["paper"]``: U-Net 512 px
depth 5, landmark net 256 px, region networks at 500 x 375 / 240 x 320 / 320 x 360, the 2080 x
1600 frame) and its orientation step (``presets/paper.yaml``: a 64 px orientation classifier
proposes, the registration outline accepts, as an export with an outline serves it), and the
members the paper demo exports (``runs.ENSEMBLES["demo"]``: A, B, C regression and A
classification by sex), native size (``input_size=None``: regions warped from the film's own
pixels). Its weights are untrained: time and memory do not depend on them, only the chain's
path does. The mask cleanup's time does depend on the mask's shape, so the U-Net's answer is
replaced by a hand-shaped one: the film's own pixels above 0.2 at 512 px (the phantom's hand
with the film's bright clutter and ragged edges, about 40 % of the film, three components;
the U-Net still runs and its output is multiplied by 0). A whole-film mask, as an untrained
U-Net gives, made the cleanup look 10 times cheaper than on a U-Net's real masks (BENCHMARKS.md).
The landmark net answers a hand's tip, thumb and capitate (a fixed, plausible registration)
and the classifier "as given" (an upright film: the outline check is skipped, as for most
films).

Stages, each a ``tf.function`` on the previous stage's tensors, batch 1, median of
``--repeats`` calls after a warm-up: decode (16-bit PNG), orientation (the classifier), U-Net
once, mask cleanup, contrast (background removal + equalisation at full size), landmarks (as
many looks as the preset's ``chain.landmark_passes``),
registration + warps (regions A, B, C and the registered frame from the full film), region
networks + ensemble; then ``serving_default`` end to end (PNG bytes in), and again for a film
the classifier proposes to turn (the outline check then runs: one more U-Net pass and two
landmark passes). Peak memory: the process's peak resident set (``ru_maxrss``) after the graph
is built and after the end-to-end calls. ``--tflite``: the SavedModel's ``predict_tflite``
converted (float32 / float16) and run by LiteRT on the decoded film (decoding stays outside the
.tflite). ``--unet-orientation``: also the graph whose orientation step is the U-Net on the 8
candidates at 512 px (before the classifier), its step and its end-to-end time;
``--orient-size N``: the same with the candidates scored at N px (``ChainConfig.orient_size``).
``--tflite-stages``: every stage converted to float32 TFLite on its own (the same function,
film-sized inputs with free height and width as in the export) and run by LiteRT on the same
tensors: where LiteRT spends the time TensorFlow does not.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import tensorflow as tf
from common import machine, median_seconds, write_report

from tf_boneage.data import io
from tf_boneage.export import end_to_end, outline, saved_model, tflite
from tf_boneage.models.presets import PRESETS
from tf_boneage.models.region import RegionNet
from tf_boneage.preprocessing import chain, mask, regions, registration
from tf_boneage.training.config import read_preset
from tf_boneage.training.runs import ENSEMBLES

#: the paper's region sizes (rows, columns)
SIZES = {"A": (500, 375), "B": (240, 320), "C": (320, 360)}
#: normalised (x, y) of tip, thumb, capitate the untrained landmark net is made to answer
HAND = [0.5, 0.15, 0.8, 0.55, 0.5, 0.7]
#: the paper preset's landmark net input (square, ``models.presets`` as ``presets/paper.yaml``)
LANDMARK_SIZE = int(PRESETS["paper"]["landmarks"][1]["input_shape"][0])
#: the paper preset's landmark looks (``presets/paper.yaml``, ``chain.landmark_passes``)
LANDMARK_PASSES = int(read_preset("paper").get("chain", {}).get("landmark_passes", 1))
#: the film's pixels above this (at the U-Net's 512 px) make the mask (module docstring)
MASK_THRESHOLD = 0.2
#: the paper preset's orientation classifier input (``presets/paper.yaml``, ``orientation.size``)
ORIENT_SIZE = 64


def paper_graph(
    seed: int = 0, orient_size: int | None = None, classifier: int | None = 0
) -> end_to_end.BoneAgeGraph:
    """The paper preset's architectures, untrained, native size (see the module docstring).
    ``classifier``: the orientation classifier's answer for any film (0: as given; 2: half
    turned), with the outline check of its proposal; None: the U-Net's orientation step (on the
    8 candidates, scored at ``orient_size`` px when given)."""
    import keras

    keras.utils.set_random_seed(seed)
    build, kwargs = PRESETS["paper"]["unet"]
    unet = build(**kwargs)
    last = unet.get_layer("mask")
    last.kernel.assign(tf.zeros_like(last.kernel))
    last.bias.assign([10.0])
    if orient_size is None:  # a hand-shaped mask (module docstring); at_size needs a U-Net
        inp = keras.Input(unet.input_shape[1:])
        drawn = keras.layers.Rescaling(50.0, offset=-50.0 * MASK_THRESHOLD)(inp)
        drawn = keras.layers.Activation("sigmoid")(drawn)
        unet = keras.Model(inp, keras.layers.Add()([keras.layers.Rescaling(0.0)(unet(inp)), drawn]))
    build, kwargs = PRESETS["paper"]["landmarks"]
    marks = build(**kwargs)
    head = marks.get_layer("landmarks")
    head.kernel.assign(tf.zeros_like(head.kernel))
    head.bias.assign(HAND)
    models = {}
    for name in ENSEMBLES["demo"]:
        region, head_short, sex = name.split("_")
        heads = {"reg": "regression", "cls": "classification"}
        sexes = ("both",) if sex == "both" else ("male", "female")
        for s in sexes:
            models[f"{region}_{head_short}_{s}"] = RegionNet(
                (*SIZES[region], 1), head=heads[head_short], pool_padding="valid"
            )
    config = chain.ChainConfig(
        unet_size=512,
        landmark_size=LANDMARK_SIZE,
        frame=registration.Frame(*registration.PAPER_FRAME),
        region_sizes=SIZES,
        orient=True,
        orient_size=orient_size,
        landmark_passes=LANDMARK_PASSES,
    )
    orient_model = None
    if classifier is not None:
        from tf_boneage.models.orientation import OrientationNet

        orient_model = OrientationNet((ORIENT_SIZE, ORIENT_SIZE, 1))
        said = orient_model.get_layer("orientation")
        said.kernel.assign(tf.zeros_like(said.kernel))
        said.bias.assign(10.0 * np.eye(said.bias.shape[0], dtype=np.float32)[classifier])
    pre = chain.Preprocessor(unet, marks, config, orient_model)
    members = end_to_end.members_from_spec(ENSEMBLES["demo"], models.__getitem__)
    m = len(ENSEMBLES["demo"])
    params = {s: {"weights": [1.0 / m] * m, "bias": 0.0} for s in ("male", "female")}
    graph = end_to_end.BoneAgeGraph(pre, members, params, None)
    if classifier is not None:  # as exported: the classifier's turn must also fit the outline
        graph.set_outline(np.full(outline.SIZE, 0.5, np.float32), 0.0)
    return graph


def peak_mb() -> float:
    """The process's peak resident set so far (MB; Linux reports kB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def film(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A full-size film (H, W) in [0, 1]: a phantom of ``tf-boneage synth`` at that size."""
    from tf_boneage.data.synthetic import render

    return render(120.0, True, np.random.default_rng(seed), (height, width)).image


def _free_spec(t: tf.Tensor, film: tuple[int, int]) -> tf.TensorSpec:
    """A tensor of the film's height and width (``film``) with both free, as the export's
    ``predict_tflite`` takes the film; any other tensor (the 512 px mask...) at its own
    shape, as it is in the export."""
    shape = list(t.shape)
    if len(shape) == 4 and tuple(shape[1:3]) == tuple(film):
        shape[1:3] = [None, None]
    return tf.TensorSpec(shape, t.dtype)


def tflite_stage_seconds(
    graph, fn, inputs, repeats: int, film: tuple[int, int], threads=(None, 2)
) -> list[float]:
    """Median seconds of ``fn`` converted alone to float32 TFLite (its variables frozen into
    constants, as :func:`tf_boneage.export.tflite.convert` does) and run by LiteRT on
    ``inputs`` (tensors; the stage's outputs flattened; film-sized ones free in height and
    width, :func:`_free_spec`), once per entry of ``threads`` (None: LiteRT's default, as
    :class:`~tf_boneage.export.tflite.Runner` runs the export). ``graph`` holds the variables."""
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    from tf_boneage.export.tflite import Runner

    flat = lambda *xs: tf.nest.flatten(fn(*xs))  # noqa: E731
    concrete = tf.function(flat).get_concrete_function(*[_free_spec(t, film) for t in inputs])
    frozen = convert_variables_to_constants_v2(concrete, lower_control_flow=False)
    module = tf.Module()
    module.graph = graph
    converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen], module)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    blob = converter.convert()
    seconds = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "stage.tflite"
        path.write_bytes(blob)
        for n in threads:
            runner = Runner(path, threads=n).runner
            names = sorted(runner.get_input_details(), key=lambda k: int(k.rsplit("_", 1)[-1]))
            if len(names) != len(inputs):
                raise RuntimeError(f"stage converted with inputs {names}, given {len(inputs)}")
            feed = {k: np.asarray(t) for k, t in zip(names, inputs, strict=True)}
            seconds.append(median_seconds(lambda r=runner, f=feed: r(**f), repeats))
    return seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="2000x1500", help="film height x width (pixels)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tflite", nargs="*", default=[], help="float32 / float16")
    parser.add_argument(
        "--orient-size",
        type=int,
        nargs="*",
        default=[],
        help="also measure the U-Net's orientation step with its candidates at these sizes",
    )
    parser.add_argument(
        "--unet-orientation",
        action="store_true",
        help="also measure the U-Net's orientation step on the 8 candidates at 512 px",
    )
    parser.add_argument(
        "--tflite-stages",
        action="store_true",
        help="also every stage converted to float32 TFLite on its own, run by LiteRT",
    )
    parser.add_argument("--out", required=True, help="markdown table (CSV beside it)")
    args = parser.parse_args(argv)
    h, w = (int(v) for v in args.size.lower().split("x"))
    started = time.perf_counter()
    graph = paper_graph()
    pre = graph.preprocessor
    png = io.png16_bytes(film(h, w))
    data = tf.constant([png])
    male = tf.constant([1.0])
    built_mb = peak_mb()

    rows = []

    def stage(name, fn, *inputs, lite=True):
        f = tf.function(fn)
        out = f(*inputs)
        ms = 1000 * median_seconds(lambda: f(*inputs), args.repeats)
        rows.append({"stage": name, "ms": ms})
        if args.tflite_stages and lite:
            default, two = tflite_stage_seconds(graph, fn, inputs, args.repeats, (h, w))
            rows[-1].update({"tflite_ms": 1000 * default, "tflite2_ms": 1000 * two})
        return out

    def end_to_end_row(label, g):
        serve = tf.function(g.predict_bytes)
        ms = 1000 * median_seconds(lambda: serve(data, male), args.repeats)
        rows.append({"stage": f"serving_default end to end, {label}", "ms": ms})

    from tf_boneage.preprocessing import orientation

    images, shapes = stage("decode (16-bit PNG)", graph.decode, data, lite=False)
    stage(
        f"orientation (classifier at {ORIENT_SIZE} px)",
        lambda x: orientation.classify(pre.orient_model, x)[0],
        images,
    )
    probs = stage(
        "U-Net once (512 px)", lambda x: tf.cast(pre.unet(pre.unet_input(x)), tf.float32), images
    )
    masks = stage("mask cleanup", mask.clean_mask, probs)
    binary = (probs.numpy()[0, ..., 0] >= 0.5).astype(np.uint8)
    mask_area, mask_parts = binary.mean(), cv2.connectedComponents(binary, connectivity=8)[0] - 1
    enhanced = stage("contrast (full size)", pre.enhance, images, masks)
    marks = stage(
        f"landmarks ({LANDMARK_SIZE} px, {LANDMARK_PASSES} look(s))",
        lambda e, s: pre.landmarks(e, None, s),
        enhanced,
        shapes,
    )

    def warps(enhanced, marks, shapes):
        forward, _ = registration.registration_matrix(
            marks, tf.shape(enhanced)[1:3], pre.config.frame, shapes
        )
        crops = {
            r: regions.extract(enhanced, forward, r, size, pre.config.frame)
            for r, size in SIZES.items()
        }
        frame = regions.warp_affine(
            enhanced, registration.invert_affine(forward), pre.config.frame.size
        )
        return crops, frame, forward

    crops, frame, forward = stage(
        "registration + warps (A, B, C, frame)", warps, enhanced, marks, shapes
    )
    crops = [crops[r] for r in SIZES]  # flat: one converter input per region
    stage(
        "region networks + ensemble",
        lambda a, b, c, m: graph._estimate({"A": a, "B": b, "C": c}, m)[0],
        *crops,
        male,
    )
    stage(
        "QC on the film: sharpness, black map (film -> frame grid)",
        lambda x, m, f: (chain.sharpness(x, m), chain.black_map(x, f, pre.config.frame)),
        images,
        masks,
        forward,
    )
    stage(
        "QC on the frame: occupancy, content",
        lambda r: (chain.occupancy(r), chain.content(r)),
        frame,
    )
    stages_ms = sum(r["ms"] for r in rows)
    rows.append({"stage": "sum of the stages", "ms": stages_ms})
    if args.tflite_stages:  # the whole chain as one function: is LiteRT's extra time in it?
        stage(
            "the whole chain, film to crops and QC (not in the sum)",
            lambda x, s: pre(x, s),
            images,
            shapes,
        )
    end_to_end_row("an upright film (the classifier proposes it as given)", graph)
    turned = paper_graph(classifier=2)
    end_to_end_row("a film the classifier proposes to turn (outline check)", turned)
    unet_sizes = ([None] if args.unet_orientation else []) + list(args.orient_size)
    for size in unet_sizes:
        small = paper_graph(orient_size=size, classifier=None)
        label = f"U-Net on 8 candidates at {size or 512} px"
        stage(f"orientation, {label} (not in the sum)", small.preprocessor.orient, images)
        end_to_end_row(f"orientation by the {label}", small)
    end_mb = peak_mb()

    for variant in args.tflite:
        with tempfile.TemporaryDirectory() as tmp:
            version = saved_model.export_end_to_end(graph, Path(tmp) / "m", metadata={})
            blob = tflite.convert(version, variant)
            path = tflite.write(blob, Path(tmp) / f"{variant}.tflite")
            x = {"images": images.numpy(), "male": male.numpy(), "original_size": shapes.numpy()}
            for n in (None, 2):
                runner = tflite.Runner(path, names=tflite.output_names(version), threads=n)
                seconds = median_seconds(lambda r=runner, x=x: r(**x), args.repeats)
                threads = "default threads" if n is None else f"{n} threads"
                rows.append(
                    {
                        "stage": f"TFLite {variant} end to end (decoded film in, {threads})",
                        "ms": 1000 * seconds,
                        "size MB": len(blob) / 1e6,
                    }  # fmt: skip
                )
    import pandas as pd

    frame = pd.DataFrame(rows)
    lines = ["| stage | ms per film | share of the stages |", "|---|---|---|"]
    if args.tflite_stages:
        lines = [
            "| stage | ms per film | share of the stages | TFLite float32 ms (default threads)"
            " | TFLite / TF | TFLite, 2 threads | TFLite / TF |",
            "|---|---|---|---|---|---|---|",
        ]
    for r in rows:
        share = f"{100 * r['ms'] / stages_ms:.0f} %" if "TFLite" not in r["stage"] else ""
        alternative = "end to end" in r["stage"] or "not in the sum" in r["stage"]
        share = "" if alternative else share
        extra = (
            f" ({r['size MB']:.0f} MB)" if "size MB" in r and r["size MB"] == r["size MB"] else ""
        )
        lite = ""
        if args.tflite_stages:
            lite = " | | | |"
            if "tflite_ms" in r:
                a, b = r["tflite_ms"], r["tflite2_ms"]
                lite = f" {a:.0f} | {a / r['ms']:.1f} | {b:.0f} | {b / r['ms']:.1f} |"
        lines.append(f"| {r['stage']}{extra} | {r['ms']:.0f} | {share} |{lite}")
    header = (
        f"A {h} x {w} film, the paper preset's graph (untrained weights; a hand-shaped mask "
        f"of {mask_area:.0%} of the film in {mask_parts} components before cleanup), batch 1, "
        f"median of "
        f"{args.repeats}; {machine()}; peak RSS {built_mb:.0f} MB after building, "
        f"{end_mb:.0f} MB after the end-to-end calls; {time.perf_counter() - started:.0f} s\n\n"
    )
    write_report(args.out, header, "\n".join(lines), frame)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
