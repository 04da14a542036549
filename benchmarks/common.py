"""Helpers shared by the benchmarks: timing and this machine's float32 matmul peak."""

from __future__ import annotations

import os
import platform
import statistics
import time

import numpy as np


def median_seconds(fn, repeats: int) -> float:
    """Median seconds of ``repeats`` calls of ``fn()`` after one warm-up call (tracing)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def best_rate(fn, items: int, repeats: int = 3, warmup: int = 1) -> float:
    """Items per second of ``fn()`` (best of ``repeats`` after ``warmup`` calls)."""
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return items / best


def matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
    """float32 GFLOP/s of a TensorFlow n x n matmul on this machine (2 n^3 FLOPs per product)."""
    import tensorflow as tf

    a = tf.random.normal((n, n))
    b = tf.random.normal((n, n))
    mm = tf.function(lambda: tf.reduce_sum(tf.matmul(a, b)))
    return best_rate(lambda: mm().numpy(), 2 * n**3, repeats) / 1e9


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}"


def table(rows: list[dict], columns: list[str]) -> str:
    out = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        cells = []
        for c in columns:
            v = r[c]
            cells.append(f"{v:,.3g}" if isinstance(v, float | np.floating) else str(v))
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def write_report(out, header: str, text: str, frame) -> None:
    """A benchmark's markdown (``header`` + ``text``) at ``out`` and its per-row CSV beside it
    (``frame``), folders made; the markdown is printed."""
    from pathlib import Path

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(header + text + "\n")
    frame.to_csv(out.with_suffix(".csv"), index=False)
    print(header + text)


def split_arguments(parser, split: str, limit: int) -> None:
    """``--manifest`` (required), ``--split`` and ``--limit`` with these defaults."""
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--split", default=split)
    parser.add_argument("--limit", type=int, default=limit)


def split_rows(args):
    """The first ``args.limit`` rows of ``args.split`` in ``args.manifest``, index 0..n-1."""
    from tf_boneage.data.manifest import load_manifest

    rows = load_manifest(args.manifest)
    return rows[rows["split"] == args.split].head(args.limit).reset_index(drop=True)


def write_rows(out, header: str, rows: list[dict]) -> None:
    """:func:`write_report` of result ``rows`` (one dict each): their table and their CSV."""
    import pandas as pd

    frame = pd.DataFrame(rows)
    write_report(out, header, table(rows, list(frame.columns)), frame)


def shifted_one_pixel(img: np.ndarray) -> np.ndarray:
    """Film ``img`` (H, W) moved one pixel to the right, its first column repeated: a change
    nobody can see (the stability benchmarks)."""
    return np.concatenate([img[:, :1], img[:, :-1]], axis=1)
