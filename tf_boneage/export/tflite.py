"""TFLite conversion of SavedModel signatures and a LiteRT runner.

The SavedModel's fixed-shape signature (``predict_tflite`` of the end-to-end model, or
``serving_default`` of a stage) is frozen (variables -> constants, control flow kept as V2)
and converted: converting the SavedModel directly left Keras 3 variables as resource variables
(``VAR_HANDLE`` / ``READ_VARIABLE``) that LiteRT does not initialise, giving NaN outputs.
Every op is a TFLite built-in (decoding stays outside; the warps are gather-based).

Variants: ``float32``; ``float16`` (weights stored as float16); ``dynamic`` (dynamic-range:
int8 weights, float activations); ``int8`` (int8 weights and activations calibrated on a
representative dataset; float inputs/outputs). In the end-to-end model every reduced-precision
variant touches the region networks only (``quantize_scopes``): the U-Net and the landmark
network decide the registration, and the chain's arithmetic drives the warps. For ``int8``
quantizing the chain made a DIV divide by a quantized zero; for ``dynamic`` int8 U-Net and
landmark weights derailed the registration (MAE 27.45 vs 14.94 on real radiographs); for
``float16`` half-precision U-Net and landmark weights moved the landmarks by up to 0.2 % of
the image, enough for single ensemble estimates to move by 13 months on the demo model
(:func:`keep_float` puts their float32 weights back). Inside the region networks,
:data:`FLOAT_OPS` and the bin logits stay float32 for ``int8``.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import tensorflow as tf
from tensorflow.python.framework.convert_to_constants import (
    convert_variables_to_constants_v2,
)

from tf_boneage.export import load

VARIANTS = ("float32", "float16", "dynamic", "int8")

# Kept float32 inside the int8 scopes. MUL/ADD: the batch norms of the conv-ELU-BN units come
# after the activation, so the converter cannot fold them into the convolution; as int8 their
# per-channel scale multiplies the per-tensor quantization step of the ELU output, by orders of
# magnitude on low-variance channels (on the real-data region net A: mean |int8 - float| 26.5
# months, 2.2 with MUL/ADD float). SOFTMAX/SUM and the ``bin_logits`` layer: the 240-bin
# distribution and its expected value (int8 probabilities have a 1/256 step: the classification
# member moved 12.9 months on average, 2.2 with these float). Measured by
# ``benchmarks/int8_region.py``.
FLOAT_OPS = ("MUL", "ADD", "SOFTMAX", "SUM")
FLOAT_LAYERS = ("bin_logits",)


def _frozen(saved_model_dir, signature: str):
    loaded = load.saved_model(saved_model_dir)
    if signature not in loaded.signatures:
        raise ValueError(
            f"{saved_model_dir}: no signature {signature!r}; it has {sorted(loaded.signatures)}"
        )
    fn = loaded.signatures[signature]
    frozen = convert_variables_to_constants_v2(fn, lower_control_flow=False)
    return loaded, frozen, sorted(fn.structured_outputs)


def freeze(saved_model_dir, signature: str = "predict_tflite"):
    """Freeze a signature once, to convert it to several variants (the SavedModel is loaded
    once per process: :func:`tf_boneage.export.load.saved_model`)."""
    return _frozen(saved_model_dir, signature)[:2]


def convert(
    saved_model_dir,
    variant: str = "float32",
    signature: str = "predict_tflite",
    representative: Callable[[], Iterable[list[np.ndarray]]] | None = None,
    frozen=None,
    quantize_scopes: list[str] | None = None,
    float_blob: bytes | None = None,
) -> bytes:
    """The ``signature`` of a SavedModel as a .tflite flatbuffer of ``variant``.

    ``representative()`` yields lists of input arrays in :func:`input_order`; required for
    ``int8``. ``frozen``: the result of :func:`freeze`, to skip reloading.
    ``quantize_scopes``: Keras model names whose ops are quantized (``int8``) or whose weights
    are reduced (``float16``, ``dynamic``: :func:`keep_float`); every other op and weight stays
    float32 (``None``: the whole graph). For ``int8``, :data:`FLOAT_OPS` and
    :data:`FLOAT_LAYERS` stay float32 in any case. ``float_blob``: this signature already
    converted to float32 (the reference of :func:`keep_float`), to skip converting it again."""
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
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
            tf.lite.OpsSet.TFLITE_BUILTINS,
        ]
        float_blob = convert(saved_model_dir, "float32", signature, frozen=(loaded, frozen))
        return _selective_int8(converter, float_blob, representative, quantize_scopes)
    blob = converter.convert()
    if quantize_scopes is not None and variant in ("float16", "dynamic"):
        if float_blob is None:
            float_blob = convert(saved_model_dir, "float32", signature, frozen=(loaded, frozen))
        blob = keep_float(blob, float_blob, quantize_scopes)
    return blob


# TFLite tensor types (schema.fbs)
_FLOAT32, _FLOAT16, _INT8 = 0, 1, 9


def keep_float(blob: bytes, float_blob: bytes, scopes: list[str]) -> bytes:
    """``blob`` (a float16 or dynamic-range conversion) with every weight outside the Keras
    models ``scopes`` back in float32, its values taken from ``float_blob`` (the same graph
    converted to float32). A weight is matched through the op that consumes it: the two
    conversions list the same ops in the same order once float16's ``DEQUANTIZE`` ops are left
    out (checked; names alone do not match, the converter names fused constants differently).

    float16: a ``DEQUANTIZE`` of a float16 constant whose consumers belong to no scoped model
    is removed and its output becomes the float32 constant. dynamic: an int8 constant input of
    an op outside the scopes becomes the float32 constant (the op then runs its float kernel
    instead of the hybrid one). Buffers nothing refers to any more are emptied."""
    from tensorflow.lite.tools import flatbuffer_utils as fu

    if not scopes:
        raise ValueError("keep_float needs the scopes that stay quantized")
    pattern = _scope_pattern(scopes)
    model = fu.convert_bytearray_to_object(bytearray(blob))
    ref = fu.convert_bytearray_to_object(bytearray(float_blob))
    if len(model.subgraphs) != len(ref.subgraphs):
        raise ValueError("the float32 reference is not the same graph")

    def data(m, tensor):
        buf = m.buffers[tensor.buffer]
        return buf.data if buf.data is not None and len(buf.data) else None

    def new_buffer(values) -> int:
        buf = type(model.buffers[0])()
        buf.data = values
        model.buffers.append(buf)
        return len(model.buffers) - 1

    def is_dequantize(m, op) -> bool:
        return fu.opcode_to_name(m, op.opcodeIndex) == "DEQUANTIZE"

    def outside(sg, op) -> bool:
        return not pattern.match(op_scope(sg.tensors[op.outputs[0]].name.decode()))

    restored = 0
    for sg, rsg in zip(model.subgraphs, ref.subgraphs, strict=True):
        ops = [op for op in sg.operators if not is_dequantize(model, op)]
        ref_ops = [op for op in rsg.operators if not is_dequantize(ref, op)]
        types = [fu.opcode_to_name(model, op.opcodeIndex) for op in ops]
        if types != [fu.opcode_to_name(ref, op.opcodeIndex) for op in ref_ops]:
            raise ValueError("the float32 reference lists other ops: not the same graph")
        twins = {id(op): twin for op, twin in zip(ops, ref_ops, strict=True)}

        def float_weight(op, position):
            twin = twins[id(op)]  # noqa: B023  (this subgraph's ops)
            if position >= len(twin.inputs) or twin.inputs[position] < 0:
                return None
            t = rsg.tensors[twin.inputs[position]]  # noqa: B023
            return data(ref, t) if t.type == _FLOAT32 else None

        consumers = {}
        for op in sg.operators:
            for position, index in enumerate(op.inputs):
                consumers.setdefault(index, []).append((op, position))
        kept = []
        for op in sg.operators:
            src = sg.tensors[op.inputs[0]] if len(op.inputs) and op.inputs[0] >= 0 else None
            users = consumers.get(op.outputs[0], [])
            if (
                is_dequantize(model, op)
                and src is not None
                and src.type == _FLOAT16
                and data(model, src) is not None
                and users
                and all(outside(sg, user) for user, _ in users)
            ):
                values = float_weight(*users[0])
                if values is not None:
                    sg.tensors[op.outputs[0]].buffer = new_buffer(values)
                    restored += 1
                    continue
            if outside(sg, op):
                for position, index in enumerate(op.inputs):
                    t = sg.tensors[index] if index >= 0 else None
                    if t is not None and t.type == _INT8 and data(model, t) is not None:
                        values = float_weight(op, position)
                        if values is None:
                            raise ValueError(f"no float32 weight for {t.name!r}")
                        t.type, t.quantization = _FLOAT32, None
                        t.buffer = new_buffer(values)
                        restored += 1
            kept.append(op)
        sg.operators = kept
    _drop_unused_buffers(model)
    return bytes(fu.convert_object_to_bytearray(model)) if restored else blob


def _drop_unused_buffers(model) -> None:
    """Empty the data of buffers that no tensor used by an op or a subgraph refers to."""
    used = set()
    for sg in model.subgraphs:
        live = set(sg.inputs) | set(sg.outputs)
        for op in sg.operators:
            live |= {i for i in op.inputs if i >= 0} | set(op.outputs)
            live |= {i for i in (op.intermediates if op.intermediates is not None else [])}
        used |= {sg.tensors[i].buffer for i in live}
    for index, buf in enumerate(model.buffers):
        if index and index not in used and buf.data is not None:
            buf.data = None


def _scope_pattern(scopes: list[str]) -> re.Pattern:
    """A model name, optionally followed by ``_probabilities`` and TF's ``_N`` suffixes."""
    return re.compile("|".join(rf"^{re.escape(s)}(_probabilities)?(_\d+)*$" for s in scopes))


def op_scope(tensor_name: str) -> str:
    """The Keras model scope of a converted op from its output tensor's name:
    ``StatefulPartitionedCall/region_net_1_2/block2_conv/...`` -> ``region_net_1_2``."""
    parts = tensor_name.split(";")[0].split("/")
    return parts[1] if len(parts) > 2 else ""


def _selective_int8(
    converter, float_blob: bytes, representative, scopes: list[str] | None
) -> bytes:
    """int8 for the ops under ``scopes`` (a model name, optionally followed by
    ``_probabilities`` and TF's ``_N`` uniquifying suffixes; ``None``: every op) except
    :data:`FLOAT_OPS` / :data:`FLOAT_LAYERS`, float32 elsewhere: calibrate the whole graph, then
    quantize with every other op's output (named as in ``float_blob``, the same graph converted
    to float32) denylisted (``tf.lite.experimental.QuantizationDebugger``'s selective
    quantization)."""
    if scopes is not None and not scopes:
        raise ValueError("quantize_scopes is empty: nothing would be quantized")
    pattern = _scope_pattern(scopes) if scopes else re.compile("")
    deny, inside_types, all_types = [], set(), set()
    for op_type, name in _op_outputs(float_blob):
        all_types.add(op_type)
        float_layer = any(f"/{layer}" in name for layer in FLOAT_LAYERS)
        if float_layer or not pattern.match(op_scope(name)):
            deny.append(name)
        elif op_type not in FLOAT_OPS:
            inside_types.add(op_type)
    if not inside_types:
        raise ValueError(f"no op of the graph is under {scopes}: nothing would be quantized")
    # by name and by type: a TRANSPOSE_CONV of the U-Net escaped the name list
    options = tf.lite.experimental.QuantizationDebugOptions(
        denylisted_nodes=deny, denylisted_ops=sorted(all_types - inside_types)
    )
    debugger = tf.lite.experimental.QuantizationDebugger(
        converter=converter, debug_dataset=representative, debug_options=options
    )
    blob = debugger.get_nondebug_quantized_model()
    leaked = sorted(
        {
            name
            for op_type, name, dtype in _op_outputs(blob, dtypes=True)
            if dtype == np.int8 and op_type != "QUANTIZE" and not pattern.match(op_scope(name))
        }
    )
    if leaked:
        raise RuntimeError(f"int8 leaked outside {scopes}: {leaked[:5]}")
    hybrid = hybrid_ops(blob, pattern)
    if hybrid:
        print(
            f"int8: {len(hybrid)} float op(s) outside the quantized networks got int8 weights "
            f"despite the denylist (TF 2.21): {sorted(set(t for t, _ in hybrid))}"
        )
    return blob


def hybrid_ops(blob: bytes, pattern=None) -> list[tuple[str, str]]:
    """(op type, output name) of ops with an int8 input and a float32 output (dynamic-range
    "hybrid" kernels) whose scope does not match ``pattern`` (``None``: all). The denylist
    keeps activations float but, in TF 2.21, not the weights of ``TRANSPOSE_CONV`` (the
    U-Net's up-sampling): measured on the real model, see RESULTS.md."""
    return [
        (op_type, name)
        for op_type, name, dtype, inputs in _ops(blob)
        if np.int8 in inputs
        and dtype == np.float32
        and op_type != "DEQUANTIZE"
        and (pattern is None or not pattern.match(op_scope(name)))
    ]


def _ops(blob: bytes) -> list[tuple]:
    """(op type, output tensor name, its dtype, the input dtypes) per op output of a
    flatbuffer (LiteRT's private op listing, the one the quantization debugger itself uses)."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=blob)
    out = []
    for op in it._get_ops_details():
        inputs = [it._get_tensor_details(t, 0)["dtype"] for t in op["inputs"] if t >= 0]
        for t in op["outputs"]:
            d = it._get_tensor_details(t, 0)
            out.append((op["op_name"], d["name"], d["dtype"], inputs))
    return out


def _op_outputs(blob: bytes, dtypes: bool = False) -> list[tuple]:
    """(op type, output tensor name[, dtype]) of every op output of a flatbuffer."""
    return [(t, n, d) if dtypes else (t, n) for t, n, d, _ in _ops(blob)]


def input_order(blob: bytes) -> list[str]:
    """Signature input names in the order of the flatbuffer's input tensors (the order a
    representative dataset must use: the calibrator's dict path crashed on this graph)."""
    from ai_edge_litert.interpreter import Interpreter

    details = Interpreter(model_content=blob).get_input_details()
    return [d["name"].split(":")[0].removeprefix("serving_default_") for d in details]


def output_names(saved_model_dir, signature: str = "predict_tflite") -> list[str]:
    """Names of the signature's outputs in the order of the .tflite's ``output_K``."""
    fn = load.saved_model(saved_model_dir).signatures[signature]
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

    def __init__(
        self, path: str | os.PathLike, names: list[str] | None = None, threads: int | None = None
    ):
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
