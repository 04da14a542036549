"""``tf-boneage demo``: the whole system on a fresh machine, no data, no network.

Generates the embedded synthetic dataset (or reads ``--data``, an RSNA-layout folder), trains
every stage briefly with ``training/table.py`` (segmentation, landmarks, the preprocessing
cache, regions A, B, C regression, region A classification per sex and the raw-image
baseline), fits the ensemble, exports the end-to-end SavedModel (its uncertainty calibrated on
``val``) and the float32, float16 and dynamic-range TFLite variants into ``saved_models/``
(full int8: ``tf-boneage tflite --variants int8 --manifest ...``), evaluates both on the test
split and runs ``predict`` on a few images.
Every step is resumable: run the same command again after an interruption.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRAINING = ROOT / "training"
DEMO_RUNS = ["A_reg_both", "B_reg_both", "C_reg_both", "A_cls_male", "A_cls_female",
             "raw_reg_both"]  # fmt: skip


def _step(title: str, cmd: list[str], log: list) -> None:
    print(f"\n=== {title}", flush=True)
    start = time.perf_counter()
    result = subprocess.run(cmd)
    seconds = time.perf_counter() - start
    log.append((title, seconds))
    if result.returncode != 0:
        raise SystemExit(f"demo: step '{title}' failed (exit {result.returncode}); run the same "
                         "command again to resume")  # fmt: skip


def _manifest(args, out: Path) -> tuple[Path, str]:
    """(manifest path, preset) for the synthetic default or ``--data``."""
    if args.data:
        from tf_boneage.data import annotations, manifest, split

        if not args.keypoints:
            raise SystemExit("demo --data: the segmentation and landmark stages learn from hand "
                             "keypoints: pass --keypoints FILE (21-point pose CSV, COCO or VIA "
                             "JSON; e.g. ../shared/data/handpose/keypoints21.csv)")  # fmt: skip
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
    from tf_boneage.data.synthetic import generate

    synth = out / "synth"
    if not (synth / "manifest.csv").exists():
        generate(synth, n=args.n, size=(128, 128), seed=0, progress=True)
    return synth / "manifest.csv", "synthetic"


def run(args) -> int:
    if not TRAINING.is_dir():
        print(f"error: {TRAINING} not found: the demo runs from a source checkout "
              "(pip install -e .)", file=sys.stderr)  # fmt: skip
        return 2
    started = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log: list = []
    t0 = time.perf_counter()
    manifest, preset = _manifest(args, out)
    log.append(("data", time.perf_counter() - t0))
    py = sys.executable
    table_dir = out / "table"
    _step("train every stage, fit the ensemble, evaluate (training/table.py)",
          [py, str(TRAINING / "table.py"), "--preset", preset, "--manifest", str(manifest),
           "--out", str(table_dir), "--only", *DEMO_RUNS, "--figures", str(out / "figures"),
           *(["--epochs", str(args.epochs)] if args.epochs else []),
           *(["--set", *args.set] if args.set else [])], log)  # fmt: skip
    models = Path(args.models)
    doc_path = out / "export.json"
    if doc_path.exists():
        export = Path(json.loads(doc_path.read_text())["saved_model"])
        print(f"\n=== export: done ({export})")
    else:
        before = {p for p in models.glob(f"{args.name}/*")}
        _step("export SavedModel + TFLite (training/export.py)",
              [py, str(TRAINING / "export.py"), "--runs", str(table_dir), "--preset", preset,
               "--name", args.name, "--root", str(models), "--ensemble", "demo",
               "--tflite", "float32", "float16", "dynamic",
               "--manifest", str(manifest), "--representative", "32"], log)  # fmt: skip
        export = sorted(set(models.glob(f"{args.name}/*")) - before)[-1]
        doc_path.write_text(json.dumps({"saved_model": str(export)}))
    tflite_dir = models / "tflite" / args.name / export.name
    evaluation = out / "evaluate_tflite.md"
    if evaluation.exists():
        evaluation.unlink()
        evaluation.with_suffix(".csv").unlink(missing_ok=True)
    _step("evaluate SavedModel vs TFLite on the test split (tf-boneage evaluate-tflite)",
          [py, "-m", "tf_boneage.cli", "evaluate-tflite", "--model", str(export),
           "--tflite-dir", str(tflite_dir), "--manifest", str(manifest), "--split", "test",
           "--limit", str(args.eval_limit), "--out", str(evaluation)], log)  # fmt: skip
    coverage = out / "coverage.json"
    _step("interval coverage on the test split (training/coverage.py)",
          [py, str(TRAINING / "coverage.py"), "--model", str(export), "--manifest", str(manifest),
           "--split", "test", "--out", str(coverage)], log)  # fmt: skip
    import pandas as pd

    from tf_boneage.data.manifest import load_manifest

    test = load_manifest(manifest)
    # one sex: the sample folder holds plain images, whose sex is given once (--sex)
    test = test[test["split"] == "test"]
    girls = test[~test["male"].astype(bool)]
    test, sex = (girls.head(3), "F") if len(girls) else (test.head(3), "M")
    samples = out / "predict_samples"
    samples.mkdir(exist_ok=True)
    for _, row in test.iterrows():
        shutil.copy(row["image_path"], samples / Path(row["image_path"]).name)
    results = out / "predictions.csv"
    _step("predict on 3 test images (tf-boneage predict)",
          [py, "-m", "tf_boneage.cli", "predict", str(samples), "--model", str(export),
           "--sex", sex, "--out", str(results), "--overlay", str(out / "overlays"),
           "--overwrite"], log)  # fmt: skip
    got = pd.read_csv(results)
    truth = dict(zip(test["image_path"].map(lambda p: Path(p).name), test["boneage"],
                     strict=True))  # fmt: skip
    print("\n=== the table (test split; training/evaluate.py)")
    print((table_dir / "region" / "table" / "table.md").read_text())
    print("=== SavedModel vs TFLite (test split)")
    print(evaluation.read_text())
    cov = json.loads(coverage.read_text())
    print("=== uncertainty: how often the truth is inside the interval (test split)")
    for key in ("all", "male", "female"):
        r = cov[key]
        print(f"  {key:6s} n={r['n']:4d}  MAE {r['mae']:5.2f}  mean std {r['mean_std']:5.2f}  "
              f"+/- 1 std: {100 * r['coverage_68']:5.1f} % (nominal 68)  "
              f"+/- 1.645 std: {100 * r['coverage_90']:5.1f} % (nominal 90)")  # fmt: skip
    print(f"=== predict ({len(test)} test images of one sex, given as --sex {sex})")
    for _, r in got.iterrows():
        name = Path(r["file"]).name
        print(f"  {name}: predicted {r['bone_age_months']:.1f} months, true {truth[name]:.1f}")
    print("\n=== where everything went")
    for label, path in (("data / manifest", manifest), ("training runs", table_dir),
                        ("table", table_dir / "region" / "table" / "table.md"),
                        ("plots", out / "figures"), ("SavedModel (TF Serving)", export),
                        ("models.config", models / "models.config"), ("TFLite", tflite_dir),
                        ("TFLite evaluation", evaluation), ("interval coverage", coverage),
                        ("predictions", results),
                        ("overlays", out / "overlays")):  # fmt: skip
        print(f"  {label:24s} {path}")
    print("\n=== time")
    for title, seconds in log:
        print(f"  {seconds:7.0f} s  {title}")
    print(f"  {time.perf_counter() - started:7.0f} s  total")
    return 0
