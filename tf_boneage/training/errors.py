"""Error analysis of one model on the test split: MAE by age band and sex with
bootstrap intervals, the extreme ages apart, the worst films as a contact sheet with their QC
numbers, and what the worst films have in common against the rest.

    python -m tf_boneage.training.errors runs/region --model final \
        --cache runs/cache/manifest.csv --out runs/region/errors
    tf-boneage train errors runs/region --model final --cache runs/cache/manifest.csv

Reads ``ensemble_predictions.csv`` (``training/ensemble.py``: one column per model), scores
its ``split == test`` rows only, and writes ``errors.md``, ``errors.json``, ``worst.csv`` and
``worst.png`` (registered films from the cache, captioned with truth, estimate and QC).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from tf_boneage.evaluation import BANDS, bootstrap_mae
from tf_boneage.training.runtime import StepError, run_or_exit, write_json

#: the extreme ages reported apart (months): under 2 and over 17 years
EXTREMES = {"under 2 years": (0, 24), "over 17 years": (204, 241)}
#: QC columns of the cache manifest shown with the worst films
QC = ("mask_area", "mask_confidence", "landmark_plausibility", "right_hand")


def _cell(err: np.ndarray) -> dict:
    """n, MAE with its bootstrap 95 % interval and the mean signed error (months)."""
    if len(err) == 0:
        return {"n": 0}
    mae, low, high = bootstrap_mae(np.abs(err))
    return {"n": int(len(err)), "mae": mae, "low": low, "high": high, "bias": float(err.mean())}


def analyse(predictions: pd.DataFrame, model: str | None, qc: pd.DataFrame | None = None, worst=20):
    """The analysis document of column ``model`` of ``predictions`` (``id``, ``boneage``,
    ``male``, ``split`` and one column per model, months) on its test rows; ``qc``: the cache
    manifest (``id`` and the :data:`QC` columns) to describe the worst films."""
    if model is None:  # the paper's final model when the table has it, else the last column
        model = "final" if "final" in predictions else predictions.columns[-1]
    if model not in predictions:
        raise StepError(f"no model {model!r}; columns: {sorted(predictions.columns)}")
    test = predictions[predictions["split"] == "test"].dropna(subset=[model]).copy()
    if test.empty:
        raise StepError(f"no test rows with a {model!r} estimate")
    test["err"] = test[model] - test["boneage"]
    doc: dict = {"model": model, "all": _cell(test["err"].to_numpy())}
    sexes = {"male": test["male"].astype(bool), "female": ~test["male"].astype(bool)}
    doc["sex"] = {s: _cell(test.loc[m, "err"].to_numpy()) for s, m in sexes.items()}
    doc["bands"] = {}
    for lo, hi in BANDS:
        inside = (test["boneage"] >= lo) & (test["boneage"] < hi)
        doc["bands"][f"{lo}-{hi}"] = {
            s: _cell(test.loc[inside & m, "err"].to_numpy()) for s, m in sexes.items()
        } | {"all": _cell(test.loc[inside, "err"].to_numpy())}
    doc["extremes"] = {}
    for name, (lo, hi) in EXTREMES.items():
        inside = (test["boneage"] >= lo) & (test["boneage"] < hi)
        doc["extremes"][name] = _cell(test.loc[inside, "err"].to_numpy())
    if qc is not None:
        cols = ["id", *[c for c in QC if c in qc]]
        test = test.merge(qc[cols], on="id", how="left")
    order = test["err"].abs().sort_values(ascending=False).index
    top, rest = test.loc[order[:worst]], test.loc[order[worst:]]
    doc["worst"] = top.to_dict("records")
    doc["common"] = _common(top, rest)
    return doc


def _common(top: pd.DataFrame, rest: pd.DataFrame) -> dict:
    """What the worst films share, each against the rest."""

    def describe(frame):
        out = {
            "n": int(len(frame)),
            "share male": float(frame["male"].astype(bool).mean()),
            "median true age": float(frame["boneage"].median()),
            "share at the extremes": float(
                ((frame["boneage"] < 24) | (frame["boneage"] >= 204)).mean()
            ),
            "share over-estimated": float((frame["err"] > 0).mean()),
        }
        if "landmark_plausibility" in frame:
            out["share with a failed landmark check"] = float(
                (frame["landmark_plausibility"] < 1).mean()
            )
            out["median mask area"] = float(frame["mask_area"].median())
        return out

    return {"worst": describe(top), "rest": describe(rest)}


def _fmt(c: dict) -> str:
    if not c.get("n"):
        return "-"
    return f"{c['mae']:.2f} [{c['low']:.1f}-{c['high']:.1f}] (n={c['n']}, bias {c['bias']:+.1f})"


def markdown(doc: dict) -> str:
    lines = [
        f"Model `{doc['model']}` on the test split: MAE in months [bootstrap 95 %] (n, mean "
        "signed error: > 0 over-estimated).",
        "",
        f"All: {_fmt(doc['all'])}; boys {_fmt(doc['sex']['male'])}; girls "
        f"{_fmt(doc['sex']['female'])}.",
        "",
        "| band (months) | all | boys | girls |",
        "|---|---|---|---|",
    ]
    for band, c in doc["bands"].items():
        lines.append(f"| {band} | {_fmt(c['all'])} | {_fmt(c['male'])} | {_fmt(c['female'])} |")
    lines += ["", "| extreme ages | MAE |", "|---|---|"]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in doc["extremes"].items()]
    common = doc["common"]
    lines += ["", "| the worst films against the rest | worst | rest |", "|---|---|---|"]
    for key in common["worst"]:
        w, r = common["worst"][key], common["rest"][key]
        lines.append(f"| {key} | {w:.3g} | {r:.3g} |")
    return "\n".join(lines) + "\n"


def contact_sheet(worst: list[dict], cache_root, out, columns: int = 5) -> Path | None:
    """The worst films' registered images from the cache (``registered_path``), captioned
    with id, truth, estimate and QC; None when the cache has no such column."""
    import cv2

    tiles = []
    for r in worst:
        rel = r.get("registered_path")
        if not isinstance(rel, str):
            return None
        img = cv2.imread(str(Path(cache_root) / rel), cv2.IMREAD_GRAYSCALE)
        img = np.zeros((104, 80), np.uint8) if img is None else img
        tile = cv2.resize(img, (160, 208), interpolation=cv2.INTER_NEAREST)
        tile = cv2.copyMakeBorder(tile, 0, 46, 0, 0, cv2.BORDER_CONSTANT, value=255)
        text = [
            f"{r['id']} {'M' if r['male'] else 'F'}",
            f"true {r['boneage']:.0f} est {r['pred']:.0f}",
            f"area {r.get('mask_area', np.nan):.2f} pl {r.get('landmark_plausibility', np.nan):.2f}",
        ]
        for k, t in enumerate(text):
            cv2.putText(tile, t, (3, 222 + 14 * k), cv2.FONT_HERSHEY_SIMPLEX, 0.38, 0, 1)
        tiles.append(tile)
    while len(tiles) % columns:
        tiles.append(np.full_like(tiles[0], 255))
    rows = [np.hstack(tiles[i : i + columns]) for i in range(0, len(tiles), columns)]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), np.vstack(rows))
    return out


def run(root, model: str | None = None, cache=None, out=None, worst: int = 20) -> dict:
    """The analysis of ``root/ensemble_predictions.csv`` into ``out`` (default
    ``root/errors``); ``cache``: the cache manifest (QC numbers and registered images)."""
    root = Path(root)
    source = root / "ensemble_predictions.csv"
    if not source.is_file():
        raise StepError(f"{source} not found: fit the ensembles first (training/ensemble.py)")
    predictions = pd.read_csv(source)
    qc = None
    if cache is not None:
        qc = pd.read_csv(cache)
    doc = analyse(predictions, model, qc, worst)
    model = doc["model"]
    for r in doc["worst"]:
        r["pred"] = r[model]
    out = Path(out or root / "errors")
    out.mkdir(parents=True, exist_ok=True)
    keep = ["id", "boneage", "pred", "err", "male", *[c for c in QC if c in doc["worst"][0]]]
    pd.DataFrame(doc["worst"])[keep].to_csv(out / "worst.csv", index=False)
    if qc is not None and "registered_path" in qc:
        paths = qc.set_index("id")["registered_path"]
        for r in doc["worst"]:
            r["registered_path"] = paths.get(r["id"])
        sheet = contact_sheet(doc["worst"], Path(cache).parent, out / "worst.png")
        if sheet is not None:
            print(f"contact sheet -> {sheet}")
    doc["worst"] = [{k: r[k] for k in keep} for r in doc["worst"]]
    write_json(out / "errors.json", doc)
    text = markdown(doc)
    (out / "errors.md").write_text(text)
    print(text)
    return doc


def main(argv=None) -> int:
    """``tf-boneage train errors``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("root", help="folder with ensemble_predictions.csv (runs/region)")
    parser.add_argument("--model", default=None, help="column to analyse (default final)")
    parser.add_argument("--cache", default=None, help="cache manifest (QC, registered images)")
    parser.add_argument("--out", default=None, help="default ROOT/errors")
    parser.add_argument("--worst", type=int, default=20)
    args = parser.parse_args(argv)
    run_or_exit(parser, run, args.root, args.model, args.cache, args.out, args.worst)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
