"""Evaluation plots (matplotlib, no screen needed): predicted vs true, Bland-Altman, error by
age band. Each function writes one PNG and returns its path."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib
import numpy as np

from tf_boneage.evaluation import BANDS

matplotlib.use("Agg")  # no screen needed; before pyplot is first imported (in _pyplot)


def _pyplot():
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    os.replace(tmp, path)
    return path


def predicted_vs_true(truth, pred, path, title="") -> Path:
    """Scatter of predicted against true bone age (months) with the identity line."""
    fig, ax = _pyplot().subplots(figsize=(4.5, 4.5))
    ax.scatter(truth, pred, s=4, alpha=0.4)
    ax.plot([0, 240], [0, 240], "k--", lw=1)
    ax.set(
        xlim=(0, 240),
        ylim=(0, 240),
        xlabel="true bone age (months)",
        ylabel="predicted (months)",
        title=title,
    )
    return _save(fig, path)


def bland_altman(truth, pred, path, title="") -> Path:
    """Difference (pred - true) against the mean of both, with mean and 95 % limits."""
    truth, pred = np.asarray(truth, float), np.asarray(pred, float)
    diff, mean = pred - truth, (pred + truth) / 2
    bias, sd = diff.mean(), diff.std()
    fig, ax = _pyplot().subplots(figsize=(5.5, 4))
    ax.scatter(mean, diff, s=4, alpha=0.4)
    for y, style in ((bias, "-"), (bias + 1.96 * sd, "--"), (bias - 1.96 * sd, "--")):
        ax.axhline(y, color="k", ls=style, lw=1)
    ax.set(
        xlabel="mean of predicted and true (months)",
        ylabel="predicted - true (months)",
        title=f"{title} bias {bias:.1f}, limits +/-{1.96 * sd:.1f}",
    )
    return _save(fig, path)


def error_by_band(truth, pred, path, title="") -> Path:
    """Mean absolute error per age band (months), with counts."""
    truth, pred = np.asarray(truth, float), np.asarray(pred, float)
    labels, maes, counts = [], [], []
    for lo, hi in BANDS:
        mask = (truth >= lo) & (truth < hi)
        if mask.any():
            labels.append(f"{lo}-{hi}")
            maes.append(np.abs(pred[mask] - truth[mask]).mean())
            counts.append(int(mask.sum()))
    fig, ax = _pyplot().subplots(figsize=(6, 3.5))
    bars = ax.bar(labels, maes)
    for bar, n in zip(bars, counts, strict=True):
        ax.annotate(
            f"n={n}",
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
            fontsize=7,
        )
    ax.set(xlabel="true bone age band (months)", ylabel="MAE (months)", title=title)
    ax.tick_params(axis="x", rotation=30)
    return _save(fig, path)


def report_plots(truth, pred, folder, name: str, title: str = "") -> list[Path]:
    """The three plots of one model (``NAME_scatter.png``, ``NAME_bland_altman.png``,
    ``NAME_by_band.png`` in ``folder``); ``truth`` and ``pred`` (N,) in months."""
    folder = Path(folder)
    title = title or name
    return [
        predicted_vs_true(truth, pred, folder / f"{name}_scatter.png", title),
        bland_altman(truth, pred, folder / f"{name}_bland_altman.png", title),
        error_by_band(truth, pred, folder / f"{name}_by_band.png", title),
    ]
