"""``tf-boneage demo``: the whole system on a fresh machine, no data, no network.

Generates the embedded synthetic dataset (or reads ``--data``, an RSNA-layout folder), trains
every stage briefly with :func:`tf_boneage.training.table.run` (segmentation, landmarks, the preprocessing
cache, regions A, B, C regression, region A classification per sex and the raw-image
baseline), fits the ensemble, exports the end-to-end SavedModel (its uncertainty calibrated on
``val``) and the float32 and float16 TFLite variants (``--tflite``: also ``dynamic``, ``int8``)
into ``OUT/saved_models/`` (never beside the shipped model), evaluates both on the test
split and runs ``predict`` on a few images.
Every step is a function call in this process and resumable: run the same command again after
an interruption; a failed step stops the demo with its own message.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

from tf_boneage.training.runs import DEMO_RUNS
from tf_boneage.training.runtime import StepError


def _manifest(args, out: Path) -> tuple[Path, str]:
    """(manifest path, preset) for the synthetic default or ``--data``."""
    if args.data:
        from tf_boneage.data import annotations, manifest, split

        if not args.keypoints:
            raise StepError(
                "demo --data: the segmentation and landmark stages learn from hand "
                "keypoints: pass --keypoints FILE (21-point pose CSV, COCO or VIA "
                "JSON; e.g. ../shared/data/handpose/keypoints21.csv)"
            )
        path = out / "manifest.csv"
        if not path.exists():
            table = manifest.read_layout_dir(args.data)
            table, _ = manifest.build_manifest([table], strict=False, check_images="exists")
            previous = split.load_split(args.split) if args.split else None
            table["split"] = split.assign_split(table, {"val": 500, "test": 500}, 0, previous)
            for keypoints in args.keypoints:
                table = annotations.attach(table, annotations.read_any(keypoints))
            manifest.save_table(table, path)
        return path, "rsna100"
    from tf_boneage.data.synthetic import FORMATS, generate

    synth = out / "synth"
    paper = getattr(args, "preset", "synthetic") == "paper"
    if not (synth / "manifest.csv").exists():
        if paper:  # every input path of the paper preset: sizes, aspects, PNG and DICOM
            generate(synth, n=args.n, seed=0, formats=FORMATS, size_range=PAPER_HEIGHTS)
        else:
            generate(synth, n=args.n, size=(128, 128), seed=0, progress=True)
    return synth / "manifest.csv", "paper" if paper else "synthetic"


#: heights of the paper demo's phantoms (aspects 0.7-0.95): RSNA films are 1,500-3,000 px
PAPER_HEIGHTS = (1500, 3000)
#: the paper demo's budget on 2 CPU cores (``--set`` adds to it): one epoch per region
#: network; 3 U-Net and 32 landmark epochs (256 px, about 20 s each with the step's
#: validation), because a few landmark epochs leave the landmarks off the hand and every
#: registration with them (40 epochs: 17.2 % of the tip-capitate length held out, and the
#: demo took 46 min 20 s, over its 45: RESULTS.md); 60 epochs of the orientation classifier
PAPER_SETS = (
    "segmentation.rounds=1",
    "segmentation.epochs=[3]",
    "segmentation.batch_size=4",
    "landmarks.epochs=32",
    "landmarks.batch_size=4",
    "orientation.epochs=60",
    "batch_size=8",
)


def defaults(args) -> None:
    """Fill the preset-dependent defaults of ``args`` (``n``, ``eval_limit``, ``epochs``,
    ``set``): the paper demo runs 80 full-size phantoms, one epoch per network."""
    paper = getattr(args, "preset", "synthetic") == "paper"
    if getattr(args, "n", None) is None:
        args.n = 80 if paper else 640
    if getattr(args, "eval_limit", None) is None:
        args.eval_limit = 16 if paper else 60
    if paper:
        args.epochs = args.epochs or 1
        args.set = [*PAPER_SETS, *(args.set or ())]


def _evaluate_tflite(export: Path, tflite_dir: Path, manifest: Path, limit: int, out: Path):
    """SavedModel vs every TFLite variant on the first ``limit`` test rows: the markdown
    table, also written to ``out`` (and the per-image predictions beside it)."""
    from tf_boneage.data.manifest import load_manifest, save_table
    from tf_boneage.inference import tflite_eval

    paths = {p.stem: p for p in sorted(tflite_dir.glob("*.tflite"))}
    if not paths:
        raise StepError(f"no .tflite files in {tflite_dir}")
    table = load_manifest(manifest)
    table = table[table["split"] == "test"].head(limit)
    summary, preds = tflite_eval.evaluate(export, paths, table, None)
    text = tflite_eval.markdown(summary)
    out.write_text(text + "\n")
    save_table(preds, out.with_suffix(".csv"))
    return text, {k: v for k, v in tflite_eval.verdicts(summary).items() if v}


def _predict(export: Path, manifest: Path, out: Path) -> tuple[object, object]:
    """``tf-boneage predict --labels`` on three test images (a folder of plain images and a
    labels CSV with each one's sex and true age, as a clinic's batch would come); returns
    (the test rows, the results table)."""
    import pandas as pd

    from tf_boneage import cli
    from tf_boneage.data.manifest import load_manifest

    test = load_manifest(manifest)
    test = test[test["split"] == "test"].head(3)
    samples = out / "predict_samples"
    samples.mkdir(exist_ok=True)
    for _, row in test.iterrows():
        shutil.copy(row["image_path"], samples / Path(row["image_path"]).name)
    labels = out / "predict_labels.csv"
    pd.DataFrame(
        {
            "file": [Path(p).name for p in test["image_path"]],
            "sex": ["M" if m else "F" for m in test["male"].astype(bool)],
            "boneage": test["boneage"],
        }
    ).to_csv(labels, index=False)
    results = out / "predictions.csv"
    argv = [
        "predict",
        str(samples),
        "--model",
        str(export),
        "--labels",
        str(labels),
        "--out",
        str(results),
        "--overlay",
        str(out / "overlays"),
        "--overwrite",
    ]
    if cli.main(argv) != 0:
        raise StepError("predict found no image it could read")
    return test, pd.read_csv(results)


def run(args) -> int:
    from tf_boneage.training import evaluation, export, table
    from tf_boneage.training.table import Steps

    started = time.perf_counter()
    defaults(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log: list = []
    steps = Steps(6, log)
    try:
        manifest, preset = steps("data", _manifest, args, out)
        table_dir = out / "table"
        steps(
            "train every stage, fit the ensemble, evaluate (tf_boneage.training.table)",
            table.run,
            preset,
            manifest,
            table_dir,
            args.epochs,
            "ABC",
            DEMO_RUNS,
            args.set or (),
            out / "figures",
            log,
        )
        models = Path(args.models) if args.models else out / "saved_models"
        doc_path = out / "export.json"
        if doc_path.exists():
            export_dir = Path(json.loads(doc_path.read_text())["saved_model"])
            steps("export: done", lambda: export_dir)
        else:
            export_dir = steps(
                "export SavedModel + TFLite (tf_boneage.training.export)",
                export.run,
                table_dir,
                preset,
                args.name,
                models,
                "demo",
                tflite=tuple(getattr(args, "tflite", None) or ("float32", "float16")),
                manifest=manifest,
                representative=32,
            )
            doc_path.write_text(json.dumps({"saved_model": str(export_dir)}))
        tflite_dir = models / "tflite" / args.name / export_dir.name
        evaluation_md = out / "evaluate_tflite.md"
        tflite_text, out_of_bound = steps(
            "evaluate SavedModel vs TFLite on the test split",
            _evaluate_tflite,
            export_dir,
            tflite_dir,
            manifest,
            args.eval_limit,
            evaluation_md,
        )
        coverage = steps(
            "interval coverage on the test split",
            evaluation.interval_coverage,
            export_dir,
            manifest,
            "test",
        )
        (out / "coverage.json").write_text(json.dumps(coverage, indent=2))
        test, got = steps("predict on 3 test images", _predict, export_dir, manifest, out)
    except StepError as exc:
        print(f"demo: {exc}; run the same command again to resume", file=sys.stderr)
        return 2
    truth = dict(zip(test["image_path"].map(lambda p: Path(p).name), test["boneage"], strict=True))
    print("\n=== the table (test split)")
    print((table_dir / "region" / "table" / "table.md").read_text())
    print("=== SavedModel vs TFLite (test split)")
    print(tflite_text)
    print("=== uncertainty: how often the truth is inside the interval (test split)")
    print("\n".join(evaluation.coverage_lines(coverage)))
    print(f"=== predict ({len(test)} test images, sex and true age from --labels)")
    for _, r in got.iterrows():
        name = Path(r["file"]).name
        if r["bone_age_months"] != r["bone_age_months"]:  # NaN: no age
            print(f"  {name}: rejected by QC ({r['reason']}), true {truth[name]:.1f}")
        else:
            print(f"  {name}: predicted {r['bone_age_months']:.1f} months, true {truth[name]:.1f}")
    print("\n=== where everything went")
    for label, path in (
        ("data / manifest", manifest),
        ("training runs", table_dir),
        ("table", table_dir / "region" / "table" / "table.md"),
        ("plots", out / "figures"),
        ("SavedModel (TF Serving)", export_dir),
        ("models.config", models / "models.config"),
        ("TFLite", tflite_dir),
        ("TFLite evaluation", evaluation_md),
        ("interval coverage", out / "coverage.json"),
        ("predictions", out / "predictions.csv"),
        ("overlays", out / "overlays"),
    ):
        print(f"  {label:24s} {path}")
    print("\n=== time")
    for title, seconds in log:
        print(f"  {seconds:7.0f} s  {title}")
    print(f"  {time.perf_counter() - started:7.0f} s  total")
    if out_of_bound:
        for name, broken in out_of_bound.items():
            print(f"WARNING: TFLite {name} is out of its bound: {broken}", file=sys.stderr)
        print(f"WARNING: see {evaluation_md}; do not deploy these variants", file=sys.stderr)
        return 1
    return 0
