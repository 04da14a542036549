"""The whole chain from a manifest to the paper's evaluated table, one resumable step at a time.

    python training/table.py --preset rsna100 --manifest runs/rsna100.csv --out runs/table
    tf-boneage train table --preset synthetic --manifest boneage_synth/manifest.csv \\
        --out runs/table_synth

Steps, each a function of this package called in this process (a finished step is skipped, an
interrupted one resumes where it stopped):

1. :func:`.segmentation.run`: U-Net (``OUT/seg``)
2. :func:`.landmarks.run`: landmark net on the chain's segmented, equalised images
   (``OUT/landmarks``); then, when the preset has an ``orientation`` section (and its chain
   ``orient: true``), :func:`.orientation.run`: the orientation classifier the chain's
   orientation step uses (``OUT/orientation``)
3. :func:`tf_boneage.preprocessing.cache.run`: registered regions A, B, C of every image
   (``OUT/cache``)
4. :func:`.region.run`: every region x head x sex run of the paper's table plus the raw-image
   baseline (``OUT/region/NAME``; names in :mod:`.runs`)
5. :func:`.ensemble.run`: the linear ensembles, fitted on ``val``
6. :func:`.evaluation.run`: the table on ``test`` (``OUT/region/table/table.md``), its plots
7. :func:`.errors.run`: the final model's errors by age band and sex, the extreme ages and the
   20 worst ``test`` films with their QC (``OUT/region/errors``)

The preset (``tf_boneage/training/presets/PRESET.yaml``) gives every size and the epochs of the
table's region runs (``table.epochs``); ``epochs`` overrides that. A both-sexes run (and the
raw-image baseline) sees both sexes' films each epoch, twice those of a sex-specific one:
``table.both_sexes_epoch_share`` (default 1) scales its epochs, 0.5 giving it the optimizer
steps of one sex-specific network (:func:`run_epochs`). ``regions`` / ``only``
restrict the runs, ``sets`` (``KEY=VALUE``) go to every region run and
``segmentation.KEY=VALUE`` / ``landmarks.KEY=VALUE`` / ``orientation.KEY=VALUE`` to those
steps.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from tf_boneage.ensemble import PRIOR_ROWS
from tf_boneage.preprocessing.registration import PAPER_FRAME
from tf_boneage.training import config as config_lib
from tf_boneage.training import (
    ensemble,
    errors,
    evaluation,
    landmarks,
    orientation,
    region,
    segmentation,
)
from tf_boneage.training.runs import table_runs
from tf_boneage.training.runtime import StepError, run_or_exit

#: the steps in order (``until=`` stops after one of them)
STAGES = ("segmentation", "landmarks", "cache", "regions", "ensemble", "evaluate")


def size_text(pair) -> str:
    """``(104, 80)`` -> ``"104x80"``."""
    return f"{pair[0]}x{pair[1]}"


def split_sets(sets) -> dict[str, list[str]]:
    """``["segmentation.epochs=[1,1]", "batch_size=8"]`` -> per-stage override lists (an
    override without a stage prefix goes to the region runs)."""
    out = {"segmentation": [], "landmarks": [], "orientation": [], "region": []}
    for item in sets:
        stage, dot, rest = item.partition(".")
        if dot and stage in out and "=" in rest:
            out[stage].append(rest)
        else:
            out["region"].append(item)
    return out


class Steps:
    """Numbered, timed steps with one line each; a failing step raises :class:`StepError`
    naming the step and its own message. With ``report`` (a CSV path) each finished step
    appends a row: step, wall seconds, CPU seconds of this process (all its threads) and of
    the child processes it waited for (:func:`cpu_seconds`), time of day; a resumed run adds
    its rows below the first call's, so the file sums a run's cost."""

    def __init__(self, total: int, log: list | None = None, report: Path | None = None):
        self.total, self.done = total, 0
        self.log = [] if log is None else log
        self.report = report

    def __call__(self, title: str, fn, *args, **kwargs):
        self.done += 1
        print(f"\n== [{self.done}/{self.total}] {title}", flush=True)
        start, cpu = time.perf_counter(), cpu_seconds()
        try:
            result = fn(*args, **kwargs)
        except StepError as exc:
            raise StepError(f"step '{title}' failed: {exc}") from exc
        except config_lib.ConfigError as exc:
            raise StepError(f"step '{title}': {exc}") from exc
        seconds = time.perf_counter() - start
        self.log.append((title, seconds))
        self._write(title, seconds, cpu_seconds() - cpu)
        print(f"   {title}: {seconds:.0f} s", flush=True)
        return result

    def _write(self, title: str, seconds: float, cpu: float) -> None:
        if self.report is None:
            return
        import csv
        import datetime

        self.report.parent.mkdir(parents=True, exist_ok=True)
        new = not self.report.is_file()
        with open(self.report, "a", newline="") as fh:
            writer = csv.writer(fh)
            if new:
                writer.writerow(["step", "seconds", "cpu_seconds", "finished"])
            stamp = datetime.datetime.now().isoformat(timespec="seconds")
            writer.writerow([title, f"{seconds:.1f}", f"{cpu:.1f}", stamp])


def cpu_seconds() -> float:
    """CPU seconds of this process (all threads) plus those of its ended, waited-for child
    processes (region runs in :mod:`.workers`, pools of the data steps)."""
    import resource

    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def run_epochs(spec_run, epochs: int, both_share: float) -> int:
    """Epochs of one table run: ``epochs`` for a sex-specific run, ``epochs x both_share``
    (rounded, at least 1) for a run on both sexes."""
    if spec_run.sex != "both":
        return epochs
    return max(1, round(epochs * both_share))


def cache_wants_classifier(folder) -> bool:
    """False when ``folder`` holds a finished cache whose ``chain.json`` records no orientation
    classifier (a run made before the preset had one): the cache would not use a classifier
    trained now, so the step is skipped, said in a warning. True otherwise."""
    from tf_boneage.preprocessing.spec import CHAIN_FILE, ChainSpec

    folder = Path(folder)
    if not (folder / "manifest.csv").is_file() or not (folder / CHAIN_FILE).is_file():
        return True
    if ChainSpec.read(folder / CHAIN_FILE).orient_model_sha256:
        return True
    print(
        f"warning: the finished cache {folder} was built without an orientation classifier: "
        "the orientation step is skipped (a classifier trained now would not be used; delete "
        "the cache folder to rebuild it with one)"
    )
    return False


def build_cache(manifest, out, unet, marks, spec: dict, orient_model=None) -> Path:
    """The preprocessing cache of ``manifest`` at the preset's sizes (resumable); returns its
    manifest (``OUT/manifest.csv``). ``orient_model``: the orientation classifier's file."""
    from tf_boneage.data.manifest import load_manifest
    from tf_boneage.preprocessing import cache, chain
    from tf_boneage.preprocessing.spec import ChainSpec

    out = Path(out)
    if (out / "manifest.csv").is_file():
        print(f"cache: done ({out / 'manifest.csv'})")
        return out / "manifest.csv"
    settings = spec.get("chain", {})
    sizes = {k: tuple(v) for k, v in spec["regions"].items()}
    frame = tuple(settings.get("frame", PAPER_FRAME))
    pre = chain.load(
        unet,
        marks,
        frame,
        sizes,
        orient=settings.get("orient", False),
        orient_size=settings.get("orient_size"),
        orient_model_path=orient_model,
        landmark_passes=settings.get("landmark_passes", 1),
        orient_trust=settings.get("orient_trust"),
    )
    image_size = settings.get("image_size")
    image_size = tuple(image_size) if image_size else None
    aspect = settings.get("assume_aspect")
    try:
        cache.run(
            load_manifest(manifest),
            pre,
            out,
            image_size,
            32,
            aspect,
            spec=ChainSpec.of_chain(pre, unet, marks, image_size, aspect, orient_model),
        )
    except ValueError as exc:
        raise StepError(str(exc)) from None
    return out / "manifest.csv"


def run(
    preset: str,
    manifest,
    out,
    epochs: int | None = None,
    regions: str = "ABC",
    only=None,
    sets=(),
    figures=None,
    log: list | None = None,
    until: str | None = None,
    region_workers: int | None = None,
) -> dict | None:
    """Every step of the module docstring into ``out``; returns the table document
    (``OUT/region/table/table.json``). ``log`` collects ``(step title, seconds)``. ``until``
    (one of :data:`STAGES`) stops after that step and returns None: e.g. ``"cache"`` prepares
    the registered regions for ablation runs without training or evaluating the table.
    ``region_workers`` (default: the preset's ``table.region_workers``, else 1): region runs
    trained at once, each in its own process on one thread (:mod:`.workers`); one step of
    ``steps.csv`` then covers them all."""
    if until is not None and until not in STAGES:
        raise StepError(f"until={until!r}: one of {', '.join(STAGES)}")
    spec = config_lib.read_preset(preset)
    out, manifest = Path(out), Path(manifest)
    if not manifest.is_file():
        raise StepError(f"manifest {manifest} not found")
    stage_sets = split_sets(sets)
    table = spec.get("table", {})
    epochs = epochs or int(table.get("epochs", 3))
    heads = tuple(table.get("heads", ("regression", "classification")))
    both_share = float(table.get("both_sexes_epoch_share", 1.0))
    runs = [r for r in table_runs(regions, heads) if only is None or r.name in only]
    workers = int(table.get("region_workers", 1) if region_workers is None else region_workers)
    if workers < 1:
        raise StepError(f"region_workers={workers}: at least 1")
    if not 0 < both_share <= 1:
        raise StepError(f"table.both_sexes_epoch_share={both_share}: a share in (0, 1]")
    classifier = bool(spec.get("chain", {}).get("orient")) and "orientation" in spec
    if classifier and not cache_wants_classifier(out / "cache"):
        classifier = False
    region_steps = len(runs) if workers == 1 else 1
    steps = Steps(6 + classifier + region_steps, log, out / "steps.csv")
    started = time.perf_counter()

    def load(cls, *overrides):
        return config_lib.load(cls, preset, None, [*overrides, *stage_sets[cls.SECTION]])

    cfg = load(config_lib.SegmentationConfig, f"manifest={manifest}", f"out={out / 'seg'}")
    unet = Path(steps("segmentation", segmentation.run, cfg)["unet"])
    if until == "segmentation":
        return None
    marks = out / "landmarks" / "landmarks.keras"
    cfg = load(
        config_lib.LandmarkConfig,
        f"manifest={manifest}",
        f"unet={unet}",
        f"out={out / 'landmarks'}",
    )
    steps("landmarks", landmarks.run, cfg)
    orient_model = None
    if classifier:
        cfg = load(
            config_lib.OrientationConfig, f"manifest={manifest}", f"out={out / 'orientation'}"
        )
        steps("orientation", orientation.run, cfg)
        orient_model = out / "orientation" / "orientation.keras"
    if until == "landmarks":
        return None
    cached = steps(
        "preprocess (cache)", build_cache, manifest, out / "cache", unet, marks, spec, orient_model
    )
    if until == "cache":
        return None
    sizes = spec["regions"]
    jobs = []
    for spec_run in runs:
        raw = spec_run.input == "raw"
        cfg = load(
            config_lib.RegionConfig,
            f"manifest={manifest if raw else cached}",
            f"out={out / 'region' / spec_run.name}",
            f"epochs={run_epochs(spec_run, epochs, both_share)}",
            f"image_size={size_text(sizes[spec_run.region])}",
            *spec_run.overrides(),
        )
        jobs.append((spec_run.name, cfg))
    if workers == 1:
        for name, cfg in jobs:
            steps(f"region {name}", region.run, cfg)
    elif jobs:
        from tf_boneage.training.workers import run_regions

        steps(f"region networks ({len(jobs)}, {workers} at a time)", run_regions, jobs, workers)
    if until == "regions":
        return None
    steps("ensemble", ensemble.run, out / "region", float(table.get("prior_rows", PRIOR_ROWS)))
    if until == "ensemble":
        return None
    doc = steps("evaluate", evaluation.run, out / "region", None, figures)
    steps("error analysis", errors.run, out / "region", None, cached)
    print(
        f"table: {out / 'region' / 'table' / 'table.md'} "
        f"({time.perf_counter() - started:.0f} s in this call)"
    )
    return doc


def main(argv=None) -> int:
    """``training/table.py`` / ``tf-boneage train table``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", required=True, choices=config_lib.PRESETS)
    parser.add_argument("--manifest", required=True, help="canonical manifest (train/val/test)")
    parser.add_argument("--out", required=True, help="folder for every step's outputs")
    parser.add_argument("--epochs", type=int, default=None, help="epochs of each region run")
    parser.add_argument("--regions", default="ABC", help="regions to train (default ABC)")
    parser.add_argument("--only", nargs="*", default=None, help="region run names to train")
    parser.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="overrides for every region run; segmentation.KEY=VALUE and "
        "landmarks.KEY=VALUE, orientation.KEY=VALUE for those steps",
    )
    parser.add_argument("--figures", default=None, help="folder for the table's plots")
    parser.add_argument(
        "--region-workers",
        type=int,
        default=None,
        help="region runs trained at once, each in its own process on one CPU thread "
        "(default: the preset's table.region_workers, else 1)",
    )
    parser.add_argument(
        "--until",
        default=None,
        choices=STAGES,
        help="stop after this step (e.g. cache: prepare the regions for ablation runs)",
    )
    args = parser.parse_args(argv)
    run_or_exit(
        parser,
        run,
        args.preset,
        args.manifest,
        args.out,
        epochs=args.epochs,
        regions=args.regions,
        only=args.only,
        sets=args.set,
        figures=args.figures,
        until=args.until,
        region_workers=args.region_workers,
        hint="; fix it and run the same command again to resume",
    )
    return 0
