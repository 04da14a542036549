"""Linear ensemble of region models (paper: a linear model over the A, B, C predictions),
fitted per sex on validation predictions with non-negative least squares plus an intercept.

Non-negative weights keep the ensemble a blend of the models (a model that does not help gets
weight 0 rather than a negative weight that overfits the validation set). The weights are
also pulled towards the equal blend by :data:`PRIOR_ROWS` pseudo-rows: on a small validation
set, briefly trained members (whose predictions huddle near the mean) otherwise get weights
of 15 and more, which overfit (demo, 18 val rows: 5-fold CV MAE 47.1 months unregularised,
33.5 with 30 prior rows) and multiply every rounding difference of the members (TFLite
float32 against the SavedModel: 0.06 months instead of 0.01).
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

#: how many validation rows' worth of weight the equal blend (every weight 1 / M) gets in the
#: fit (chosen by 5-fold CV on the demo's val rows: 0 / 3 / 10 / 30 / 100 rows gave 47.1 /
#: 39.2 / 35.7 / 33.5 / 33.6 months; on a 500-row val set it weighs 6 %)
PRIOR_ROWS = 30.0


def fit_nnls(
    predictions: np.ndarray, truth: np.ndarray, prior_rows: float = 0.0
) -> tuple[np.ndarray, float]:
    """Weights >= 0 (one per column of ``predictions`` (N, M), months) and a free intercept
    minimising the squared error to ``truth`` (N,) plus ``prior_rows`` times the members'
    mean variance (months²) times the squared distance of the weights from the equal blend
    (1 / M each): ``prior_rows`` pseudo-rows that vote for averaging the members."""
    predictions = np.asarray(predictions, float)
    truth = np.asarray(truth, float)
    if predictions.ndim != 2 or len(predictions) != len(truth):
        raise ValueError(
            f"predictions must be (N, M) matching truth (N,), got "
            f"{predictions.shape} and {truth.shape}"
        )
    if len(truth) < predictions.shape[1] + 1:
        raise ValueError(f"need more than {predictions.shape[1]} rows to fit, got {len(truth)}")
    if prior_rows < 0:
        raise ValueError(f"prior_rows must be >= 0, got {prior_rows}")
    # scikit-learn's positive least squares on centred data plus the prior's pseudo-rows
    # (scipy's NNLS underneath): the weights >= 0; the intercept is free and follows
    x_mean, y_mean = predictions.mean(0), truth.mean()
    xc, yc = predictions - x_mean, truth - y_mean
    m = predictions.shape[1]
    scale = np.sqrt(prior_rows * np.mean(xc**2))
    a = np.vstack([xc, scale * np.eye(m)])
    b = np.concatenate([yc, np.full(m, scale / m)])
    weights = LinearRegression(positive=True, fit_intercept=False).fit(a, b).coef_
    return weights.astype(float), float(y_mean - x_mean @ weights)


class LinearEnsemble:
    """Per-sex (``male`` True / False) NNLS blend of named model predictions, its weights
    pulled towards the equal blend by ``prior_rows`` pseudo-rows (:func:`fit_nnls`; stored in
    ``params`` with the weights)."""

    def __init__(
        self, models: list[str], params: dict | None = None, prior_rows: float = PRIOR_ROWS
    ):
        self.models = list(models)
        self.params = params or {}
        self.prior_rows = float(self.params.get("prior_rows", prior_rows))

    def fit(self, table: pd.DataFrame, truth: str = "boneage") -> LinearEnsemble:
        """``table``: one column per model (months), ``male`` and the ``truth`` column."""
        self.params["prior_rows"] = self.prior_rows
        for sex in (True, False):
            part = table[table["male"] == sex]
            if part.empty:
                continue
            weights, bias = fit_nnls(
                part[self.models].to_numpy(), part[truth].to_numpy(), self.prior_rows
            )
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


def cross_val_mae(
    table: pd.DataFrame,
    models: list[str],
    folds: int = 5,
    seed: int = 0,
    prior_rows: float = PRIOR_ROWS,
) -> float:
    """Out-of-fold MAE (months) of a per-sex :class:`LinearEnsemble` on ``table``: each row is
    predicted by an ensemble fitted without it (how well the fit generalises, on val alone)."""
    rng = np.random.default_rng(seed)
    fold = rng.permutation(len(table)) % folds
    pred = np.empty(len(table))
    for k in range(folds):
        held = fold == k
        ens = LinearEnsemble(models, prior_rows=prior_rows).fit(table[~held])
        pred[held] = ens.predict(table[held])
    return float(np.abs(pred - table["boneage"].to_numpy(float)).mean())
