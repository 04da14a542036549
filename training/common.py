"""Helpers shared by the training scripts (seeds, logical CPU devices, JSON output)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import keras
import numpy as np


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and TF; ``TF_BONEAGE_DETERMINISTIC=1`` also makes TF ops
    deterministic (used by the resume tests; slower)."""
    keras.utils.set_random_seed(seed)
    if os.environ.get("TF_BONEAGE_DETERMINISTIC") == "1":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()


def split_cpu(devices: int | None = None) -> None:
    """Split the CPU into ``devices`` logical devices (``TF_BONEAGE_CPU_DEVICES``) so that
    ``MirroredStrategy`` can be exercised without GPUs. Call before TF builds anything."""
    import tensorflow as tf

    n = devices or int(os.environ.get("TF_BONEAGE_CPU_DEVICES", "0") or 0)
    if n > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
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
    from loop import strategy_for

    split_cpu()
    strategy = strategy_for(cfg.strategy)
    seed_everything(cfg.seed)
    return strategy
