"""Embedded default dataset: procedural left-hand radiograph phantoms with exact ground truth.

A fresh machine has no radiographs, and tests need exact answers for every stage, so this module
draws hand phantoms whose skeletal maturity follows the bone-age label the way a radiologist
reads a Greulich-Pyle film:

* carpal ossification centres appear one by one (capitate, hamate, triquetrum, lunate,
  trapezium, trapezoid, scaphoid, pisiform) and grow;
* epiphyses appear at the phalangeal bases, metacarpal heads, distal radius and ulna, widen
  towards the width of their metaphysis, then the physis (growth plate gap) closes: fusion;
* bones lengthen and thicken.

Girls mature earlier: a girl's phantom is drawn at maturity ``1.1 * boneage`` on the boys'
scale (roughly the gap between the female and male GP standards). A small per-image maturity
jitter (``maturity_sd`` months) plays the part of reader disagreement.

Acquisition varies like RSNA films: scale, rotation, translation, right hands (mirrored),
exposure (gain, offset, gamma), blur, noise, letter markers and a collimated field whose outside
is bright. The mask is exactly the hand (soft tissue and bones inside the field), never the
markers or the collimation border. Landmarks are the paper's three: middle-finger tip (end of
its distal phalanx), thumb tip (end of its distal phalanx), capitate centre.

Anatomy is defined in *hand units*: capitate centre at (0, 0), fingers towards -y, the adult
middle-finger tip near (0, -1); thumb on +x (a left hand seen postero-anteriorly). Ages are
bone ages in months.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

_SHIFT = 4  # cv2 fixed-point bits: coordinates with 1/16 px precision
_ONE = 1 << _SHIFT

# Rays: name, base (x, y), angle in degrees towards the thumb, bone lengths, bone widths.
# Fingers 2-5 have a metacarpal and three phalanges; the thumb a metacarpal and two phalanges.
RAYS = (
    ("thumb", (0.22, 0.02), 40.0, (0.24, 0.17, 0.12), (0.085, 0.075, 0.065)),
    ("index", (0.12, -0.10), 9.0, (0.38, 0.22, 0.12, 0.06), (0.075, 0.072, 0.062, 0.052)),
    ("middle", (0.00, -0.10), 0.0, (0.40, 0.24, 0.14, 0.065), (0.078, 0.075, 0.065, 0.055)),
    ("ring", (-0.11, -0.08), -8.0, (0.36, 0.22, 0.13, 0.06), (0.072, 0.07, 0.06, 0.05)),
    ("little", (-0.21, -0.04), -17.0, (0.31, 0.17, 0.09, 0.055), (0.065, 0.06, 0.052, 0.045)),
)
JOINT_GAP = 0.03

# Carpal bones in order of ossification: name, centre, semi-axes, angle, onset (months, boys).
CARPALS = (
    ("capitate", (0.00, 0.00), (0.075, 0.10), 0.0, 3.0),
    ("hamate", (-0.13, 0.01), (0.07, 0.085), -10.0, 4.0),
    ("triquetrum", (-0.13, 0.13), (0.06, 0.06), 0.0, 30.0),
    ("lunate", (0.02, 0.16), (0.07, 0.06), 0.0, 42.0),
    ("trapezium", (0.21, 0.04), (0.065, 0.06), 20.0, 66.0),
    ("trapezoid", (0.12, -0.02), (0.055, 0.06), 0.0, 72.0),
    ("scaphoid", (0.15, 0.14), (0.065, 0.09), 30.0, 78.0),
    ("pisiform", (-0.19, 0.12), (0.04, 0.04), 0.0, 132.0),
)
CARPAL_FULL_SIZE = 168.0  # months at which carpals reach adult size

# Epiphyses: onset (months), full width (months), start and end of fusion (months), boys.
EPIPHYSIS = {
    "phalanx": (15.0, 144.0, 150.0, 186.0),
    "metacarpal": (18.0, 144.0, 160.0, 192.0),
    "radius": (12.0, 150.0, 180.0, 216.0),
    "ulna": (84.0, 156.0, 180.0, 216.0),
}
FOREARM = (
    ("radius", (0.08, 0.27), (0.10, 1.0), 0.20),
    ("ulna", (-0.15, 0.29), (-0.16, 1.0), 0.12),
)
FEMALE_MATURITY = 1.1


@dataclasses.dataclass
class Phantom:
    """One generated radiograph.

    Attributes:
        image: float32 (H, W) in [0, 1].
        mask: uint8 (H, W), 1 = hand.
        landmarks: float32 (3, 2) pixel coordinates (x, y) with pixel centres at integers:
            middle-finger tip, thumb tip, capitate centre.
        boneage: months; male: sex; right: True when mirrored to a right hand.
    """

    image: np.ndarray
    mask: np.ndarray
    landmarks: np.ndarray
    boneage: float
    male: bool
    right: bool


def maturity(boneage: float, male: bool) -> float:
    """Skeletal maturity on the boys' scale (months): girls mature earlier."""
    return float(boneage) * (1.0 if male else FEMALE_MATURITY)


def _ramp(m: float, start: float, end: float) -> float:
    return float(np.clip((m - start) / (end - start), 0.0, 1.0))


def epiphysis_state(m: float, kind: str) -> tuple[bool, float, float]:
    """(present, width ratio to the metaphysis in [0.35, 1.0], fusion in [0, 1]) at maturity m."""
    onset, full, fuse0, fuse1 = EPIPHYSIS[kind]
    return m >= onset, 0.35 + 0.65 * _ramp(m, onset, full), _ramp(m, fuse0, fuse1)


def growth(m: float) -> tuple[float, float]:
    """(length scale, width scale) of the hand at maturity m: both grow with age."""
    t = _ramp(m, 0.0, 204.0)
    return 0.62 + 0.38 * t**0.8, 0.78 + 0.22 * t


def maturity_features(boneage: float, male: bool) -> dict:
    """Age-dependent features a radiologist reads, at the phantom's maturity (no jitter).

    Keys: ``carpals`` (ossified count), ``carpal_area`` (sum of carpal areas, hand units^2),
    ``epiphyses`` (present count of the 4 kinds), ``epiphysis_ratio`` (mean width ratio),
    ``fusion`` (mean fusion fraction), ``length`` and ``width`` (growth scales).
    """
    m = maturity(boneage, male)
    length, width = growth(m)
    present = [c for c in CARPALS if m >= c[4]]
    area = sum(math.pi * a * b * _carpal_scale(m, onset) ** 2 for *_, (a, b), _, onset in present)
    states = [epiphysis_state(m, k) for k in EPIPHYSIS]
    return {
        "carpals": len(present),
        "carpal_area": area,
        "epiphyses": sum(s[0] for s in states),
        "epiphysis_ratio": float(np.mean([s[1] if s[0] else 0.0 for s in states])),
        "fusion": float(np.mean([s[2] for s in states])),
        "length": length,
        "width": width,
    }


def _carpal_scale(m: float, onset: float) -> float:
    return 0.25 + 0.75 * _ramp(m, onset, CARPAL_FULL_SIZE) ** 0.7


class _Pen:
    """Maps hand units to pixels (scale, rotation, mirror, translation) and draws with cv2."""

    def __init__(self, centre, scale, angle_deg, mirror):
        self.c = np.asarray(centre, np.float64)
        self.s = float(scale)
        a = math.radians(angle_deg)
        flip = np.diag([-1.0, 1.0]) if mirror else np.eye(2)
        self.A = self.s * np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]]) @ flip
        self.angle = angle_deg
        self.mirror = mirror

    def pt(self, p) -> np.ndarray:
        return self.A @ np.asarray(p, np.float64) + self.c

    def fx(self, p):
        q = self.pt(p)
        return int(round(q[0] * _ONE)), int(round(q[1] * _ONE))

    def polygon(self, img, points, value):
        pts = np.array([self.fx(p) for p in points], np.int32)
        cv2.fillConvexPoly(img, pts, value, cv2.LINE_AA, _SHIFT)

    def poly_any(self, img, points, value):
        pts = np.array([self.fx(p) for p in points], np.int32)
        cv2.fillPoly(img, [pts], value, cv2.LINE_8, _SHIFT)

    def ellipse(self, img, centre, axes, angle_deg, value):
        ang = -angle_deg if self.mirror else angle_deg
        ax = (
            max(1, int(round(axes[0] * self.s * _ONE))),
            max(1, int(round(axes[1] * self.s * _ONE))),
        )
        cv2.ellipse(
            img, self.fx(centre), ax, ang + self.angle, 0, 360, value, -1, cv2.LINE_AA, _SHIFT
        )

    def capsule(self, img, a, b, width, value, line=cv2.LINE_AA):
        thick = max(1, int(round(width * self.s)))
        cv2.line(img, self.fx(a), self.fx(b), value, thick, line, _SHIFT)


def _unit(angle_deg: float) -> np.ndarray:
    a = math.radians(angle_deg)
    return np.array([math.sin(a), -math.cos(a)])  # 0 deg = towards -y (fingers)


def _long_bone(pen, bones, a, b, width, epi_at_end, kind, m, density):
    """A shaft from a to b with its epiphysis at b (``epi_at_end``) or at a."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if not epi_at_end:
        a, b = b, a  # draw with the epiphysis at b
    d = (b - a) / np.linalg.norm(b - a)
    n = np.array([-d[1], d[0]])
    present, ratio, fusion = epiphysis_state(m, kind)
    t_epi = 0.4 * width
    gap = 0.35 * width * (1.0 - fusion)
    shaft_end = b - d * (t_epi + gap)
    half = width / 2
    flare = half * 1.12  # metaphysis slightly wider than the shaft
    cortex, marrow = int(235 * density), int(185 * density)
    cap = a + d * half * 0.8  # the rounded far end stays inside the bone's length
    pen.polygon(
        bones,
        [cap + n * half, shaft_end + n * flare, shaft_end - n * flare, cap - n * half],
        cortex,
    )
    pen.ellipse(bones, cap, (half, half * 0.8), math.degrees(math.atan2(d[0], -d[1])), cortex)
    pen.capsule(bones, cap + d * half * 0.5, shaft_end - d * half * 0.5, 0.45 * width, marrow)
    if present:
        centre = b - d * t_epi / 2
        angle = math.degrees(math.atan2(d[0], -d[1]))
        pen.ellipse(bones, centre, (ratio * flare, t_epi / 2), angle, int(225 * density))
        if fusion >= 1.0:
            pen.polygon(
                bones,
                [
                    shaft_end + n * flare,
                    centre + n * ratio * flare * 0.9,
                    centre - n * ratio * flare * 0.9,
                    shaft_end - n * flare,
                ],
                cortex,
            )


def _draw_hand(pen, m, tissue, bones, jitter):
    """Draw tissue (uint8 mask 255) and bones (uint8 intensities); return the 3 landmarks."""
    length, wscale = growth(m)
    density = 0.8 + 0.2 * _ramp(m, 0, 200)
    ends = {}
    for (name, base, angle, lengths, widths), dj in zip(RAYS, jitter, strict=True):
        direction = _unit(angle + dj)
        p = np.asarray(base, float) * np.array([1.0, length])
        segs = []
        for k, (seg_len, w) in enumerate(zip(lengths, widths, strict=True)):
            q = p + direction * seg_len * length
            segs.append((p, q, w * wscale * length**0.3, k))
            p = q + direction * JOINT_GAP * length
        tip = segs[-1][1] + direction * segs[-1][2] / 2
        ends[name] = (segs, tip, direction)
        # soft tissue: finger as a thick capsule, the palm below
        pen.capsule(tissue, segs[1][0], tip - direction * 0.01, 2.1 * segs[1][2], 255, cv2.LINE_8)
    palm = [
        ends["little"][0][0][0] + np.array([-0.07, 0.10]),
        ends["little"][0][0][1] + np.array([-0.06, 0.0]),
        ends["ring"][0][0][1],
        ends["middle"][0][0][1],
        ends["index"][0][0][1] + np.array([0.05, 0.0]),
        ends["thumb"][0][0][1] + np.array([0.04, 0.02]),
        np.array([0.32, 0.22]) * np.array([1.0, length]),
        np.array([0.20, 0.34]),
        np.array([-0.26, 0.34]),
        np.array([-0.27, 0.15]),
    ]
    pen.poly_any(tissue, palm, 255)
    forearm = [
        np.array([0.22, 0.30]),
        np.array([0.24, 1.6]),
        np.array([-0.30, 1.6]),
        np.array([-0.27, 0.30]),
    ]
    pen.poly_any(tissue, forearm, 255)
    # bones
    for name, (segs, _, _) in ends.items():
        for a, b, w, k in segs:
            if k == 0:  # metacarpal: epiphysis at the head (distal), thumb at the base
                _long_bone(pen, bones, a, b, w, name != "thumb", "metacarpal", m, density)
            else:  # phalanges: epiphysis at the base
                _long_bone(pen, bones, a, b, w, False, "phalanx", m, density)
    for name, top, bottom, width in FOREARM:
        w = width * wscale * length**0.3
        top = np.asarray(top, float) * np.array([1.0, length])
        _long_bone(pen, bones, np.asarray(bottom, float), top, w, True, name, m, density)
    for _, centre, (ax, ay), ang, onset in CARPALS:
        if m < onset:
            continue
        k = _carpal_scale(m, onset) * length
        c = np.asarray(centre, float) * length
        pen.ellipse(bones, c, (ax * k, ay * k), ang, int(220 * density))
        pen.ellipse(bones, c, (ax * k * 0.6, ay * k * 0.6), ang, int(190 * density))
    capitate = np.asarray(CARPALS[0][1], float) * length
    return np.stack([ends["middle"][1], ends["thumb"][1], capitate])


def render(
    boneage: float,
    male: bool,
    rng: np.random.Generator,
    size: tuple[int, int] = (256, 256),
    augment: bool = True,
    maturity_sd: float = 3.0,
) -> Phantom:
    """Draw one phantom of ``size`` = (height, width) pixels.

    With ``augment=False`` the hand is upright, centred, noise-free, unmirrored and without
    markers or collimation (used by tests of the anatomy).
    """
    h, w = size
    m = maturity(boneage, male) + (rng.normal(0.0, maturity_sd) if augment else 0.0)
    m = max(m, 0.0)
    length, _ = growth(m)
    for _ in range(50):
        if augment:
            scale = 0.52 * h * rng.uniform(0.8, 1.05)
            angle = rng.uniform(-25.0, 25.0)
            centre = (w * (0.5 + rng.uniform(-0.08, 0.08)), h * (0.64 + rng.uniform(-0.05, 0.08)))
            mirror = bool(rng.random() < 0.15)
        else:
            scale, angle, centre, mirror = 0.52 * h, 0.0, (w * 0.5, h * 0.64), False
        pen = _Pen(centre, scale, angle, mirror)
        # hand units grow with age, the tip lies at about -length
        pts = np.stack(
            [pen.pt((0, -1.02 * length)), pen.pt((0.47 * length, -0.55 * length)), pen.pt((0, 0))]
        )
        inside = (
            (pts[:, 0] > 0.04 * w)
            & (pts[:, 0] < 0.96 * w)
            & (pts[:, 1] > 0.03 * h)
            & (pts[:, 1] < 0.97 * h)
        )
        if inside.all() or not augment:
            break
    jitter = rng.normal(0.0, 2.5, len(RAYS)) if augment else np.zeros(len(RAYS))
    tissue = np.zeros((h, w), np.uint8)
    bones = np.zeros((h, w), np.uint8)
    hand_pts = _draw_hand(pen, m, tissue, bones, jitter)
    landmarks = np.stack([pen.pt(p) for p in hand_pts]).astype(np.float32)
    mask = (tissue > 0).astype(np.uint8)
    sigma = max(0.5, 0.004 * h)
    soft = cv2.GaussianBlur(tissue.astype(np.float32) / 255.0, (0, 0), 2.0 * sigma)
    bone = cv2.GaussianBlur(bones.astype(np.float32) / 255.0, (0, 0), 0.6 * sigma)
    if augment:
        bg = rng.uniform(0.02, 0.4)
        tissue_w, bone_w = rng.uniform(0.15, 0.3), rng.uniform(0.35, 0.55)
        image = bg + (1.0 - bg) * (tissue_w * soft + bone_w * bone * soft)
        image = _expose(image, rng)
        mask = _collimate(image, mask, rng)
        _marker(image, mask, rng)
        image = image + rng.normal(0.0, rng.uniform(0.004, 0.025), image.shape)
    else:
        image = 0.05 + 0.22 * soft + 0.45 * bone * soft
    return Phantom(
        np.clip(image, 0, 1).astype(np.float32), mask, landmarks, float(boneage), bool(male), mirror
    )


def _expose(image, rng):
    gain, gamma = rng.uniform(0.85, 1.15), rng.uniform(0.8, 1.25)
    return np.clip(image * gain, 0, 1) ** gamma


def _collimate(image, mask, rng):
    """With probability 0.5 brighten everything outside a rotated field; the mask loses it."""
    if rng.random() < 0.5:
        return mask
    h, w = image.shape
    field = np.zeros((h, w), np.uint8)
    centre = (w * rng.uniform(0.45, 0.55), h * rng.uniform(0.45, 0.6))
    box = (
        (centre[0], centre[1]),
        (w * rng.uniform(0.85, 1.1), h * rng.uniform(0.9, 1.2)),
        rng.uniform(-12, 12),
    )
    cv2.fillConvexPoly(field, cv2.boxPoints(box).astype(np.int32), 1)
    outside = field == 0
    image[outside] = np.maximum(image[outside], rng.uniform(0.55, 0.9))
    return mask & field


def _marker(image, mask, rng):
    """A bright letter marker ('L', 'R', 'LT' ...) somewhere off the hand."""
    h, w = image.shape
    text = str(rng.choice(["L", "R", "L", "LT", "RT", "L"]))
    scale = h / 256 * rng.uniform(0.5, 0.9)
    thick = max(1, int(round(h / 256 * rng.uniform(1, 2.5))))
    (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    grown = cv2.dilate(mask, np.ones((5, 5), np.uint8))
    for _ in range(10):
        x, y = int(rng.uniform(0.02 * w, w - tw - 2)), int(rng.uniform(th + 2, 0.98 * h))
        if not grown[max(0, y - th - 2) : y + 3, max(0, x - 2) : x + tw + 2].any():
            layer = np.zeros((h, w), np.uint8)
            cv2.putText(
                layer, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, 255, thick, cv2.LINE_AA
            )
            value = rng.uniform(0.85, 1.0)
            np.maximum(image, layer.astype(np.float32) / 255.0 * value, out=image)
            return


def sample_ages(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Bone ages (months, RSNA-like: mean 127, sd 41, clipped to [1, 228]) and sexes (54 % male)."""
    ages = np.clip(np.rint(rng.normal(127.0, 41.0, n)), 1, 228)
    return ages, rng.random(n) < 0.54


#: file formats of the phantoms: PNG 8 / 16 bit, DICOM with 12 or 16 stored bits, stored
#: inverted (MONOCHROME1, bright bone = low values) or not (MONOCHROME2)
FORMATS = ("png8", "png16", "dicom12-mono1", "dicom16-mono2")
#: width / height of the films when sizes vary (RSNA films: portrait, about 0.7 to 0.95)
ASPECTS = (0.7, 0.95)
STUDY_DATE = dt.date(2020, 6, 15)


def film_size(seed: int, index: int, size, size_range) -> tuple[int, int]:
    """(height, width) of phantom ``index``: ``size``, or with ``size_range`` (lo, hi) a
    height drawn in [lo, hi] and a width at an aspect drawn in :data:`ASPECTS` (its own random
    stream: the phantoms of a fixed size are unchanged)."""
    if size_range is None:
        return tuple(size)
    rng = np.random.default_rng([seed, index, 1])
    h = int(rng.integers(size_range[0], size_range[1] + 1))
    return h, max(32, int(round(h * rng.uniform(*ASPECTS))))


def _write_image(path_stem: Path, ph, fmt: str, rng) -> str:
    """Write the phantom's image in ``fmt``; returns the file name. DICOMs carry PatientSex and
    dates whose difference is a chronological age near the bone age (sd 12 months)."""
    from tf_boneage.data.io import write_dicom, write_png

    if fmt.startswith("png"):
        path = path_stem.with_suffix(".png")
        write_png(path, ph.image, 16 if fmt == "png16" else 8)
        return path.name
    bits, mono = fmt.removeprefix("dicom").split("-")
    chrono = max(1.0, ph.boneage + 12.0 * rng.standard_normal())
    birth = STUDY_DATE - dt.timedelta(days=int(round(chrono * 30.4375)))
    path = path_stem.with_suffix(".dcm")
    write_dicom(
        path,
        ph.image,
        int(bits),
        "MONOCHROME1" if mono == "mono1" else "MONOCHROME2",
        sex="M" if ph.male else "F",
        birth_date=birth.strftime("%Y%m%d"),
        study_date=STUDY_DATE.strftime("%Y%m%d"),
    )
    return path.name


def _write_one(job):
    out, index, seed, size, bits, formats, size_range = job
    rng = np.random.default_rng([seed, index])
    age, male = sample_ages(rng, 1)
    size = film_size(seed, index, size, size_range)
    ph = render(float(age[0]), bool(male[0]), rng, size)
    name = f"syn{index:06d}"
    fmt = formats[index % len(formats)] if formats else f"png{bits}"
    file = _write_image(out / "images" / name, ph, fmt, np.random.default_rng([seed, index, 2]))
    cv2.imwrite(str(out / "masks" / f"{name}.png"), ph.mask * 255)
    h, w = size
    norm = (ph.landmarks + 0.5) / np.array([w, h], np.float32)  # pixel centres -> fractions
    return {
        "id": name,
        "image_path": f"images/{file}",
        "boneage": ph.boneage,
        "male": ph.male,
        "mask_path": f"masks/{name}.png",
        "tip_x": norm[0, 0],
        "tip_y": norm[0, 1],
        "thumb_x": norm[1, 0],
        "thumb_y": norm[1, 1],
        "capitate_x": norm[2, 0],
        "capitate_y": norm[2, 1],
        "right_hand": ph.right,
    }


def generate(
    out_dir: str | os.PathLike,
    n: int = 1000,
    size: tuple[int, int] = (256, 256),
    seed: int = 0,
    bits: int = 8,
    holdout: dict[str, int] | None = None,
    workers: int | None = None,
    progress: bool = True,
    formats: tuple[str, ...] | None = None,
    size_range: tuple[int, int] | None = None,
) -> pd.DataFrame:
    """Write ``n`` phantoms to ``out_dir`` (``images/``, ``masks/``, ``manifest.csv``).

    ``formats`` (of :data:`FORMATS`) are used in turn, image by image (default: PNG of
    ``bits``); ``size_range`` (lo, hi) draws each film's height in [lo, hi] and its aspect in
    :data:`ASPECTS` instead of one ``size``. Masks and landmarks are exact at each film's size.

    The manifest is canonical (see :mod:`tf_boneage.data.manifest`) with paths relative to
    ``out_dir``; the split holds out 15 % for ``val`` and 15 % for ``test`` unless ``holdout``
    says otherwise. Image ``i`` depends only on ``(seed, i)``, so the output is the same for
    any number of ``workers``.
    """
    from tf_boneage.data.manifest import save_table
    from tf_boneage.data.split import assign_split

    if n < 1:
        raise ValueError(f"n must be >= 1, got {n!r}")
    if min(size) < 32:
        raise ValueError(f"size must be at least 32 x 32 pixels, got {size!r}")
    unknown = sorted(set(formats or ()) - set(FORMATS))
    if unknown:
        raise ValueError(f"unknown formats {unknown}; choose from {FORMATS}")
    if size_range is not None and not 64 <= size_range[0] <= size_range[1]:
        raise ValueError(f"size_range must be (lo, hi) with 64 <= lo <= hi, got {size_range!r}")
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    formats = tuple(formats) if formats else None
    jobs = [(out, i, seed, tuple(size), bits, formats, size_range) for i in range(n)]
    workers = workers or min(2, os.cpu_count() or 1)
    if workers > 1 and n >= 64:
        with ProcessPoolExecutor(workers) as pool:
            rows = list(_progress(pool.map(_write_one, jobs, chunksize=32), n, progress))
    else:
        rows = list(_progress(map(_write_one, jobs), n, progress))
    table = pd.DataFrame(rows)
    holdout = holdout or {"val": round(0.15 * n), "test": round(0.15 * n)}
    table.insert(4, "split", assign_split(table, holdout, seed).to_numpy())
    table["male"] = table["male"].astype("boolean")
    save_table(table, out / "manifest.csv")
    return table


def _progress(iterable, total, enabled):
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc="phantoms", unit="img")
