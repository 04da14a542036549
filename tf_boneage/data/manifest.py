"""Manifests: every RSNA layout read into one canonical table, validated row by row.

Canonical columns (see ``data_manifests/SCHEMA.md``):

=============== ======== =====================================================================
column          dtype    meaning
=============== ======== =====================================================================
id              str      image id, unique
image_path      str      absolute path of the image file (PNG, JPEG or DICOM)
boneage         float64  bone age in months, in (0, 240]
male            boolean  True male, False female, <NA> unknown (DICOM PatientSex fills it)
split           str      ``train``, ``val`` or ``test``
tip_x ...       float64  optional landmarks in normalised image coordinates (fractions of the
                         width / height, 0 = left / top edge): ``tip_*`` middle-finger tip,
                         ``thumb_*`` thumb tip, ``capitate_*`` capitate centre
mask_path       str      optional hand mask (PNG, > 0 = hand)
orig_w, orig_h  float64  optional size of the original acquisition when the file was resized
=============== ======== =====================================================================

Readers: the training CSV ``id,boneage,male``, the validation CSV
``Image ID,male,Bone Age (months)``, the test CSV ``Case ID,Sex,Ground truth bone age (Months)``
and a folder with ``labels.csv`` + ``images/`` (the layout of ``../shared/data/rsna100``).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from tf_boneage.data import io

LANDMARK_COLUMNS = ("tip_x", "tip_y", "thumb_x", "thumb_y", "capitate_x", "capitate_y")
REQUIRED_COLUMNS = ("id", "image_path", "boneage", "male", "split")
SPLITS = ("train", "val", "test")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm", ".dicom")
MAX_AGE_MONTHS = 240.0

#: The three RSNA CSV layouts: canonical name -> header of that layout.
LAYOUTS = {
    "train": {"id": "id", "boneage": "boneage", "male": "male"},
    "validation": {"id": "Image ID", "boneage": "Bone Age (months)", "male": "male"},
    "test": {"id": "Case ID", "boneage": "Ground truth bone age (Months)", "male": "Sex"},
}
_DEFAULT_SPLIT = {"train": "train", "validation": "val", "test": "test"}

_SEX_VALUES = {
    "true": True,
    "1": True,
    "1.0": True,
    "m": True,
    "male": True,
    "false": False,
    "0": False,
    "0.0": False,
    "f": False,
    "female": False,
}


@dataclasses.dataclass(frozen=True)
class Problem:
    """One bad row: the ``file`` and 1-based ``line`` it came from, its ``id`` and what is wrong."""

    file: str
    line: int
    id: str
    problem: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: id {self.id!r}: {self.problem}"


class ManifestError(ValueError):
    """Raised in strict mode (or for a missing column) with the list of every problem."""

    def __init__(self, problems: list[Problem] | str):
        self.problems = [] if isinstance(problems, str) else list(problems)
        if isinstance(problems, str):
            message = problems
        else:
            shown = "\n  ".join(str(p) for p in self.problems[:50])
            more = len(self.problems) - 50
            message = f"{len(self.problems)} problem(s) in the manifest:\n  {shown}"
            if more > 0:
                message += f"\n  ... and {more} more"
        super().__init__(message)


def parse_sex(value) -> bool | None:
    """True/False, 1/0, M/F, male/female in any case -> bool; empty/NaN -> None.

    Raises:
        ValueError: for any other value (the message echoes it).
    """
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return None
    if isinstance(value, bool | np.bool_):
        return bool(value)
    text = str(value).strip().lower()
    if text in ("", "nan", "none"):
        return None
    if text not in _SEX_VALUES:
        raise ValueError(f"unknown sex value {value!r} (use True/False, 1/0, M/F, male/female)")
    return _SEX_VALUES[text]


def detect_layout(columns: Iterable[str], file: str | os.PathLike = "<csv>") -> str:
    """Name of the RSNA layout whose header matches ``columns`` (case and spaces ignored).

    Raises:
        ManifestError: when no layout matches; the message lists the missing columns.
    """
    have = {str(c).strip().lower() for c in columns}
    best, missing_best = None, None
    for name, mapping in LAYOUTS.items():
        missing = [c for c in mapping.values() if c.lower() not in have]
        if not missing:
            return name
        if missing_best is None or len(missing) < len(missing_best):
            best, missing_best = name, missing
    raise ManifestError(
        f"{file}: missing required column(s) {missing_best} (closest layout: RSNA {best} CSV; "
        f"columns found: {sorted(have)})"
    )


def _index_images(images_dir: Path) -> dict[str, Path]:
    """Map file stem -> path for every image file directly inside ``images_dir``."""
    found: dict[str, Path] = {}
    if not images_dir.is_dir():
        return found
    for entry in os.scandir(images_dir):
        stem, suffix = os.path.splitext(entry.name)
        if suffix.lower() in IMAGE_SUFFIXES and stem not in found:
            found[stem] = Path(entry.path)
    return found


def read_rsna_csv(
    csv_path: str | os.PathLike,
    images_dir: str | os.PathLike,
    split: str | None = None,
) -> pd.DataFrame:
    """Read one RSNA CSV (any of the three layouts) into canonical columns, unvalidated.

    Values are kept as text (``boneage`` and ``male`` raw) so that :func:`validate` can report
    every bad one; ``_file`` and ``_line`` remember where each row came from.

    Args:
        csv_path: the CSV file.
        images_dir: folder holding ``ID.png`` (or .jpg / .dcm) for every row.
        split: split for every row; default by layout (train CSV -> ``train``, validation CSV ->
            ``val``, test CSV -> ``test``).
    """
    csv_path = Path(csv_path)
    try:
        raw = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{csv_path}: cannot read CSV ({exc})") from exc
    layout = detect_layout(raw.columns, csv_path)
    by_lower = {str(c).strip().lower(): c for c in raw.columns}
    cols = {key: by_lower[name.lower()] for key, name in LAYOUTS[layout].items()}
    split = split or _DEFAULT_SPLIT[layout]
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    images = _index_images(Path(images_dir))
    ids = raw[cols["id"]].astype(str).str.strip()
    paths = [str(images[i].resolve()) if i in images else "" for i in ids]
    missing_paths = [str(Path(images_dir) / f"{i}.png") for i in ids]
    out = pd.DataFrame(
        {
            "id": ids,
            "image_path": [p or m for p, m in zip(paths, missing_paths, strict=True)],
            "boneage": raw[cols["boneage"]].astype(str).str.strip(),
            "male": raw[cols["male"]].astype(str).str.strip(),
            "split": split,
            "_file": str(csv_path),
            "_line": np.arange(len(raw)) + 2,
        }
    )
    return out


def read_layout_dir(folder: str | os.PathLike, split: str | None = None) -> pd.DataFrame:
    """Read a folder laid out like ``../shared/data/rsna100``: ``labels.csv`` and ``images/``."""
    folder = Path(folder)
    csv = folder / "labels.csv"
    if not csv.is_file():
        candidates = sorted(folder.glob("*.csv"))
        if len(candidates) != 1:
            raise ManifestError(
                f"{folder}: expected labels.csv (or exactly one CSV) beside images/, "
                f"found {[c.name for c in candidates]}"
            )
        csv = candidates[0]
    images = folder / "images" if (folder / "images").is_dir() else folder
    return read_rsna_csv(csv, images, split)


def validate(
    table: pd.DataFrame,
    check_images: str = "header",
    max_pixels: int = io.MAX_PIXELS,
    progress: bool = False,
) -> tuple[pd.DataFrame, list[Problem]]:
    """Check every row; return the clean canonical manifest and the list of problems.

    Checks: duplicate id, missing / NaN / non-numeric age, age outside (0, 240] months,
    unknown sex, and the image according to ``check_images``: ``"none"``, ``"exists"``,
    ``"header"`` (default: :func:`tf_boneage.data.io.sniff`, catches empty, truncated,
    non-image, zero-sized and oversized files without decoding) or ``"decode"`` (full decode).
    A row with a DICOM image and no sex takes PatientSex from the DICOM header.
    """
    if check_images not in ("none", "exists", "header", "decode"):
        raise ValueError(f"check_images must be none|exists|header|decode, got {check_images!r}")
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise ManifestError(f"manifest is missing required column(s) {missing}")
    table = table.copy()
    if "_file" not in table.columns:
        table["_file"] = "<manifest>"
    if "_line" not in table.columns:
        table["_line"] = np.arange(len(table)) + 2
    problems: list[Problem] = []
    keep = np.ones(len(table), bool)
    ages = np.full(len(table), np.nan)
    sexes: list[bool | None] = [None] * len(table)
    first_line: dict[str, str] = {}
    rows = table[["id", "image_path", "boneage", "male", "_file", "_line"]].itertuples(index=False)
    if progress:
        from tqdm import tqdm

        rows = tqdm(rows, total=len(table), desc="validating", unit="img")
    for k, (rid, path, age, sex, file, line) in enumerate(rows):
        rid = str(rid)

        def bad(problem, rid=rid, file=file, line=line):
            problems.append(Problem(str(file), int(line), rid, problem))

        if rid in ("", "nan"):
            bad("missing id")
            keep[k] = False
            continue
        if rid in first_line:
            bad(f"duplicate id (first seen at {first_line[rid]})")
            keep[k] = False
            continue
        first_line[rid] = f"{file}:{line}"
        age_value = pd.to_numeric(pd.Series([age]), errors="coerce").iloc[0]
        if str(age).strip() in ("", "nan", "NaN", "None") or age is None:
            bad("missing bone age")
            keep[k] = False
        elif pd.isna(age_value):
            bad(f"bone age {age!r} is not a number")
            keep[k] = False
        elif not 0.0 < float(age_value) <= MAX_AGE_MONTHS:
            bad(f"bone age {age_value!r} months is outside (0, 240]")
            keep[k] = False
        else:
            ages[k] = float(age_value)
        try:
            sexes[k] = parse_sex(sex)
        except ValueError as exc:
            bad(str(exc))
            keep[k] = False
        if check_images != "none":
            try:
                _check_image(path, check_images, max_pixels)
                if sexes[k] is None and str(path).lower().endswith((".dcm", ".dicom")):
                    dicom_sex = io.read_dicom_meta(path).get("sex")
                    sexes[k] = None if dicom_sex is None else dicom_sex == "M"
            except io.ImageError as exc:
                bad(f"image {exc.path}: {exc.problem}")
                keep[k] = False
    clean = table.loc[keep].copy()
    clean["boneage"] = ages[keep]
    clean["male"] = pd.array([sexes[k] for k in np.flatnonzero(keep)], dtype="boolean")
    clean = clean.drop(columns=["_file", "_line"]).reset_index(drop=True)
    return clean, problems


def _check_image(path, mode: str, max_pixels: int) -> None:
    if mode == "exists":
        if not Path(path).is_file():
            raise io.ImageError(path, "file not found")
    elif mode == "header":
        io.sniff(path, max_pixels)
    else:
        io.read_image(path, max_pixels)


def build_manifest(
    tables: Iterable[pd.DataFrame],
    strict: bool = True,
    check_images: str = "header",
    progress: bool = False,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Concatenate raw tables, validate, and return ``(manifest, report)``.

    ``report`` has one row per skipped row (``file, line, id, problem``).

    Raises:
        ManifestError: in ``strict`` mode when any row has a problem, listing all of them.
    """
    table = pd.concat(list(tables), ignore_index=True)
    clean, problems = validate(table, check_images=check_images, progress=progress)
    if strict and problems:
        raise ManifestError(problems)
    report = pd.DataFrame(
        [dataclasses.asdict(p) for p in problems], columns=["file", "line", "id", "problem"]
    )
    return clean, report


def load_manifest(path: str | os.PathLike) -> pd.DataFrame:
    """Read a canonical manifest CSV written by :func:`save_table` with proper dtypes."""
    path = Path(path)
    table = pd.read_csv(path, dtype={"id": str, "image_path": str, "split": str})
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise ManifestError(f"{path}: not a canonical manifest, missing column(s) {missing}")
    table["male"] = pd.array([parse_sex(v) for v in table["male"]], dtype="boolean")
    base = path.resolve().parent
    table["image_path"] = [str((base / p).resolve()) for p in table["image_path"]]
    if "mask_path" in table.columns:
        table["mask_path"] = [
            str((base / p).resolve()) if isinstance(p, str) and p else p for p in table["mask_path"]
        ]
    return table


def save_table(table: pd.DataFrame, path: str | os.PathLike, protect: Iterable = ()) -> Path:
    """Write ``table`` as CSV atomically (temporary file, then rename).

    Refuses to write over any file in ``protect`` (the user's inputs).
    """
    path = Path(path)
    for p in protect:
        if Path(p).exists() and path.exists() and path.resolve() == Path(p).resolve():
            raise ValueError(f"{path}: refusing to overwrite an input file")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    table.to_csv(tmp, index=False)
    os.replace(tmp, path)
    return path
