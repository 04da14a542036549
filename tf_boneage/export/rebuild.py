"""An end-to-end export rebuilt from itself, so that a change to the graph's code costs an
export, not a retrain.

Every export written by :func:`.saved_model.export_end_to_end` carries
``assets.extra/graph.json`` (:func:`record`): the architecture of each of its networks (Keras
JSON, no weights), the chain's settings, the ensemble's members, test-time views and per-sex
weights. :func:`rebuild` builds a fresh :class:`~.end_to_end.BoneAgeGraph` from it with the
code installed now and restores every variable (network weights, QC limits, interval and
calibration factors) from the export's own ``variables/``; :func:`reexport` writes that graph
as a new version. No copy of the weights is kept beside a SavedModel: the SavedModel is the
copy.

    tf-boneage reexport saved_models/boneage_rsna100/2 --out build/saved_models/boneage_rsna100
"""

from __future__ import annotations

import json
from pathlib import Path

import keras
import tensorflow as tf

from tf_boneage.training import runs

GRAPH_FILE = "graph.json"
#: the layout of ``graph.json``; an older or newer one is refused with the command to re-export
FORMAT = 1
SEXES = ("male", "female")


def _network_names(graph) -> dict[str, keras.Model]:
    """``{role: model}``: ``unet``, ``landmarks``, ``orientation`` (when present) and each
    member's networks by run name (``A_reg_male``; ``A_reg_both`` for a both-sexes member)."""
    pre = graph.preprocessor
    nets = {"unet": pre.unet, "landmarks": pre.landmark_model, "orientation": pre.orient_model}
    for member in graph.members:
        if member.both is not None:
            nets[member.name] = member.both
        else:
            male, female = runs.parse(member.name).pair
            nets[male], nets[female] = member.male, member.female
    return {k: v for k, v in nets.items() if v is not None}


def record(graph) -> dict:
    """What :func:`rebuild` needs besides the variables: a JSON-ready dict."""
    cfg = graph.preprocessor.config
    weights, bias = graph.weights.numpy(), graph.bias.numpy()
    run_tta = {}
    for member in graph.members:
        names = [member.name] if member.both is not None else runs.parse(member.name).pair
        run_tta.update(dict.fromkeys(names, member.tta))
    return {
        "format": FORMAT,
        "input_size": None if graph.input_size is None else list(graph.input_size),
        "assume_aspect": graph.assume_aspect,
        "chain_config": {
            "frame": [cfg.frame.height, cfg.frame.width],
            "region_sizes": {k: list(v) for k, v in cfg.region_sizes.items()},
            "orient": cfg.orient,
            "orient_size": cfg.orient_size,
            "orient_margin": cfg.orient_margin,
            "landmark_passes": cfg.landmark_passes,
            "orient_trust": cfg.orient_trust,
        },
        "outline_in_chain": graph.preprocessor.outline is not None,
        "members": [m.name for m in graph.members],
        "run_tta": run_tta,
        "params": {
            sex: {"weights": [float(v) for v in weights[i]], "bias": float(bias[i])}
            for i, sex in enumerate(SEXES)
        },
        "networks": {k: json.loads(m.to_json()) for k, m in _network_names(graph).items()},
    }


def read_record(version_dir) -> dict:
    """``assets.extra/graph.json`` of an export; ValueError naming the file and what to do when
    it is missing or of another format."""
    path = Path(version_dir) / "assets.extra" / GRAPH_FILE
    if not path.is_file():
        raise ValueError(
            f"{path} missing: this export cannot be rebuilt from itself; export it again from "
            "its training runs (training/export.py)"
        )
    doc = json.loads(path.read_text())
    if doc.get("format") != FORMAT:
        raise ValueError(
            f"{path}: graph format {doc.get('format')!r}, this version reads {FORMAT}; "
            "export it again from its training runs (training/export.py)"
        )
    return doc


def rebuild(version_dir):
    """A :class:`~.end_to_end.BoneAgeGraph` equal to the export at ``version_dir`` (a version
    folder), built by the code installed now, every variable restored from the export.
    ``graph.stage_models`` names its networks as :func:`.end_to_end.from_runs` does. A QC
    limit of :data:`~.end_to_end.LATER_LIMITS` the export does not hold gets the value that
    passes every film and is named in ``graph.unfitted_limits`` (every other variable must
    match)."""
    import tf_boneage.models  # noqa: F401  (registers the custom layers)
    from tf_boneage.export.end_to_end import LATER_LIMITS, BoneAgeGraph, members_from_spec
    from tf_boneage.preprocessing import chain

    version_dir = Path(version_dir)
    doc = read_record(version_dir)
    nets = {
        role: keras.models.model_from_json(json.dumps(config))
        for role, config in doc["networks"].items()
    }
    cfg = doc["chain_config"]
    pre = chain.load(
        nets["unet"],
        nets.get("landmarks"),
        tuple(cfg["frame"]),
        {k: tuple(v) for k, v in cfg["region_sizes"].items()},
        cfg["orient"],
        cfg["orient_size"],
        nets.get("orientation"),
        cfg["orient_margin"],
        cfg["landmark_passes"],
        cfg["orient_trust"],
    )
    members = members_from_spec(doc["members"], nets.__getitem__, doc["run_tta"].__getitem__)
    graph = BoneAgeGraph(pre, members, doc["params"], doc["input_size"], doc["assume_aspect"])
    if doc["outline_in_chain"]:
        pre.outline = graph.outline
    variables = str(version_dir / "variables" / "variables")
    saved = {key.split("/")[0] for key, _ in tf.train.list_variables(variables)}
    unfitted = [name for name in LATER_LIMITS if name not in saved]
    for name in unfitted:  # untracked while reading: everything else must match
        delattr(graph, name)
    status = tf.train.Checkpoint(graph).read(variables)
    try:
        status.assert_existing_objects_matched()
    except AssertionError as exc:
        raise ValueError(
            f"{version_dir}: its variables do not fit the graph this code builds ({exc}); "
            "export it again from its training runs (training/export.py)"
        ) from None
    status.expect_partial()
    for name in unfitted:  # the value that passes every film, until fitted
        setattr(graph, name, tf.Variable(LATER_LIMITS[name], trainable=False, name=name))
    graph.unfitted_limits = unfitted
    graph.stage_models = {k: v for k, v in nets.items() if k != "orientation"}
    if "orientation" in nets:
        graph.stage_models["orientation"] = nets["orientation"]
    return graph


def reexport(
    version_dir, model_dir, version: int | None = None, manifest=None, fit_split: str = "val"
) -> Path:
    """:func:`rebuild` the export at ``version_dir`` and write it as a new version of
    ``model_dir`` (atomically, never over an existing one) with the same metadata, plus
    ``reexported_from`` (the source folder and its ``saved_model.pb`` SHA-256). QC limits the
    export does not hold (``graph.unfitted_limits``) are fitted on ``manifest``'s
    ``fit_split`` films and its QC ``train`` films
    (:func:`~tf_boneage.export.calibration.fit_later_limits`) and written to the metadata as
    ``refitted_limits``; without a ``manifest`` such an export is refused (``ValueError``)."""
    from tf_boneage.export import load, saved_model
    from tf_boneage.preprocessing.spec import sha256

    version_dir = Path(version_dir)
    meta = dict(load.metadata(version_dir))
    for key in saved_model.WRITTEN_KEYS:
        meta.pop(key, None)
    meta["reexported_from"] = {
        "path": str(version_dir),
        "saved_model_sha256": sha256(version_dir / "saved_model.pb"),
    }
    graph = rebuild(version_dir)
    if graph.unfitted_limits:
        if manifest is None:
            raise ValueError(
                f"{version_dir} holds no {', '.join(graph.unfitted_limits)} (QC limits added "
                "since it was exported): give the manifest of its training data (--manifest) "
                "to fit them"
            )
        meta["refitted_limits"] = _fit_limits(graph, manifest, fit_split)
    return saved_model.export_end_to_end(graph, model_dir, version, meta)


def _fit_limits(graph, manifest, fit_split: str) -> dict:
    """Fit ``graph.unfitted_limits`` on ``manifest``'s ``fit_split`` and QC ``train`` films."""
    from tf_boneage.data.manifest import load_manifest
    from tf_boneage.export import calibration

    table = load_manifest(manifest)
    rows = table[table["split"] == fit_split].reset_index(drop=True)
    if not len(rows):
        raise ValueError(f"{manifest}: no {fit_split!r} films to fit the QC limits on")
    extra = calibration.qc_extra_rows(table)
    fitted = calibration.fit_later_limits(graph, rows, extra)
    fitted["films"] = f"{fit_split} {len(rows)} + train {len(extra)}"
    return fitted
