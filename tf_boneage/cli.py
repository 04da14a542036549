"""``tf-boneage`` command line: one subcommand per job.

* ``tf-boneage synth --out DIR``: the embedded default dataset (hand-radiograph phantoms).
* ``tf-boneage manifest SOURCE... --out manifest.csv``: RSNA layouts -> validated canonical
  manifest, split and landmark import.
* ``tf-boneage preprocess``: the preprocessing chain over a manifest into a resumable cache.
* ``tf-boneage contact-sheet``: raw -> mask -> equalised -> registered -> regions, as a PNG.
* ``tf-boneage train STAGE ...``: one stage of :mod:`tf_boneage.training` (as ``training/``).
* ``tf-boneage serve``: a local page and TF Serving's REST API for reading films.
* ``tf-boneage demo``, ``predict``, ``reexport``, ``tflite``, ``evaluate-tflite``: see ``--help``.

Each subcommand has its parser (``_add_NAME``) beside its handler (``cmd_NAME``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd


def _parse_holdout(text: str) -> dict[str, int]:
    """``val=1000`` or ``val=200,test=200`` -> dict."""
    out = {}
    for part in text.split(","):
        name, _, size = part.partition("=")
        if not size.strip().isdigit():
            raise argparse.ArgumentTypeError(f"hold-out {part!r} is not NAME=COUNT")
        out[name.strip()] = int(size)
    return out


def _parse_refine(text: str) -> tuple[str, dict[str, int]]:
    """``val:test=500`` -> ("val", {"test": 500})."""
    source, sep, rest = text.partition(":")
    if not sep or not source:
        raise argparse.ArgumentTypeError(f"{text!r} is not FROM:NAME=COUNT")
    return source, _parse_holdout(rest)


def _region_sizes(text: str) -> dict[str, tuple[int, int]]:
    """``A=104x80,B=48x64,C=64x72`` -> {"A": (104, 80), ...}."""
    out = {}
    for part in text.split(","):
        name, sep, size = part.partition("=")
        if not sep or name.strip() not in ("A", "B", "C"):
            raise argparse.ArgumentTypeError(f"{part!r} is not REGION=HxW (regions A, B, C)")
        out[name.strip()] = _size(size)
    return out


def _size(text: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"size {text!r} is not N or HxW") from None
    if len(values) == 1:
        values = values * 2
    if len(values) != 2:
        raise argparse.ArgumentTypeError(f"size {text!r} is not N or HxW")
    return values


def _add_synth(sub) -> None:
    """The ``synth`` subparser."""
    p = sub.add_parser("synth", help="generate the embedded synthetic dataset")
    p.add_argument("--out", default="boneage_synth", help="output folder (default %(default)s)")
    p.add_argument("--n", type=int, default=1000, help="number of images (default %(default)s)")
    p.add_argument("--size", type=_size, default=(256, 256), help="N or HxW pixels")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bits", type=int, choices=(8, 16), default=8, help="PNG bit depth")
    p.add_argument(
        "--format",
        nargs="+",
        default=None,
        choices=("png8", "png16", "dicom12-mono1", "dicom16-mono2"),
        help="file formats used in turn (DICOMs carry sex and dates; mono1 = stored inverted)",
    )
    p.add_argument(
        "--size-range",
        type=_range,
        default=None,
        metavar="LO-HI",
        help="film heights drawn in LO-HI px, aspect 0.7-0.95 (instead of --size)",
    )
    p.add_argument(
        "--holdout",
        type=_parse_holdout,
        default=None,
        help="hold-outs, e.g. val=150,test=150 (default 15%% each)",
    )
    p.add_argument("--workers", type=int, default=None, help="processes (default 2)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset")
    p.set_defaults(func=cmd_synth)


def cmd_synth(args) -> int:
    """``tf-boneage synth``: the embedded synthetic dataset (phantoms with exact masks,
    landmarks and ages, a manifest with splits) into ``--out``."""
    from tf_boneage.data.synthetic import generate

    out = Path(args.out)
    if (out / "manifest.csv").exists() and not args.overwrite:
        print(f"error: {out}/manifest.csv exists; pass --overwrite to replace it", file=sys.stderr)
        return 2
    start = time.perf_counter()
    try:
        table = generate(
            out,
            args.n,
            args.size,
            args.seed,
            args.bits,
            args.holdout,
            args.workers,
            formats=args.format,
            size_range=args.size_range,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - start
    counts = table["split"].value_counts().to_dict()
    sizes = (
        f"{args.size[0]}x{args.size[1]} px"
        if args.size_range is None
        else f"heights {args.size_range[0]}-{args.size_range[1]} px"
    )
    kinds = ", ".join(args.format) if args.format else f"{args.bits}-bit PNG"
    print(
        f"wrote {len(table)} phantoms of {sizes} ({kinds}) to {out} "
        f"in {seconds:.1f} s; splits {counts}; manifest {out / 'manifest.csv'}"
    )
    return 0


def _range(text: str) -> tuple[int, int]:
    """``"1500-3000"`` -> (1500, 3000)."""
    lo, sep, hi = text.partition("-")
    if not sep or not lo.strip().isdigit() or not hi.strip().isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not LO-HI (e.g. 1500-3000)")
    return int(lo), int(hi)


def _add_manifest(sub) -> None:
    """The ``manifest`` subparser."""
    p = sub.add_parser("manifest", help="validate RSNA CSVs / folders into a canonical manifest")
    p.add_argument("sources", nargs="*", help="folders with labels.csv and images/ (rsna100)")
    p.add_argument("--csv", action="append", default=[], help="an RSNA CSV (any layout)")
    p.add_argument("--images", action="append", default=[], help="image folder of each --csv")
    p.add_argument(
        "--split",
        choices=("train", "val", "test"),
        default=None,
        help="split of every row (default from the CSV layout)",
    )
    p.add_argument("--out", required=True, help="canonical manifest CSV to write")
    p.add_argument(
        "--lenient",
        action="store_true",
        help="skip bad rows and write a report instead of stopping",
    )
    p.add_argument("--report", default=None, help="skipped-rows report (lenient mode)")
    p.add_argument(
        "--check-images",
        choices=("none", "exists", "header", "decode"),
        default="header",
        help="how hard to check each image (default %(default)s)",
    )
    p.add_argument(
        "--holdout",
        type=_parse_holdout,
        default=None,
        help="hold out from train rows, e.g. val=1000 (the paper's)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the split hash")
    p.add_argument(
        "--previous-split",
        default=None,
        help="earlier split file: its ids keep their split (alone: reproduce that split, new "
        "ids shared out in its proportions)",
    )
    p.add_argument(
        "--refine",
        type=_parse_refine,
        default=None,
        metavar="FROM:NAME=N",
        help="carve new hold-outs out of split FROM, e.g. val:test=500",
    )
    p.add_argument("--split-out", default=None, help="write the ids-only split definition here")
    p.add_argument(
        "--landmarks",
        action="append",
        default=[],
        help="VIA JSON, COCO keypoint JSON or 21-point pose CSV to attach",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.set_defaults(func=cmd_manifest)


def cmd_manifest(args) -> int:
    """``tf-boneage manifest``: RSNA layouts -> one validated canonical manifest (strict
    unless ``--lenient``), with splits and landmarks; nothing overwritten without
    ``--overwrite``."""
    from tf_boneage.data import annotations, manifest, split

    tables, inputs = [], []
    for source in args.sources:
        src = Path(source)
        tables.append(manifest.read_layout_dir(src, args.split))
        inputs += list(src.glob("*.csv"))
    if len(args.csv) != len(args.images):
        print("error: give one --images folder per --csv file", file=sys.stderr)
        return 2
    for csv, images in zip(args.csv, args.images, strict=True):
        tables.append(manifest.read_rsna_csv(csv, images, args.split))
        inputs.append(Path(csv))
    if not tables:
        print("error: nothing to read: give a folder or --csv/--images", file=sys.stderr)
        return 2
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        print(f"error: {out} exists; pass --overwrite to replace it", file=sys.stderr)
        return 2
    try:
        table, report = manifest.build_manifest(
            tables, strict=not args.lenient, check_images=args.check_images, progress=True
        )
    except manifest.ManifestError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.holdout or args.previous_split:  # an earlier split alone is applied as it was
        previous = split.load_split(args.previous_split) if args.previous_split else None
        train = table["split"] == "train"
        table.loc[train, "split"] = split.assign_split(
            table[train], args.holdout, args.seed, previous
        )
    if args.refine:
        table["split"] = split.refine(table, *args.refine, seed=args.seed)
    for path in args.landmarks:
        table = annotations.attach(table, annotations.read_any(path))
    manifest.save_table(table, out, protect=inputs)
    print(f"manifest: {len(table)} rows -> {out}; splits {table['split'].value_counts().to_dict()}")
    if args.split_out:
        split.save_split(table, args.split_out)
        print(f"split definition (ids only) -> {args.split_out}")
    if len(report):
        report_path = Path(args.report or out.with_suffix(".skipped.csv"))
        manifest.save_table(report, report_path, protect=inputs)
        print(f"skipped {len(report)} row(s); report -> {report_path}")
        print(
            pd.Series(report["problem"])
            .str.replace(r"'.*'", "'...'", regex=True)
            .value_counts()
            .head(10)
            .to_string()
        )
    return 0


def _load_table(path: str, limit: int | None, ids: list[str] | None = None) -> pd.DataFrame:
    from tf_boneage.data import manifest

    table = manifest.load_manifest(path)
    if ids:
        table = table[table["id"].isin(ids)]
    return table.head(limit) if limit else table


def _load_chain(args, region_sizes=None):
    """The chain of the ``_chain_args`` options, or None after printing why it cannot be
    built (e.g. an orientation classifier without ``--orient``)."""
    from tf_boneage.preprocessing import chain

    try:
        return chain.load(
            args.unet,
            args.landmarks,
            args.frame,
            region_sizes,
            orient=args.orient,
            orient_size=args.orient_size,
            orient_model_path=args.orient_model,
            landmark_passes=args.landmark_passes,
            orient_trust=args.orient_trust,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None


def _add_preprocess(sub) -> None:
    """The ``preprocess`` subparser."""
    p = sub.add_parser("preprocess", help="run the preprocessing chain into a cache")
    _chain_args(p)
    p.add_argument("--out", required=True, help="cache folder (resumable)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--limit", type=int, default=None, help="first N rows only")
    p.add_argument(
        "--region-sizes",
        type=_region_sizes,
        default=None,
        help="crop size per region (default A=104x80,B=48x64,C=64x72)",
    )
    p.set_defaults(func=cmd_preprocess)


def cmd_preprocess(args) -> int:
    """``tf-boneage preprocess``: the preprocessing chain over a manifest into a resumable
    cache (region crops, ``qc.csv``, ``chain.json``)."""
    from tf_boneage.preprocessing import cache
    from tf_boneage.preprocessing.spec import ChainSpec

    pre = _load_chain(args, args.region_sizes)
    if pre is None:
        return 2
    table = _load_table(args.manifest, args.limit)
    size = tuple(args.image_size) if args.image_size else None
    spec = ChainSpec.of_chain(
        pre, args.unet, args.landmarks, size, args.assume_aspect, args.orient_model
    )
    try:
        result = cache.run(table, pre, args.out, size, args.batch, args.assume_aspect, spec=spec)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    qc = pd.read_csv(Path(args.out) / "qc.csv")
    bad = qc[~qc["ok"].astype(bool)]
    print(f"cache: {len(result)} images ready in {args.out}/manifest.csv; {len(bad)} failed")
    for _, row in bad.head(20).iterrows():
        print(f"  {row['error']}", file=sys.stderr)
    return 0


def _model_and_tflite_dir(model_arg: str, tflite_dir: str | None):
    """(SavedModel version, TFLite folder: given or saved_models/tflite/NAME/VERSION); the
    model is None (error printed) when there is no such export."""

    try:
        model = resolve_model(model_arg)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None, None
    default = Path("saved_models") / "tflite" / model.parent.name / model.name
    return model, Path(tflite_dir) if tflite_dir else default


def _add_tflite(sub) -> None:
    """The ``tflite`` subparser."""
    p = sub.add_parser("tflite", help="convert an exported SavedModel to TFLite variants")
    p.add_argument(
        "--model",
        default=None,
        help="saved_models/NAME (newest version) or a version folder (default: the shipped "
        "boneage_rsna100)",
    )
    p.add_argument(
        "--variants",
        nargs="+",
        default=["float32", "float16", "dynamic", "int8"],
        choices=("float32", "float16", "dynamic", "int8"),
    )
    p.add_argument("--manifest", default=None, help="representative images for int8")
    p.add_argument("--representative", type=int, default=64, help="images for int8")
    p.add_argument("--out", default=None, help="default saved_models/tflite/NAME/VERSION")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_tflite)


def cmd_tflite(args) -> int:
    """``tf-boneage tflite``: TFLite variants of an export (the shipped model by default)
    into ``--out``; existing files kept unless ``--overwrite``."""
    from tf_boneage.inference import tflite_eval

    model, out = _model_and_tflite_dir(args.model, args.out)
    if model is None:
        return 2
    existing = [v for v in args.variants if (out / f"{v}.tflite").exists()]
    if existing and not args.overwrite:
        print(f"error: {out} already has {existing}; pass --overwrite to replace", file=sys.stderr)
        return 2
    try:
        tflite_eval.convert_all(model, args.variants, out, args.manifest, args.representative)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _add_evaluate_tflite(sub) -> None:
    """The ``evaluate-tflite`` subparser."""
    p = sub.add_parser("evaluate-tflite", help="MAE, parity, latency and size of .tflite files")
    p.add_argument(
        "--model",
        default=None,
        help="the SavedModel the .tflite files came from (reference; default: the shipped "
        "boneage_rsna100)",
    )
    p.add_argument("--tflite-dir", default=None, help="default saved_models/tflite/NAME/VERSION")
    p.add_argument("--manifest", required=True, help="labelled images")
    p.add_argument("--split", default=None, help="only rows of this split (e.g. test)")
    p.add_argument("--limit", type=int, default=None, help="first N rows")
    p.add_argument("--threads", type=int, default=None, help="LiteRT threads")
    p.add_argument("--out", default=None, help="markdown table (and .csv of predictions)")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_evaluate_tflite)


def cmd_evaluate_tflite(args) -> int:
    """``tf-boneage evaluate-tflite``: MAE, parity against the SavedModel, QC agreement,
    latency and size of each .tflite file, with each variant's bound."""
    from tf_boneage.inference import tflite_eval

    model, folder = _model_and_tflite_dir(args.model, args.tflite_dir)
    if model is None:
        return 2
    paths = {p.stem: p for p in sorted(folder.glob("*.tflite"))}
    if not paths:
        print(f"error: no .tflite files in {folder}: run tf-boneage tflite first", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else None
    if out is not None and out.exists() and not args.overwrite:
        print(f"error: {out} exists; pass --overwrite to replace it", file=sys.stderr)
        return 2
    table = _load_table(args.manifest, None)
    if args.split:
        table = table[table["split"] == args.split]
    table = table.head(args.limit) if args.limit else table
    summary, preds = tflite_eval.evaluate(model, paths, table, args.threads)
    text = tflite_eval.markdown(summary)
    print(text)
    for err in preds.loc[preds["error"] != "", "error"]:
        print(f"  skipped: {err}", file=sys.stderr)
    if out is not None:
        from tf_boneage.data.manifest import save_table

        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
        save_table(preds, out.with_suffix(".csv"))
        print(f"table -> {out}, per-image predictions -> {out.with_suffix('.csv')}")
    return 0


def resolve_model(model_arg: str | None) -> Path:
    """The SavedModel version a command runs (:func:`tf_boneage.export.shipped.resolve`: the
    shipped model unless ``--model``), named on stderr."""
    from tf_boneage.export import shipped

    return shipped.resolve(model_arg)


def _add_predict(sub) -> None:
    """The ``predict`` subparser."""
    p = sub.add_parser("predict", help="bone age of image files, folders and DICOM files")
    p.add_argument("inputs", nargs="+", help="files or folders (recursive)")
    p.add_argument(
        "--model",
        default=None,
        help="saved_models/NAME or a version folder (default: the shipped boneage_rsna100)",
    )
    p.add_argument(
        "--sex", choices=("M", "F", "m", "f"), default=None, help="sex for files without PatientSex"
    )
    p.add_argument(
        "--chronological-age",
        default=None,
        help="months (126) or years+months (10y6m); default from DICOM dates",
    )
    p.add_argument("--out", default=None, help="results.csv or results.json")
    p.add_argument(
        "--labels",
        default=None,
        help="CSV with per-image sex (columns id or file, sex or male; optional "
        "chronological_age or birth_date + study_date, and boneage: the true age)",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="give an age to images QC rejects too (marked in flags)",
    )
    p.add_argument("--overlay", default=None, help="folder for one overlay PNG per image")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.set_defaults(func=cmd_predict)


def cmd_predict(args) -> int:
    """``tf-boneage predict``: bone age, interval, QC and overlays of files, folders and
    DICOM (the shipped model unless ``--model``); exit 1 when every file failed."""
    from tf_boneage.inference import batch, labels, predict

    out = Path(args.out) if args.out else None
    if out is not None:
        if out.suffix.lower() not in (".csv", ".json"):
            print(f"error: --out must end in .csv or .json, got {out}", file=sys.stderr)
            return 2
        if out.exists() and not args.overwrite:
            print(f"error: {out} exists; pass --overwrite to replace it", file=sys.stderr)
            return 2
    try:
        chrono = predict.parse_age(args.chronological_age) if args.chronological_age else None
        model = resolve_model(args.model)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    files = predict.collect(args.inputs)
    if not files:
        print("error: no image or DICOM files found in the inputs", file=sys.stderr)
        return 2
    if args.labels:
        try:
            requests, notes = batch.requests_from_labels(files, args.labels, args.sex, chrono)
        except labels.LabelsError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        for note in notes:
            print(f"WARNING: {note}", file=sys.stderr)
    else:
        requests = [batch.Request(f, args.sex, chrono) for f in files]
    from tqdm import tqdm

    from tf_boneage.export import load

    loaded = load.saved_model(model)
    with tqdm(
        total=-(-len(requests) // args.batch),
        desc="predict",
        unit="batch",
        disable=len(requests) <= args.batch,
    ) as bar:
        rows = batch.run(
            loaded,
            requests,
            args.batch,
            args.overlay,
            args.overwrite,
            args.force,
            bar=lambda: bar.update(1),
        )
    for r in rows:
        if r["status"] == "error":
            print(f"{r['file']}: ERROR {r['reason']}", file=sys.stderr)
        else:
            print(batch.line(r))
    if out is not None:
        batch.write(rows, out, model, load.metadata(model).get("chain"))
        print(f"{len(rows)} results -> {out}")
    for text in batch.agreement(rows, out, args.overwrite):
        print(text)
    errors = sum(r["status"] == "error" for r in rows)
    return 1 if errors == len(rows) else 0


def _add_reexport(sub) -> None:
    """The ``reexport`` subparser."""
    p = sub.add_parser(
        "reexport",
        help="rebuild an export from itself with this code (a graph change without retraining)",
    )
    p.add_argument(
        "model",
        nargs="?",
        default=None,
        help="saved_models/NAME or a version folder (default: the shipped boneage_rsna100)",
    )
    p.add_argument("--out", required=True, help="model folder the new version goes into")
    p.add_argument("--version", type=int, default=None, help="default: the next free one")
    p.add_argument(
        "--manifest",
        default=None,
        help="the manifest of the model's training data: fits the QC limits the export does "
        "not hold yet (on its val films and QC train films)",
    )
    p.set_defaults(func=cmd_reexport)


def cmd_reexport(args) -> int:
    """``tf-boneage reexport``: an export rebuilt from itself by the code installed now and
    written as a new version (:func:`tf_boneage.export.rebuild.reexport`)."""
    from tf_boneage.export import rebuild, saved_model

    try:
        source = saved_model.resolve(args.model) if args.model else resolve_model(None)
        path = rebuild.reexport(source, args.out, args.version, args.manifest)
    except (FileNotFoundError, FileExistsError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{source} rebuilt -> {path}")
    return 0


def _add_demo(sub) -> None:
    """The ``demo`` subparser."""
    p = sub.add_parser("demo", help="the whole chain on the embedded default (or --data)")
    p.add_argument("--out", default="demo_run", help="working folder (default %(default)s)")
    p.add_argument("--data", default=None, help="an RSNA-layout folder instead (labels.csv)")
    p.add_argument(
        "--models",
        default=None,
        help="TF Serving model root (default OUT/saved_models: the demo's models stay beside "
        "its run, apart from the shipped model)",
    )
    p.add_argument("--name", default="boneage", help="exported model name")
    p.add_argument(
        "--preset",
        default="synthetic",
        choices=("synthetic", "paper"),
        help="synthetic: 128 px phantoms, small networks (default); paper: full-size phantoms "
        "(1,500-3,000 px, PNG 8/16 bit and DICOM), the paper's networks and frame, one short "
        "epoch each",
    )
    p.add_argument(
        "--n", type=int, default=None, help="phantoms (default 640; 80 with --preset paper)"
    )
    p.add_argument(
        "--eval-limit",
        type=int,
        default=None,
        help="test images for the TFLite table (default 60; 16 with --preset paper)",
    )
    p.add_argument(
        "--tflite",
        nargs="+",
        default=["float32", "float16"],
        choices=["float32", "float16", "dynamic", "int8"],
        help="TFLite variants to export and check (default: %(default)s; each adds ~30 s)",
    )
    p.add_argument(
        "--split",
        default=None,
        help="with --data: a split file (id,split) whose ids keep their split, e.g. "
        "data_manifests/rsna100_split.csv",
    )
    p.add_argument(
        "--keypoints",
        action="append",
        default=[],
        help="with --data: hand keypoints (21-point pose CSV, COCO or VIA JSON) for "
        "the segmentation and landmark stages, e.g. "
        "../shared/data/handpose/keypoints21.csv",
    )
    p.add_argument("--epochs", type=int, default=None, help="epochs of each region run")
    p.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="training overrides passed to training/table.py, e.g. "
        "landmarks.epochs=80 segmentation.rounds=1",
    )
    p.set_defaults(func=cmd_demo)


def cmd_demo(args) -> int:
    """``tf-boneage demo``: the whole system on the embedded default (or ``--data``), see
    :mod:`tf_boneage.demo`."""
    from tf_boneage import demo

    return demo.run(args)


def _add_contact_sheet(sub) -> None:
    """The ``contact-sheet`` subparser."""
    p = sub.add_parser("contact-sheet", help="raw -> mask -> equalised -> registered -> regions")
    _chain_args(p)
    p.add_argument("--out", required=True, help="PNG to write")
    p.add_argument("--n", type=int, default=8, help="number of images")
    p.add_argument("--ids", nargs="*", default=None, help="these ids only")
    p.add_argument("--pose", action="store_true", help="pose-annotated images, draw the pose")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_contact_sheet)


def cmd_contact_sheet(args) -> int:
    """``tf-boneage contact-sheet``: raw -> mask -> equalised -> registered -> regions of a
    few films, as one PNG."""
    import cv2

    from tf_boneage.preprocessing import contact_sheet

    out = Path(args.out)
    if out.exists() and not args.overwrite:
        print(f"error: {out} exists; pass --overwrite to replace it", file=sys.stderr)
        return 2
    pre = _load_chain(args)
    if pre is None:
        return 2
    table = _load_table(args.manifest, args.n, args.ids)
    if args.pose:
        table = table.dropna(subset=["pose_wrist_x"]).head(args.n)
    sheet = contact_sheet.draw(
        table, pre, args.image_size, pose=args.pose, assume_aspect=args.assume_aspect
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), sheet)
    print(f"contact sheet of {len(table)} images -> {out}")
    return 0


def _chain_args(p) -> None:
    p.add_argument("--manifest", required=True, help="canonical manifest")
    p.add_argument("--unet", required=True, help="segmentation model (.keras)")
    p.add_argument("--landmarks", required=True, help="landmark model (.keras)")
    p.add_argument(
        "--frame",
        type=_size,
        default=None,
        help="canonical frame HxW (default 2080x1600; 104x80 for 100 px data)",
    )
    p.add_argument(
        "--image-size",
        type=_size,
        default=None,
        help="resize inputs to HxW first (100 for rsna100; default: own size)",
    )
    p.add_argument(
        "--assume-aspect",
        type=float,
        default=None,
        help="original width/height when orig_w/orig_h are unknown (rsna100: 0.74, the median of the 726 annotated originals)",
    )
    p.add_argument(
        "--orient",
        action="store_true",
        help="find each film's quarter turn and polarity first (the presets' chain does)",
    )
    p.add_argument(
        "--orient-size",
        type=int,
        default=None,
        help="score --orient's candidates at this square size (default: the U-Net's)",
    )
    p.add_argument(
        "--orient-model",
        default=None,
        help="--orient by this orientation classifier (.keras, tf-boneage train orientation) "
        "instead of the U-Net's mask mass",
    )
    p.add_argument(
        "--landmark-passes",
        type=int,
        choices=(1, 2),
        default=1,
        help="2: the landmark net looks again at the film turned upright by its first look "
        "(steadier on films turned by more than 25 degrees)",
    )
    p.add_argument(
        "--orient-trust",
        type=float,
        default=None,
        metavar="P",
        help="with --orient-model: its proposals of at least this confidence stand without "
        "the outline check (the presets' chain: 0.95)",
    )


def _add_train(sub) -> None:
    """The ``train`` subparser."""
    from tf_boneage.training import STAGES

    p = sub.add_parser(
        "train",
        help="one training stage, as training/STAGE.py runs it",
        description="Run one stage of tf_boneage.training; the arguments after "
        "STAGE are the stage's own (tf-boneage train STAGE --help).",
    )
    p.add_argument("stage", choices=list(STAGES))
    p.add_argument("args", nargs=argparse.REMAINDER, help="the stage's arguments")
    p.set_defaults(func=cmd_train)


def cmd_train(args) -> int:
    """``tf-boneage train STAGE ARGS``: one stage's ``main`` of :mod:`tf_boneage.training`,
    as ``training/STAGE.py`` runs it."""
    from tf_boneage.training import stage_main

    return stage_main(args.stage)(args.args)


def _add_serve(sub) -> None:
    """The ``serve`` subparser."""
    p = sub.add_parser(
        "serve", help="a local page and REST endpoint (TF Serving's dialect) for reading films"
    )
    p.add_argument(
        "--model",
        default=None,
        help="saved_models/NAME or a version folder (default: the shipped boneage_rsna100)",
    )
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default %(default)s: this computer only)",
    )
    p.add_argument("--port", type=int, default=8501, help="default %(default)s (TF Serving's)")
    p.add_argument(
        "--name", default=None, help="model name in /v1/models/NAME (default: its folder)"
    )
    p.add_argument("--max-mb", type=float, default=64.0, help="request body cap (default 64 MB)")
    p.add_argument(
        "--max-megapixels", type=float, default=50.0, help="film size cap (default 50 MP)"
    )
    p.add_argument(
        "--max-waiting", type=int, default=16, help="requests queued before 503 (default 16)"
    )
    p.set_defaults(func=cmd_serve)


def cmd_serve(args) -> int:
    """``tf-boneage serve``: the page, ``/predict`` and TF Serving's REST URLs over one
    SavedModel (:mod:`tf_boneage.serve`), until interrupted."""
    import ipaddress

    import uvicorn

    from tf_boneage.serve.app import Settings, create_app

    for name in ("max_mb", "max_megapixels", "max_waiting"):
        if getattr(args, name) <= 0:
            print(f"error: --{name.replace('_', '-')} must be positive", file=sys.stderr)
            return 2
    try:
        loopback = args.host == "localhost" or ipaddress.ip_address(args.host).is_loopback
    except ValueError:
        loopback = False
    settings = Settings(args.max_mb, args.max_megapixels, args.max_waiting)
    try:
        app = create_app(args.model, args.name, settings, say=lambda t: print(t, file=sys.stderr))
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    server = app.state.server
    if not loopback:
        print(
            f"WARNING: listening on {args.host}: anyone who can reach this machine can send "
            "films and read ages; there is no authentication or encryption",
            file=sys.stderr,
        )
    url_host = args.host if ":" not in args.host else f"[{args.host}]"
    print(
        f"serving {server.name} version {server.version} at http://{url_host}:{args.port}/ "
        f"(TF Serving REST: /v1/models/{server.name}:predict); Ctrl-C stops",
        file=sys.stderr,
        flush=True,
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


#: every subcommand's parser, in the order ``--help`` lists them (each defined beside its handler)
SUBCOMMANDS = (
    _add_train,
    _add_synth,
    _add_manifest,
    _add_preprocess,
    _add_contact_sheet,
    _add_demo,
    _add_predict,
    _add_serve,
    _add_reexport,
    _add_tflite,
    _add_evaluate_tflite,
)


def build_parser() -> argparse.ArgumentParser:
    """The ``tf-boneage`` parser: the global ``--verbose`` and one subparser per entry of
    :data:`SUBCOMMANDS`."""
    parser = argparse.ArgumentParser(prog="tf-boneage", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="show TensorFlow's C++ start-up lines (cuInit, oneDNN, ...)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if argv is None and not args.verbose:  # run as a command (not called from Python)
        from tf_boneage.quiet import filter_stderr

        filter_stderr()
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
