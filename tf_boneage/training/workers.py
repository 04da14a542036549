"""Region runs in several processes at once, each on one CPU thread.

A region network at the rsna100 preset's sizes keeps TensorFlow's thread pool on two cores
busy only about 1.4 CPU seconds per wall second (``steps.csv`` of the shipped model): its
convolutions are too small to split well. Two processes of one thread each, each training its
own network, keep both cores busy (``benchmarks/region_threads.py``). Each run gets a fresh
process (spawned, so nothing of the parent's TensorFlow state is shared), writes its output to
``OUT/region/NAME/train.log`` and resumes as a run of :func:`tf_boneage.training.region.run`
always does.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

from tf_boneage.training.runtime import StepError


def _one_thread() -> None:
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)


def _child(cfg, log: str) -> tuple[dict | None, float, float]:
    """One region run in this (spawned) process on one thread: ``(metrics, wall s, CPU s)``."""
    _one_thread()
    from tf_boneage.training import region

    Path(log).parent.mkdir(parents=True, exist_ok=True)
    start, cpu = time.perf_counter(), time.process_time()
    with open(log, "a") as fh, contextlib.redirect_stdout(fh), contextlib.redirect_stderr(fh):
        metrics = region.run(cfg)
    return metrics, time.perf_counter() - start, time.process_time() - cpu


def run_regions(jobs: list, workers: int, say=print) -> dict[str, dict | None]:
    """``jobs`` ``[(name, RegionConfig), ...]`` run ``workers`` at a time, each in a new
    process on one thread, in the order given (put the longest first); returns each run's
    metrics by name. ``say`` gets a line as each run ends. The first run that raises stops
    the others from starting and its exception is raised here (the finished runs stay
    finished: running the table again resumes)."""
    import json

    from tf_boneage.training import config as config_lib
    from tf_boneage.training import region

    results: dict[str, dict | None] = {}
    todo = []
    for name, cfg in jobs:  # a finished run is read here, not in a process of its own
        out = Path(cfg.out)
        config_lib.check_unchanged(cfg, out / "config.yaml")
        if region.finished(out) and (out / "metrics.json").is_file():
            say(f"region {name}: done ({out / 'predictions.csv'})")
            results[name] = json.loads((out / "metrics.json").read_text())
        else:
            todo.append((name, cfg))
    if not todo:
        return results
    ctx = mp.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=ctx, max_tasks_per_child=1) as pool:
        pending = {}
        for name, cfg in todo:
            log = str(Path(cfg.out) / "train.log")
            pending[pool.submit(_child, cfg, log)] = (name, log)
        say(f"   {len(todo)} region runs, {workers} at a time on one thread each (logs: train.log)")
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                name, log = pending.pop(future)
                error = future.exception()
                if error is not None:
                    for other in pending:
                        other.cancel()
                    raise StepError(
                        f"region {name}: {type(error).__name__}: {error} (log: {log})"
                    ) from error
                metrics, wall, cpu = future.result()
                results[name] = metrics
                mae = ((metrics or {}).get("val") or {}).get("all", {}).get("mae")
                text = f", val MAE {mae:.2f} months" if isinstance(mae, float) else ""
                say(f"   region {name}: {wall:.0f} s, {cpu:.0f} CPU s{text}")
    return results
