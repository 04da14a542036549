"""Versioned SavedModels in TF Serving's layout (``ROOT/NAME/VERSION/``), written atomically.

A version is saved into a hidden temporary folder beside the final one and renamed into place,
so TF Serving (which polls ``ROOT/NAME``) never sees a half-written version, and an existing
version is never overwritten. ``models.config`` lists every model under ``ROOT`` for
``tensorflow_model_server --model_config_file``.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

import tensorflow as tf

from tf_boneage.export import rebuild
from tf_boneage.export.end_to_end import OUTPUTS, BoneAgeGraph

#: our description of an export, beside TF Serving's files (``assets.extra/``)
METADATA_FILE = "tf_boneage.json"
#: the layout of :data:`METADATA_FILE`
FORMAT = 1
#: the keys :func:`export_end_to_end` writes itself (a re-export writes them anew)
WRITTEN_KEYS = (
    "format",
    "input_size",
    "assume_aspect",
    "members",
    "member_tta",
    "outputs",
    "networks",
    "files",
)


def versions(model_dir: str | os.PathLike) -> list[int]:
    """Existing integer versions under ``model_dir`` (sorted)."""
    path = Path(model_dir)
    if not path.is_dir():
        return []
    return sorted(int(p.name) for p in path.iterdir() if p.is_dir() and p.name.isdigit())


def latest(model_dir: str | os.PathLike) -> Path:
    """The newest version folder under ``model_dir``; FileNotFoundError when there is none."""
    found = versions(model_dir)
    if not found:
        raise FileNotFoundError(f"{model_dir}: no SavedModel versions (folders named 1, 2, ...)")
    return Path(model_dir) / str(found[-1])


def resolve(path: str | os.PathLike) -> Path:
    """``saved_models/NAME`` -> its newest version; a version folder as it is."""
    p = Path(path)
    if (p / "saved_model.pb").is_file():
        return p
    return latest(p)


def write_atomic(save, model_dir: str | os.PathLike, version: int | None = None) -> Path:
    """Call ``save(tmp_path)`` then rename ``tmp_path`` to ``model_dir/VERSION``.

    ``version`` defaults to the next integer. Raises FileExistsError for an existing version
    (nothing is overwritten); the temporary folder is removed when ``save`` fails."""
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    version = version if version is not None else (versions(model_dir) or [0])[-1] + 1
    final = model_dir / str(int(version))
    if final.exists():
        raise FileExistsError(f"{final} exists: versions are never overwritten")
    tmp = model_dir / f".tmp-{version}-{uuid.uuid4().hex[:8]}"
    try:
        save(tmp)
        os.rename(tmp, final)  # atomic on one file system; fails if final appeared meanwhile
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def signatures(graph: BoneAgeGraph) -> dict:
    """``serving_default``: encoded images + sex; ``predict_images``: decoded tensors of any
    size; ``predict_tflite``: one decoded image at ``input_size`` (fixed shapes, the signature
    TFLite converts: decoding stays outside the .tflite); ``decode``: encoded images ->
    the ``images`` and ``original_size`` the other signatures take (what runs before TFLite);
    ``explain``: registered image, Grad-CAM heatmap and mask for the overlays;
    ``explain_bytes``: the same from encoded images, decoded as ``serving_default`` does.

    A native-size graph (``input_size`` None) takes films at their own size everywhere:
    ``serving_default`` and ``explain_bytes`` run the chain film by film
    (:meth:`BoneAgeGraph.chain_bytes`), ``predict_tflite`` takes (1, H, W, 1) for any H, W,
    ``decode`` returns one film (or films of one size) as it is."""
    native = graph.input_size is None
    h, w = (None, None) if native else graph.input_size

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, None, None, 1], tf.float32, name="images"),
            tf.TensorSpec([None], tf.float32, name="male"),
            tf.TensorSpec([None, 2], tf.float32, name="original_size"),
        ]
    )
    def predict_images(images, male, original_size):
        return graph.predict_decoded(images, male, original_size)

    @tf.function(
        input_signature=[
            tf.TensorSpec([None], tf.string, name="image_bytes"),
            tf.TensorSpec([None], tf.float32, name="male"),
        ]
    )
    def serving_default(image_bytes, male):
        if native:  # films of any sizes in one request: the chain film by film
            return graph.predict_bytes(image_bytes, male)
        # decode, then the predict_images function itself (traced once, called here): the
        # chain is the same graph in both signatures, and the export traces it once less
        images, original_size = graph.decode(image_bytes)
        return predict_images(images, male, original_size)

    @tf.function(
        input_signature=[
            tf.TensorSpec([1, h, w, 1], tf.float32, name="images"),
            tf.TensorSpec([1], tf.float32, name="male"),
            tf.TensorSpec([1, 2], tf.float32, name="original_size"),
        ]
    )
    def predict_tflite(images, male, original_size):
        return graph.predict_decoded(images, male, original_size)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
    def decode(image_bytes):
        images, original_size = graph.decode(image_bytes)
        return {"images": images, "original_size": original_size}

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, h, w, 1], tf.float32, name="images"),
            tf.TensorSpec([None], tf.float32, name="male"),
            tf.TensorSpec([None, 2], tf.float32, name="original_size"),
        ]
    )
    def explain(images, male, original_size):
        return graph.explain(images, male, original_size)

    @tf.function(
        input_signature=[
            tf.TensorSpec([None], tf.string, name="image_bytes"),
            tf.TensorSpec([None], tf.float32, name="male"),
        ]
    )
    def explain_bytes(image_bytes, male):
        if native:
            return graph.explain_bytes(image_bytes, male)
        # decoded as serving_default decodes, then the explain function itself
        images, original_size = graph.decode(image_bytes)
        return {**explain(images, male, original_size), "images": images}

    return {
        "serving_default": serving_default,
        "predict_images": predict_images,
        "predict_tflite": predict_tflite,
        "decode": decode,
        "explain": explain,
        "explain_bytes": explain_bytes,
    }


def network_names(graph: BoneAgeGraph) -> dict:
    """Keras model names of the graph's networks (they scope the ops of the converted graph:
    selective int8 quantizes the ``regions`` only, see :func:`tflite.convert`)."""
    pre = graph.preprocessor
    return {
        "unet": pre.unet.name,
        "landmarks": pre.landmark_model.name,
        "regions": sorted({m.name for m in graph.keras_models}),
    }


def export_end_to_end(
    graph: BoneAgeGraph, model_dir, version: int | None = None, metadata: dict | None = None
) -> Path:
    """The end-to-end SavedModel as the next (or given) version of ``model_dir``."""
    sigs = signatures(graph)
    # keep the functions on the module so they are restorable as attributes too
    graph.serving_default = sigs["serving_default"]
    graph.predict_images = sigs["predict_images"]
    graph.predict_tflite = sigs["predict_tflite"]
    graph.decode_images = sigs["decode"]
    graph.explain_images = sigs["explain"]
    graph.explain_encoded = sigs["explain_bytes"]

    def save(path: Path) -> None:
        tf.saved_model.save(graph, str(path), signatures=sigs)
        training_only = training_variables(path)
        if training_only:
            raise ValueError(
                f"the export would carry training-only variables ({training_only[:3]}...): "
                "load the models with compile=False"
            )
        # TF Serving ignores assets.extra: our own description of the export, and what
        # rebuilds the graph from this export alone (:mod:`.rebuild`)
        extra = path / "assets.extra"
        extra.mkdir(exist_ok=True)
        (extra / rebuild.GRAPH_FILE).write_text(json.dumps(rebuild.record(graph)))
        written = {
            "format": FORMAT,
            "input_size": None if graph.input_size is None else list(graph.input_size),
            "assume_aspect": graph.assume_aspect,
            "members": [m.name for m in graph.members],
            "member_tta": {m.name: m.tta for m in graph.members},
            "outputs": list(OUTPUTS),
            "networks": network_names(graph),
            "files": file_digests(path),
        }
        (extra / METADATA_FILE).write_text(json.dumps({**(metadata or {}), **written}, indent=2))

    return write_atomic(save, model_dir, version)


def file_digests(version_dir) -> dict[str, str]:
    """``{path relative to version_dir: SHA-256}`` of every file of an export but its own
    metadata file (which holds this table)."""
    from tf_boneage.preprocessing.spec import sha256

    root = Path(version_dir)
    skip = Path("assets.extra") / METADATA_FILE
    return {
        p.relative_to(root).as_posix(): sha256(p)
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.relative_to(root) != skip
    }


def verify(version_dir) -> list[str]:
    """What differs between an export's files and the SHA-256 its metadata records (missing,
    changed or unrecorded files); empty when intact. An export without the record: one line
    saying so."""
    root = Path(version_dir)
    meta_path = root / "assets.extra" / METADATA_FILE
    recorded = json.loads(meta_path.read_text()).get("files") if meta_path.is_file() else None
    if not recorded:
        return [f"{root}: no file digests recorded"]
    found = file_digests(root)
    problems = [f"{name}: missing" for name in sorted(set(recorded) - set(found))]
    problems += [f"{name}: not in the record" for name in sorted(set(found) - set(recorded))]
    problems += [
        f"{name}: SHA-256 differs from the record"
        for name in sorted(set(found) & set(recorded))
        if found[name] != recorded[name]
    ]
    return problems


def training_variables(saved_model_dir) -> list[str]:
    """Names of optimizer (or other training-only) variables in a SavedModel: an export for
    serving holds inference weights only."""
    index = Path(saved_model_dir) / "variables" / "variables"
    names = [name for name, _ in tf.train.list_variables(str(index))]
    return [n for n in names if "optimizer" in n.lower() or "/iterations" in n]


def export_stage(model, model_dir, version: int | None = None) -> Path:
    """One Keras model (a stage: U-Net, landmarks, a region net) as a SavedModel version
    (``serving_default`` from ``model.export``)."""
    return write_atomic(
        lambda p: model.export(str(p), format="tf_saved_model", verbose=False), model_dir, version
    )


def write_models_config(root: str | os.PathLike, base: str = "/models") -> Path:
    """``ROOT/models.config`` listing every model folder under ``root`` that has a version,
    with ``base_path`` as seen inside the serving container (``base``/NAME)."""
    root = Path(root)
    names = sorted(p.name for p in root.iterdir() if p.is_dir() and versions(p))
    entries = "".join(
        f'  config {{\n    name: "{n}"\n    base_path: "{base}/{n}"\n'
        f'    model_platform: "tensorflow"\n  }}\n'
        for n in names
    )
    path = root / "models.config"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f"model_config_list {{\n{entries}}}\n")
    os.replace(tmp, path)
    return path
