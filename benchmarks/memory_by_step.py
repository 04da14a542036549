"""Peak memory of every training step of the paper preset against the number of films:
it must be set by the batch, not by the data.

    python benchmarks/memory_by_step.py --films 80 400 --size 2000x1600 --work /tmp/mem \\
        --out memory_by_step.md

For each count, ``tf-boneage synth`` draws that many full-size phantoms, then
``training/table.py --preset paper`` runs one step per process (``--until STEP``, the steps
before it already done, so a process holds only its own step): segmentation (one round, one
epoch), landmarks (one epoch), the cache, one region network (A, regression, both sexes, one
epoch). ``--region-cache CACHE --copies 1 5``: the region step alone on a finished cache's rows
repeated (:func:`region_from_cache`). The figure is the process's peak resident set (``ru_maxrss`` of the finished child,
``os.wait4``) with its wall time. Flat across counts = streaming; growing = something holds
the data.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from common import machine, write_report

#: (step name, table.py --until value)
STEPS = (
    ("segmentation", "segmentation"),
    ("landmarks", "landmarks"),
    ("cache", "cache"),
    ("region A_reg_both", "regions"),
)
#: settings that keep each step to one short epoch
SETTINGS = ("segmentation.rounds=1", "segmentation.epochs=[1]", "landmarks.epochs=1")


def child(cmd: list[str], log: Path) -> tuple[float, float, int]:
    """Run ``cmd`` (stdout and stderr to ``log``): (peak RSS in MB, wall seconds, exit code)."""
    start = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_maxrss / 1024.0, time.perf_counter() - start, proc.returncode


def measure(films: int, size: str, work: Path, steps=None) -> list[dict]:
    """One row per step (``steps``: names of :data:`STEPS`' ``--until`` values, default all) for
    ``films`` phantoms of ``size`` (``WxH``) under ``work``. A step already done in ``work``
    returns at once: delete its folder to measure it again."""
    root = work / f"n{films}"
    root.mkdir(parents=True, exist_ok=True)
    synth = root / "synth"
    rows = []
    if not (synth / "manifest.csv").is_file():
        cmd = [sys.executable, "-m", "tf_boneage.cli", "synth", "--out", str(synth),
               "--n", str(films), "--size", size]  # fmt: skip
        rss, wall, code = child(cmd, root / "synth.log")
        rows.append(
            {"films": films, "step": "synth", "peak_mb": rss, "seconds": wall, "exit": code}
        )
    driver = Path(__file__).resolve().parents[1] / "training" / "table.py"
    for name, until in STEPS:
        if steps and until not in steps:
            continue
        cmd = [sys.executable, str(driver), "--preset", "paper", "--manifest",
               str(synth / "manifest.csv"), "--out", str(root / "table"), "--epochs", "1",
               "--only", "A_reg_both", "--until", until, "--set", *SETTINGS]  # fmt: skip
        rss, wall, code = child(cmd, root / f"{until}.log")
        rows.append({"films": films, "step": name, "peak_mb": rss, "seconds": wall, "exit": code})
        print(rows[-1], flush=True)
        if code != 0:
            print(f"step {name} failed: see {root / f'{until}.log'}", file=sys.stderr)
            break
    return rows


def region_from_cache(cache: Path, copies: int, work: Path) -> dict:
    """The region step (A, regression, both sexes, one epoch, the paper preset) on a finished
    cache's rows repeated ``copies`` times (new ids, the same crop files, splits kept): a
    cache of ``copies`` times the films, as far as the region step can tell, without running
    the chain over them. The region step reads crops by rows (``tf.data``); which film a crop
    came from does not change what it holds in memory."""
    import pandas as pd

    table = pd.read_csv(cache / "manifest.csv")
    for column in [c for c in table if c.endswith("_path")]:  # relative to the cache folder
        table[column] = [
            v if not isinstance(v, str) or Path(v).is_absolute() else str(cache / v)
            for v in table[column]
        ]
    parts = []
    for k in range(copies):
        part = table.copy()
        part["id"] = part["id"].astype(str) + ("" if k == 0 else f"_copy{k}")
        parts.append(part)
    films = len(table) * copies
    root = work / f"region_x{copies}"
    root.mkdir(parents=True, exist_ok=True)
    manifest = root / "manifest.csv"
    pd.concat(parts, ignore_index=True).to_csv(manifest, index=False)
    driver = Path(__file__).resolve().parents[1] / "training" / "region.py"
    cmd = [sys.executable, str(driver), "--preset", "paper", "--set", f"manifest={manifest}",
           f"out={root / 'A_reg_both'}", "epochs=1", "image_size=500x375", "region=A",
           "head=regression", "sex=both", "input=cache"]  # fmt: skip
    rss, wall, code = child(cmd, root / "region.log")
    row = {"films": films, "step": "region A_reg_both (cache rows repeated)", "peak_mb": rss,
           "seconds": wall, "exit": code}  # fmt: skip
    print(row, flush=True)
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--films", type=int, nargs="+", default=[80, 400])
    parser.add_argument("--size", default="2000x1600", help="phantom size WxH")
    parser.add_argument("--work", required=True, help="scratch folder (phantoms, runs)")
    parser.add_argument("--out", default=None, help="markdown report")
    parser.add_argument(
        "--steps", nargs="+", choices=[u for _, u in STEPS], help="only these steps (default all)"
    )
    parser.add_argument(
        "--region-cache",
        default=None,
        help="instead: the region step on this finished cache's rows, repeated --copies times",
    )
    parser.add_argument("--copies", type=int, nargs="+", default=[1, 5])
    args = parser.parse_args(argv)
    rows = []
    if args.region_cache:
        for k in args.copies:
            rows.append(region_from_cache(Path(args.region_cache), k, Path(args.work)))
    else:
        for n in args.films:
            rows += measure(n, args.size, Path(args.work), args.steps)
    import pandas as pd

    header = (
        f"Peak resident memory per step, paper preset, {args.size} phantoms ({machine()})\n"
        f"command: python benchmarks/memory_by_step.py {' '.join(sys.argv[1:])}\n\n"
    )
    text = "\n".join(
        [
            "| films | step | peak RSS (MB) | wall (s) | exit |",
            "|---|---|---|---|---|",
            *(
                f"| {r['films']} | {r['step']} | {r['peak_mb']:.0f} | {r['seconds']:.0f} "
                f"| {r['exit']} |"
                for r in rows
            ),
        ]
    )
    if args.out:
        write_report(args.out, header, text, pd.DataFrame(rows))
    else:
        print(header + text)
    return 0 if all(r["exit"] == 0 for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
