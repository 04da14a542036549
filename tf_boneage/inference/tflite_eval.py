"""Convert an end-to-end SavedModel to TFLite variants and evaluate them over a manifest.

Decoding runs outside the .tflite, in the SavedModel's own ``decode`` signature, so the
SavedModel and every TFLite variant see identical input tensors. Per variant: MAE against the
labels (months), max |difference| against the SavedModel (months), mean latency per image
(ms, batch 1) and file size (MB).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow as tf
from tqdm import tqdm

from tf_boneage.data import io
from tf_boneage.export import load, tflite


def _reason(exc: Exception) -> str:
    """The first line of why a file could not be decoded."""
    text = exc.message if isinstance(exc, tf.errors.OpError) else str(exc)
    return text.splitlines()[0] if text else type(exc).__name__


def _decoder(loaded):
    decode = loaded.signatures["decode"]

    def run(path) -> dict:
        out = decode(image_bytes=tf.constant([io.encoded_bytes(path)]))
        return {"images": out["images"].numpy(), "original_size": out["original_size"].numpy()}

    return run


def representative(saved_model_dir, manifest: pd.DataFrame, n: int = 64, order=None):
    """A representative dataset for int8: ``n`` training rows of ``manifest``, decoded by the
    SavedModel; yields lists of arrays in ``order`` (:func:`tflite.input_order`)."""
    loaded = load.saved_model(saved_model_dir)
    decode = _decoder(loaded)
    rows = manifest[manifest["split"] == "train"] if "split" in manifest else manifest
    rows = rows.sample(min(n, len(rows)), random_state=0)

    def gen():
        for _, row in rows.iterrows():
            try:
                x = decode(row["image_path"])
            except (tf.errors.OpError, io.ImageError, OSError) as exc:
                print(f"int8 calibration: skipping {row['image_path']}: {_reason(exc)}")
                continue
            yield {
                "images": x["images"],
                "male": np.array([float(row["male"])], np.float32),
                "original_size": x["original_size"],
            }

    return gen


def _signature(loaded) -> str:
    """``predict_tflite`` of an end-to-end export, ``serving_default`` of a per-stage one."""
    return "predict_tflite" if "predict_tflite" in loaded.signatures else "serving_default"


def stage_samples(graph, manifest: pd.DataFrame, n: int = 64) -> dict[str, list[dict]]:
    """Representative inputs of every per-stage model (``graph.stage_models``), as the chain
    feeds them: ``n`` training rows of ``manifest`` decoded and resized by ``graph``, the
    U-Net's input, the landmark model's (enhanced image) and each region network's crop (+
    ``male``). Returns ``{stage: [{input name: (1, ...) float32}]}``; undecodable rows are
    skipped with a message."""
    from tf_boneage.preprocessing import warp

    pre = graph.preprocessor
    region_of = {id(m): member.region for member in graph.members for m in member.models()}
    rows = manifest[manifest["split"] == "train"] if "split" in manifest else manifest
    rows = rows.sample(min(n, len(rows)), random_state=0)
    samples = {stage: [] for stage in graph.stage_models}
    for _, row in rows.iterrows():
        try:
            images, size = graph.decode(tf.constant([io.encoded_bytes(row["image_path"])]))
        except (tf.errors.OpError, io.ImageError, OSError) as exc:
            print(f"int8 calibration: skipping {row['image_path']}: {_reason(exc)}")
            continue
        if graph.input_size is not None:
            images = warp.resize(images, graph.input_size)
        out = pre(images, size)
        male = np.array([[float(row["male"])]], np.float32)
        for stage, model in graph.stage_models.items():
            if model is pre.unet:
                x = pre.unet_input(images)
            elif model is pre.landmark_model:
                x = pre.landmark_input(out["enhanced"])
            else:
                x = out[f"region_{region_of[id(model)]}"]
            inputs = {model.inputs[0].name: x.numpy()}
            if len(model.inputs) > 1:
                inputs[model.inputs[1].name] = male
            samples[stage].append(inputs)
    return samples


def convert_stages(stage_dirs: dict, variants, out_root, samples: dict | None = None) -> dict:
    """Per-stage SavedModels (``{stage: saved_models/NAME_stage/V}``) to
    ``out_root/NAME_stage/V/VARIANT.tflite``; ``samples`` from :func:`stage_samples` (needed
    for ``int8``). Returns ``{stage: {variant: path}}``."""
    if "int8" in variants and samples is None:
        raise ValueError("int8 of the stages needs --manifest for the representative inputs")
    done = {}
    for stage, path in stage_dirs.items():
        path = Path(path)
        rep = (lambda s=samples[stage]: iter(s)) if samples is not None else None
        done[stage] = convert_all(
            path, variants, Path(out_root) / path.parent.name / path.name, representative_fn=rep
        )
    return done


#: an export whose variables exceed this is converted one variant per child process: the
#: paper preset's graph (515 MB as float32 TFLite) ran out of 24 GB converting float16 in the
#: process that had trained and exported it
ISOLATE_BYTES = 200_000_000


def variables_bytes(saved_model_dir) -> int:
    """Size of a SavedModel's variables on disk (bytes)."""
    folder = Path(saved_model_dir) / "variables"
    return sum(f.stat().st_size for f in folder.glob("*") if f.is_file())


def convert_all(
    saved_model_dir,
    variants,
    out_dir,
    manifest_path=None,
    n: int = 64,
    representative_fn=None,
    isolate: bool | None = None,
) -> dict:
    """Write ``out_dir/VARIANT.tflite`` (+ ``.outputs.txt``) for each variant; returns paths.

    An end-to-end export converts its ``predict_tflite`` signature (int8: calibrated on ``n``
    rows of ``manifest_path``, region networks only); a per-stage one its ``serving_default``
    (int8: every op but ``tflite.FLOAT_OPS``, calibrated on ``representative_fn()``).
    ``isolate`` (default: variables over :data:`ISOLATE_BYTES`) converts each variant in a
    child process, so the converter's copies of a large graph never add up in one process."""
    out_dir = Path(out_dir)
    if isolate is None:
        isolate = representative_fn is None and variables_bytes(saved_model_dir) > ISOLATE_BYTES
    if isolate:
        _return_free_memory()  # the child needs it (a process that trained holds freed heap)
        paths = {}
        for variant in variants:
            path = _convert_in_child(saved_model_dir, variant, out_dir, manifest_path, n)
            if path is not None:
                paths[variant] = path
        return paths
    signature = _signature(load.saved_model(saved_model_dir))  # one load per process
    if signature == "serving_default" and "int8" in variants and representative_fn is None:
        raise ValueError(
            f"{saved_model_dir}: int8 of a per-stage model needs the chain for its "
            "inputs: use training/export.py --stages --tflite int8 --manifest M"
        )
    names = tflite.output_names(saved_model_dir, signature)
    frozen = tflite.freeze(saved_model_dir, signature)
    paths, order, float_blob = {}, None, None
    for variant in variants:
        start = time.perf_counter()
        if variant == "int8" and signature == "serving_default":
            blob = tflite.convert(
                saved_model_dir, "int8", signature, representative=representative_fn, frozen=frozen
            )
        elif variant == "int8":
            if manifest_path is None:
                raise ValueError("int8 needs --manifest for the representative dataset")
            from tf_boneage.data.manifest import load_manifest

            if order is None:
                float_blob = tflite.convert(saved_model_dir, frozen=frozen)
                order = tflite.input_order(float_blob)
            rep = representative(saved_model_dir, load_manifest(manifest_path), n, order)
            # the TFLite calibrator runs native code that can crash the whole process (it did on
            # this graph until the mask's WHILE loop stopped passing a tensor through
            # unchanged, tensorflow#75140): calibrate in a child so other variants survive
            blob = _isolated_int8(saved_model_dir, rep, _region_scopes(saved_model_dir))
            if blob is None:
                continue
        else:
            # end to end: reduced precision in the region networks only (keep_float)
            scopes = _region_scopes(saved_model_dir) if signature == "predict_tflite" else None
            if variant == "float32" or (scopes and float_blob is None):
                float_blob = tflite.convert(saved_model_dir, "float32", signature, frozen=frozen)
            blob = (
                float_blob
                if variant == "float32"
                else tflite.convert(
                    saved_model_dir,
                    variant,
                    signature,
                    frozen=frozen,
                    quantize_scopes=scopes,
                    float_blob=float_blob,
                )
            )
        if order is None:
            order = tflite.input_order(blob)
        path = tflite.write(blob, out_dir / f"{variant}.tflite")
        path.with_suffix(".outputs.txt").write_text("\n".join(names) + "\n")
        print(f"{variant}: {path} ({len(blob) / 1e6:.1f} MB, {time.perf_counter() - start:.0f} s)")
        paths[variant] = path
    return paths


def _return_free_memory() -> None:
    """Collect garbage and give glibc's free lists back to the OS (``malloc_trim``): a process
    that trained every network holds gigabytes of freed heap it never returns by itself."""
    import contextlib
    import ctypes
    import gc

    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to give back
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _convert_child(saved_model_dir, variant, out_dir, manifest_path, n) -> None:
    convert_all(saved_model_dir, [variant], out_dir, manifest_path, n, isolate=False)


def _convert_in_child(saved_model_dir, variant, out_dir, manifest_path, n) -> Path | None:
    """One variant converted by a spawned child (its memory returned when it ends); the
    path, or None (said) when the child failed."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    args = (str(saved_model_dir), variant, str(out_dir), manifest_path, n)
    child = ctx.Process(target=_convert_child, args=args)
    child.start()
    child.join()
    path = Path(out_dir) / f"{variant}.tflite"
    if child.exitcode != 0 or not path.exists():
        print(
            f"{variant}: not written: its conversion failed in a child process (exit code "
            f"{child.exitcode}; -9 is the out-of-memory killer)"
        )
        return None
    return path


def _region_scopes(saved_model_dir) -> list[str] | None:
    """The region networks' names from the export's metadata (None: quantize everything)."""
    return load.metadata(saved_model_dir).get("networks", {}).get("regions")


def _int8_child(saved_model_dir, samples, out_path, scopes) -> None:
    blob = tflite.convert(
        saved_model_dir, "int8", representative=lambda: iter(samples), quantize_scopes=scopes
    )
    Path(out_path).write_bytes(blob)


def _isolated_int8(saved_model_dir, rep, scopes=None) -> bytes | None:
    import multiprocessing
    import tempfile

    samples = list(rep())
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "int8.tflite"
        ctx = multiprocessing.get_context("spawn")
        child = ctx.Process(
            target=_int8_child, args=(str(saved_model_dir), samples, str(out), scopes)
        )
        child.start()
        child.join()
        if child.exitcode != 0 or not out.exists():
            print(
                f"int8: not written: the TFLite converter's calibration failed (exit code "
                f"{child.exitcode}; a negative code is a signal, e.g. -11 a segfault). "
                "float32, float16 and dynamic-range variants are unaffected."
            )
            return None
        return out.read_bytes()


def evaluate(saved_model_dir, tflite_paths: dict, manifest: pd.DataFrame, threads=None) -> tuple:
    """Run the SavedModel (``predict_tflite``, batch 1) and every .tflite over ``manifest``.

    Returns ``(summary table, per-image predictions)``; an image that fails to decode is
    reported in the ``error`` column of the predictions and left out of the summary."""
    loaded = load.saved_model(saved_model_dir)
    decode = _decoder(loaded)
    reference = loaded.signatures["predict_tflite"]
    runners = {v: tflite.Runner(p, threads=threads) for v, p in tflite_paths.items()}
    records, timing = [], {k: [] for k in ["savedmodel", *runners]}
    rng = np.random.default_rng(0)
    batch8 = []  # the first 8 decoded inputs, for the SavedModel's batch-8 latency
    for _, row in tqdm(manifest.iterrows(), total=len(manifest), desc="evaluate", unit="img"):
        rec = {"id": row["id"], "boneage": row.get("boneage"), "male": row["male"], "error": ""}
        try:
            x = decode(row["image_path"])
        except (tf.errors.OpError, io.ImageError, OSError) as exc:
            rec["error"] = f"{row['image_path']}: {_reason(exc)}"
            records.append(rec)
            continue
        inputs = {
            "images": x["images"],
            "male": np.array([float(row["male"])], np.float32),
            "original_size": x["original_size"],
        }
        if len(batch8) < 8:
            batch8.append(inputs)
        start = time.perf_counter()
        ref = reference(**{k: tf.constant(v) for k, v in inputs.items()})
        timing["savedmodel"].append(time.perf_counter() - start)
        rec["savedmodel"] = float(ref["bone_age_months"].numpy()[0])
        rec["savedmodel_jitter"] = _jitter(reference, inputs, rec["savedmodel"], rng)
        rec["qc_savedmodel"] = qc_passes({k: v.numpy() for k, v in ref.items()})
        for variant, runner in runners.items():
            out, seconds = runner.timed(**inputs)
            timing[variant].append(seconds)
            rec[variant] = float(out["bone_age_months"][0])
            rec[f"qc_{variant}"] = qc_passes(out)
        records.append(rec)
    preds = pd.DataFrame(records)
    ok = preds[preds["error"] == ""]
    per_image_8 = _batch8_ms(loaded, batch8)
    rows = []
    for name in ["savedmodel", *runners]:
        size = (
            sum(f.stat().st_size for f in Path(saved_model_dir).rglob("*") if f.is_file())
            if name == "savedmodel"
            else Path(tflite_paths[name]).stat().st_size
        )
        diff = (ok[name] - ok["savedmodel"]).abs()
        rows.append(
            {
                "model": name,
                "mae_months": float((ok[name] - ok["boneage"]).abs().mean()),
                "mean_abs_diff_vs_savedmodel": float(diff.mean()),
                "max_abs_diff_vs_savedmodel": float(diff.max()),
                "qc_agreement": float((ok[f"qc_{name}"] == ok["qc_savedmodel"]).mean()),
                "latency_ms": 1000 * float(np.median(timing[name][1:] or timing[name])),
                # the TFLite signature has a fixed batch of 1 (its reshapes are static)
                "latency_batch8_ms": per_image_8 if name == "savedmodel" else float("nan"),
                "size_mb": size / 1e6,
                "images": len(ok),
                # how far the SavedModel's own age moves under +/-0.5 of a 16-bit step
                "input_sensitivity_months": (
                    float(ok["savedmodel_jitter"].max()) if name == "savedmodel" else float("nan")
                ),
            }
        )
    return pd.DataFrame(rows), preds


#: the input noise of :func:`_jitter`: half a 16-bit step (less than any file can say)
JITTER = 0.5 / 65535


def jittered(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Pixels ``x`` (in [0, 1]) plus uniform noise of +/- :data:`JITTER`, kept in [0, 1]."""
    return np.clip(x + rng.uniform(-JITTER, JITTER, x.shape), 0.0, 1.0).astype(x.dtype)


def _jitter(reference, inputs: dict, age: float, rng: np.random.Generator) -> float:
    """|age(x + noise) - ``age``| of the SavedModel's ``predict_tflite`` (months; ``age``: its
    answer for ``inputs`` as given) for the noise of :func:`jittered` on the film's pixels:
    the chain's own sensitivity to a change no file can express, which its thresholds (the
    mask at 0.5) amplify. Another numerical path (TFLite) rounds differently by about as much,
    so its parity bound cannot be tighter."""
    noisy = dict(inputs, images=jittered(inputs["images"], rng))
    out = reference(**{k: tf.constant(v) for k, v in noisy.items()})
    return abs(float(out["bone_age_months"][0]) - age)


def _batch8_ms(loaded, inputs: list[dict]) -> float:
    """ms per image of the SavedModel's ``predict_images`` on a batch of 8 (best of 3 after a
    warm-up); NaN with fewer than 8 images or with films of different sizes."""
    if len(inputs) < 8 or len({x["images"].shape for x in inputs[:8]}) > 1:
        return float("nan")  # too few, or films of different sizes (a native-size graph)
    fn = loaded.signatures["predict_images"]
    batch = {k: tf.constant(np.concatenate([x[k] for x in inputs])) for k in inputs[0]}
    fn(**batch)
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        fn(**batch)
        best = min(best, time.perf_counter() - start)
    return 1000 * best / 8


#: What each offered variant must keep, against the SavedModel on the same images (months):
#: float32 is the same graph; float16 halves the region networks' weights only; dynamic-range
#: and full int8 quantize the region networks only (their MAE against the truth may move by
#: ``mae_gap``). float32 and float16 must also make the same QC decisions. A ``max_diff`` is
#: never below the SavedModel's own largest move under input noise of half a 16-bit step on
#: the same images (``input_sensitivity_months``, :func:`_jitter`): at full size the chain's
#: mask threshold turns float32 rounding differences into up to 0.12 months (RESULTS.md), a
#: floor no numerical path can go under.
BOUNDS = {
    "float32": {"max_diff": 0.05, "qc_agreement": 1.0},
    "float16": {"mean_diff": 0.5, "max_diff": 3.0, "qc_agreement": 1.0},
    "dynamic": {"mae_gap": 1.0},
    "int8": {"mae_gap": 1.5},
}


def qc_passes(outputs: dict) -> bool:
    """The QC decision ``predict`` makes from one image's outputs (every check: the mask,
    exposure, the content match, sharpness, the registration fit, the landmarks)."""
    from tf_boneage.inference.predict import reason_of

    # one image's outputs (batch 1): its scalars by name (landmarks, members are vectors)
    return not reason_of({k: np.ravel(v)[0] for k, v in outputs.items() if np.size(v) == 1})


def max_diff(summary: pd.DataFrame, name: str) -> float:
    """A variant's largest allowed difference from the SavedModel (months): its
    :data:`BOUNDS` ``max_diff``, raised to the SavedModel's own input sensitivity when that
    was measured and is larger (NaN when the variant has no such bound)."""
    bound = BOUNDS.get(name, {}).get("max_diff", float("nan"))
    by = summary.set_index("model")
    if "input_sensitivity_months" not in by or "savedmodel" not in by.index:
        return bound
    floor = float(by.loc["savedmodel", "input_sensitivity_months"])
    return max(bound, floor) if np.isfinite(floor) else bound


def verdicts(summary: pd.DataFrame) -> dict[str, str]:
    """``{variant: ""}`` when a variant is within :data:`BOUNDS`, else what it broke."""
    by = summary.set_index("model")
    out = {}
    for name in by.index.drop("savedmodel", errors="ignore"):
        r, bound, broken = by.loc[name], BOUNDS.get(name, {}), []
        allowed = max_diff(summary, name)
        if "max_diff" in bound and r["max_abs_diff_vs_savedmodel"] > allowed:
            broken.append(
                f"largest difference {r['max_abs_diff_vs_savedmodel']:.3f} > {allowed:.3f}"
            )
        if "mean_diff" in bound and r["mean_abs_diff_vs_savedmodel"] > bound["mean_diff"]:
            broken.append(
                f"mean difference {r['mean_abs_diff_vs_savedmodel']:.2f} > {bound['mean_diff']}"
            )
        gap = r["mae_months"] - by.loc["savedmodel", "mae_months"]
        if "mae_gap" in bound and gap > bound["mae_gap"]:
            broken.append(f"MAE {gap:+.2f} months over the SavedModel's (> {bound['mae_gap']})")
        if "qc_agreement" in bound and r["qc_agreement"] < bound["qc_agreement"]:
            broken.append(f"QC agrees on {100 * r['qc_agreement']:.0f} % of images")
        out[name] = "; ".join(broken)
    return out


def _ms(value: float) -> str:
    return "n/a" if not np.isfinite(value) else f"{value:.1f}"


def markdown(summary: pd.DataFrame) -> str:
    """One table (MAE, differences and QC agreement vs the SavedModel, latency at batch 1,
    size) and one verdict line per variant."""
    lines = [
        "| model | MAE (months) | mean / max abs diff vs SavedModel (months) | QC agreement "
        "| latency batch 1 / 8 (ms/image) | size (MB) | images |",
        "|---|---|---|---|---|---|---|",
    ]
    for _, r in summary.iterrows():
        lines.append(
            f"| {r['model']} | {r['mae_months']:.2f} | {r['mean_abs_diff_vs_savedmodel']:.2e} / "
            f"{r['max_abs_diff_vs_savedmodel']:.2e} | {100 * r['qc_agreement']:.0f} % | "
            f"{r['latency_ms']:.1f} / {_ms(r['latency_batch8_ms'])} | {r['size_mb']:.1f} | "
            f"{r['images']} |"
        )
    lines.append("")
    lines.append("TFLite runs at batch 1 only: its signature's shapes are fixed.")
    if "input_sensitivity_months" in summary:
        floor = summary.set_index("model")["input_sensitivity_months"].get("savedmodel")
        lines.append(
            f"The SavedModel's own age moves by up to {floor:.3f} months when its input moves "
            "by half a 16-bit step (no file can say less): no variant's largest-difference "
            "bound is below that."
        )
    for name, broken in verdicts(summary).items():
        bound = ", ".join(
            f"{k} {max_diff(summary, name) if k == 'max_diff' else v:.3g}"
            for k, v in BOUNDS.get(name, {}).items()
        )
        state = "within its bound" if not broken else f"OUT OF BOUND: {broken}"
        lines.append(f"- {name}: {state} ({bound or 'no bound'})")
    return "\n".join(lines)
