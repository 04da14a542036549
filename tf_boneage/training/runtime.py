"""What every training job starts with: seeds, logical CPU devices, the distribution strategy,
which worker writes, atomic JSON output."""

from __future__ import annotations

import json
import os
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf


class StepError(RuntimeError):
    """A training step that cannot go on; the message says what to fix. The drivers print it
    and exit with status 2; ``tf-boneage demo`` and the table stop at it."""


def run_or_exit(parser, fn, *args, hint: str = "", **kwargs):
    """``fn(*args, **kwargs)`` for a stage's ``main``: a :class:`StepError` ends the command
    with status 2 and its message (plus ``hint``) instead of a traceback."""
    try:
        return fn(*args, **kwargs)
    except StepError as exc:
        parser.exit(2, f"error: {exc}{hint}\n")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and TF; ``TF_BONEAGE_DETERMINISTIC=1`` also makes TF ops
    deterministic (used by the resume tests; slower)."""
    keras.utils.set_random_seed(seed)
    if os.environ.get("TF_BONEAGE_DETERMINISTIC") == "1":
        tf.config.experimental.enable_op_determinism()


def split_cpu(devices: int | None = None) -> None:
    """Split the CPU into ``devices`` logical devices (``TF_BONEAGE_CPU_DEVICES``) so that
    ``MirroredStrategy`` can be exercised without GPUs. Call before TF builds anything."""
    n = devices or int(os.environ.get("TF_BONEAGE_CPU_DEVICES", "0") or 0)
    if n > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        if len(tf.config.get_logical_device_configuration(cpu) or []) == n:
            return  # already split (a second job in the same process)
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(n)]
        )


def write_json(path: Path, data: dict) -> None:
    def default(o):
        if isinstance(o, np.generic):
            return o.item()
        raise TypeError(type(o))

    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=default))
    os.replace(tmp, path)


def start_job(cfg):
    """Logical CPU devices, the ``cfg.strategy`` distribution strategy (created before any
    other TF op: multi-worker requires it) and seeds; returns the strategy."""
    split_cpu()
    strategy = strategy_for(cfg.strategy)
    seed_everything(cfg.seed)
    return strategy


def strategy_for(name: str) -> tf.distribute.Strategy:
    """``default`` | ``mirrored`` (all GPUs, else all logical CPUs) | ``multi-worker``
    (``TF_CONFIG`` as usual)."""
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
        return tf.distribute.MirroredStrategy(devices)
    if name == "multi-worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"strategy must be default|mirrored|multi-worker, got {name!r}")


def is_multi_worker(strategy: tf.distribute.Strategy) -> bool:
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """True except on the non-chief workers of a multi-worker run (they must not write the
    shared outputs)."""
    if not is_multi_worker(strategy):
        return True
    resolver = strategy.cluster_resolver
    return resolver.task_type in (None, "chief") or (
        resolver.task_type == "worker" and resolver.task_id == 0
    )


def worker_dir(out: Path, strategy: tf.distribute.Strategy) -> Path:
    """``out`` for the chief, ``out/workerK`` for the other workers (their own copy of every
    file: Keras' multi-worker convention, so no two processes write one file)."""
    if is_chief(strategy):
        return out
    return out / f"worker{strategy.cluster_resolver.task_id}"
