"""One uploaded film -> the ``predict`` row and its overlay, as ``tf-boneage predict`` reads it.

The upload's bytes are written under a fresh temporary folder (``tf_boneage_serve_*``) that is
removed when the reading ends, whatever happens; the file is named by what its first bytes say
it is (``film.png``, ``film.jpg``, ``film.dcm``), never by anything the request says, and no
path from a request is ever opened. Then the same steps as ``predict`` run on it
(:func:`tf_boneage.inference.predict.prepare`, ``run_model``, ``row``, ``overlay``), so a film
gets the same age here as from the command line.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import tempfile
from pathlib import Path, PurePath

from tf_boneage.data import io
from tf_boneage.inference import predict

#: suffix of the temporary file for each kind :func:`kind_of` names
SUFFIXES = {"png": ".png", "jpeg": ".jpg", "dicom": ".dcm"}


class FilmError(ValueError):
    """A film that cannot be read: ``status`` is the HTTP status to answer (4xx), the message
    says what is wrong in words."""

    def __init__(self, message: str, status: int = 422):
        super().__init__(message)
        self.status = status


@dataclasses.dataclass(frozen=True)
class Film:
    """One upload: its bytes, the name it was sent under (a label only), ``sex`` "M" / "F" or
    None (then the DICOM's PatientSex), dates as ``YYYY-MM-DD`` or ``YYYYMMDD`` (or None),
    ``age`` a chronological age as ``predict --chronological-age`` takes it (``126``,
    ``10y6m``; it wins over the dates), ``force`` an age for a film QC rejects too."""

    data: bytes
    filename: str = "film"
    sex: str | None = None
    birth_date: str | None = None
    study_date: str | None = None
    age: str | None = None
    force: bool = False


def kind_of(data: bytes) -> str | None:
    """ "png", "jpeg" or "dicom" from the first bytes (magic numbers), None for anything else."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8"):
        return "jpeg"
    if io._is_dicom(data[:132]):
        return "dicom"
    return None


def label(filename: str | None) -> str:
    """The name a result row shows for an upload: the last part of the name it was sent
    under, control characters removed, at most 200 characters ("film" if nothing is left)."""
    name = PurePath((filename or "").replace("\\", "/")).name
    name = "".join(c for c in name if c.isprintable())[:200].strip()
    return name or "film"


def _date(text: str, what: str) -> str:
    digits = text.strip().replace("-", "")
    try:
        dt.datetime.strptime(digits, "%Y%m%d")
    except ValueError:
        raise FilmError(f"{what} {text!r} is not a date (YYYY-MM-DD)", 400) from None
    return digits


def chronological_months(film: Film) -> float | None:
    """The chronological age in months from ``film.age`` or its two dates, None when neither
    is given. Raises :class:`FilmError` (400) for an unreadable age or date, one date without
    the other, or a study before the birth."""
    if film.age:
        try:
            return predict.parse_age(film.age)
        except ValueError as exc:
            raise FilmError(str(exc), 400) from None
    if bool(film.birth_date) != bool(film.study_date):
        raise FilmError("give both the birth date and the study date, or neither", 400)
    if not film.birth_date:
        return None
    months = predict.months_between(
        _date(film.birth_date, "birth date"), _date(film.study_date, "study date")
    )
    if months < 0:
        raise FilmError("the study date is before the birth date", 400)
    return months


def check(film: Film) -> str:
    """What can be said of an upload before the model is asked (cheap, no decoding): its
    kind, or a :class:`FilmError` for an empty upload (400), a file that is not PNG, JPEG or
    DICOM (415), a bad sex (400), or no sex for a file that cannot carry one (422)."""
    if not film.data:
        raise FilmError("the file is empty (0 bytes)", 400)
    kind = kind_of(film.data)
    if kind is None:
        raise FilmError("not a PNG, JPEG or DICOM image", 415)
    if film.sex is not None and film.sex not in ("M", "F"):
        raise FilmError(f"sex must be M or F, got {film.sex!r}", 400)
    if film.sex is None and kind != "dicom":
        raise FilmError("sex unknown: a PNG or JPEG carries none; choose M or F", 422)
    chronological_months(film)
    return kind


def read_film(loaded, film: Film, max_pixels: int = io.MAX_PIXELS, overlay: bool = True) -> dict:
    """``film`` read by the SavedModel ``loaded`` (its ``serving_default`` and
    ``explain_bytes`` signatures).

    Returns:
        The ``predict`` row (:data:`tf_boneage.inference.predict.COLUMNS`; ages in months,
        ``file`` the upload's :func:`label`, ``overlay`` None) plus ``overlay_png``: the
        overlay as base64 PNG when the film got an age and ``overlay``, else None.

    Raises:
        FilmError: the film cannot be read (the status and the reason in words: over
            ``max_pixels``, truncated, undecodable, a colour photograph, a DICOM without
            PatientSex and no sex given, ...). A film QC rejects is not an error: its row
            has ``status`` "rejected" and its ``reason``.
    """
    kind = check(film)
    chronological = chronological_months(film)
    with tempfile.TemporaryDirectory(prefix="tf_boneage_serve_") as tmp:
        path = Path(tmp) / f"film{SUFFIXES[kind]}"
        path.write_bytes(film.data)
        try:
            io.sniff(path, max_pixels)
        except io.ImageError as exc:
            raise FilmError(
                exc.problem, 413 if "exceeds the limit" in exc.problem else 422
            ) from None
        item = predict.prepare(path, film.sex, chronological, source="the form")
        if item.error.startswith("sex unknown"):
            raise FilmError("sex unknown: the DICOM has no PatientSex; choose M or F", 422)
        if item.error:
            raise FilmError(item.error, 422)
        (out,) = predict.run_model(loaded, [item])
        if out is None:
            raise FilmError(item.error or "model failed", 422)
        row = predict.row(item, out, force=film.force)
        row["file"] = label(film.filename)
        row["overlay_png"] = None
        if overlay and row["bone_age_months"] is not None:
            png, _ = predict.overlay(loaded, item, Path(tmp) / "overlay.png")
            row["overlay_png"] = base64.b64encode(png.read_bytes()).decode("ascii")
    return row
