"""``predict --labels CSV``: per-image sex, chronological and true bone age for a whole batch.

The CSV names each image by ``file`` (a path, or a file name) or ``id`` (the file's stem, as in
RSNA's ``boneage-training-dataset.csv``), and gives its sex as ``sex`` (M / F) or ``male``
(True / False, 1 / 0). Optional: ``chronological_age`` (months, or ``10y6m``) or ``birth_date``
and ``study_date`` (YYYYMMDD or YYYY-MM-DD); the true bone age as ``boneage`` (months, RSNA's
name) or ``true_bone_age``. A row that names no image among the inputs, or an image without a
row, is reported; the rest goes on.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd

from tf_boneage.inference.predict import months_between, parse_age

TRUE_AGE_COLUMNS = ("boneage", "true_bone_age")
TRUE = {"true", "1", "m", "male", "yes"}
FALSE = {"false", "0", "f", "female", "no"}


class LabelsError(ValueError):
    """The labels CSV cannot be used as a whole (unreadable, no key or sex column)."""


@dataclasses.dataclass(frozen=True)
class Label:
    """One CSV row: ``sex`` "M" / "F" or None, ages in months or None."""

    line: int  # the row's line number in the CSV (header = line 1)
    key: str
    sex: str | None
    chronological: float | None
    truth: float | None
    problem: str = ""


@dataclasses.dataclass
class Matched:
    """Each input file's label (None: no row), rows that named no input, and row problems."""

    by_file: dict
    unmatched_rows: list
    problems: list


def _sex(value) -> str | None:
    text = str(value).strip().lower()
    if text in TRUE:
        return "M"
    if text in FALSE:
        return "F"
    return None


def _chronological(rec: dict) -> tuple[float | None, str]:
    raw = rec.get("chronological_age")
    if raw is not None and str(raw).strip() not in ("", "nan"):
        try:
            return parse_age(str(raw)), ""
        except ValueError as exc:
            return None, str(exc)
    birth, study = rec.get("birth_date"), rec.get("study_date")
    if birth is None or study is None or "nan" in (str(birth), str(study)):
        return None, ""
    try:
        return months_between(str(birth).replace("-", ""), str(study).replace("-", "")), ""
    except ValueError:
        return None, f"dates {birth!r} / {study!r} are not YYYYMMDD"


def read(path) -> list[Label]:
    """Parse the CSV at ``path``; raises :class:`LabelsError` naming the file and the problem
    when it cannot be used at all. Problems of single rows go into their ``problem``."""
    path = Path(path)
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise LabelsError(f"{path}: cannot read the labels CSV ({exc})") from None
    except pd.errors.EmptyDataError:
        raise LabelsError(f"{path}: the labels CSV is empty") from None
    table.columns = [c.strip().lower() for c in table.columns]
    key = "file" if "file" in table.columns else "id" if "id" in table.columns else None
    if key is None:
        raise LabelsError(f"{path}: needs a 'file' or 'id' column, has {list(table.columns)}")
    sex_col = "sex" if "sex" in table.columns else "male" if "male" in table.columns else None
    if sex_col is None:
        raise LabelsError(f"{path}: needs a 'sex' (M/F) or 'male' (True/False) column")
    truth_col = next((c for c in TRUE_AGE_COLUMNS if c in table.columns), None)
    out = []
    for k, rec in enumerate(table.to_dict("records")):
        problems = []
        sex = _sex(rec[sex_col])
        if sex is None:
            problems.append(f"{sex_col} {rec[sex_col]!r} is not M/F or True/False")
        chrono, problem = _chronological({c: v or None for c, v in rec.items()})
        problems += [problem] if problem else []
        truth = None
        if truth_col and rec[truth_col].strip():
            try:
                truth = float(rec[truth_col])
            except ValueError:
                problems.append(f"{truth_col} {rec[truth_col]!r} is not a number of months")
        out.append(Label(k + 2, rec[key].strip(), sex, chrono, truth, "; ".join(problems)))
    return out


def match(files: list[Path], labels: list[Label], csv_path) -> Matched:
    """Pair input files with rows: a ``file`` key by its path (relative to the CSV's folder or
    as given) or else its file name; an ``id`` key by the file's stem. A key that fits two
    inputs matches neither (reported)."""
    folder = Path(csv_path).resolve().parent
    resolved = {f.resolve(): f for f in files}
    by_name: dict[str, list[Path]] = {}
    for f in files:
        for name in {f.name, f.stem}:
            by_name.setdefault(name, []).append(f)
    by_file: dict[Path, Label | None] = dict.fromkeys(files)
    unmatched, problems = [], []
    for label in labels:
        hits = []
        for candidate in (folder / label.key, Path(label.key)):
            if candidate.resolve() in resolved:
                hits = [resolved[candidate.resolve()]]
                break
        if not hits:
            hits = by_name.get(Path(label.key).name, [])
        if len(hits) != 1:
            why = "no image among the inputs" if not hits else f"{len(hits)} inputs share it"
            unmatched.append(f"line {label.line} ({label.key}): {why}")
            continue
        if by_file[hits[0]] is not None:
            problems.append(f"line {label.line} ({label.key}): a second row for {hits[0]}")
            continue
        by_file[hits[0]] = label
    return Matched(by_file, unmatched, problems)


def summary(rows: list[dict]) -> dict:
    """MAE and share within 12 months over the rows with an age and a true age (a rejected
    image counts only when ``--force`` gave it an age); months."""
    pairs = [
        (r["bone_age_months"], r["true_bone_age_months"])
        for r in rows
        if r.get("bone_age_months") is not None and r.get("true_bone_age_months") is not None
    ]
    labelled = sum(r.get("true_bone_age_months") is not None for r in rows)
    if not pairs:
        return {"n": 0, "labelled": labelled}
    pred, truth = np.array(pairs, dtype=float).T
    err = np.abs(pred - truth)
    return {
        "n": len(pairs),
        "labelled": labelled,
        "mae": float(err.mean()),
        "within_12": float((err <= 12).mean()),
        "pred": pred,
        "truth": truth,
    }
