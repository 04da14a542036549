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
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import config as config_lib  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", required=True, help="output folder of training/table.py")
    parser.add_argument("--preset", required=True, choices=config_lib.PRESETS)
    parser.add_argument("--name", default="boneage", help="model name (default %(default)s)")
    parser.add_argument("--root", default="saved_models", help="TF Serving model root")
    parser.add_argument("--ensemble", default="final", help="ensemble of ensembles.json")
    parser.add_argument("--version", type=int, default=None, help="default: next free")
    parser.add_argument("--unet", default=None,
                        help="U-Net the cache was built with (default: the last seg round)")  # fmt: skip
    parser.add_argument("--stages", action="store_true", help="also per-stage SavedModels")
    parser.add_argument("--tflite", nargs="*", default=[], help="TFLite variants to convert")
    parser.add_argument("--manifest", default=None, help="manifest for the int8 calibration")
    parser.add_argument("--representative", type=int, default=64)
    parser.add_argument("--calibrate", default="val", metavar="SPLIT",
                        help="fit the per-sex std scale on this split of --manifest (default "
                             "%(default)s; never the test split); 'none' to skip")  # fmt: skip
    args = parser.parse_args(argv)

    from tf_boneage.export import end_to_end, saved_model

    preset = config_lib.read_preset(args.preset)
    chain = preset.get("chain", {})
    try:
        graph = end_to_end.from_runs(
            args.runs,
            args.ensemble,
            tuple(chain.get("image_size", (100, 100))),
            tuple(chain.get("frame", (2080, 1600))),
            {k: tuple(v) for k, v in preset["regions"].items()},
            chain.get("assume_aspect"),
            args.unet,
        )
    except (FileNotFoundError, KeyError) as exc:
        parser.exit(2, f"error: {exc}\n")
    root = Path(args.root)
    meta = {"runs": str(args.runs), "preset": args.preset, "ensemble": args.ensemble,
            "unet": str(args.unet or "last round")}  # fmt: skip
    if args.calibrate == "test":
        parser.exit(2, "error: --calibrate test: the test split is for reporting only\n")
    report = None
    if args.manifest and args.calibrate != "none":
        from tf_boneage.data.manifest import load_manifest
        from tf_boneage.export import calibration

        rows = load_manifest(args.manifest)
        rows = rows[rows["split"] == args.calibrate].reset_index(drop=True)
        if rows.empty:
            parser.exit(2, f"error: {args.manifest} has no {args.calibrate!r} rows to "
                           "calibrate on\n")  # fmt: skip
        try:
            report = calibration.calibrate(graph, rows)
        except ValueError as exc:
            report = None
            print(f"warning: bone_age_std not calibrated on {args.calibrate}: {exc}")
    if report is not None:
        meta["std_calibration"] = {"split": args.calibrate, **report}
        for when in ("before", "after"):
            r = report[when]
            print(f"std calibration on {args.calibrate} ({when}): " + ", ".join(
                f"{sex} 90 % interval covers {100 * r[sex]['coverage_90']:.1f} %"
                for sex in ("all", "male", "female")))  # fmt: skip
        print(f"std scale: male {report['scale']['male']:.3f}, "
              f"female {report['scale']['female']:.3f}")  # fmt: skip
    elif not (args.manifest and args.calibrate != "none"):
        print("warning: bone_age_std not calibrated (give --manifest with a val split)")
    path = saved_model.export_end_to_end(graph, root / args.name, args.version, meta)
    print(f"end-to-end SavedModel -> {path}")
    stage_dirs = {}
    if args.stages:
        for stage, model in graph.stage_models.items():
            stage_dirs[stage] = saved_model.export_stage(model, root / f"{args.name}_{stage}")
            print(f"stage {stage} -> {stage_dirs[stage]}")
    print(f"models.config -> {saved_model.write_models_config(root)}")
    if args.tflite:
        from tf_boneage.inference import tflite_eval

        tflite_eval.convert_all(path, args.tflite, root / "tflite" / args.name / path.name,
                                args.manifest, args.representative)  # fmt: skip
        if stage_dirs:
            samples = None
            if "int8" in args.tflite and args.manifest:
                from tf_boneage.data.manifest import load_manifest

                samples = tflite_eval.stage_samples(graph, load_manifest(args.manifest),
                                                    args.representative)  # fmt: skip
            variants = [v for v in args.tflite if v != "int8" or samples is not None]
            tflite_eval.convert_stages(stage_dirs, variants, root / "tflite", samples)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
