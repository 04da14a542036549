"""Inference with exported models: TFLite conversion and evaluation (``tflite_eval``) and the
``predict`` command's engine (``predict``)."""
