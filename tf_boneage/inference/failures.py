"""Grossly failed registrations and images that are not hand radiographs, made on purpose, to
measure whether QC catches them (``benchmarks/qc_failures.py``).

* wrong landmarks: the chain run with landmarks that are not the hand's (random points, or
  the hand's own tip and capitate swapped: the hand registered upside down);
* upside-down films before the fix: a film turned 180 degrees through a chain without the
  orientation step (:meth:`~tf_boneage.preprocessing.chain.Preprocessor.orient`);
* not a hand: noise, smooth gradients, a typed document and a photograph-like scene (no
  photograph can be downloaded here: smooth random shapes at several scales stand in).

Every maker is seeded and returns float32 films (H, W) in [0, 1].
"""

from __future__ import annotations

import cv2
import numpy as np

NOT_HANDS = ("noise", "gradient", "document", "photograph-like")


def correlation(a, b) -> np.ndarray:
    """Pearson correlation of each pair of images (N, ...) and (N, ...) -> (N,); 0 where one
    is constant."""
    a = np.asarray(a, np.float64).reshape(len(a), -1)
    b = np.asarray(b, np.float64).reshape(len(b), -1)
    a = a - a.mean(1, keepdims=True)
    b = b - b.mean(1, keepdims=True)
    den = np.sqrt((a * a).sum(1) * (b * b).sum(1))
    return np.where(den > 0, (a * b).sum(1) / np.where(den > 0, den, 1.0), 0.0)


def random_landmarks(n: int, rng) -> np.ndarray:
    """(n, 6) normalised tip, thumb, capitate drawn anywhere inside the image."""
    return rng.uniform(0.05, 0.95, (n, 6)).astype(np.float32)


def swapped(landmarks: np.ndarray) -> np.ndarray:
    """(n, 6) the tip and the capitate exchanged: the hand registered upside down."""
    pts = np.asarray(landmarks, np.float32).reshape(-1, 3, 2)[:, [2, 1, 0]]
    return pts.reshape(-1, 6)


def _document(size, rng) -> np.ndarray:
    h, w = size
    page = np.full((h, w), 235, np.uint8)
    scale = max(0.25, min(h, w) / 400.0)
    line = max(8, int(28 * scale))
    words = ["PATIENT", "REPORT", "HAND", "LEFT", "2026", "RADIOLOGY", "NAME", "ID", "AGE"]
    for y in range(line, h - line // 2, line):
        text = " ".join(rng.choice(words, 6))
        cv2.putText(page, text, (int(0.05 * w), y), cv2.FONT_HERSHEY_SIMPLEX, scale, 20, 1)
    return page.astype(np.float32) / 255.0


def _photograph(size, rng) -> np.ndarray:
    h, w = size
    img = np.zeros((h, w), np.float32)
    for scale in (4, 16, 64):
        coarse = rng.random((max(2, h // scale), max(2, w // scale))).astype(np.float32)
        img += cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC) / 3
    for _ in range(int(rng.integers(3, 8))):  # a few objects with edges
        centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        axes = (int(rng.integers(w // 16, w // 3)), int(rng.integers(h // 16, h // 3)))
        cv2.ellipse(img, centre, axes, float(rng.uniform(0, 180)), 0, 360, float(rng.random()), -1)
    return np.clip(img, 0.0, 1.0)


def not_a_hand(kind: str, size: tuple[int, int], rng) -> np.ndarray:
    """One film (H, W) float32 in [0, 1] of ``kind`` (:data:`NOT_HANDS`)."""
    h, w = size
    if kind == "noise":
        return rng.random((h, w)).astype(np.float32)
    if kind == "gradient":
        angle = rng.uniform(0, 2 * np.pi)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        g = np.cos(angle) * xx / w + np.sin(angle) * yy / h
        return ((g - g.min()) / max(float(np.ptp(g)), 1e-6)).astype(np.float32)
    if kind == "document":
        return _document(size, rng)
    if kind == "photograph-like":
        return _photograph(size, rng)
    raise ValueError(f"unknown kind {kind!r}; one of {NOT_HANDS}")


def markdown(frame) -> str:
    """The benchmark's table (one row per failure kind) as markdown; empty cells for NaN."""
    cols = list(frame.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in frame.iterrows():
        cells = ["" if isinstance(v, float) and np.isnan(v) else str(v) for v in r.tolist()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def tradeoff(films, shares=(0.0025, 0.005, 0.01, 0.02), fit=("val",)):
    """What each share of the fitting films turned away by the registration checks buys: for
    every share, the two thresholds fitted on the films of the ``fit`` categories
    (:func:`tf_boneage.export.outline.joint_thresholds`), then per other category the
    percentage rejected (good films) or caught (failures).

    ``films``: one row per film with ``category`` (``"val"`` for the export's fitting films),
    ``fit`` (registration fit), ``match`` (content match) and ``other`` (rejected by a check
    that is not a registration check: no hand, exposure, sharpness, landmarks). Returns a
    table with one row per share and one column per category not in ``fit``."""
    import pandas as pd

    from tf_boneage.export import outline

    fitting = films["category"].isin(fit)
    val = films[fitting]
    rows = []
    for share in shares:
        lo_fit, lo_match, rejected = outline.joint_thresholds(val["fit"], val["match"], share)
        row = {
            "fitting share": share,
            "least fit": round(lo_fit, 3),
            "least match": round(lo_match, 3),
            "fitting films rejected %": round(100 * rejected, 2),
        }
        for cat, part in films[~fitting].groupby("category", sort=False):
            caught = part["other"] | (part["fit"] < lo_fit) | (part["match"] < lo_match)
            row[f"{cat} %"] = round(100 * float(caught.mean()), 1)
        rows.append(row)
    return pd.DataFrame(rows)
