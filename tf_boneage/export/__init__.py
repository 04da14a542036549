"""Export: the end-to-end graph (``end_to_end``), versioned SavedModels for TF Serving
(``saved_model``), the TF Serving request/response contract (``serving_contract``) and TFLite
conversion and evaluation (``tflite``)."""
