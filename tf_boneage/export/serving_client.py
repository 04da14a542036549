"""Client helpers for a TF Serving deployment of the end-to-end model: requests in TF
Serving's REST and gRPC formats (https://www.tensorflow.org/tfx/serving/api_rest) and their
answers as arrays. Nothing here talks to a network: send the body or the request with the
HTTP or gRPC client of your choice, e.g.::

    body = rest_request([open("hand.png", "rb").read()], male=[1])
    requests.post("http://localhost:8501/v1/models/boneage:predict", json=body)

Inputs of ``serving_default``: ``image_bytes`` (encoded PNG / JPEG, 8 or 16 bit) and
``male`` (1 boy, 0 girl). Outputs: see :data:`tf_boneage.export.end_to_end.OUTPUTS`.
"""

from __future__ import annotations

import base64

import numpy as np


def rest_request(
    images: list[bytes], male: list[float], columnar: bool = False, signature: str | None = None
) -> dict:
    """The JSON body of a REST ``:predict`` call: row format ``{"instances": [...]}`` or,
    with ``columnar``, ``{"inputs": {...}}``; binary inputs as ``{"b64": ...}``."""
    if len(images) != len(male):
        raise ValueError(f"{len(images)} images but {len(male)} sexes")
    encoded = [{"b64": base64.b64encode(bytes(b)).decode("ascii")} for b in images]
    sexes = [float(m) for m in male]
    if columnar:
        body = {"inputs": {"image_bytes": encoded, "male": sexes}}
    else:
        body = {
            "instances": [
                {"image_bytes": e, "male": m} for e, m in zip(encoded, sexes, strict=True)
            ]
        }
    if signature:
        body["signature_name"] = signature
    return body


def rest_outputs(doc: dict) -> dict[str, np.ndarray]:
    """A REST ``:predict`` answer (either format) -> ``{output name: array (B, ...)}``;
    TF Serving's ``{"error": ...}`` body raises ``RuntimeError`` with its message."""
    if "error" in doc:
        raise RuntimeError(f"TF Serving refused the request: {doc['error']}")
    if "outputs" in doc:
        return {k: np.asarray(v) for k, v in doc["outputs"].items()}
    rows = doc["predictions"]
    return {k: np.asarray([r[k] for r in rows]) for k in rows[0]} if rows else {}


def grpc_request(
    images: list[bytes],
    male: list[float],
    model: str = "boneage",
    signature: str = "serving_default",
    version: int | None = None,
):
    """A ``tensorflow.serving.PredictRequest`` for ``PredictionService.Predict``."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    if len(images) != len(male):
        raise ValueError(f"{len(images)} images but {len(male)} sexes")
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = int(version)
    request.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto([bytes(b) for b in images]))
    request.inputs["male"].CopyFrom(
        tf.make_tensor_proto([float(m) for m in male], dtype=tf.float32)
    )
    return request


def grpc_outputs(response) -> dict[str, np.ndarray]:
    """A ``PredictResponse`` -> ``{output name: array}``."""
    import tensorflow as tf

    return {k: tf.make_ndarray(v) for k, v in response.outputs.items()}
