"""TF Serving's REST and gRPC contract, answered by a loaded SavedModel.

No ``tensorflow_model_server`` binary runs on a laptop of many users (nor here), so this module
maps requests onto a signature the way TF Serving's front ends do
(https://www.tensorflow.org/tfx/serving/api_rest): ``tf-boneage serve`` answers TF Serving's
URLs with it, and the tests check our exports against the exact formats users send.

- REST row format ``{"instances": [{"image_bytes": {"b64": "..."}, "male": 1}, ...]}`` ->
  ``{"predictions": [{output: value, ...}, ...]}``;
- REST columnar format ``{"inputs": {"image_bytes": [{"b64": "..."}], "male": [1]}}`` ->
  ``{"outputs": {output: [values]}}``;
- ``GET /v1/models/NAME[/versions/V]`` (:func:`status_body`) and ``.../metadata``
  (:func:`metadata_body`); the URL grammar in :func:`parse_path`;
- gRPC ``tensorflow.serving.PredictRequest`` -> ``PredictResponse``.

Errors come back as TF Serving's ``{"error": "..."}`` body: 400 for a bad request, 404 for a
model, version or URL it does not serve. The client side (request builders) is
:mod:`tf_boneage.export.serving_client`.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import tensorflow as tf


class RequestError(ValueError):
    """A request TF Serving would answer with 400 Bad Request."""


def _signature(loaded, name: str | None):
    name = name or "serving_default"
    if name not in loaded.signatures:
        raise RequestError(
            f'Serving signature name: "{name}" not found in signature def; '
            f"available: {sorted(loaded.signatures)}"
        )
    return loaded.signatures[name]


def _to_tensor(key: str, values, spec: tf.TensorSpec) -> tf.Tensor:
    def unwrap(v):
        if isinstance(v, dict):
            if set(v) != {"b64"}:
                raise RequestError(f'input {key!r}: an object value must be {{"b64": ...}}')
            try:
                return base64.b64decode(v["b64"], validate=True)
            except (ValueError, TypeError) as exc:
                raise RequestError(f"input {key!r}: invalid base64 ({exc})") from None
        if isinstance(v, list):
            return [unwrap(x) for x in v]
        return v

    data = unwrap(values)
    if spec.dtype == tf.string:
        flat = np.asarray(data, dtype=object).ravel()
        if not all(isinstance(x, (bytes, str)) for x in flat):
            raise RequestError(
                f'input {key!r}: expected strings / {{"b64": ...}}, got {values!r:.80}'
            )
        return tf.constant(np.asarray(data, dtype=object))
    try:
        array = np.asarray(data, dtype=spec.dtype.as_numpy_dtype)
    except (ValueError, TypeError):
        raise RequestError(
            f"input {key!r}: JSON value {values!r:.80} is not of type {spec.dtype.name}"
        ) from None
    if not spec.shape.is_compatible_with(array.shape):
        raise RequestError(
            f"input {key!r}: shape {list(array.shape)} does not match the signature's {spec.shape}"
        )
    return tf.constant(array)


def _reason(message: str) -> str:
    """The informative line of a TF runtime error (not the 'Graph execution error' frame)."""
    skip = ("Graph execution error", "Detected at node", "<stack traces", "[[", "File ")
    lines = [x.strip() for x in message.splitlines() if x.strip()]
    useful = [x for x in lines if not x.startswith(skip)]
    return (useful or lines or ["model error"])[0]


def _run(fn, columns: dict) -> dict[str, np.ndarray]:
    specs = fn.structured_input_signature[1]
    missing = sorted(set(specs) - set(columns))
    if missing:
        raise RequestError(f"missing input(s) {missing}; the signature takes {sorted(specs)}")
    extra = sorted(set(columns) - set(specs))
    if extra:
        raise RequestError(f"unknown input(s) {extra}; the signature takes {sorted(specs)}")
    tensors = {k: _to_tensor(k, v, specs[k]) for k, v in columns.items()}
    try:
        out = fn(**tensors)
    except (tf.errors.InvalidArgumentError, ValueError, TypeError) as exc:
        raise RequestError(_reason(getattr(exc, "message", str(exc)))) from None
    return {k: v.numpy() for k, v in out.items()}


def rest_predict(loaded, body: str | bytes | dict) -> tuple[int, dict]:
    """Answer a REST ``:predict`` body (JSON text or parsed) -> ``(HTTP status, JSON body)``."""
    try:
        doc = json.loads(body) if isinstance(body, (str, bytes)) else body
        if not isinstance(doc, dict) or ("instances" in doc) == ("inputs" in doc):
            raise RequestError('the body must have exactly one of "instances" or "inputs"')
        fn = _signature(loaded, doc.get("signature_name"))
        if "instances" in doc:
            rows = doc["instances"]
            if not isinstance(rows, list) or not rows:
                raise RequestError('"instances" must be a non-empty list')
            if not all(isinstance(r, dict) for r in rows):
                raise RequestError("each instance must be an object of named inputs")
            keys = set().union(*rows)
            for i, r in enumerate(rows):
                if set(r) != keys:
                    raise RequestError(
                        f"instance {i} has inputs {sorted(r)}, others "
                        f"{sorted(keys)}: all instances need the same inputs"
                    )
            out = _run(fn, {k: [r[k] for r in rows] for k in keys})
            return 200, {
                "predictions": [
                    {k: v[i].tolist() for k, v in out.items()} for i in range(len(rows))
                ]
            }
        inputs = doc["inputs"]
        if not isinstance(inputs, dict):
            raise RequestError('"inputs" must be an object of named inputs')
        out = _run(fn, inputs)
        return 200, {"outputs": {k: v.tolist() for k, v in out.items()}}
    except json.JSONDecodeError as exc:
        return 400, {"error": f"JSON parse error: {exc}"}
    except RequestError as exc:
        return 400, {"error": str(exc)}


def grpc_predict(loaded, request):
    """Answer a ``tensorflow_serving.apis.predict_pb2.PredictRequest`` with a
    ``PredictResponse`` (raises :class:`RequestError` where TF Serving returns
    INVALID_ARGUMENT)."""
    from tensorflow_serving.apis import predict_pb2

    fn = _signature(loaded, request.model_spec.signature_name or None)
    columns = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
    specs = fn.structured_input_signature[1]
    for k, v in columns.items():
        if k not in specs:
            continue
        wants_string = specs[k].dtype == tf.string
        if wants_string != (v.dtype.kind in "OSU"):
            raise RequestError(
                f"input {k!r}: dtype {v.dtype} does not match the signature's {specs[k].dtype.name}"
            )
    out = _run(fn, {k: v.tolist() if v.dtype.kind in "OSU" else v for k, v in columns.items()})
    response = predict_pb2.PredictResponse()
    response.model_spec.CopyFrom(request.model_spec)
    for k, v in out.items():
        response.outputs[k].CopyFrom(tf.make_tensor_proto(v))
    return response


class NotFound(LookupError):
    """A URL, model or version TF Serving would answer with 404 Not Found."""


@dataclasses.dataclass(frozen=True)
class Target:
    """A parsed TF Serving REST path: model ``name``, ``version`` (None: the latest) and
    ``verb`` ("status", "metadata" or "predict")."""

    name: str
    version: int | None
    verb: str


_PATH = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>[^/:]+)|/labels/(?P<label>[^/:]+))?"
    r"(?P<tail>/metadata|:predict|:classify|:regress)?/?$"
)


def parse_path(path: str) -> Target:
    """``/v1/models/NAME[/versions/V][/metadata | :predict]`` -> :class:`Target`.

    Raises:
        NotFound: a path outside TF Serving's REST grammar, a version label (we serve none),
            a non-numeric version, or ``:classify`` / ``:regress`` (signatures we do not
            export).
    """
    m = _PATH.match(path)
    if not m:
        raise NotFound(f"Malformed request: {path}")
    if m["label"] is not None:
        raise NotFound(f"Unrecognized servable version label: {m['label']}")
    version = m["version"]
    if version is not None and not version.isdigit():
        raise NotFound(f"Malformed request: {path}")
    tail = m["tail"] or ""
    if tail in (":classify", ":regress"):
        raise NotFound(f"{tail[1:]}: this model exports only predict signatures")
    verb = {"": "status", "/metadata": "metadata", ":predict": "predict"}[tail]
    return Target(m["name"], None if version is None else int(version), verb)


def check_served(target: Target, name: str, version: int) -> None:
    """Raise :class:`NotFound` with TF Serving's text unless ``target`` asks for the one
    model ``name`` at ``version`` (or its latest) that this process serves."""
    if target.name != name:
        wanted = (
            f"Latest({target.name})"
            if target.version is None
            else (f"Specific({target.name}, {target.version})")
        )
        raise NotFound(f"Servable not found for request: {wanted}")
    if target.version is not None and target.version != version:
        raise NotFound(f"Servable not found for request: Specific({name}, {target.version})")


def status_body(version: int) -> dict:
    """TF Serving's ``GetModelStatus`` answer for one loaded version."""
    return {
        "model_version_status": [
            {
                "version": str(version),
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
        ]
    }


def metadata_body(version_dir: str | Path, name: str, version: int) -> dict:
    """TF Serving's ``GetModelMetadata`` answer: the SavedModel's signature defs, read from
    its ``saved_model.pb`` (TF Serving's JSON rendering of the proto)."""
    from google.protobuf import json_format
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((Path(version_dir) / "saved_model.pb").read_bytes())
    graph = proto.meta_graphs[0]
    signatures = {
        key: json_format.MessageToDict(graph.signature_def[key])
        for key in sorted(graph.signature_def)
        if not key.startswith("__")  # TF's internal __saved_model_init_op
    }
    return {
        "model_spec": {"name": name, "signature_name": "", "version": str(version)},
        "metadata": {"signature_def": {"signature_def": signatures}},
    }
