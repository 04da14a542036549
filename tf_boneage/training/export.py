"""Export a trained table (``training/table.py``'s output) for TF Serving and TFLite.

    python training/export.py --runs runs/table --preset rsna100 --name boneage_rsna100

Writes, never overwriting anything:

- ``saved_models/NAME/VERSION/``: the end-to-end SavedModel (signatures ``serving_default``:
  ``image_bytes`` + ``male``; ``predict_images``: decoded tensors; ``predict_tflite``: one
  decoded image at the input size);
- ``saved_models/NAME_unet/V``, ``NAME_landmarks/V``, ``NAME_<run>/V``: per-stage SavedModels
  (``--stages``);
- ``saved_models/models.config``: every model under ``saved_models/`` for TF Serving;
- ``saved_models/tflite/NAME/VERSION/VARIANT.tflite`` (``--tflite float32 float16 ...``), with
  a representative dataset of ``--representative N`` training images of ``--manifest`` for
  ``int8``; with ``--stages`` also ``saved_models/tflite/NAME_<stage>/V/VARIANT.tflite`` (a
  stage's int8 is calibrated on its own inputs, computed by the chain from the same images).

The chain's settings (input size, frame, region sizes, pixel aspect, which U-Net and landmark
weights) come from ``RUNS/cache/chain.json``, the description the cache recorded when it was
built, and go into the export's metadata (``chain``); an export whose U-Net or landmark model
differs from the cache's is refused.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from tf_boneage.preprocessing.spec import CHAIN_FILE, ChainSpec, sha256
from tf_boneage.training import config as config_lib
from tf_boneage.training.runtime import StepError, run_or_exit


def run(
    runs,
    preset: str,
    name: str = "boneage",
    root="saved_models",
    ensemble: str = "final",
    version: int | None = None,
    unet=None,
    stages: bool = False,
    tflite=(),
    manifest=None,
    representative: int = 64,
    calibrate: str = "val",
    orient_model=None,
    geometry_from=None,
    landmark_passes: int | None = None,
    orient_trust: float | None = None,
    training_commit: str | None = None,
) -> Path:
    """Export the table in ``runs`` (see the module docstring); returns the SavedModel's
    version folder. ``calibrate``: the split of ``manifest`` the per-sex std scale is fitted
    on (never ``test``; ``"none"`` to skip). ``orient_model``: serve with this orientation
    classifier instead of the cache's orientation step (:func:`replace_orientation`).
    ``geometry_from``: serve the U-Net, landmark net and orientation classifier of another
    ``training/table.py`` folder (:func:`replace_geometry`). ``landmark_passes``: serve with
    this many landmark looks instead of the cache's (:func:`replace_landmark_passes`);
    ``orient_trust``: the classifier's confidence from which its proposal stands without the
    outline check, instead of the cache's (:func:`replace_orient_trust`).
    ``training_commit``: the commit the runs were trained at (the metadata's
    ``training.commit``; see :func:`training_record`)."""
    from tf_boneage.export import end_to_end, saved_model

    if calibrate == "test":
        raise StepError("--calibrate test: the test split is for reporting only")
    replaced = None
    try:
        chain = chain_of_runs(runs, preset, unet)
        if orient_model:
            chain, replaced = replace_orientation(chain, orient_model)
        geometry = None
        if geometry_from:
            chain, geometry = replace_geometry(chain, geometry_from)
        replaced_settings = {}
        if landmark_passes is not None and landmark_passes != chain.landmark_passes:
            chain, replaced_settings["landmark_passes"] = replace_landmark_passes(
                chain, landmark_passes
            )
        if orient_trust is not None and orient_trust != chain.orient_trust:
            chain, replaced_settings["orient_trust"] = replace_orient_trust(chain, orient_trust)
        graph = end_to_end.from_runs(runs, chain, ensemble)
    except (FileNotFoundError, KeyError, ValueError) as exc:
        raise StepError(str(exc)) from None
    loaded = graph.preprocessor.config
    chain = dataclasses.replace(
        chain, unet_size=loaded.unet_size, landmark_size=loaded.landmark_size
    )
    root = Path(root)
    meta = {
        "name": name,
        "training": training_record(preset, manifest, runs, training_commit),
        "runs": str(runs),
        "preset": preset,
        "ensemble": ensemble,
        "unet": str(unet or "last round"),
        "chain": chain.to_dict(),
    }
    if replaced is not None:
        meta["orientation_replaced"] = replaced
    if geometry is not None:
        meta["geometry_replaced"] = geometry
    for key, record in replaced_settings.items():
        meta[f"{key}_replaced"] = record
    canonical = cache_outline(runs)
    if canonical is not None:  # QC (and the U-Net's orientation step) as the cache did
        graph.set_outline(canonical, 0.0)
    report = None
    if manifest and calibrate != "none":
        report = _calibrate(graph, manifest, calibrate, canonical)
    if report is not None:
        meta["std_calibration"] = {"split": calibrate, **report}
    elif not (manifest and calibrate != "none"):
        print("warning: bone_age_std not calibrated (give --manifest with a val split)")
    path = saved_model.export_end_to_end(graph, root / name, version, meta)
    print(f"end-to-end SavedModel -> {path}")
    stage_dirs = {}
    if stages:
        for stage, model in graph.stage_models.items():
            stage_dirs[stage] = saved_model.export_stage(model, root / f"{name}_{stage}")
            print(f"stage {stage} -> {stage_dirs[stage]}")
    print(f"models.config -> {saved_model.write_models_config(root)}")
    if tflite:
        from tf_boneage.inference import tflite_eval

        tflite_eval.convert_all(
            path, list(tflite), root / "tflite" / name / path.name, manifest, representative
        )
        if stage_dirs:
            samples = None
            if "int8" in tflite and manifest:
                from tf_boneage.data.manifest import load_manifest

                samples = tflite_eval.stage_samples(graph, load_manifest(manifest), representative)
            variants = [v for v in tflite if v != "int8" or samples is not None]
            tflite_eval.convert_stages(stage_dirs, variants, root / "tflite", samples)
    return path


def training_record(preset: str, manifest, runs, commit: str | None = None) -> dict:
    """What the exported networks learnt from (the metadata's ``training``): the preset, its
    films in words (:data:`tf_boneage.export.shipped.TRAINING_DATA`), the films per split of
    ``manifest`` (when given), the digest of the runs' films, labels and splits
    (``RUNS/manifest.sha256`` of a region run, when present) and ``commit``."""
    import pandas as pd

    from tf_boneage.export.shipped import TRAINING_DATA

    doc = {"preset": preset, "data": TRAINING_DATA.get(preset, f"preset {preset}")}
    if manifest and Path(manifest).is_file():
        splits = pd.read_csv(manifest, usecols=["split"])["split"].value_counts()
        doc["counts"] = {str(k): int(v) for k, v in sorted(splits.items())}
    digests = sorted(Path(runs).glob("region/*/manifest.sha256"))
    if digests:
        doc["manifest_sha256"] = digests[0].read_text().split()[0]
    if commit:
        doc["commit"] = commit
    return doc


def chain_of_runs(runs, preset: str, unet=None) -> ChainSpec:
    """The chain the region networks of ``runs`` were trained on: ``runs/cache/chain.json``,
    checked against the U-Net and landmark files this export would load (refused when their
    weights differ). A cache without ``chain.json`` is refused: rebuild it. ``preset`` is
    not read: the recorded chain, not the preset of today, is what the networks learnt from."""
    from tf_boneage.export import end_to_end

    runs = Path(runs)
    marks = runs / "landmarks" / "landmarks.keras"
    recorded = runs / "cache" / CHAIN_FILE
    if not recorded.is_file():
        raise ValueError(
            f"{recorded} missing: the cache does not say which chain built it; rebuild it "
            "(tf-boneage preprocess, or training/table.py into a new folder)"
        )
    spec = ChainSpec.read(recorded)
    path = Path(unet) if unet else Path(spec.unet)
    if not path.is_file():  # the run folder moved: the one the table names
        path = end_to_end.unet_of_runs(runs)
    if sha256(path) != spec.unet_sha256:
        raise ValueError(
            f"{path} is not the U-Net the cache was built with ({recorded}: {spec.unet}); "
            "the region networks learnt from that chain's crops"
        )
    if spec.landmarks_sha256 and (not marks.is_file() or sha256(marks) != spec.landmarks_sha256):
        raise ValueError(
            f"{marks} is not the landmark model the cache was built with ({recorded}: "
            f"{spec.landmarks})"
        )
    classifier = None
    if spec.orient_model_sha256:
        classifier = Path(spec.orient_model)
        if not classifier.is_file():  # the run folder moved
            classifier = runs / "orientation" / "orientation.keras"
        if not classifier.is_file() or sha256(classifier) != spec.orient_model_sha256:
            raise ValueError(
                f"{classifier} is not the orientation classifier the cache was built with "
                f"({recorded}: {spec.orient_model})"
            )
        classifier = str(classifier)
    return dataclasses.replace(spec, unet=str(path), landmarks=str(marks), orient_model=classifier)


def _with_classifier(chain: ChainSpec, path: Path) -> ChainSpec:
    """``chain`` oriented by the classifier at ``path`` (its hash, the classifier's margin)."""
    from tf_boneage.preprocessing.chain import ORIENT_CLASS_MARGIN

    return dataclasses.replace(
        chain,
        orient=True,
        orient_size=None,
        orient_model=str(path),
        orient_model_sha256=sha256(path),
        orient_margin=ORIENT_CLASS_MARGIN,
    )


def replace_orientation(chain: ChainSpec, orient_model) -> tuple[ChainSpec, dict]:
    """``chain`` served with the orientation classifier ``orient_model`` instead of the
    orientation step its cache was built with: a deliberate, recorded departure from the
    cache (the export's metadata keeps both, key ``orientation_replaced``). The orientation
    step only decides how a film is turned before the rest of the chain; the region networks
    learnt from upright films either way, so an upright film gives the same crops whenever
    both steps keep it as given. Returns (the served chain, the record)."""
    path = Path(orient_model)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no orientation classifier")
    record = {
        "cache_orient": chain.orient,
        "cache_orient_size": chain.orient_size,
        "cache_orient_model": chain.orient_model,
        "cache_orient_model_sha256": chain.orient_model_sha256,
        "served_orient_model": str(path),
    }
    served = _with_classifier(chain, path)
    print(
        f"warning: serving the orientation classifier {path} instead of the cache's "
        "orientation step (recorded in the export's metadata: orientation_replaced)"
    )
    return served, record


def replace_geometry(chain: ChainSpec, source) -> tuple[ChainSpec, dict]:
    """``chain`` served with the geometry networks of another ``training/table.py`` folder
    ``source``: its U-Net (:func:`~tf_boneage.export.end_to_end.unet_of_runs`), its landmark
    net and, when it has one, its orientation classifier; their input sizes come with them.
    A deliberate, recorded departure from the cache (the export's metadata keeps both sides,
    key ``geometry_replaced``): the region networks learnt from crops the cache's networks
    placed, so their ages are those of another chain. What it is for: serving a graph whose
    segmentation and landmarks were trained on other films (e.g. real ones) to see its
    geometry on those films. Returns (the served chain, the record)."""
    from tf_boneage.export.end_to_end import unet_of_runs

    source = Path(source)
    if not source.is_dir():
        raise FileNotFoundError(f"{source}: no training/table.py folder to take the geometry from")
    unet = unet_of_runs(source)
    marks = source / "landmarks" / "landmarks.keras"
    if not marks.is_file():
        raise FileNotFoundError(f"{marks}: the geometry source has no landmark net")
    classifier = source / "orientation" / "orientation.keras"
    served = dataclasses.replace(
        chain,
        unet=str(unet),
        unet_sha256=sha256(unet),
        landmarks=str(marks),
        landmarks_sha256=sha256(marks),
    )
    if classifier.is_file():
        served = _with_classifier(served, classifier)
    keys = ("unet", "unet_sha256", "landmarks", "landmarks_sha256")
    keys += ("orient_model", "orient_model_sha256")
    record = {
        "source": str(source),
        **{f"cache_{k}": getattr(chain, k) for k in keys},
        **{f"served_{k}": getattr(served, k) for k in keys},
    }
    nets = "U-Net, landmark net" + (" and orientation classifier" if classifier.is_file() else "")
    print(
        f"warning: serving the {nets} "
        f"of {source} instead of the cache's (recorded in the export's metadata: "
        "geometry_replaced); the region networks learnt from the cache's crops"
    )
    return served, record


def replace_setting(chain: ChainSpec, name: str, value) -> tuple[ChainSpec, dict]:
    """``chain`` served with its setting ``name`` set to ``value`` instead of the cache's: a
    deliberate, recorded departure (the export's metadata keeps both, key
    ``{name}_replaced``); the description validates the new value. Returns (the served chain,
    the record)."""
    served = dataclasses.replace(chain, **{name: value})
    print(
        f"warning: serving {name} {getattr(served, name)!r} instead of the cache's "
        f"{getattr(chain, name)!r} (recorded in the export's metadata: {name}_replaced)"
    )
    return served, {"cache": getattr(chain, name), "served": getattr(served, name)}


def replace_landmark_passes(chain: ChainSpec, passes: int) -> tuple[ChainSpec, dict]:
    """``chain`` served with ``passes`` landmark looks instead of the cache's
    (:func:`replace_setting`). A second look moves an upright film's landmarks little (rsna100
    ``val``: 2.0 % of the tip-capitate distance) and a turned film's much less than one look
    does; the region networks learnt from the cache's crops."""
    return replace_setting(chain, "landmark_passes", int(passes))


def replace_orient_trust(chain: ChainSpec, trust: float) -> tuple[ChainSpec, dict]:
    """``chain`` served with the classifier's proposals of at least ``trust`` confidence
    standing without the outline check (:func:`replace_setting`; needs a classifier). The check
    decides how a film is turned before the rest of the chain; the region networks learnt from
    upright films either way."""
    if chain.orient_model_sha256 is None:
        raise ValueError("--orient-trust needs an orientation classifier in the chain")
    return replace_setting(chain, "orient_trust", float(trust))


def cache_outline(runs):
    """The canonical outline (52, 40) the cache of ``runs`` was built with
    (``runs/cache/outline.npy``, :mod:`~tf_boneage.preprocessing.cache`), or None (a cache
    without the orientation step, or built before the file existed: said in a warning)."""
    import numpy as np

    from tf_boneage.preprocessing.cache import OUTLINE_FILE

    path = Path(runs) / "cache" / OUTLINE_FILE
    if path.is_file():
        return np.load(path)
    recorded = Path(runs) / "cache" / CHAIN_FILE
    if recorded.is_file() and ChainSpec.read(recorded).orient:
        print(
            f"warning: {path} missing: that cache's orientation step ran without an outline "
            "(its crops may hold turned or inverted films); the export fits its own"
        )
    return None


def _calibrate(graph, manifest, split: str, canonical=None) -> dict | None:
    """Fit the per-sex std scale on the ``split`` rows of ``manifest`` (printed); None with a
    warning when it cannot be fitted. ``canonical``: the cache's outline (kept)."""
    from tf_boneage.data.manifest import load_manifest
    from tf_boneage.export import calibration, outline
    from tf_boneage.preprocessing.cache import outline_sample

    table = load_manifest(manifest)
    rows = table[table["split"] == split].reset_index(drop=True)
    if rows.empty:
        raise StepError(f"{manifest} has no {split!r} rows to calibrate on")
    train = table[table["split"] == "train"]
    outline_rows = qc_rows = None
    if len(train) >= outline.MIN_ROWS and len(rows) >= outline.MIN_ROWS:
        outline_rows = outline_sample(table)  # the films of the cache's outline
        qc_rows = calibration.qc_extra_rows(table, outline_rows)
    else:
        print(
            f"warning: {len(train)} train and {len(rows)} {split} rows (at least "
            f"{outline.MIN_ROWS} each): no registration outline fitted (that QC off)"
        )
    try:
        report = calibration.calibrate(
            graph, rows, outline_rows=outline_rows, canonical=canonical, qc_rows=qc_rows
        )
    except ValueError as exc:
        print(f"warning: bone_age_std not calibrated on {split}: {exc}")
        return None
    _print_registration_qc(report, split)
    if "std_error" in report:
        print(f"warning: bone_age_std not calibrated on {split}: {report['std_error']}")
        return report
    for when in ("before", "after"):
        r = report[when]
        print(
            f"std calibration on {split} ({when}): "
            + ", ".join(
                f"{sex} 90 % interval covers {100 * r[sex]['coverage_90']:.1f} %"
                for sex in ("all", "male", "female")
            )
        )
    print(f"std scale: male {report['scale']['male']:.3f}, female {report['scale']['female']:.3f}")
    return report


def _print_registration_qc(report: dict, split: str) -> None:
    q = report.get("registration_qc", {})
    if "min_registration_fit" in q:
        print(
            f"registration QC: outline and content template of {q['outline_films']} train "
            f"films, least fit {q['min_registration_fit']:.3f}, least content match "
            f"{q.get('min_content_match', float('nan')):.3f} (together reject "
            f"{100 * q['rejected']:.1f} % of {q.get('qc_films', '?')} films: {split} and train)"
        )
    if "min_sharpness" in q:
        print(
            f"image QC: least sharpness {q['min_sharpness']:.3f}, largest black share "
            f"{q['max_black_share']:.3f} (with disagreeing networks "
            f"{q.get('doubt_black_share', float('nan')):.3f}), least grey range "
            f"{q.get('min_grey_range', 0):.3f}, largest step share "
            f"{q.get('max_step_share', 1):.3f} (reject {100 * q['rejected_by_image_checks']:.1f} % "
            f"of {q.get('qc_films', '?')} films: {split} and train)"
        )
    certainty = report.get("certainty_qc", {})
    if "max_std" in certainty:
        print(
            f"certainty QC: largest bone_age_std {certainty['max_std']:.1f} months ({split} alone)"
        )


def main(argv=None) -> int:
    """``training/export.py`` / ``tf-boneage train export``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", required=True, help="output folder of training/table.py")
    parser.add_argument("--preset", required=True, choices=config_lib.PRESETS)
    parser.add_argument("--name", default="boneage", help="model name (default %(default)s)")
    parser.add_argument("--root", default="saved_models", help="TF Serving model root")
    parser.add_argument("--ensemble", default="final", help="ensemble of ensembles.json")
    parser.add_argument("--version", type=int, default=None, help="default: next free")
    parser.add_argument(
        "--unet", default=None, help="U-Net the cache was built with (default: the last seg round)"
    )
    parser.add_argument("--stages", action="store_true", help="also per-stage SavedModels")
    parser.add_argument("--tflite", nargs="*", default=[], help="TFLite variants to convert")
    parser.add_argument("--manifest", default=None, help="manifest for the int8 calibration")
    parser.add_argument(
        "--orient-model",
        default=None,
        help="serve this orientation classifier instead of the cache's orientation step "
        "(recorded in the export's metadata)",
    )
    parser.add_argument(
        "--geometry-from",
        default=None,
        metavar="RUNS",
        help="serve the U-Net, landmark net and orientation classifier of this other "
        "training/table.py folder (e.g. trained on real films; recorded in the metadata)",
    )
    parser.add_argument(
        "--landmark-passes",
        type=int,
        choices=(1, 2),
        default=None,
        help="serve this many landmark looks instead of the cache's (2: again at the film "
        "turned upright by the first; recorded in the metadata)",
    )
    parser.add_argument(
        "--orient-trust",
        type=float,
        default=None,
        metavar="P",
        help="serve with the orientation classifier's proposals of at least this confidence "
        "standing without the outline check, instead of the cache's (recorded in the metadata)",
    )
    parser.add_argument(
        "--training-commit",
        default=None,
        metavar="SHA",
        help="the commit RUNS were trained at (recorded in the metadata's training.commit)",
    )
    parser.add_argument("--representative", type=int, default=64)
    parser.add_argument(
        "--calibrate",
        default="val",
        metavar="SPLIT",
        help="fit the per-sex std scale on this split of --manifest (default "
        "%(default)s; never the test split); 'none' to skip",
    )
    args = parser.parse_args(argv)
    run_or_exit(
        parser,
        run,
        args.runs,
        args.preset,
        name=args.name,
        root=args.root,
        ensemble=args.ensemble,
        version=args.version,
        unet=args.unet,
        stages=args.stages,
        tflite=args.tflite,
        manifest=args.manifest,
        representative=args.representative,
        calibrate=args.calibrate,
        orient_model=args.orient_model,
        geometry_from=args.geometry_from,
        landmark_passes=args.landmark_passes,
        orient_trust=args.orient_trust,
        training_commit=args.training_commit,
    )
    return 0
