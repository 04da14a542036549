"""``predict`` over a whole batch: files -> result rows, overlays, and with true ages the
agreement (MAE, share within 12 months, plots). The command line (``tf_boneage.cli``) only
parses arguments and prints."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pandas as pd

from tf_boneage.inference import labels as labels_lib
from tf_boneage.inference import predict


@dataclasses.dataclass(frozen=True)
class Request:
    """What one file is predicted with: ``sex`` "M" / "F" or None (then the file's own),
    ages in months or None; ``source`` names where the sex came from."""

    path: Path
    sex: str | None = None
    chronological: float | None = None
    truth: float | None = None
    source: str = "--sex"
    error: str = ""  # a problem found before reading (e.g. no labels row): reported, skipped


def requests_from_labels(files, labels_csv, sex=None, chronological=None):
    """``(requests, notes)`` for ``files`` with their labels rows (:mod:`.labels`); an image
    without a row is an error row (unless ``sex`` gives a default), a row without an image or
    with a problem is a note. Raises :class:`.labels.LabelsError` for an unusable CSV."""
    rows = labels_lib.read(labels_csv)
    matched = labels_lib.match(files, rows, labels_csv)
    notes = [f"{labels_csv}: {m}" for m in matched.unmatched_rows + matched.problems]
    out = []
    for f in files:
        label = matched.by_file[f]
        if label is None:
            error = "" if sex else f"no row in {labels_csv}"
            out.append(Request(f, sex, chronological, error=error))
        elif label.problem:
            notes.append(f"{labels_csv}: line {label.line} ({label.key}): {label.problem}")
            out.append(Request(f, error=f"{labels_csv} line {label.line}: {label.problem}"))
        else:
            chrono = label.chronological if label.chronological is not None else chronological
            out.append(Request(f, label.sex, chrono, label.truth, f"labels line {label.line}"))
    return out, notes


def run(loaded, requests, batch=16, overlay_dir=None, overwrite=False, force=False, bar=None):
    """Result rows (:data:`.predict.COLUMNS`) in the order of ``requests``; each file is read
    and checked on its own, a bad one never stops the rest. Overlays go to ``overlay_dir``
    under names unique per input (:func:`.predict.output_names`); an existing one is kept
    unless ``overwrite``. ``bar``: a callable advanced by one per batch (progress)."""
    names = predict.output_names([q.path for q in requests])
    rows = []
    for start in range(0, len(requests), batch):
        chunk = requests[start : start + batch]
        items = []
        for q in chunk:
            if q.error:
                item = predict.Prepared(q.path, error=q.error)
            else:
                item = predict.prepare(q.path, q.sex, q.chronological, q.source)
            items.append((q, item))
        good = [i for _, i in items if not i.error]
        answers = predict.run_model(loaded, good) if good else []
        results = dict(zip(map(id, good), answers, strict=True))
        for offset, (q, item) in enumerate(items):
            res = results.get(id(item))
            r = predict.row(item, res, force=force, truth=q.truth)
            if overlay_dir is not None and r["bone_age_months"] is not None:
                path = Path(overlay_dir) / f"{names[start + offset]}_overlay.png"
                if path.exists() and not overwrite:
                    r["flags"] = "; ".join(filter(None, [r["flags"], f"{path} exists: kept"]))
                else:
                    r["overlay"] = str(predict.overlay(loaded, item, path)[0])
            rows.append(r)
        if bar is not None:
            bar()
    return rows


def predict_files(
    inputs,
    sex: str | None = None,
    model=None,
    chronological: float | None = None,
    batch: int = 16,
    overlay_dir=None,
    force: bool = False,
) -> list[dict]:
    """Bone age of image / DICOM files and folders: the Python API of ``tf-boneage predict``.

    Args:
        inputs: paths of files or folders (searched recursively, :func:`.predict.collect`).
        sex: "M" / "F" for files without PatientSex (a DICOM's own sex wins, flagged).
        model: ``saved_models/NAME`` or a version folder; None: the shipped
            ``boneage_rsna100`` (:func:`tf_boneage.export.shipped.resolve`, which names the
            model used on stderr and warns about one trained on phantoms).
        chronological: chronological age in months (SDS and bone age minus age), or None.
        batch: films per call of the SavedModel.
        overlay_dir: folder for one overlay PNG per aged film, or None.
        force: give an age to films QC rejects too (flagged).

    Returns:
        One dict per file (:data:`.predict.COLUMNS`; ages in months, ``bone_age_months``
        None for a rejected film or an error, ``status`` "ok" / "rejected" / "error" with its
        ``reason``).

    Example:
        >>> from tf_boneage.inference.batch import predict_files
        >>> rows = predict_files(["film.png"], sex="F")  # doctest: +SKIP
        >>> rows[0]["bone_age_months"], rows[0]["interval_low_months"]  # doctest: +SKIP
    """
    from tf_boneage.export import load, shipped

    path = shipped.resolve(model)
    files = predict.collect([str(i) for i in inputs])
    requests = [Request(f, sex, chronological) for f in files]
    return run(load.saved_model(path), requests, batch, overlay_dir, force=force)


def line(r: dict) -> str:
    """The one-line console report of a row (errors excluded: they go to stderr)."""
    if r["bone_age_months"] is None:
        text = f"{r['file']}: REJECTED, no age ({r['reason']}) {r['sex']}"
    else:
        text = (
            f"{r['file']}: {r['bone_age']} ({r['bone_age_months']:.1f} months, 90 % "
            f"{r['interval_low_months']:.0f}-{r['interval_high_months']:.0f}) {r['sex']}"
        )
        if r["sds_greulich_pyle"] is not None:
            text += (
                f", BA-CA {r['ba_minus_ca_months']:+.1f} months, SDS {r['sds_greulich_pyle']:+.2f}"
            )
        text += f" [{r['status']}{': ' + r['reason'] if r['reason'] else ''}]"
    if r["true_bone_age_months"] is not None:
        text += f" true {r['true_bone_age_months']:.1f}"
    if r["flags"]:
        text += f" ({r['flags']})"
    return text


def write(rows, out: Path, model, chain) -> None:
    """``rows`` to ``out`` (.csv or .json with the model and its chain), atomically."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    if out.suffix.lower() == ".json":
        doc = {"model": str(model), "chain": chain, "results": rows}
        tmp.write_text(json.dumps(doc, indent=2))
    else:
        pd.DataFrame(rows, columns=list(predict.COLUMNS)).to_csv(tmp, index=False)
    tmp.replace(out)


def agreement(rows, out: Path | None, overwrite=False) -> list[str]:
    """With true ages: the report lines (MAE, share within 12 months, what was left out) and,
    next to ``out``, the predicted-vs-true and Bland-Altman plots (``OUT_STEM_vs_true.png``,
    ``OUT_STEM_bland_altman.png``; an existing plot is kept unless ``overwrite``)."""
    from tf_boneage import plots

    s = labels_lib.summary(rows)
    if not s["labelled"]:
        return []
    left = s["labelled"] - s["n"]
    if not s["n"]:
        return [f"true ages: {s['labelled']} images, none with an age (rejected or errors)"]
    lines = [
        f"against the true bone age: MAE {s['mae']:.2f} months on {s['n']} images, "
        f"{100 * s['within_12']:.0f} % within 12 months"
        + (f" ({left} labelled images without an age: rejected or errors)" if left else "")
    ]
    if out is None:
        lines.append("plots: pass --out to write the predicted-vs-true and Bland-Altman plots")
        return lines
    for kind, draw in (("vs_true", plots.predicted_vs_true), ("bland_altman", plots.bland_altman)):
        path = out.with_name(f"{out.stem}_{kind}.png")
        if path.exists() and not overwrite:
            lines.append(f"{path} exists: kept (pass --overwrite to replace it)")
            continue
        draw(s["truth"], s["pred"], path, title=f"{s['n']} images")
        lines.append(f"plot -> {path}")
    return lines
