"""Helpers shared by the training scripts (seeds, callbacks, JSON output)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import keras
import numpy as np


def seed_everything(seed: int) -> None:
    keras.utils.set_random_seed(seed)
    os.environ.setdefault("TF_DETERMINISTIC_OPS", "0")


def callbacks(out: Path, monitor: str, mode: str, patience: int) -> list:
    """Resume after a kill, keep the best weights, log CSV and TensorBoard, stop early."""
    out.mkdir(parents=True, exist_ok=True)
    return [
        keras.callbacks.BackupAndRestore(str(out / "backup")),
        keras.callbacks.ModelCheckpoint(
            str(out / "best.keras"), monitor=monitor, mode=mode, save_best_only=True
        ),  # fmt: skip
        keras.callbacks.CSVLogger(str(out / "history.csv"), append=True),
        keras.callbacks.TensorBoard(str(out / "tensorboard"), write_graph=False),
        keras.callbacks.EarlyStopping(
            monitor=monitor, mode=mode, patience=patience, restore_best_weights=True
        ),  # fmt: skip
        keras.callbacks.ReduceLROnPlateau(
            monitor=monitor, mode=mode, factor=0.5, patience=max(1, patience // 2)
        ),  # fmt: skip
    ]


def write_json(path: Path, data: dict) -> None:
    def default(o):
        if isinstance(o, np.generic):
            return o.item()
        raise TypeError(type(o))

    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=default))
    os.replace(tmp, path)
