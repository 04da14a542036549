"""The small text reports of a table run, kept where a repository can hold them.

    tf-boneage train reports runs/table --out saved_models/boneage_rsna100/reports

A run folder (:mod:`.table`) holds weights, caches and images that never go into a
repository; what a reader needs to check a figure is small text: the steps' times
(``steps.csv``), each stage's settings and report, the chain description, every region run's
``config.yaml`` / ``metrics.json`` / ``history.csv``, the fitted ensembles, the table and the
error analysis. :func:`keep` copies exactly those (per-film predictions stay behind: they
name every film of the data set), refusing any file over :data:`MAX_BYTES`.
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

#: files of the run folder kept as they are (relative paths)
FILES = (
    "steps.csv",
    "seg/config.yaml",
    "seg/report.json",
    "landmarks/config.yaml",
    "landmarks/report.json",
    "cache/chain.json",
    "region/ensembles.json",
    "region/table/table.md",
    "region/table/table.json",
    "region/errors/errors.md",
    "region/errors/errors.json",
    "region/errors/worst.csv",
)
#: files kept from every region run (``region/NAME/``)
PER_RUN = ("config.yaml", "metrics.json", "history.csv")
#: no kept file may be larger (bytes)
MAX_BYTES = 256_000


def kept_files(run: Path) -> list[Path]:
    """The report files present in ``run`` (relative paths), in a stable order."""
    run = Path(run)
    out = [Path(f) for f in FILES if (run / f).is_file()]
    region = run / "region"
    if region.is_dir():
        for folder in sorted(p for p in region.iterdir() if (p / "metrics.json").is_file()):
            out += [(folder / f).relative_to(run) for f in PER_RUN if (folder / f).is_file()]
    return out


def keep(run, out) -> list[Path]:
    """Copy the report files of ``run`` into ``out`` (same relative paths; each written
    atomically, an older copy replaced); returns the written paths. ``ValueError`` when
    ``run`` has no reports or a file is over :data:`MAX_BYTES` (nothing is written then)."""
    run, out = Path(run), Path(out)
    files = kept_files(run)
    if not files:
        raise ValueError(f"{run}: no reports of a table run (steps.csv, region/*/metrics.json)")
    big = [f for f in files if (run / f).stat().st_size > MAX_BYTES]
    if big:
        raise ValueError(f"{run / big[0]}: over {MAX_BYTES} bytes, not a small report")
    written = []
    for rel in files:
        dest = out / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.tmp")
        shutil.copyfile(run / rel, tmp)
        os.replace(tmp, dest)
        written.append(dest)
    return written


def main(argv=None) -> int:
    """``tf-boneage train reports RUN --out DEST``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", help="a table run folder (training/table.py --out)")
    parser.add_argument("--out", required=True, help="folder for the reports (in a repository)")
    args = parser.parse_args(argv)
    try:
        written = keep(args.run, args.out)
    except (ValueError, OSError) as exc:
        parser.exit(2, f"error: {exc}\n")
    total = sum(p.stat().st_size for p in written)
    print(f"{len(written)} report files ({total / 1000:.0f} kB) -> {args.out}")
    return 0
