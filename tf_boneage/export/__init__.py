"""Export: the end-to-end graph (``end_to_end``), versioned SavedModels for TF Serving
(``saved_model``), client helpers for TF Serving's REST and gRPC requests (``serving_client``;
the server side, answered by a loaded SavedModel, is :mod:`tf_boneage.serve.tf_serving`), the
per-sex std calibration
(``calibration``) and TFLite conversion (``tflite``)."""
