"""Linear ensemble of region models (paper: a linear model over the A, B, C predictions),
fitted per sex on validation predictions with non-negative least squares plus an intercept.

Non-negative weights keep the ensemble a blend of the models (a model that does not help gets
weight 0 rather than a negative weight that overfits the validation set).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import nnls


def fit_nnls(predictions: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, float]:
    """Weights >= 0 (one per column of ``predictions`` (N, M), months) and a free intercept
    minimising the squared error to ``truth`` (N,)."""
    predictions = np.asarray(predictions, float)
    truth = np.asarray(truth, float)
    if predictions.ndim != 2 or len(predictions) != len(truth):
        raise ValueError(f"predictions must be (N, M) matching truth (N,), got "
                         f"{predictions.shape} and {truth.shape}")  # fmt: skip
    if len(truth) < predictions.shape[1] + 1:
        raise ValueError(f"need more than {predictions.shape[1]} rows to fit, got {len(truth)}")
    # centre so the intercept is free while the weights stay non-negative
    x_mean, y_mean = predictions.mean(0), truth.mean()
    weights, _ = nnls(predictions - x_mean, truth - y_mean)
    return weights, float(y_mean - x_mean @ weights)


class LinearEnsemble:
    """Per-sex (``male`` True / False) NNLS blend of named model predictions."""

    def __init__(self, models: list[str], params: dict | None = None):
        self.models = list(models)
        self.params = params or {}

    def fit(self, table: pd.DataFrame, truth: str = "boneage") -> LinearEnsemble:
        """``table``: one column per model (months), ``male`` and the ``truth`` column."""
        for sex in (True, False):
            part = table[table["male"] == sex]
            weights, bias = fit_nnls(part[self.models].to_numpy(), part[truth].to_numpy())
            self.params["male" if sex else "female"] = {"weights": weights.tolist(), "bias": bias}
        return self

    def predict(self, table: pd.DataFrame) -> np.ndarray:
        out = np.empty(len(table))
        for key, sex in (("male", True), ("female", False)):
            mask = (table["male"] == sex).to_numpy()
            p = self.params[key]
            out[mask] = (
                table.loc[mask, self.models].to_numpy() @ np.asarray(p["weights"]) + p["bias"]
            )
        return out

    def save(self, path: str | os.PathLike) -> None:
        path = Path(path)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"models": self.models, "params": self.params}, indent=2))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> LinearEnsemble:
        doc = json.loads(Path(path).read_text())
        return cls(doc["models"], doc["params"])
