"""``saved_model(path)``: ``tf.saved_model.load`` once per process and export version;
``metadata(path)``: our own description of an export (``assets.extra/tf_boneage.json``).

Loading the end-to-end export takes seconds (BENCHMARKS.md: 9.3 s for the demo's graph); the
demo, ``training/export.py`` and ``evaluate-tflite`` load the same version several times
(convert, evaluate, coverage, predict). A version folder is written atomically and never
changed in place, so ``(path, mtime of saved_model.pb)`` identifies what was loaded.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import tensorflow as tf


@functools.lru_cache(maxsize=4)
def _load(path: str, stamp: int):
    return tf.saved_model.load(path)


def saved_model(path):
    """The loaded SavedModel at ``path`` (a version folder), shared within the process."""
    path = Path(path).resolve()
    pb = path / "saved_model.pb"
    if not pb.is_file():
        raise FileNotFoundError(f"{path}: no saved_model.pb (not a SavedModel version folder)")
    return _load(str(path), pb.stat().st_mtime_ns)


def metadata(path) -> dict:
    """``assets.extra/tf_boneage.json`` of a version folder ({} for an export without one,
    e.g. a per-stage model)."""
    meta = Path(path) / "assets.extra" / "tf_boneage.json"
    return json.loads(meta.read_text()) if meta.is_file() else {}
