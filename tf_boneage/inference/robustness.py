"""How films are taken, as transforms, and what each does to the age and to QC (``benchmarks/robustness.py``).

Each transform maps a film (H, W) float32 in [0, 1] to another film, seeded per image. The
benchmark (``benchmarks/robustness.py``) sends every transformed film through the exported
SavedModel's ``serving_default`` (16-bit PNG bytes, as ``predict`` does) and reports, per
transform, the MAE on every film (QC or not), the MAE on the films QC accepts, the share QC
rejects and the change of MAE against the untouched films (Santomartino et al., Radiology: AI
2024, measured the RSNA-2017 winner the same way).
"""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd

#: how the small rotations resample the film: "lanczos" (one 8 x 8 Lanczos pass, the default:
#: the closest a resampling comes to a film taken rotated, whose pixels were never resampled)
#: or "bilinear" (one pass, which blurs: what an in-graph warp does)
RESAMPLING = {"lanczos": cv2.INTER_LANCZOS4, "bilinear": cv2.INTER_LINEAR}


def rotation_matrix(shape: tuple[int, int], degrees: float, aspect: float | None = None):
    """(2, 3) float64 affine map of pixel positions (x, y) of an (H, W) film turned clockwise
    by ``degrees`` about its centre, at the film's true proportions when its pixels are not
    square (``aspect``: the width / height of the film they show; stretch, turn and squash
    back in one map, so the film is resampled once)."""
    h, w = shape
    sy = 1.0 if aspect is None else (w / aspect) / h
    stretch = np.array([[1.0, 0.0, 0.0], [0.0, sy, 0.5 * sy - 0.5], [0.0, 0.0, 1.0]])
    turn = np.eye(3)
    turn[:2] = cv2.getRotationMatrix2D(((w - 1) / 2, (h * sy - 1) / 2), -degrees, 1.0)
    return (np.linalg.inv(stretch) @ turn @ stretch)[:2]


def rotate(
    img: np.ndarray, degrees: float, aspect: float | None = None, resampling: str = "lanczos"
) -> np.ndarray:
    """Rotation about the centre (:func:`rotation_matrix`), resampled once
    (:data:`RESAMPLING`); corners filled with the film's own dark background (its 5th
    percentile); 90 / 180 degrees exactly (the film's shape turns with it)."""
    if degrees % 90 == 0:
        return np.ascontiguousarray(np.rot90(img, int(-degrees // 90) % 4))
    if resampling not in RESAMPLING:
        raise ValueError(f"resampling must be one of {sorted(RESAMPLING)}, got {resampling!r}")
    h, w = img.shape
    fill = float(np.percentile(img, 5))
    out = cv2.warpAffine(
        img,
        rotation_matrix((h, w), degrees, aspect),
        (w, h),
        flags=RESAMPLING[resampling],
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=fill,
    )
    return np.clip(out, 0.0, 1.0)  # Lanczos rings a little past the range at sharp edges


def turned_back(points: np.ndarray, degrees: float, shape, aspect: float | None = None):
    """Continuous pixel positions (..., 2) in a film turned clockwise by ``degrees`` (by
    :func:`rotate`) -> the same points in the (H, W) = ``shape`` film before the turn."""
    points = np.asarray(points, np.float64)
    h, w = shape
    if degrees % 90 == 0:  # np.rot90 clockwise: (x, y) of a film of height h -> (h - y, x)
        k = int(degrees // 90) % 4
        for j in reversed(range(k)):  # undo the last turn first: it turned a film of
            height = h if j % 2 == 0 else w  # this height (after j turns)
            points = np.stack([points[..., 1], height - points[..., 0]], -1)
        return points
    back = np.linalg.inv(np.vstack([rotation_matrix((h, w), degrees, aspect), [0, 0, 1]]))
    return (points - 0.5) @ back[:2, :2].T + back[:2, 2] + 0.5  # index <-> continuous


def exposure(img: np.ndarray, brightness: float = 0.0, contrast: float = 1.0) -> np.ndarray:
    """``brightness`` shifts by a share of the range (+0.3: 30 % brighter); ``contrast``
    scales around the mean (1.3: 30 % more)."""
    mean = float(img.mean())
    return np.clip((img - mean) * contrast + mean + brightness, 0.0, 1.0)


def _resolution(img: np.ndarray, factor: float) -> np.ndarray:
    """Down to ``factor`` of the size (area average) and back up (bilinear)."""
    h, w = img.shape
    small = cv2.resize(
        img, (max(1, round(w * factor)), max(1, round(h * factor))), interpolation=cv2.INTER_AREA
    )
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


#: how a smaller image is scaled back up in the ``upscaled`` transforms: name -> OpenCV flag
UPSCALE_KERNELS = {
    "nearest": cv2.INTER_NEAREST,
    "bilinear": cv2.INTER_LINEAR,
    "bicubic": cv2.INTER_CUBIC,
    "area": cv2.INTER_AREA,
    "lanczos": cv2.INTER_LANCZOS4,
}
#: the ``upscaled`` transforms' factors: the film is made from an image 1 / f of its size
UPSCALE_FACTORS = (2, 3, 4, 6)


def upscaled(img: np.ndarray, factor: int, kernel: str) -> np.ndarray:
    """A film (H, W) made from an image ``1 / factor`` of its size (area average) scaled back
    up to (H, W) with ``kernel`` (:data:`UPSCALE_KERNELS`): a thumbnail, a screenshot or a PACS
    preview enlarged. Clipped to [0, 1] (bicubic and Lanczos ring past the range)."""
    if kernel not in UPSCALE_KERNELS:
        raise ValueError(f"kernel must be one of {sorted(UPSCALE_KERNELS)}, got {kernel!r}")
    h, w = img.shape
    size = (max(1, round(w / factor)), max(1, round(h / factor)))
    small = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
    return np.clip(cv2.resize(small, (w, h), interpolation=UPSCALE_KERNELS[kernel]), 0.0, 1.0)


def _burn_text(img: np.ndarray, text: str, where: str, rng) -> np.ndarray:
    """Bright burned-in text (a laterality marker or a label) in a corner."""
    h, w = img.shape
    ink = np.zeros((h, w), np.uint8)  # OpenCV draws text on 8-bit images only
    scale = max(0.3, min(h, w) / 200.0)
    thick = max(1, int(round(scale * 2)))
    (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    margin = int(0.04 * min(h, w)) + int(rng.integers(0, max(1, int(0.02 * min(h, w)))))
    x = margin if where.endswith("left") else max(0, w - tw - margin)
    y = margin + th if where.startswith("top") else h - margin
    cv2.putText(ink, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, 255, thick, cv2.LINE_AA)
    return np.maximum(img, ink.astype(np.float32) / 255.0)


#: the transforms that turn the film by a small angle, as it lies on the detector: name ->
#: the turns in degrees, one resampling each (a small rotation of a film stored squashed to a
#: square is a rotation plus a shear of its pixels, so these act at the film's proportions)
PHYSICAL = {
    "rotate +10": (10,),
    "rotate -10": (-10,),
    "rotate +15": (15,),
    "rotate -15": (-15,),
    "rotate +20": (20,),
    "rotate -20": (-20,),
    "rotate +30": (30,),
    "rotate -30": (-30,),
    # a control, not an acquisition difference: the resampling of a +30 rotation without the
    # rotation (what the rotations cost through interpolation and cut corners alone)
    "rotate +30 and back": (30, -30),
}


def _turned(img: np.ndarray, turns, aspect=None, resampling: str = "lanczos") -> np.ndarray:
    """``img`` turned by each of ``turns`` (degrees) in order, one resampling each."""
    for degrees in turns:
        img = rotate(img, degrees, aspect, resampling)
    return img


#: name -> transform(film, rng); the paper's list of acquisition differences (the small
#: turns from :data:`PHYSICAL`, at square pixels; :func:`transformed` gives them an aspect)
TRANSFORMS = {
    "untouched": lambda img, rng: img,
    **{name: (lambda img, rng, t=turns: _turned(img, t)) for name, turns in PHYSICAL.items()},
    "rotate 90": lambda img, rng: rotate(img, 90),
    "rotate 180": lambda img, rng: rotate(img, 180),
    "flip horizontal": lambda img, rng: np.ascontiguousarray(img[:, ::-1]),
    "flip vertical": lambda img, rng: np.ascontiguousarray(img[::-1]),
    "brightness +30 %": lambda img, rng: exposure(img, brightness=0.3),
    "brightness -30 %": lambda img, rng: exposure(img, brightness=-0.3),
    "contrast +30 %": lambda img, rng: exposure(img, contrast=1.3),
    "contrast -30 %": lambda img, rng: exposure(img, contrast=0.7),
    "inverted": lambda img, rng: 1.0 - img,
    "resolution x0.5": lambda img, rng: _resolution(img, 0.5),
    "resolution x0.25": lambda img, rng: _resolution(img, 0.25),
    "laterality marker": lambda img, rng: _burn_text(img, "L", "top right", rng),
    "burned-in text": lambda img, rng: _burn_text(img, "ID 0042 HAND PA", "bottom left", rng),
    **{
        f"upscaled {kernel} 1/{f}": (lambda img, rng, f=f, k=kernel: upscaled(img, f, k))
        for f in UPSCALE_FACTORS
        for kernel in UPSCALE_KERNELS
    },
}


def select(patterns) -> list[str]:
    """The names of :data:`TRANSFORMS` matching any of ``patterns`` (shell wildcards:
    ``"upscaled * 1/3"``, ``"rotate*"``), in the table's order; ``None``: every one. A pattern
    matching nothing raises ``ValueError`` naming it."""
    if patterns is None:
        return list(TRANSFORMS)
    import fnmatch

    for pattern in patterns:
        if not fnmatch.filter(TRANSFORMS, pattern):
            raise ValueError(f"no transform matches {pattern!r}")
    return [n for n in TRANSFORMS if any(fnmatch.fnmatchcase(n, p) for p in patterns)]


def transformed(
    img: np.ndarray,
    name: str,
    seed: int,
    index: int,
    aspect: float | None = None,
    resampling: str = "lanczos",
) -> np.ndarray:
    """Film ``img`` (H, W) under transform ``name``, seeded by (seed, index): reproducible.
    ``aspect``: the width / height of the film the pixels show when they do not show it with
    square pixels (the rsna100 thumbnails: 100 x 100 of films about 0.74 as wide as high, a
    graph's ``assume_aspect``); the :data:`PHYSICAL` transforms then turn the film at its
    true proportions, each turn one resampling of kind ``resampling`` (:data:`RESAMPLING`)."""
    rng = np.random.default_rng([seed, index])
    img = img.astype(np.float32)
    if aspect is not None and not aspect > 0:
        raise ValueError(f"aspect must be > 0, got {aspect}")
    if name in PHYSICAL:
        return _turned(img, PHYSICAL[name], aspect, resampling).astype(np.float32)
    return np.asarray(TRANSFORMS[name](img, rng), np.float32)


def png16(img: np.ndarray) -> bytes:
    """A film in [0, 1] as the 16-bit PNG bytes ``predict`` sends the model."""
    from tf_boneage.data.io import png16_bytes

    return png16_bytes(img)


def summarise(preds: pd.DataFrame) -> pd.DataFrame:
    """Per transform of ``preds`` (columns transform, boneage, pred, rejected; ``id`` for the
    paired columns): MAE of every film, MAE of the accepted ones, share rejected, the MAE
    change vs ``untouched``, and, paired by ``id``: ``mae_same_untouched``, the MAE of the
    films QC accepted under the transform as they were untouched, and ``paired_change``, what
    the transform cost those very films (``mae_accepted / mae_same_untouched - 1``; the
    unpaired change mixes in which films QC lets through: a darkening that only the hard
    films survive looks costly though it cost them nothing)."""
    rows = []
    base = None
    untouched = preds[preds["transform"] == "untouched"]
    by_id = None
    if "id" in preds and len(untouched):
        by_id = (untouched["pred"] - untouched["boneage"]).abs().set_axis(untouched["id"])
    for name in preds["transform"].unique():
        part = preds[preds["transform"] == name]
        err = (part["pred"] - part["boneage"]).abs()
        accepted = err[~part["rejected"]]
        row = {
            "transform": name,
            "n": len(part),
            "mae": float(err.mean()),
            "mae_accepted": float(accepted.mean()) if len(accepted) else float("nan"),
            "rejected": float(part["rejected"].mean()),
            "mae_same_untouched": float("nan"),
        }
        if by_id is not None and len(accepted):
            row["mae_same_untouched"] = float(by_id.loc[part["id"][~part["rejected"]]].mean())
        if name == "untouched":
            base = row["mae"]
        rows.append(row)
    table = pd.DataFrame(rows)
    table["change"] = table["mae"] / base - 1 if base else float("nan")
    table["paired_change"] = table["mae_accepted"] / table["mae_same_untouched"] - 1
    return table


def markdown(table: pd.DataFrame) -> str:
    """The summary as a markdown table (months; changes and rejected in %)."""
    lines = [
        "| transform | films | MAE (months) | change vs untouched | MAE of QC-accepted | "
        "the same films untouched | change on them | QC rejected |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in table.itertuples():
        same = getattr(r, "mae_same_untouched", float("nan"))
        paired = getattr(r, "paired_change", float("nan"))
        lines.append(
            f"| {r.transform} | {r.n} | {r.mae:.2f} | {100 * r.change:+.0f} % | "
            f"{r.mae_accepted:.2f} | {same:.2f} | "
            + ("n/a" if paired != paired else f"{100 * paired:+.0f} %")
            + f" | {100 * r.rejected:.0f} % |"
        )
    return "\n".join(lines)
