"""Typed training configs: a dataclass per job, presets, YAML files and ``key=value`` overrides.

Every value is checked before any training starts; a bad one raises :class:`ConfigError`
naming the key, the value and what is allowed. The resolved config is written next to the
outputs (``config.yaml``) so a run can be repeated exactly.
"""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import yaml


class ConfigError(ValueError):
    """A config value that cannot be used: names the key."""

    def __init__(self, key: str, value, allowed: str):
        self.key = key
        super().__init__(f"config key {key!r}: {value!r} is not valid ({allowed})")


@dataclasses.dataclass
class RegionConfig:
    """One region network (paper: regions A, B, C x regression / classification x sex)."""

    SECTION: typing.ClassVar[str] = "region"
    manifest: str = ""
    out: str = "runs/region"
    input: str = "cache"  # "cache": preprocessed region crops; "raw": unregistered images
    region: str = "A"
    head: str = "regression"
    sex: str = "both"  # both | male | female | input
    image_size: tuple = (104, 80)
    block: str = "authors"
    filters: tuple = (32, 64, 128, 128, 256, 384)
    dense_units: int = 2048
    dropout: float = 0.3
    pool_padding: str = "same"
    epochs: int = 30
    batch_size: int = 32
    learning_rate: float = 1e-4  # 1e-3 saturates the tanh head within a few steps (measured)
    patience: int = 8
    # clean training crops that reset batch norm before each validation (0: off; see
    # SegmentationConfig.val_recalibration)
    val_recalibration: int = 0
    rotation: float = 10.0
    scale: tuple = (0.9, 1.1)
    shift: float = 0.05
    # probabilities that a training crop looks under-exposed (up to half its hand clipped to
    # black) or blurred (as by resampling a rotated film): data.augment.Degradation
    underexposed: float = 0.0
    blurred: float = 0.0
    # probability that a training crop gets noise inside the hand of up to max_noise (a share
    # of the grey range) per pixel: data.augment.Degradation
    noisy: float = 0.0
    max_noise: float = 8.0 / 255.0
    seed: int = 0
    strategy: str = "default"  # default | mirrored | multi-worker
    # float32 | mixed_float16 | mixed_bfloat16 (GPUs / TPUs; heads and losses stay float32)
    precision: str = "float32"
    max_train: int = 0  # 0 = all training rows
    # > 0: drop training rows whose cached landmark plausibility (share of the chain's four
    # landmark checks that pass) is below this, or whose mask is empty; val / test never
    train_min_plausibility: float = 0.0
    # "last": keep the last epoch's weights, so the validation split stays untouched for the
    # ensemble fit (the cosine schedule ends at a low rate); "best": lowest validation loss
    select: str = "last"
    # test-time views (:mod:`tf_boneage.preprocessing.views`) averaged in the run's
    # predictions and, once exported, in the graph; 1 = the crop alone
    tta: int = 1
    # classification head: weight (per nat) of a cross-entropy between the softmax and a
    # Gaussian of ``bin_sigma`` months around the true age, added to the paper's MAE on the
    # expected value; 0 = the paper's loss alone (whose softmax collapsed onto one bin below
    # 170 months for every film older than that: RESULTS.md, ablation). Classification heads
    # only: a regression run records 0 (so one preset serves both heads)
    bin_loss_weight: float = 0.0
    bin_sigma: float = 12.0

    def validate(self) -> RegionConfig:
        choices = {
            "input": ("cache", "raw"),
            "region": ("A", "B", "C"),
            "head": ("regression", "classification"),
            "sex": ("both", "male", "female", "input"),
            "block": ("authors", "paper"),
            "pool_padding": ("same", "valid"),
            "strategy": ("default", "mirrored", "multi-worker"),
            "select": ("last", "best"),
            "precision": PRECISIONS,
        }
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise ConfigError(key, getattr(self, key), f"one of {allowed}")
        for key in ("epochs", "batch_size", "dense_units"):
            if int(getattr(self, key)) < 1:
                raise ConfigError(key, getattr(self, key), "an integer >= 1")
        if self.max_train < 0:
            raise ConfigError("max_train", self.max_train, "0 (all) or a positive count")
        from tf_boneage.preprocessing.views import VIEWS

        if not 1 <= int(self.tta) <= len(VIEWS):
            raise ConfigError("tta", self.tta, f"1-{len(VIEWS)} views")
        if not 0 <= self.dropout < 1:
            raise ConfigError("dropout", self.dropout, "in [0, 1)")
        if self.bin_loss_weight < 0:
            raise ConfigError("bin_loss_weight", self.bin_loss_weight, ">= 0 (0 = MAE alone)")
        if self.head != "classification":  # no bins: a regression run records 0
            self.bin_loss_weight = 0.0
        for key in ("underexposed", "blurred", "noisy"):
            if not 0 <= getattr(self, key) <= 1:
                raise ConfigError(key, getattr(self, key), "a probability in [0, 1]")
        if not 0 <= self.max_noise < 1:
            raise ConfigError("max_noise", self.max_noise, "a share of the grey range in [0, 1)")
        if not self.bin_sigma > 0:
            raise ConfigError("bin_sigma", self.bin_sigma, "> 0 months")
        if not 0 < self.learning_rate < 1:
            raise ConfigError("learning_rate", self.learning_rate, "in (0, 1)")
        if len(self.image_size) != 2 or min(self.image_size) < 8:
            raise ConfigError("image_size", self.image_size, "(height, width) >= 8")
        if len(self.scale) != 2 or not 0 < self.scale[0] <= self.scale[1]:
            raise ConfigError("scale", self.scale, "(low, high) with 0 < low <= high")
        if not self.manifest:
            raise ConfigError("manifest", self.manifest, "a manifest CSV path")
        if not Path(self.manifest).is_file():
            raise ConfigError("manifest", self.manifest, "an existing file")
        return self


#: Preset files: one YAML per setting (``paper``, ``rsna100``, ``synthetic``), one section per
#: job (``segmentation``, ``landmarks``, ``region``), plus ``regions`` (crop size per region)
#: and ``table`` (what ``training/table.py`` trains).
PRESET_DIR = Path(__file__).resolve().parent / "presets"
PRESETS = sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def read_preset(name: str) -> dict:
    """The whole preset file ``name`` as a dict."""
    if name not in PRESETS:
        raise ConfigError("preset", name, f"one of {PRESETS}")
    return yaml.safe_load((PRESET_DIR / f"{name}.yaml").read_text())


@dataclasses.dataclass
class SegmentationConfig:
    """U-Net hand segmentation, bootstrapped in rounds (round 0: pose or given masks)."""

    SECTION: typing.ClassVar[str] = "segmentation"
    manifest: str = ""
    out: str = "runs/seg"
    size: int = 96  # U-Net input (square), a multiple of 16
    depth: int = 4
    base_filters: int = 16
    # exposure normalised in the U-Net (models.layers.GreyStretch); measured off for rsna100:
    # no mask kept under clipping, burned-in text moves its 99th percentile (RESULTS.md)
    normalize: bool = False
    # range of the training films' brightness shift (share of the grey range): a shift down
    # clips the darkest pixels to black as on an under-exposed film; the mask stays the hand's
    # (default: data.augment.BRIGHTNESS, not imported here: configs load without TensorFlow)
    brightness: float = 0.1
    rotation: float = 20.0  # largest in-plane turn of a training film (degrees)
    rounds: int = 2  # 1 = pose / given masks only
    epochs: tuple = (40, 4)  # per round (the last value repeats)
    batch_size: int = 16
    learning_rate: float = 1e-3
    patience: int = 8
    max_pseudo: int = 0  # 0 = every unlabelled training image is a candidate
    # clean training images whose statistics reset batch norm before each validation (0: the
    # moving statistics as trained). With few steps per epoch (the paper demo: 14 at batch 4)
    # the moving statistics still hold their initial values and validation losses are noise
    # (landmarks: val MSE 86-181 against 0.18 in training), so the best epoch is chosen at random
    val_recalibration: int = 0
    # ids-only split of the pose-annotated images (made on first use, then kept)
    pose_split: str = "data_manifests/handpose_split.csv"
    seed: int = 0
    strategy: str = "default"
    precision: str = "float32"  # float32 | mixed_float16 | mixed_bfloat16

    def validate(self) -> SegmentationConfig:
        _check_common(self)
        if self.size % (2**self.depth):
            raise ConfigError("size", self.size, f"a multiple of {2**self.depth} (depth)")
        if self.rounds < 1 or not self.epochs or min(self.epochs) < 1:
            raise ConfigError(
                "epochs" if self.rounds >= 1 else "rounds",
                self.epochs if self.rounds >= 1 else self.rounds,
                ">= 1",
            )
        if not 0 <= self.brightness < 1:
            raise ConfigError("brightness", self.brightness, "in [0, 1)")
        if not 0 <= self.rotation <= 180:
            raise ConfigError("rotation", self.rotation, "0-180 degrees")
        return self


@dataclasses.dataclass
class LandmarkConfig:
    """The landmark regressor (tip, thumb, capitate) on segmented, equalised images."""

    SECTION: typing.ClassVar[str] = "landmarks"
    manifest: str = ""
    unet: str = ""  # U-Net .keras of the chain; "" = raw images
    out: str = "runs/landmarks"
    size: int = 96
    # 5 blocks (96 -> 3 x 3 x 256) and light dropout: with 4 blocks and dropout 0.3 the
    # 9216-wide flatten made the head's dropout noise dominate (train MSE stuck at 0.8)
    filters: tuple = (32, 64, 128, 256, 256)
    dense_units: int = 256
    dropout: float = 0.1
    epochs: int = 120
    batch_size: int = 16
    learning_rate: float = 1e-3
    patience: int = 15
    # clean training images that reset batch norm before each validation (0: off; see
    # SegmentationConfig.val_recalibration)
    val_recalibration: int = 0
    # largest in-plane turn of a training image (degrees); the chain's second look
    # (ChainConfig.landmark_passes) reads a film again turned upright by the first
    rotation: float = 25.0
    # probability that a training image looks as if its film had been darkened until up to
    # half its hand clipped to black (data.augment.Degradation, as the region crops)
    underexposed: float = 0.0
    pose_split: str = "data_manifests/handpose_split.csv"
    seed: int = 0
    strategy: str = "default"
    precision: str = "float32"  # float32 | mixed_float16 | mixed_bfloat16

    def validate(self) -> LandmarkConfig:
        _check_common(self)
        if not 0 <= self.underexposed <= 1:
            raise ConfigError("underexposed", self.underexposed, "a probability in [0, 1]")
        if not 0 <= self.rotation <= 180:
            raise ConfigError("rotation", self.rotation, "0-180 degrees")
        if self.unet and not Path(self.unet).is_file():
            raise ConfigError("unet", self.unet, "an existing .keras file or empty")
        if self.size < 2 ** len(self.filters):
            raise ConfigError("size", self.size, f">= {2 ** len(self.filters)} for the filters")
        return self


@dataclasses.dataclass
class OrientationConfig:
    """The orientation classifier (four quarter turns x two polarities) on whole films."""

    SECTION: typing.ClassVar[str] = "orientation"
    manifest: str = ""
    out: str = "runs/orientation"
    size: int = 64  # square input, a multiple of 2 ** len(filters)
    filters: tuple = (16, 32, 64, 128)
    dropout: float = 0.2
    epochs: int = 12
    batch_size: int = 32
    learning_rate: float = 1e-3
    patience: int = 8
    # degrees of in-plane rotation on top of the quarter turns (films are rarely held straight),
    # and the strength of the brightness / contrast changes (fractions of the range)
    rotation: float = 30.0
    exposure: float = 0.3
    max_train: int = 0  # 0 = all training films
    seed: int = 0
    strategy: str = "default"
    precision: str = "float32"  # float32 | mixed_float16 | mixed_bfloat16

    def validate(self) -> OrientationConfig:
        _check_common(self)
        if self.size % (2 ** len(self.filters)) or self.size < 2 ** len(self.filters):
            raise ConfigError("size", self.size, f"a multiple of {2 ** len(self.filters)}")
        if not 0 <= self.rotation <= 45:
            raise ConfigError("rotation", self.rotation, "0-45 degrees")
        if not 0 <= self.exposure < 1:
            raise ConfigError("exposure", self.exposure, "in [0, 1)")
        if not 0 <= self.dropout < 1:
            raise ConfigError("dropout", self.dropout, "in [0, 1)")
        if self.max_train < 0:
            raise ConfigError("max_train", self.max_train, "0 (all) or a positive count")
        return self


def _check_common(cfg) -> None:
    if cfg.strategy not in STRATEGIES:
        raise ConfigError("strategy", cfg.strategy, f"one of {STRATEGIES}")
    if cfg.precision not in PRECISIONS:
        raise ConfigError("precision", cfg.precision, f"one of {PRECISIONS}")
    for key in ("epochs", "batch_size"):
        value = getattr(cfg, key)
        if min(value if isinstance(value, tuple) else (value,)) < 1:
            raise ConfigError(key, value, "integers >= 1")
    if not 0 < cfg.learning_rate < 1:
        raise ConfigError("learning_rate", cfg.learning_rate, "in (0, 1)")
    if getattr(cfg, "val_recalibration", 0) < 0:
        raise ConfigError("val_recalibration", cfg.val_recalibration, "an integer >= 0")
    if not cfg.manifest:
        raise ConfigError("manifest", cfg.manifest, "a manifest CSV path")
    if not Path(cfg.manifest).is_file():
        raise ConfigError("manifest", cfg.manifest, "an existing file")


STRATEGIES = ("default", "mirrored", "multi-worker")
#: Keras dtype policies a run may train in (:meth:`tf_boneage.training.task.Task.compiled_model`)
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")


def _coerce(value: str, hint):
    origin = typing.get_origin(hint) or hint
    if origin in (tuple, list) or hint in ("tuple", tuple):
        parts = [p for p in str(value).strip("()[] ").replace("x", ",").split(",") if p.strip()]
        return tuple(float(p) if "." in p else int(p) for p in parts)
    if hint in (int, "int"):
        return int(value)
    if hint in (float, "float"):
        return float(value)
    return value


def load(cls, preset: str | None = None, file: str | None = None, overrides=()):
    """Build a config: defaults < preset < YAML file < ``key=value`` overrides; validated
    (:class:`ConfigError` names the key and what it must be).

    Args:
        cls: a config class (:class:`RegionConfig`, :class:`SegmentationConfig`,
            :class:`LandmarkConfig`, :class:`OrientationConfig`); its ``SECTION`` names the
            preset's section.
        preset: ``"paper"``, ``"rsna100"``, ``"synthetic"`` or None.
        file: a YAML file of the same keys, or None.
        overrides: ``"KEY=VALUE"`` strings (YAML values: ``filters=[16,32]``).

    Example:
        >>> from tf_boneage.training import config
        >>> import pathlib, tempfile
        >>> manifest = pathlib.Path(tempfile.mkdtemp()) / "manifest.csv"
        >>> _ = manifest.write_text("id,image_path,boneage,male,split")
        >>> sets = [f"manifest={manifest}", "region=B", "epochs=3"]
        >>> cfg = config.load(config.RegionConfig, "rsna100", None, sets)
        >>> cfg.region, cfg.epochs, cfg.learning_rate
        ('B', 3, 0.0003)
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values: dict = {}
    if preset is not None:
        values.update(read_preset(preset).get(cls.SECTION, {}))
    if file is not None:
        loaded = yaml.safe_load(Path(file).read_text()) or {}
        values.update(loaded)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ConfigError(item, item, "an override is KEY=VALUE")
        values[key.strip()] = raw.strip()
    for key in values:
        if key not in fields:
            raise ConfigError(key, values[key], f"unknown key; known keys: {sorted(fields)}")
    typed = {}
    for key, value in values.items():
        try:
            typed[key] = _coerce(value, fields[key].type) if isinstance(value, str) else value
        except ValueError:
            raise ConfigError(key, value, f"a value of type {fields[key].type}") from None
        if isinstance(typed[key], list):
            typed[key] = tuple(typed[key])
    return cls(**typed).validate()


#: beside a run's ``config.yaml``: the digest of the manifest it was trained on
DIGEST_FILE = "manifest.sha256"


def manifest_digest(path) -> str:
    """sha256 of what a manifest CSV says about its films: every column but the file paths
    (``*_path``), columns by name and rows by ``id``, so that a manifest moved or rewritten
    with its paths elsewhere keeps its digest and one with other films, labels or splits does
    not."""
    import hashlib

    import pandas as pd

    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    table = table[sorted(c for c in table.columns if not c.endswith("_path"))]
    if "id" in table.columns:
        table = table.sort_values("id", kind="stable")
    return hashlib.sha256(table.to_csv(index=False).encode()).hexdigest()


def check_unchanged(config, path: Path, ignore=("out", "manifest")) -> None:
    """Refuse to continue or reuse a run made with other settings: ``ConfigError`` naming the
    first key whose value in ``config`` differs from the run's saved ``path`` (its
    ``config.yaml``; keys it lacks count as their defaults). Nothing happens when ``path``
    does not exist. ``ignore``: keys that may differ (where the run and its manifest are).
    The manifest's content still counts: when :func:`save` recorded its digest
    (:data:`DIGEST_FILE`), a manifest of other content is refused under key ``manifest``."""
    path = Path(path)
    if not path.is_file():
        return
    saved = yaml.safe_load(path.read_text()) or {}
    for field in dataclasses.fields(config):
        if field.name in ignore:
            continue
        default = field.default if field.default is not dataclasses.MISSING else None
        old, new = saved.get(field.name, default), getattr(config, field.name)
        if isinstance(old, list | tuple):
            old = tuple(old)
        if old != new:
            raise ConfigError(
                field.name,
                new,
                f"{path.parent} was made with {field.name}={old!r}: run again with that value, "
                "or give another out, or remove that folder",
            )
    digest, manifest = path.parent / DIGEST_FILE, getattr(config, "manifest", None)
    known = digest.is_file() and manifest and Path(manifest).is_file()
    if known and manifest_digest(manifest) != digest.read_text().strip():
        raise ConfigError(
            "manifest",
            manifest,
            f"{path.parent} was made from a manifest of other content (films, labels or "
            "splits differ): give another out, or remove that folder",
        )


def save(config, path: Path) -> None:
    """``config`` as ``path`` (YAML), and the digest of its manifest beside it
    (:data:`DIGEST_FILE`, when the config names a manifest that exists)."""
    data = {
        k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    manifest = getattr(config, "manifest", None)
    if manifest and Path(manifest).is_file():
        (path.parent / DIGEST_FILE).write_text(manifest_digest(manifest) + "\n")


def from_command_line(cls, description: str, argv=None, extra=None):
    """Parse ``--preset`` / ``--config`` / ``--set`` (plus ``extra(parser)`` arguments) and
    build a validated ``cls`` config; a bad value exits with status 2 naming the key.
    Returns ``(config, parsed arguments)``."""
    import argparse

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--preset", default=None, choices=PRESETS)
    parser.add_argument("--config", default=None, help="YAML file")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    if extra is not None:
        extra(parser)
    args = parser.parse_args(argv)
    try:
        return load(cls, args.preset, args.config, args.set), args
    except ConfigError as exc:
        parser.exit(2, f"error: {exc}\n")
