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
from sklearn.linear_model import LinearRegression

from tf_boneage.training.runs import pair_of

#: the possible bone ages (months): the ensemble's estimate is clipped to it
AGE_RANGE = (0.0, 240.0)


def fit_nnls(predictions: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, float]:
    """Weights >= 0 (one per column of ``predictions`` (N, M), months) and a free intercept
    minimising the squared error to ``truth`` (N,)."""
    predictions = np.asarray(predictions, float)
    truth = np.asarray(truth, float)
    if predictions.ndim != 2 or len(predictions) != len(truth):
        raise ValueError(
            f"predictions must be (N, M) matching truth (N,), got "
            f"{predictions.shape} and {truth.shape}"
        )
    if len(truth) < predictions.shape[1] + 1:
        raise ValueError(f"need more than {predictions.shape[1]} rows to fit, got {len(truth)}")
    # scikit-learn's positive least squares (scipy's NNLS on centred data underneath): the
    # weights are constrained >= 0, the intercept is free
    fit = LinearRegression(positive=True, fit_intercept=True).fit(predictions, truth)
    return fit.coef_.astype(float), float(fit.intercept_)


class LinearEnsemble:
    """Per-sex (``male`` True / False) NNLS blend of named model predictions."""

    def __init__(self, models: list[str], params: dict | None = None):
        self.models = list(models)
        self.params = params or {}

    def fit(self, table: pd.DataFrame, truth: str = "boneage") -> LinearEnsemble:
        """``table``: one column per model (months), ``male`` and the ``truth`` column."""
        for sex in (True, False):
            part = table[table["male"] == sex]
            if part.empty:
                continue
            weights, bias = fit_nnls(part[self.models].to_numpy(), part[truth].to_numpy())
            self.params["male" if sex else "female"] = {"weights": weights.tolist(), "bias": bias}
        return self

    def predict(self, table: pd.DataFrame) -> np.ndarray:
        out = np.empty(len(table))
        for key, sex in (("male", True), ("female", False)):
            mask = (table["male"] == sex).to_numpy()
            if not mask.any():
                continue
            if key not in self.params:
                raise ValueError(f"the ensemble was not fitted on {key} rows")
            p = self.params[key]
            out[mask] = (
                table.loc[mask, self.models].to_numpy() @ np.asarray(p["weights"]) + p["bias"]
            )
        # a linear blend can leave the possible range (416 months on a real film with a blend
        # fitted on 12 phantoms): bounded, as the graph's ensemble_age is
        return np.clip(out, *AGE_RANGE)

    def save(self, path: str | os.PathLike) -> None:
        path = Path(path)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"models": self.models, "params": self.params}, indent=2))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> LinearEnsemble:
        doc = json.loads(Path(path).read_text())
        return cls(doc["models"], doc["params"])


def wide_table(runs: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One column per run (months) over the hold-out rows, from each run's
    ``predictions.csv`` (``id, boneage, male, split, pred``).

    A pair of sex-specific runs named ``X_male`` / ``X_female`` also gives a column ``X_sex``:
    the male model's prediction for boys and the female model's for girls (the paper's
    sex-specific models used together).
    """
    keys = ["id", "boneage", "male", "split"]
    frames = list(runs.values())
    if not frames:
        raise ValueError("no runs with predictions")
    base = pd.concat([f[keys] for f in frames]).drop_duplicates("id").set_index("id")
    for name, frame in runs.items():
        base[name] = frame.set_index("id")["pred"]
    for name in list(runs):
        pair = pair_of(name)
        if pair is not None and pair[1] == "male" and f"{pair[0]}_female" in runs:
            stem = pair[0]
            base[f"{stem}_sex"] = base[f"{stem}_male"].where(
                base["male"] == 1, base[f"{stem}_female"]
            )
    return base.reset_index()


def cross_val_mae(table: pd.DataFrame, models: list[str], folds: int = 5, seed: int = 0) -> float:
    """Out-of-fold MAE (months) of a per-sex :class:`LinearEnsemble` on ``table``: each row is
    predicted by an ensemble fitted without it (how well the fit generalises, on val alone)."""
    rng = np.random.default_rng(seed)
    fold = rng.permutation(len(table)) % folds
    pred = np.empty(len(table))
    for k in range(folds):
        held = fold == k
        ens = LinearEnsemble(models).fit(table[~held])
        pred[held] = ens.predict(table[held])
    return float(np.abs(pred - table["boneage"].to_numpy(float)).mean())
