"""The ``predict`` command's engine: files -> bone age, interval, QC, SDS, overlays.

Each file is read and checked on its own (PNG / JPEG 8 or 16 bit, DICOM with PatientSex and
dates); a file that cannot be used gets a row with its reason and never stops the others.
Images go to the exported SavedModel as 16-bit PNG bytes (its ``serving_default``: the same
graph TF Serving runs).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import cv2
import numpy as np
import tensorflow as tf

from tf_boneage.data import io
from tf_boneage.export import end_to_end
from tf_boneage.inference.gp_standards import sds

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".dcm", ".dicom"}
# the QC limits of exports that do not hold their own (``mask_ok`` / ``landmarks_ok``)
MIN_MASK_AREA = end_to_end.MIN_MASK_AREA
MIN_PLAUSIBILITY = end_to_end.MIN_PLAUSIBILITY


def collect(inputs: list[str]) -> list[Path]:
    """Files given and image / DICOM files under folders (recursive), in a stable order, each
    once; extension-less files inside folders are included when they look like DICOM."""
    out = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            for f in sorted(path.rglob("*")):
                if f.is_file() and (
                    f.suffix.lower() in IMAGE_SUFFIXES or (not f.suffix and _looks_dicom(f))
                ):
                    out.append(f)
        else:
            out.append(path)
    seen: set = set()
    return [p for p in out if not (p.resolve() in seen or seen.add(p.resolve()))]


def output_names(files: list[Path]) -> list[str]:
    """A name per input, unique within the call, for its outputs (overlays): the file's stem,
    or where two inputs share a stem their paths below the folder they share
    (``rot/2040.png``, ``orig/2040.png`` -> ``rot__2040``, ``orig__2040``); a clash left after
    that gets ``-2``, ``-3``."""
    stems: dict[str, list[Path]] = {}
    for f in files:
        stems.setdefault(f.stem, []).append(f)
    names = []
    for f in files:
        name = f.stem
        if len(stems[f.stem]) > 1:
            group = [p.resolve() for p in stems[f.stem]]
            common = Path(*_common_parts(group))
            rel = f.resolve().relative_to(common)
            name = "__".join([*rel.parent.parts, rel.stem if rel.suffix else rel.name])
            if len({p.suffix for p in stems[f.stem]}) > 1:
                name += "_" + f.suffix.lstrip(".")
        names.append(name)
    used: set = set()
    unique = []
    for name in names:
        candidate, k = name, 1
        while candidate in used:
            k += 1
            candidate = f"{name}-{k}"
        used.add(candidate)
        unique.append(candidate)
    return unique


def _common_parts(paths: list[Path]) -> tuple:
    parts = [p.parent.parts for p in paths]
    common = []
    for items in zip(*parts):  # noqa: B905 (shortest path bounds the shared prefix)
        if len(set(items)) != 1:
            break
        common.append(items[0])
    return tuple(common) or ("/",)


def _looks_dicom(path: Path) -> bool:
    with open(path, "rb") as f:
        return io._is_dicom(f.read(132))  # the reader's own DICOM check


def parse_age(text: str) -> float:
    """``"126"`` (months), ``"10y6m"``, ``"10y"`` or ``"10.5y"`` -> months."""
    t = text.strip().lower().replace(" ", "")
    try:
        if "y" in t:
            years, _, rest = t.partition("y")
            months = float(rest.rstrip("m") or 0)
            return float(years) * 12 + months
        return float(t.rstrip("m"))
    except ValueError:
        raise ValueError(f"age {text!r} is not months (e.g. 126) or years+months (10y6m)") from None


def months_between(birth: str, study: str) -> float:
    """Months between two DICOM dates (YYYYMMDD)."""
    b = dt.datetime.strptime(birth[:8], "%Y%m%d").date()
    s = dt.datetime.strptime(study[:8], "%Y%m%d").date()
    return (s - b).days / 30.4375


def years_months(months: float) -> str:
    m = int(round(months))
    return f"{m // 12}y {m % 12}m"


@dataclasses.dataclass
class Prepared:
    path: Path
    png: bytes | None = None
    pixels: np.ndarray | None = None
    male: bool | None = None
    sex_source: str = ""
    chronological: float | None = None
    flags: list = dataclasses.field(default_factory=list)
    error: str = ""


def _is_colour_photo(path: Path) -> bool:
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None or raw.ndim != 3 or raw.shape[2] < 3:
        return False
    rgb = raw[..., :3].astype(np.float32)
    scale = 65535.0 if raw.dtype == np.uint16 else 255.0
    chroma = np.abs(rgb[..., 0] - rgb[..., 1]) + np.abs(rgb[..., 1] - rgb[..., 2])
    return float(chroma.mean() / scale) > 0.05


def _looks_inverted(pixels: np.ndarray) -> bool:
    """Radiographs have a dark background; a bright border with a darker centre is inverted."""
    h, w = pixels.shape
    bh, bw = max(1, h // 20), max(1, w // 20)
    border = np.concatenate(
        [pixels[:bh].ravel(), pixels[-bh:].ravel(), pixels[:, :bw].ravel(), pixels[:, -bw:].ravel()]
    )
    centre = pixels[h // 4 : max(h // 4 + 1, 3 * h // 4), w // 4 : max(w // 4 + 1, 3 * w // 4)]
    return float(np.median(border)) > 0.5 and float(np.median(border)) > float(centre.mean())


def prepare(
    path: Path, sex: str | None, chronological: float | None, source: str = "--sex"
) -> Prepared:
    """Read one file and gather what the model and the report need; errors are kept.
    ``sex`` ("M" / "F") is used when the file has no PatientSex (``source`` names where it
    came from); ``chronological`` (months) wins over the DICOM dates."""
    item = Prepared(path)
    try:
        loaded = io.read_image(path)
    except io.ImageError as exc:
        item.error = exc.problem
        return item
    except OSError as exc:
        item.error = f"cannot read: {exc}"
        return item
    meta = loaded.meta
    if path.suffix.lower() in (".png", ".jpg", ".jpeg") and _is_colour_photo(path):
        item.error = "not a radiograph (a colour photograph)"
        return item
    pixels = loaded.pixels
    if _looks_inverted(pixels):
        pixels = 1.0 - pixels
        item.flags.append("inverted image: fixed")
    if "sex" in meta:
        item.male, item.sex_source = meta["sex"] == "M", "DICOM PatientSex"
        if sex and sex.upper() != meta["sex"]:
            item.flags.append(f"{source} {sex.upper()} ignored: the DICOM says {meta['sex']}")
    elif sex:
        item.male, item.sex_source = sex.upper() == "M", source
    else:
        item.error = "sex unknown: the file has no PatientSex; pass --sex M or --sex F, or --labels"
        return item
    if chronological is not None:
        item.chronological = chronological
    elif "birth_date" in meta and "study_date" in meta:
        try:
            item.chronological = months_between(meta["birth_date"], meta["study_date"])
        except ValueError:
            item.flags.append("unreadable PatientBirthDate / StudyDate")
    item.pixels = pixels
    item.png = io.png16_bytes(pixels)
    return item


def qc_reason(
    area: float,
    plausibility: float,
    fit: float | None = None,
    fit_ok: bool = True,
    image: dict | None = None,
    match: float | None = None,
    match_ok: bool = True,
    mask_ok: bool | None = None,
    landmarks_ok: bool | None = None,
) -> str:
    """Why QC rejects a film, in words ("" if it does not), the first of: a film with too
    little grey range left (badly exposed; ``image``: the graph's ``grey_range_ok`` and
    ``grey_range``), no hand in the mask (not a hand radiograph), an under-exposed film
    (``image``: the graph's ``exposure_ok``, ``sharpness_ok``, ``sharpness``, ``steps_ok``,
    ``step_share``,
    ``black_share`` and ``certain``, its ``certainty_ok``), a registered image that does not look like a hand (``match`` /
    ``match_ok``: the graph's ``content_match`` / ``content_ok``: not a hand radiograph, or a
    hand registered wrongly), a low-resolution
    film, a registered hand that does not match the canonical outline (``fit`` / ``fit_ok``:
    ``registration_fit`` / ``registration_ok``, :mod:`tf_boneage.export.outline`), or
    implausible landmarks. ``mask_ok`` / ``landmarks_ok``: the graph's own decisions on
    ``area`` and ``plausibility``; ``None`` (an export without them): :data:`MIN_MASK_AREA`
    and :data:`MIN_PLAUSIBILITY` decide."""
    if mask_ok is None:
        mask_ok = area >= MIN_MASK_AREA
    if landmarks_ok is None:
        landmarks_ok = plausibility >= MIN_PLAUSIBILITY
    image = image or {}
    if not image.get("grey_range_ok", True):
        return (
            "badly exposed: the film's grey levels span only "
            f"{100 * image['grey_range']:.0f} % of the range (too dark, too bright or flat)"
        )
    if not mask_ok:
        return f"not a hand radiograph: no hand found (mask covers {100 * area:.1f} % of the image)"
    if not image.get("exposure_ok", True):
        doubt = " and the networks disagree" if not image.get("certain", True) else ""
        return f"under-exposed: {100 * image['black_share']:.0f} % of the hand is black{doubt}"
    if not match_ok:
        return (
            "not a hand radiograph, or a hand registered wrongly: the registered image does "
            "not look like a hand" + (f" (content match {match:.2f})" if match is not None else "")
        )
    if not image.get("steps_ok", True):
        return (
            "low resolution: the film was scaled up from a smaller image (its pixels repeat "
            f"in steps; step share {image['step_share']:.2f})"
        )
    if not image.get("sharpness_ok", True):
        return (
            "low resolution: the film has little fine detail (scaled up from a smaller "
            f"image?; sharpness {image['sharpness']:.2f})"
        )
    if not fit_ok:
        return "registration failed: the registered hand does not match the canonical outline" + (
            f" (fit {fit:.2f})" if fit is not None else ""
        )
    if not landmarks_ok:
        failed = int(round((1 - plausibility) * 4))
        return f"implausible landmarks or registration ({failed} of 4 checks failed)"
    return ""


def reason_of(out: dict) -> str:
    """:func:`qc_reason` of one film's graph outputs (scalars by name: every QC output of
    :data:`~tf_boneage.export.end_to_end.OUTPUTS`, each decision the graph's own)."""

    def ok(key: str) -> bool:
        return float(out[key]) > 0.5

    image = {
        "exposure_ok": ok("exposure_ok"),
        "sharpness_ok": ok("sharpness_ok"),
        "sharpness": float(out["sharpness"]),
        "steps_ok": ok("steps_ok") if "steps_ok" in out else True,
        "step_share": float(out.get("step_share", 0.0)),
        "black_share": float(out["black_share"]),
        "certain": ok("certainty_ok"),
        "grey_range_ok": ok("grey_range_ok"),
        "grey_range": float(out["grey_range"]),
    }
    return qc_reason(
        float(out["mask_area"]),
        float(out["landmark_plausibility"]),
        float(out["registration_fit"]),
        ok("registration_ok"),
        image,
        float(out["content_match"]),
        ok("content_ok"),
        ok("mask_ok"),
        ok("landmarks_ok"),
    )


def certainty_flags(out: dict) -> list[str]:
    """A flag, not a rejection, when the graph's ``certainty_ok``
    says its networks disagree on the film more than on all but 0.2 % of ``val`` films: on the
    rsna100 export such films erred by 25 months on average, but they are films of hands,
    and rejecting them would have turned away 1.8 % of good ``test`` films (RESULTS.md)."""
    if float(out["certainty_ok"]) > 0.5:
        return []
    return [
        f"uncertain: the networks disagree on this film (std {float(out['bone_age_std']):.0f} "
        "months, more than on good films); have it read by a person"
    ]


def orientation_flags(out: dict) -> list[str]:
    """What the chain's orientation step corrected, in words (none for an upright film)."""
    flags = []
    turns = int(round(float(out["quarter_turns"]))) % 4
    if turns:
        flags.append(f"film turned {90 * turns} degrees: corrected")
    if float(out["inverted"]) > 0.5:
        flags.append("film stored inverted (white background): corrected")
    return flags


def row(item: Prepared, out: dict | None, force: bool = False, truth: float | None = None) -> dict:
    """One result row (the CSV / JSON schema; see :data:`COLUMNS`). An image QC rejects gets
    no age (its reason in ``reason``) unless ``force``, and then ``flags`` says so. ``truth``:
    the true bone age (months) from ``--labels``, if any."""
    r = dict.fromkeys(COLUMNS, None)
    r.update(
        file=str(item.path),
        flags="; ".join(item.flags),
        sex_source=item.sex_source,
        sex=None if item.male is None else ("M" if item.male else "F"),
        chronological_age_months=item.chronological,
        true_bone_age_months=truth,
    )
    if item.error or out is None:
        r.update(status="error", reason=item.error or "model failed")
        return r
    age, std = float(out["bone_age_months"]), float(out["bone_age_std"])
    reason = reason_of(out)
    r.update(
        status="rejected" if reason else "ok",
        reason=reason,
        mask_area=round(float(out["mask_area"]), 4),
        landmark_plausibility=float(out["landmark_plausibility"]),
        registration_fit=round(float(out["registration_fit"]), 4),
        content_match=round(float(out["content_match"]), 4),
    )
    flags = [r["flags"], *orientation_flags(out), *certainty_flags(out)]
    r["flags"] = "; ".join(filter(None, flags))
    if reason and not force:
        return r
    if reason:
        r["flags"] = "; ".join(filter(None, [r["flags"], "QC rejected: age given by --force"]))
    r.update(
        bone_age_months=round(age, 2),
        bone_age=years_months(age),
        bone_age_std_months=round(std, 2),
        interval_low_months=round(float(out["interval_low_months"]), 2),
        interval_high_months=round(float(out["interval_high_months"]), 2),
    )
    if item.chronological is not None:
        r["ba_minus_ca_months"] = round(age - item.chronological, 2)
        r["sds_greulich_pyle"] = round(sds(age, item.chronological, bool(item.male)), 2)
    return r


COLUMNS = (
    "file",
    "status",
    "reason",
    "flags",
    "sex",
    "sex_source",
    "bone_age_months",
    "bone_age",
    "bone_age_std_months",
    "interval_low_months",
    "interval_high_months",
    "chronological_age_months",
    "ba_minus_ca_months",
    "sds_greulich_pyle",
    "mask_area",
    "landmark_plausibility",
    "registration_fit",
    "content_match",
    "true_bone_age_months",
    "overlay",
)


def run_model(loaded, items: list[Prepared]) -> list[dict | None]:
    """``serving_default`` on the good items (one call per batch; a failing batch is retried
    image by image so one bad image cannot lose the others)."""
    fn = loaded.signatures["serving_default"]

    def call(batch):
        out = fn(
            image_bytes=tf.constant([i.png for i in batch]),
            male=tf.constant([float(i.male) for i in batch]),
        )
        return [{k: v.numpy()[j] for k, v in out.items()} for j in range(len(batch))]

    try:
        return call(items)
    except tf.errors.OpError:
        results = []
        for item in items:
            try:
                results.append(call([item])[0])
            except tf.errors.OpError as exc:
                item.error = f"model failed: {exc.message.splitlines()[0]}"
                results.append(None)
        return results


def signed_heat(image: np.ndarray, heat: np.ndarray, strength: float = 0.7) -> np.ndarray:
    """``image`` (H, W, 3) uint8 BGR tinted red where ``heat`` (H, W) in [-1, 1] is positive
    (pushed the age up) and blue where negative, opacity ``strength * |heat|``."""
    colour = np.where(heat[..., None] > 0, np.array([0, 0, 255.0]), np.array([255.0, 0, 0]))
    alpha = strength * np.clip(np.abs(heat), 0, 1)[..., None]
    return np.clip(image * (1 - alpha) + colour * alpha, 0, 255).astype(np.uint8)


def overlay(loaded, item: Prepared, path: Path) -> tuple[Path, float]:
    """Input with landmarks | registered hand with regions A, B, C | Grad-CAM of the ensemble
    (:meth:`BoneAgeGraph.explain`) over the registered hand, all drawn from what the
    SavedModel's ``explain_bytes`` signature returns for the bytes ``serving_default`` got
    (the decoded input it saw, its landmarks, registration, heatmap and age): the picture
    cannot disagree with the age beside it. Returns the PNG's path and the age drawn, months."""
    from tf_boneage.preprocessing.regions import REGIONS

    ex = loaded.signatures["explain_bytes"](
        image_bytes=tf.constant([item.png]), male=tf.constant([float(item.male)])
    )
    seen = ex["images"].numpy()[0, ..., 0]
    reg = ex["registered"].numpy()[0, ..., 0]
    heatmap = ex["heatmap"].numpy()[0]
    age = float(ex["bone_age_months"].numpy()[0])
    fh, fw = reg.shape
    scale = max(1, 400 // fh)
    panel_h = fh * scale

    def grey(img):
        u8 = np.clip(img * 255, 0, 255).astype(np.uint8)
        return cv2.cvtColor(u8, cv2.COLOR_GRAY2BGR)

    # the input as the chain saw it, drawn at the original's aspect
    aspect = item.pixels.shape[1] / item.pixels.shape[0]
    src = grey(cv2.resize(seen, (max(1, int(panel_h * aspect)), panel_h)))
    marks = ex["landmarks"].numpy()[0].reshape(3, 2)
    for (px, py), colour in zip(marks, ((0, 0, 255), (0, 255, 0), (255, 0, 0)), strict=True):
        cv2.circle(src, (int(px * src.shape[1]), int(py * src.shape[0])), 5, colour, -1)
    regp = grey(cv2.resize(reg, (fw * scale, panel_h), interpolation=cv2.INTER_NEAREST))
    for name, (y0, x0, y1, x1) in REGIONS.items():
        colour = {"A": (255, 255, 0), "B": (0, 200, 255), "C": (255, 0, 255)}[name]
        p0 = (int(x0 * regp.shape[1]), int(y0 * panel_h))
        p1 = (int(x1 * regp.shape[1]) - 1, int(y1 * panel_h) - 1)
        cv2.rectangle(regp, p0, p1, colour, 2)
        cv2.putText(regp, name, (p0[0] + 4, p0[1] + 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, colour)
    plain = grey(cv2.resize(reg, (fw * scale, panel_h), interpolation=cv2.INTER_NEAREST))
    blend = signed_heat(plain, cv2.resize(heatmap, (fw * scale, panel_h)))
    cv2.putText(
        blend,
        "Grad-CAM: red older, blue younger",
        (6, panel_h - 8),
        cv2.FONT_HERSHEY_SIMPLEX,
        0.4,
        (255, 255, 255),
    )
    sheet = np.concatenate([src, regp, blend], axis=1)
    text = f"{years_months(age)} ({age:.1f} mo)"
    cv2.putText(sheet, text, (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (0, 255, 255), 2)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    cv2.imwrite(str(tmp), sheet)
    tmp.replace(path)
    return path, age
