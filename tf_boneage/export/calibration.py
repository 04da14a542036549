"""Calibration of the exported uncertainty: a per-sex scale on ``bone_age_std``.

The raw ``bone_age_std`` of :class:`~tf_boneage.export.end_to_end.BoneAgeGraph` (the members'
spread and the 240-bin variances) is far too wide for networks trained briefly (on the 100 px
test split: mean 33 months for an MAE of 11; 93 % of the truths inside the nominal 90 %
interval, 100 % for girls). The export fits one factor per sex on a labelled split that is not
the test split (``val``) so that estimate +/- ``INTERVAL_Z`` * scaled std covers the nominal 90 %
there, and bakes it into the graph. Coverage on ``test`` is then measured, not assumed
(``training/coverage.py``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

#: nominal coverage of the interval: estimate +/- INTERVAL_Z * bone_age_std
INTERVAL_Z = 1.645  # 90 % of a normal distribution
NOMINAL = 0.90


def coverage(truth, pred, std) -> dict:
    """MAE (months), mean std and the share of truths inside +/- 1 std and +/- INTERVAL_Z std.

    Args: ``truth``, ``pred``, ``std`` (N,) months."""
    err = np.abs(np.asarray(pred, float) - np.asarray(truth, float))
    std = np.asarray(std, float)
    if err.shape != std.shape or err.ndim != 1:
        raise ValueError(
            f"truth, pred and std must be 1-D of one length, got {err.shape}, {std.shape}"
        )
    return {
        "n": int(len(err)),
        "mae": float(err.mean()) if len(err) else float("nan"),
        "mean_std": float(std.mean()) if len(err) else float("nan"),
        "coverage_68": float((err <= std).mean()) if len(err) else float("nan"),
        "coverage_90": float((err <= INTERVAL_Z * std).mean()) if len(err) else float("nan"),
    }


def std_scale(truth, pred, std, z: float = INTERVAL_Z, level: float = NOMINAL) -> float:
    """The smallest factor ``s`` with ``|pred - truth| <= z * s * std`` on at least a fraction
    ``level`` of the rows.

    ``s = r_(k) / z`` (+ 1e-6 relative): the k-th smallest ratio ``|err| / std``, k = ceil(level * n) (numpy's
    ``inverted_cdf`` quantile; a linear quantile would cover less than ``level`` on a small
    split, e.g. 10 of 12 rows at 90 %). Rows with std <= 0 are
    ignored. Raises ``ValueError`` with fewer than 10 usable rows (a scale fitted on a handful
    of images says nothing) or a level outside (0, 1).
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    err = np.abs(np.asarray(pred, float) - np.asarray(truth, float))
    std = np.asarray(std, float)
    ok = std > 0
    if ok.sum() < 10:
        raise ValueError(f"need at least 10 rows with std > 0 to fit the scale, got {ok.sum()}")
    # + 1e-6 relative: z * (r / z) * std can round below err and drop the boundary row
    return float(np.quantile(err[ok] / std[ok], level, method="inverted_cdf") / z * (1 + 1e-6))


def fit_per_sex(truth, pred, std, male, z: float = INTERVAL_Z, level: float = NOMINAL) -> dict:
    """``{"male": s, "female": s}`` (:func:`std_scale` on each sex's rows)."""
    male = np.asarray(male).astype(bool)
    truth, pred, std = (np.asarray(a, float) for a in (truth, pred, std))
    return {
        name: std_scale(truth[m], pred[m], std[m], z, level)
        for name, m in (("male", male), ("female", ~male))
    }


def predict_rows(fn, rows, batch: int = 32, desc: str = "predict") -> dict:
    """Run ``fn(image_bytes=(B,) tf.string, male=(B,) float32) -> dict`` (the
    ``serving_default`` signature, or ``BoneAgeGraph.predict_bytes``) over manifest ``rows``
    (``image_path``, ``male``); returns ``bone_age_months``, ``bone_age_std``, ``member_months``
    (N, M) and (when the model has them) ``interval_low_months`` / ``interval_high_months``
    (N,) months and the QC numbers (and ``certainty_ok``)."""
    import tensorflow as tf
    from tqdm import tqdm

    from tf_boneage.data.io import encoded_bytes

    keys = (
        "bone_age_months",
        "bone_age_std",
        "member_months",
        "interval_low_months",
        "interval_high_months",
        "registration_fit",
        "content_match",
        "sharpness",
        "step_share",
        "black_share",
        "grey_range",
        "certainty_ok",
    )
    got: dict = {k: [] for k in keys}
    for start in tqdm(range(0, len(rows), batch), desc=desc, unit="batch"):
        part = rows.iloc[start : start + batch]
        out = fn(
            image_bytes=tf.constant([encoded_bytes(p) for p in part["image_path"]]),
            male=tf.constant(part["male"].astype("float32").to_numpy()),
        )
        for k in keys:
            got[k].append(np.asarray(out[k]))
    return {k: np.concatenate(v) for k, v in got.items()}


#: the share of the fitting films each image check (sharpness, black share) turns away
IMAGE_REJECT_SHARE = 0.0015
#: the quantile of the fitting films' black share above which a film whose networks disagree
#: (``certainty_ok`` 0) is rejected as under-exposed (``end_to_end.exposure_ok``)
DOUBT_QUANTILE = 0.95
#: the share of the ``val`` films the certainty check (:func:`std_limit`) turns away
STD_REJECT_SHARE = 0.002
#: ``train`` films (not the outline's) that the export fits the QC thresholds on besides
#: ``val``: on the rsna100 export, thresholds fitted on ``val`` alone turned away 3.2 % of
#: good ``test`` films against a 1.5 % design (RESULTS.md, QC)
QC_EXTRA_FILMS = 1500


def qc_extra_rows(table: pd.DataFrame, outline_rows: pd.DataFrame | None = None) -> pd.DataFrame:
    """The ``train`` rows of manifest ``table`` the export fits its QC thresholds on besides
    ``val``: up to :data:`QC_EXTRA_FILMS` outside the canonical outline's films
    (``outline_rows``, computed by :func:`~tf_boneage.preprocessing.cache.outline_sample` when
    not given), a sample seeded by 1, re-indexed. One selection for the export and the
    benchmarks that read its fitting films."""
    if outline_rows is None:
        from tf_boneage.preprocessing.cache import outline_sample

        outline_rows = outline_sample(table)
    train = table[table["split"] == "train"]
    others = train[~train["id"].isin(outline_rows["id"])]
    n = min(len(others), QC_EXTRA_FILMS)
    return others.sample(n=n, random_state=1).reset_index(drop=True)


#: fewest films a QC limit is fitted on
MIN_QC_FILMS = 50


def fitted_quantile(values, q: float, what: str) -> float:
    """The ``q`` quantile (``inverted_cdf``: at most ``1 - q`` of the films above it) of a
    labelled split's films' QC numbers ``values`` (N,), the one shape of every QC limit here.
    Raises ``ValueError`` naming ``what`` with fewer than :data:`MIN_QC_FILMS` films."""
    values = np.asarray(values, float)
    if len(values) < MIN_QC_FILMS:
        raise ValueError(f"need at least {MIN_QC_FILMS} films to fit the {what}, got {len(values)}")
    return float(np.quantile(values, q, method="inverted_cdf"))


def image_limits(
    sharpness, black, halved=None, share: float = IMAGE_REJECT_SHARE
) -> tuple[float, float]:
    """``(least sharpness, largest black share)`` accepted, from a labelled split's films
    (N,) each: the largest black share is the ``1 - share`` quantile (``inverted_cdf``: at
    most ``share`` of them above it). The least sharpness is the ``share`` quantile; with
    ``halved`` (N,), the sharpness of the same films halved and scaled back, it is the midpoint
    between that and the ``1 - share`` quantile of ``halved`` (a film resampled once, e.g.
    turned by a few degrees, loses some fine detail and must still pass). Raises
    ``ValueError`` with fewer than 50 films."""
    if len(black) != len(sharpness):
        raise ValueError(f"one sharpness per black share, got {len(sharpness)} and {len(black)}")
    low = fitted_quantile(sharpness, share, "limits")
    if halved is not None and len(halved):
        top = float(np.quantile(np.asarray(halved, float), 1 - share, method="inverted_cdf"))
        low = (low + top) / 2 if top < low else low
    high = fitted_quantile(black, 1 - share, "limits")
    return low, max(high, 1e-6)


def range_limit(grey, share: float = IMAGE_REJECT_SHARE) -> float:
    """The least grey range accepted: the ``share`` quantile (``inverted_cdf``) of a labelled
    split's films' :func:`~tf_boneage.preprocessing.chain.grey_range` (N,), halved (a film
    below half the range of the flattest good film has lost most of its grey levels). Raises
    ``ValueError`` with fewer than 50 films."""
    return fitted_quantile(grey, share, "grey range") / 2


def step_limit(steps, share: float = IMAGE_REJECT_SHARE) -> float:
    """The largest step share accepted (:func:`~tf_boneage.preprocessing.chain.step_share`):
    the ``1 - share`` quantile (``inverted_cdf``) of a labelled split's films' step shares (N,),
    at most 1. Raises ``ValueError`` with fewer than 50 films."""
    return min(1.0, max(fitted_quantile(steps, 1 - share, "step share limit"), 1e-6))


def fit_later_limits(graph, rows, qc_rows=None, batch: int = 32) -> dict:
    """Fit the QC limits ``graph.unfitted_limits`` names (an older export rebuilt by
    :func:`~tf_boneage.export.rebuild.rebuild`: limits the graph gained after it was written)
    on labelled manifest ``rows`` (``val``) and ``qc_rows`` (more good films, never ``test``),
    as :func:`calibrate` fits them. Returns ``{limit: value}``; the list is emptied."""
    import tensorflow as tf

    names = list(getattr(graph, "unfitted_limits", []))
    if not names:
        return {}
    films = rows if qc_rows is None else pd.concat([rows, qc_rows], ignore_index=True)
    out = predict_rows(tf.function(graph.predict_bytes, reduce_retracing=True), films, batch)
    fitted = {}
    for name in names:
        if name != "qc_max_steps":
            raise ValueError(f"no way to fit the QC limit {name!r}")
        fitted[name] = step_limit(out["step_share"])
        graph.set_step_limit(fitted[name])
    graph.unfitted_limits = []
    return fitted


def std_limit(std, share: float = STD_REJECT_SHARE) -> float:
    """The largest ``bone_age_std`` accepted (months): the ``1 - share`` quantile
    (``inverted_cdf``) of a labelled split's calibrated std (N,). Fit it on films the region
    networks never trained on (``val``): they agree more on their own training films. Raises
    ``ValueError`` with fewer than 50 films."""
    return fitted_quantile(std, 1 - share, "std limit")


def halved_sharpness(graph, rows, batch: int = 32) -> np.ndarray:
    """The chain's ``sharpness`` (N,) of manifest ``rows``' films halved (area) and scaled
    back (bilinear), sent as 16-bit PNG as ``predict`` sends films."""
    import tensorflow as tf

    from tf_boneage.data import io
    from tf_boneage.inference.robustness import TRANSFORMS

    fn = tf.function(lambda b, m: graph.predict_bytes(b, m)["sharpness"], reduce_retracing=True)
    got = []
    for start in range(0, len(rows), batch):
        part = rows.iloc[start : start + batch]
        data = [
            io.png16_bytes(TRANSFORMS["resolution x0.5"](io.load_image(p), None))
            for p in part["image_path"]
        ]
        got.append(fn(tf.constant(data), tf.ones([len(data)])).numpy())
    return np.concatenate(got)


def occupancies(graph, rows, batch: int = 32) -> dict[str, np.ndarray]:
    """The chain's registered-hand ``occupancy`` and ``content`` (N, 52, 40, 1) each of
    manifest ``rows``' films (:mod:`.outline`), decoded as the graph decodes them."""
    import tensorflow as tf
    from tqdm import tqdm

    from tf_boneage.data.io import encoded_bytes

    keys = ("occupancy", "content")
    fn = tf.function(lambda b: graph.chain_bytes(b, keys)[0], reduce_retracing=True)
    if graph.input_size is not None:  # one resize for the batch: the graph's own path
        fn = tf.function(
            lambda b: {k: v for k, v in graph.preprocessor(*graph.decode(b)).items() if k in keys},
            reduce_retracing=True,
        )
    got = {k: [] for k in keys}
    for start in tqdm(range(0, len(rows), batch), desc="outline", unit="batch"):
        part = rows.iloc[start : start + batch]
        out = fn(tf.constant([encoded_bytes(p) for p in part["image_path"]]))
        for k in keys:
            got[k].append(out[k].numpy())
    return {k: np.concatenate(v) for k, v in got.items()}


def calibrate(
    graph, rows, batch: int = 32, outline_rows=None, canonical=None, qc_rows=None
) -> dict:
    """Fit and set ``graph``'s per-sex std scale and its interval's factors per sex and age
    band (:mod:`.interval`) on labelled manifest ``rows`` (not the test split); with
    ``outline_rows`` (training films) also the canonical outline and the content template,
    fitted on those, and the registration-fit and content-match thresholds, fitted on
    ``rows`` (:mod:`.outline`). ``canonical`` (52, 40): the outline the training cache's
    orientation step used (``cache/outline.npy``): kept as it is, not refitted, so that the
    graph turns films as the cache did. ``qc_rows``: more good films (never the test split)
    that the QC thresholds (registration and image checks, not the interval) are fitted on
    together with ``rows``: a 0.5 % quantile of 500 films rests on two or three of them.
    Returns the scales, the QC thresholds and the coverage on ``rows`` before and after, by
    sex."""
    import tensorflow as tf

    from tf_boneage.export import interval, outline

    graph.set_std_scale(1.0, 1.0)
    graph.set_interval_scale(np.ones(graph.interval_scale.shape))
    given = canonical is not None
    if given:  # the orientation step checks its choices against it from the first film
        graph.set_outline(canonical, 0.0)
    if outline_rows is not None and len(rows) >= outline.MIN_ROWS:
        maps = occupancies(graph, outline_rows, batch)
        if not given:
            canonical = outline.mean_outline(maps["occupancy"])
        template = outline.mean_outline(maps["content"])
        graph.set_outline(canonical, 0.0)
        graph.set_template(template, -1.0)
    fn = tf.function(graph.predict_bytes, reduce_retracing=True)
    out = predict_rows(fn, rows, batch, desc="calibrate")
    qc_films, extra = rows, None
    if qc_rows is not None and len(qc_rows):
        extra = predict_rows(fn, qc_rows, batch, desc="QC films")
        qc_films = pd.concat([rows, qc_rows], ignore_index=True)
    both = lambda key: (  # noqa: E731  (the QC scores of rows and qc_rows)
        out[key] if extra is None else np.concatenate([out[key], extra[key]])
    )
    qc = None
    if outline_rows is not None and len(rows) >= outline.MIN_ROWS:
        min_fit, min_match, rejected = outline.joint_thresholds(
            both("registration_fit"), both("content_match")
        )
        graph.set_outline(canonical, min_fit)
        graph.set_template(template, min_match)
        qc = {
            "outline_films": int(len(outline_rows)),
            "qc_films": int(len(qc_films)),
            "outline_from": "cache" if given else "outline_rows",
            "min_registration_fit": min_fit,
            "min_content_match": min_match,
            "rejected": rejected,
            "fit_median": float(np.median(out["registration_fit"])),
            "match_median": float(np.median(out["content_match"])),
        }
    if "sharpness" in out and len(rows) >= 50:
        halved = halved_sharpness(graph, qc_films, batch)
        sharp, black = both("sharpness"), both("black_share")
        low, high = image_limits(sharp, black, halved)
        doubt = min(high, max(fitted_quantile(black, DOUBT_QUANTILE, "limits"), 1e-6))
        grey = both("grey_range") if "grey_range" in out else np.ones_like(sharp)
        least = range_limit(grey) if "grey_range" in out else 0.0
        graph.set_image_limits(low, high, least, doubt)
        steps = both("step_share")
        max_steps = step_limit(steps)
        graph.set_step_limit(max_steps)
        qc = {
            **(qc or {}),
            "qc_films": int(len(qc_films)),
            "min_sharpness": low,
            "max_black_share": high,
            "doubt_black_share": doubt,
            "min_grey_range": least,
            "max_step_share": max_steps,
            "rejected_by_image_checks": float(
                ((sharp < low) | (black > high) | (grey < least) | (steps > max_steps)).mean()
            ),
        }
    truth, male = rows["boneage"].to_numpy(float), rows["male"].to_numpy().astype(bool)
    report = {"n": int(len(rows))}
    if qc is not None:
        report["registration_qc"] = qc
    try:
        scales = fit_per_sex(truth, out["bone_age_months"], out["bone_age_std"], male)
    except ValueError as exc:  # the registration QC stands without the std scale
        report["std_error"] = str(exc)
        return report
    graph.set_std_scale(scales["male"], scales["female"])
    factor = np.where(male, scales["male"], scales["female"])
    if len(rows) >= 50:  # on rows alone: the networks trained on the extra QC films
        limit = std_limit(out["bone_age_std"] * factor)
        report["certainty_qc"] = {"max_std": limit}
        graph.set_std_limit(limit)
    table = interval.fit(truth, out["bone_age_months"], out["bone_age_std"], male)
    graph.set_interval_scale(table)
    report.update(scale=scales, interval_scale=table)
    factor_i = interval.factors(table, out["bone_age_months"], male)
    low, high = interval.bounds(out["bone_age_months"], out["bone_age_std"], factor_i)
    report["interval_coverage"] = {
        sex: interval.coverage(truth[m], low[m], high[m])
        for sex, m in (("all", np.ones_like(male)), ("male", male), ("female", ~male))
    }
    for name, std in (("before", out["bone_age_std"]), ("after", out["bone_age_std"] * factor)):
        report[name] = {
            sex: coverage(truth[m], out["bone_age_months"][m], std[m])
            for sex, m in (("all", np.ones_like(male)), ("male", male), ("female", ~male))
        }
    return report
