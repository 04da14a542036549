"""Does QC catch failed registrations and non-hand images?

    python benchmarks/qc_failures.py --model saved_models/boneage \
        --manifest runs/rsna100.csv --split test --limit 500 --out qc_failures.md

Good films: the split's films through ``serving_default``, QC as ``predict`` decides it (every
reason) and by the registration fit alone. Failures made on purpose
(:mod:`tf_boneage.inference.failures`): wrong landmarks (random; tip and capitate swapped) and
upside-down films through a chain without the orientation step, run with the export's own
chain (the U-Net and landmark files its metadata names) and scored against the outline, the
content template and their thresholds read from the SavedModel (caught: below either), and
counted as failed when the registered film correlates
below 0.5 with the export's own registration of it (caught % is of those); noise, gradients, documents and photograph-like scenes
through ``serving_default``; the first ``--upscaled`` good films made from an image 1/2, 1/3,
1/4 and 1/6 of their size scaled back up by each kernel (nearest, bilinear, bicubic, area,
Lanczos: ``robustness.upscaled``), caught when ``predict`` rejects them for any reason. The outline and the threshold were fitted at export on ``train``
and ``val``; this reports on ``--split`` (``test``). The ``--fit-split`` films (``val``) are
served too, so that a second table shows what other shares of them turned away by the
registration checks would buy (:func:`tf_boneage.inference.failures.tradeoff`); every film's
scores are written to ``OUT.films.csv``. ``--extra-fit N`` serves N more ``train`` films (not
the outline's) and adds the table of thresholds fitted on ``val`` and them together: does a
larger fitting set keep the share of good ``test`` films turned away nearer its target?
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow as tf
from common import split_arguments, split_rows, write_report
from tqdm import tqdm

from tf_boneage.data import io
from tf_boneage.data.manifest import load_manifest
from tf_boneage.export import load, outline, rebuild, saved_model
from tf_boneage.inference import failures, predict, robustness
from tf_boneage.preprocessing import chain as chain_lib


def _serve(fn, films_or_bytes, male, batch):
    """Rows of per-film outputs of ``serving_default`` (scalars by name)."""
    rows = []
    for start in range(0, len(films_or_bytes), batch):
        part = films_or_bytes[start : start + batch]
        data = [p if isinstance(p, bytes) else io.png16_bytes(p) for p in part]
        out = fn(
            image_bytes=tf.constant(data),
            male=tf.constant(male[start : start + batch], tf.float32),
        )
        out = {k: np.asarray(v) for k, v in out.items()}
        rows += [{k: v[j] for k, v in out.items()} for j in range(len(part))]
    return rows


def _row(category, n, caught, fits=None, reasons=None) -> dict:
    r = {"failure": category, "films": n, "caught %": round(100 * float(np.mean(caught)), 1)}
    if fits is not None:
        r["median fit"] = round(float(np.median(fits)), 3)
    if reasons is not None:
        words = pd.Series([x.split(":")[0].split(" (")[0] or "accepted" for x in reasons])
        r["reasons"] = "; ".join(f"{k} {v}" for k, v in words.value_counts().items())
    return r


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="saved_models/NAME or a version")
    split_arguments(parser, "test", 500)
    parser.add_argument("--not-hands", type=int, default=50, help="films of each kind")
    parser.add_argument(
        "--upscaled",
        type=int,
        default=100,
        help="good films made from a smaller image scaled up, of each kernel and factor",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--fit-split", default="val", help="the split the thresholds fit")
    parser.add_argument(
        "--extra-fit",
        type=int,
        default=0,
        help="also serve this many train films (not the outline's) and show the thresholds "
        "fitted on val and them together",
    )
    parser.add_argument("--out", required=True, help="markdown table (CSV beside it)")
    args = parser.parse_args(argv)
    if args.split == "val":
        print("note: the threshold was fitted on val; report on test")
    started = time.perf_counter()
    version = saved_model.resolve(args.model)
    loaded = load.saved_model(version)
    meta = load.metadata(version)
    if not hasattr(loaded, "qc_min_fit"):
        raise SystemExit(f"{version}: an export without the registration QC (re-export it)")
    canonical, min_fit = loaded.outline.numpy(), float(loaded.qc_min_fit.numpy())
    # exports before the content check: a flat template that every film passes
    template = getattr(loaded, "content_template", None)
    template = None if template is None else template.numpy()
    min_match = float(loaded.qc_min_match.numpy()) if template is not None else -1.0
    fn = loaded.signatures["serving_default"]
    rows = split_rows(args)
    male = rows["male"].astype("float32").to_numpy()
    data = [io.encoded_bytes(p) for p in tqdm(rows["image_path"], desc="read")]
    table = []

    scored = []  # per film: category, fit, match, rejected by a non-registration check

    def record(category, fit, match, other, sharpness=None, black=None):
        nan = [float("nan")] * len(fit)
        sharpness = nan if sharpness is None else sharpness
        black = nan if black is None else black
        scored.extend(
            {
                "category": category,
                "fit": float(f),
                "match": float(m),
                "other": bool(o),
                "sharpness": float(sh),
                "black_share": float(b),
            }
            for f, m, o, sh, b in zip(fit, match, other, sharpness, black, strict=True)
        )

    def scores(outputs):
        """(fits, matches, rejected by any other check, sharpness, black share) of serving
        outputs (the image checks' scores are NaN in exports without them)."""
        fit = [float(o["registration_fit"]) for o in outputs]
        match = [float(o.get("content_match", 1.0)) for o in outputs]
        passed = {"registration_ok": 1.0, "content_ok": 1.0}
        other = [bool(predict.reason_of({**o, **passed})) for o in outputs]
        sharp = [float(o.get("sharpness", float("nan"))) for o in outputs]
        black = [float(o.get("black_share", float("nan"))) for o in outputs]
        return fit, match, other, sharp, black

    fitting = load_manifest(args.manifest)
    fitting = fitting[fitting["split"] == args.fit_split].head(args.limit)
    record(
        "val",
        *scores(
            _serve(
                fn,
                [io.encoded_bytes(p) for p in fitting["image_path"]],
                fitting["male"].astype("float32").to_numpy(),
                args.batch,
            )
        ),
    )
    if args.extra_fit:
        from tf_boneage.preprocessing.cache import outline_sample

        everything = load_manifest(args.manifest)
        train = everything[everything["split"] == "train"]
        train = train[~train["id"].isin(outline_sample(everything)["id"])]
        train = train.sample(n=min(args.extra_fit, len(train)), random_state=args.seed)
        record(
            "train (fit)",
            *scores(
                _serve(
                    fn,
                    [io.encoded_bytes(p) for p in tqdm(train["image_path"], desc="train")],
                    train["male"].astype("float32").to_numpy(),
                    args.batch,
                )
            ),
        )
    good = _serve(fn, data, male, args.batch)
    record(f"good {args.split}", *scores(good))
    reasons = [predict.reason_of(o) for o in good]
    fits = np.array([float(o["registration_fit"]) for o in good])
    matches = np.array([float(o.get("content_match", 1.0)) for o in good])
    table.append(
        _row(
            f"good `{args.split}` films (rejected)",
            len(good),
            [bool(r) for r in reasons],
            fits,
            reasons,
        )
    )
    table.append(
        _row(
            "good films, by the registration checks alone (fit, content)",
            len(good),
            (fits < min_fit) | (matches < min_match),
            fits,
        )
    )

    # the export's own chain, with and without the orientation step
    spec = meta["chain"]
    decoded = loaded.signatures["decode"](image_bytes=tf.constant(data))
    images, sizes = decoded["images"], decoded["original_size"]
    nets = rebuild.rebuild(version).preprocessor  # the export's own networks, from itself
    make = lambda orient: chain_lib.load(  # noqa: E731
        nets.unet, nets.landmark_model, spec["frame"], spec["region_sizes"], orient
    )
    pre = make(spec.get("orient", False))
    rng = np.random.default_rng(args.seed)

    def fit_of(chain, imgs, sz, landmarks=None):
        """(registration fits (N,), caught by the registration checks (N,), registered
        images (N, h, w), content matches (N,)) of films through ``chain``."""
        got, caught, registered, matches = [], [], [], []
        for s in range(0, len(imgs), args.batch):
            marks = None if landmarks is None else tf.constant(landmarks[s : s + args.batch])
            out = chain(imgs[s : s + args.batch], sz[s : s + args.batch], landmarks=marks)
            f = outline.fit(out["occupancy"].numpy(), canonical)
            m = (
                np.ones(len(f))
                if template is None
                else outline.match(out["content"].numpy(), template, canonical)
            )
            got.append(f)
            matches.append(m)
            caught.append((f < min_fit) | (m < min_match))
            registered.append(out["registered"].numpy()[..., 0])
        return tuple(map(np.concatenate, (got, caught, registered, matches)))

    _, _, reference, _ = fit_of(pre, images, sizes)  # the films' own registration

    def failed(registered):
        """Grossly failed: the registered film correlates below 0.5 with its own registration
        as the export's chain makes it (a turned film the similarity still turned upright is
        not a failure)."""
        return failures.correlation(registered, reference) < 0.5

    own = np.concatenate(
        [
            pre(images[s : s + args.batch], sizes[s : s + args.batch])["landmarks"].numpy()
            for s in range(0, len(rows), args.batch)
        ]
    )
    for name, marks in (
        ("wrong landmarks: random points", failures.random_landmarks(len(rows), rng)),
        ("wrong landmarks: tip and capitate swapped", failures.swapped(own)),
    ):
        f, caught, registered, m = fit_of(pre, images, sizes, marks)
        bad = failed(registered)
        table.append(_row(f"{name} ({bad.sum()} failed)", int(bad.sum()), caught[bad], f[bad]))
        record(name.split(": ")[1], f[bad], m[bad], np.zeros(int(bad.sum()), bool))
    upside = tf.reverse(images, [1, 2])
    f, caught, registered, m = fit_of(make(False), upside, sizes)
    bad = failed(registered)
    name = f"upside-down films, chain without the orientation step ({bad.sum()} failed)"
    table.append(_row(name, int(bad.sum()), caught[bad], f[bad]))
    record("upside down", f[bad], m[bad], np.zeros(int(bad.sum()), bool))

    h, w = images.shape[1:3]
    for kind in failures.NOT_HANDS:
        films = [failures.not_a_hand(kind, (h, w), rng) for _ in range(args.not_hands)]
        out = _serve(fn, films, np.ones(len(films), np.float32), args.batch)
        reasons = [predict.reason_of(o) for o in out]
        fits = [float(o["registration_fit"]) for o in out]
        table.append(
            _row(f"not a hand: {kind}", len(out), [bool(r) for r in reasons], fits, reasons)
        )
        record(kind, *scores(out))

    originals = [io.load_image(p) for p in rows["image_path"].head(args.upscaled)]
    for name in robustness.select(["upscaled *"]):
        films = [robustness.transformed(img, name, args.seed, k) for k, img in enumerate(originals)]
        out = _serve(fn, films, male[: len(films)], args.batch)
        reasons = [predict.reason_of(o) for o in out]
        fits = [float(o["registration_fit"]) for o in out]
        table.append(
            _row(f"{name} (good films)", len(out), [bool(r) for r in reasons], fits, reasons)
        )
        record(name, *scores(out))

    frame = pd.DataFrame(table)
    per_film = pd.DataFrame(scored)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    per_film.to_csv(f"{args.out}.films.csv", index=False)
    text = failures.markdown(frame)
    fittings = [(("val",), f"`{args.fit_split}`")]
    if args.extra_fit:
        fittings.append((("val", "train (fit)"), f"`{args.fit_split}` and the extra train films"))
    for fit, label in fittings:
        shown = per_film if len(fit) > 1 else per_film[per_film["category"] != "train (fit)"]
        try:
            trade = failures.markdown(failures.tradeoff(shown, fit=fit))
        except ValueError as exc:  # too few fitting films
            trade = f"(not computed: {exc})"
        text += (
            f"\n\nWhat other shares of {label} turned away by the registration checks "
            "would buy (thresholds fitted on them; % rejected for good films, caught for the "
            "rest; the other checks as exported):\n\n" + trade
        )
    header = (
        f"{len(rows)} `{args.split}` films of {args.manifest}, model {version}, least fit "
        f"{min_fit:.3f}, least content match {min_match:.3f}, seed {args.seed}; {time.perf_counter() - started:.0f} s\n\n"
    )
    write_report(args.out, header, text, frame)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
