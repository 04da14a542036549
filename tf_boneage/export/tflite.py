"""TFLite conversion of SavedModel signatures and a LiteRT runner.

The SavedModel's fixed-shape signature (``predict_tflite`` of the end-to-end model, or
``serving_default`` of a stage) is frozen (variables -> constants, control flow kept as V2)
and converted: converting the SavedModel directly left Keras 3 variables as resource variables
(``VAR_HANDLE`` / ``READ_VARIABLE``) that LiteRT does not initialise, giving NaN outputs.
Every op is a TFLite built-in (decoding stays outside; the warps are gather-based).

Variants: ``float32``; ``float16`` (weights stored as float16); ``dynamic`` (dynamic-range:
int8 weights, float activations); ``int8`` (int8 weights and activations calibrated on a
representative dataset, float fallback where an op has no int8 kernel; float inputs/outputs).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import tensorflow as tf
from tensorflow.python.framework.convert_to_constants import (
    convert_variables_to_constants_v2,
)

VARIANTS = ("float32", "float16", "dynamic", "int8")


def _frozen(saved_model_dir, signature: str):
    loaded = tf.saved_model.load(str(saved_model_dir))
    if signature not in loaded.signatures:
        raise ValueError(f"{saved_model_dir}: no signature {signature!r}; it has "
                         f"{sorted(loaded.signatures)}")  # fmt: skip
    fn = loaded.signatures[signature]
    frozen = convert_variables_to_constants_v2(fn, lower_control_flow=False)
    return loaded, frozen, sorted(fn.structured_outputs)


def freeze(saved_model_dir, signature: str = "predict_tflite"):
    """Load and freeze a signature once, to convert it to several variants."""
    return _frozen(saved_model_dir, signature)[:2]


def convert(saved_model_dir, variant: str = "float32", signature: str = "predict_tflite",
            representative: Callable[[], Iterable[list[np.ndarray]]] | None = None,
            frozen=None) -> bytes:  # fmt: skip
    """The ``signature`` of a SavedModel as a .tflite flatbuffer of ``variant``.

    ``representative()`` yields lists of input arrays in :func:`input_order`; required for
    ``int8``. ``frozen``: the result of :func:`freeze`, to skip reloading."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    loaded, frozen = frozen or freeze(saved_model_dir, signature)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen], loaded)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if variant != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if variant == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if variant == "int8":
        if representative is None:
            raise ValueError("int8 needs a representative dataset")
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
                                               tf.lite.OpsSet.TFLITE_BUILTINS]  # fmt: skip
    return converter.convert()


def input_order(blob: bytes) -> list[str]:
    """Signature input names in the order of the flatbuffer's input tensors (the order a
    representative dataset must use: the calibrator's dict path crashed on this graph)."""
    from ai_edge_litert.interpreter import Interpreter

    details = Interpreter(model_content=blob).get_input_details()
    return [d["name"].split(":")[0].removeprefix("serving_default_") for d in details]


def output_names(saved_model_dir, signature: str = "predict_tflite") -> list[str]:
    """Names of the signature's outputs in the order of the .tflite's ``output_K``."""
    fn = tf.saved_model.load(str(saved_model_dir)).signatures[signature]
    return sorted(fn.structured_outputs)


def write(blob: bytes, path: str | os.PathLike) -> Path:
    """Write a flatbuffer atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(blob)
    os.replace(tmp, path)
    return path


class Runner:
    """A .tflite model run with ``ai_edge_litert``; outputs by their SavedModel names.

    ``names``: output names in ``output_K`` order (:func:`output_names`, stored beside the
    file as ``NAME.outputs.txt`` by the CLI)."""

    def __init__(self, path: str | os.PathLike, names: list[str] | None = None,
                 threads: int | None = None):  # fmt: skip
        from ai_edge_litert.interpreter import Interpreter

        self.path = Path(path)
        self.interpreter = Interpreter(model_path=str(self.path), num_threads=threads)
        self.runner = self.interpreter.get_signature_runner()
        sidecar = self.path.with_suffix(".outputs.txt")
        if names is None and sidecar.exists():
            names = sidecar.read_text().split()
        self.names = names

    def __call__(self, **inputs) -> dict[str, np.ndarray]:
        out = self.runner(**{k: np.asarray(v, np.float32) for k, v in inputs.items()})
        if self.names is None:
            return out
        return {self.names[int(k.split("_")[-1])]: v for k, v in out.items()}

    def timed(self, **inputs) -> tuple[dict[str, np.ndarray], float]:
        start = time.perf_counter()
        out = self(**inputs)
        return out, time.perf_counter() - start
