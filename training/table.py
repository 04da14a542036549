"""The whole chain from a manifest to the paper's evaluated table, one resumable step at a time.

    python training/table.py --preset rsna100 --manifest runs/rsna100.csv --out runs/table
    python training/table.py --preset synthetic --manifest boneage_synth/manifest.csv \\
        --out runs/table_synth

Steps (each a script of ``training/`` or a ``tf-boneage`` command, run as a subprocess with
its own resolved config; a finished step is skipped, an interrupted one resumes):

1. ``segmentation.py``: U-Net (``OUT/seg``)
2. ``landmarks.py``: landmark net on the chain's segmented, equalised images (``OUT/landmarks``)
3. ``tf-boneage preprocess``: registered regions A, B, C of every image (``OUT/cache``)
4. ``region.py``: every region x head x sex run of the paper's table plus the raw-image
   baseline (``OUT/region/NAME``; NAME like ``A_reg_both``, ``C_cls_female``, ``raw_reg_both``)
5. ``ensemble.py``: the linear ensembles, fitted on ``val``
6. ``evaluate.py``: the table on ``test`` (``OUT/region/table/table.md``) and its plots

The preset file (``training/configs/PRESET.yaml``) gives every size and the epochs of the
table's region runs (``table.epochs``); ``--epochs`` overrides that, ``--regions`` / ``--only``
restrict the runs, ``--set KEY=VALUE`` is passed to every region run and
``--set segmentation.KEY=VALUE`` / ``landmarks.KEY=VALUE`` to those steps.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import config as config_lib  # noqa: E402


def region_runs(regions="ABC", heads=("regression", "classification")) -> list[dict]:
    """The paper's table: per region regression both sexes / male / female and classification
    male / female; plus the raw-image baseline (regression, both sexes)."""
    runs = []
    for region in regions:
        for head in heads:
            short = {"regression": "reg", "classification": "cls"}[head]
            sexes = ("both", "male", "female") if head == "regression" else ("male", "female")
            runs += [{"name": f"{region}_{short}_{sex}", "region": region, "head": head,
                      "sex": sex} for sex in sexes]  # fmt: skip
    runs.append({"name": "raw_reg_both", "region": "A", "head": "regression", "sex": "both",
                 "input": "raw"})  # fmt: skip
    return runs


def _size(pair) -> str:
    return f"{pair[0]}x{pair[1]}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", required=True, choices=config_lib.PRESETS)
    parser.add_argument("--manifest", required=True, help="canonical manifest (train/val/test)")
    parser.add_argument("--out", required=True, help="folder for every step's outputs")
    parser.add_argument("--epochs", type=int, default=None, help="epochs of each region run")
    parser.add_argument("--regions", default="ABC", help="regions to train (default ABC)")
    parser.add_argument("--only", nargs="*", default=None, help="region run names to train")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="overrides for every region run")  # fmt: skip
    parser.add_argument("--figures", default=None, help="folder for the table's plots")
    args = parser.parse_args(argv)
    preset = config_lib.read_preset(args.preset)
    out, manifest = Path(args.out), Path(args.manifest)
    if not manifest.is_file():
        parser.exit(2, f"error: manifest {manifest} not found\n")
    py = [sys.executable]
    stage_sets = {"segmentation": [], "landmarks": [], "region": []}
    for item in args.set:
        stage, dot, rest = item.partition(".")
        if dot and stage in stage_sets and "=" in rest:
            stage_sets[stage].append(rest)
        else:
            stage_sets["region"].append(item)
    started = time.perf_counter()

    def step(title: str, cmd: list[str], done: Path | None = None) -> None:
        if done is not None and done.exists():
            print(f"== {title}: done ({done})")
            return
        print(f"== {title}\n   {' '.join(cmd)}", flush=True)
        t0 = time.perf_counter()
        result = subprocess.run(cmd)
        if result.returncode != 0:
            raise SystemExit(f"error: step '{title}' failed (exit {result.returncode}); "
                             "fix it and run the same command again to resume")  # fmt: skip
        print(f"   {title}: {time.perf_counter() - t0:.0f} s", flush=True)

    seg = out / "seg"
    report = seg / "report.json"

    def seg_finished() -> bool:
        return report.exists() and bool(json.loads(report.read_text()).get("finished"))

    step("segmentation", py + [str(HERE / "segmentation.py"), "--preset", args.preset, "--set",
                               f"manifest={manifest}", f"out={seg}",
                               *stage_sets["segmentation"]],
         report if seg_finished() else None)  # fmt: skip
    unet = Path(json.loads(report.read_text())["unet"])  # the last round trained
    marks = out / "landmarks" / "landmarks.keras"
    step("landmarks", py + [str(HERE / "landmarks.py"), "--preset", args.preset, "--set",
                            f"manifest={manifest}", f"unet={unet}",
                            f"out={out / 'landmarks'}", *stage_sets["landmarks"]],
         marks)  # fmt: skip
    chain = preset.get("chain", {})
    sizes = preset["regions"]
    cmd = [sys.executable, "-m", "tf_boneage.cli", "preprocess", "--manifest", str(manifest),
           "--unet", str(unet), "--landmarks", str(marks), "--out", str(out / "cache"),
           "--region-sizes", ",".join(f"{r}={_size(s)}" for r, s in sizes.items())]  # fmt: skip
    if "frame" in chain:
        cmd += ["--frame", _size(chain["frame"])]
    if "image_size" in chain:
        cmd += ["--image-size", _size(chain["image_size"])]
    if "assume_aspect" in chain:
        cmd += ["--assume-aspect", str(chain["assume_aspect"])]
    step("preprocess", cmd, out / "cache" / "manifest.csv")
    table = preset.get("table", {})
    epochs = args.epochs or int(table.get("epochs", 3))
    heads = tuple(table.get("heads", ("regression", "classification")))
    for run in region_runs(args.regions, heads):
        if args.only is not None and run["name"] not in args.only:
            continue
        raw = run.get("input") == "raw"
        sets = [f"manifest={manifest if raw else out / 'cache' / 'manifest.csv'}",
                f"out={out / 'region' / run['name']}", f"region={run['region']}",
                f"head={run['head']}", f"sex={run['sex']}", f"epochs={epochs}",
                f"image_size={_size(sizes[run['region']])}", *stage_sets["region"]]  # fmt: skip
        if raw:
            sets.append("input=raw")
        step(f"region {run['name']}",
             py + [str(HERE / "region.py"), "--preset", args.preset, "--set", *sets],
             out / "region" / run["name"] / "predictions.csv")  # fmt: skip
    step("ensemble", py + [str(HERE / "ensemble.py"), str(out / "region")])
    cmd = py + [str(HERE / "evaluate.py"), str(out / "region")]
    step("evaluate", cmd + (["--figures", args.figures] if args.figures else []))
    print(f"table: {out / 'region' / 'table' / 'table.md'} "
          f"({time.perf_counter() - started:.0f} s in this call)")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
