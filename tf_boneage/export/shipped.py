"""The model this package ships, and what every run says about the model it uses.

The rsna100 preset's end-to-end SavedModel is committed to the repository at
``saved_models/boneage_rsna100/VERSION/`` (TF Serving's layout, its model card beside it) and
installed by a wheel under ``share/tf_boneage/saved_models/`` of the environment (setup.cfg's
``data_files``). :func:`locate` finds it in either place; ``predict`` and the Python API
use it when no model is given, and never pick a model trained on the synthetic phantoms by
themselves. :func:`describe` is the line each run prints about the model it used.
"""

from __future__ import annotations

import site
import sys
from collections.abc import Callable
from pathlib import Path

#: the shipped model's TF Serving name
NAME = "boneage_rsna100"
#: where a wheel installs the shipped model, below the environment's prefix
SHARE = Path("share") / "tf_boneage" / "saved_models"
#: what each preset's films are (the metadata's ``training.data`` of an export)
TRAINING_DATA = {
    "rsna100": "RSNA 2017 training films, 100 px copy",
    "paper": "RSNA 2017 training films at full size",
    "synthetic": "synthetic hand phantoms (tf-boneage synth)",
}


def roots(here: Path | None = None) -> list[Path]:
    """Folders that may hold the shipped model, in the order they are searched: the source
    checkout this package was imported from (``saved_models/`` beside ``tf_boneage/``), then
    the environment's, the user's and the installing prefix's
    ``share/tf_boneage/saved_models``."""
    here = Path(here or __file__).resolve()
    checkout = here.parents[2]
    found = []
    if (checkout / "setup.cfg").is_file():
        found.append(checkout / "saved_models")
    # the environment's prefix, the user's, and the prefix this package was installed under
    # (PREFIX/lib/pythonX.Y/site-packages/tf_boneage/export/shipped.py: pip --prefix)
    prefixes = [sys.prefix, site.getuserbase()]
    if len(here.parents) > 5 and here.parents[4].name == "lib":
        prefixes.append(str(here.parents[5]))
    for prefix in dict.fromkeys(prefixes):
        found.append(Path(prefix) / SHARE)
    return found


def locate(name: str = NAME) -> Path:
    """The newest version folder of the shipped model ``name``; FileNotFoundError listing the
    places searched when it is in none of them."""
    from tf_boneage.export import saved_model

    for root in roots():
        if saved_model.versions(root / name):
            return saved_model.latest(root / name)
    places = ", ".join(str(r / name) for r in roots())
    raise FileNotFoundError(
        f"the shipped model {name} is not installed (searched {places}); pass --model "
        "saved_models/NAME, or reinstall the package from the repository"
    )


def trained_on_synthetic(meta: dict) -> bool:
    """True for an export whose networks learnt from the synthetic phantoms (the demo's)."""
    training = meta.get("training") or {}
    return meta.get("preset") == "synthetic" or training.get("preset") == "synthetic"


def describe(path, meta: dict) -> str:
    """One line naming the model a run uses: name, version, training data, resolution, e.g.
    ``model boneage_rsna100 version 2: RSNA 2017 training films, 100 px copy (10,464 films);
    films resized to 100x100 px (saved_models/boneage_rsna100/2)``."""
    path = Path(path)
    training = meta.get("training") or {}
    preset = training.get("preset", meta.get("preset"))
    data = training.get("data") or TRAINING_DATA.get(preset, f"preset {preset or 'unknown'}")
    counts = training.get("counts") or {}
    if counts.get("train"):
        data += f" ({counts['train']:,} films)"
    size = meta.get("input_size")
    resolution = f"films resized to {size[0]}x{size[1]} px" if size else "films at native size"
    name = meta.get("name") or path.parent.name
    return f"model {name} version {path.name}: {data}; {resolution} ({path})"


def synthetic_warning(path) -> str:
    """The warning ``predict`` prints for a model trained on phantoms."""
    return (
        f"WARNING: {path} was trained on synthetic phantoms (the demo's model), not on "
        "radiographs: its ages of real films mean nothing. Leave out --model to use the "
        f"shipped {NAME}."
    )


def _to_stderr(text: str) -> None:
    print(text, file=sys.stderr)


def resolve(model=None, say: Callable[[str], None] | None = _to_stderr) -> Path:
    """The SavedModel version a run uses: ``model`` (``saved_models/NAME`` or a version
    folder), else the shipped model (:func:`locate`). ``say`` gets the line naming it
    (:func:`describe`) and, for a model trained on the synthetic phantoms, a warning; None:
    silent. FileNotFoundError when there is no such model, ValueError for an export of
    another metadata format (:data:`.saved_model.FORMAT`) than this version reads."""
    from tf_boneage.export import load, saved_model

    path = saved_model.resolve(model) if model else locate()
    meta = load.metadata(path)
    if meta and meta.get("format") != saved_model.FORMAT:  # {}: a per-stage export
        raise ValueError(
            f"{path}: an export of format {meta.get('format')!r} (this version reads "
            f"{saved_model.FORMAT}); export it again from its runs with training/export.py"
        )
    if say is not None:
        say(describe(path, meta))
        if trained_on_synthetic(meta):
            say(synthetic_warning(path))
    return path
