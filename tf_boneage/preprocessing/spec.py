"""``ChainSpec``: every setting the preprocessing chain of a trained artifact depends on.

Written as ``chain.json`` into the preprocessing cache when the cache is first built, copied
into the export's metadata (``assets.extra/tf_boneage.json``, key ``chain``) and read back from
there by the export and ``predict``: a setting is never re-guessed from a preset or a default
once an artifact exists. Presets only fill the description when it is first made.

Sizes are (height, width) in pixels; ``image_size`` ``None`` means each film is processed at
its own size. ``assume_aspect``: the width / height ratio assumed for files whose original size
is unknown (the 100 px RSNA copy was squashed to a square), ``None`` for none. Models are
identified by the SHA-256 of their ``.keras`` file (a path may move, the weights must not).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

#: the file name of the description inside a cache folder
CHAIN_FILE = "chain.json"
#: the classifier's margin of the caches made before ``orient_margin`` was recorded
LEGACY_ORIENT_MARGIN = 0.3


def sha256(path) -> str:
    """Hex SHA-256 of a file's bytes (a model is identified by its weights, not its path)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _pair(value, name: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"chain {name}: expected (height, width), got {value!r}") from None
    if h < 1 or w < 1:
        raise ValueError(f"chain {name}: sizes must be positive, got {value!r}")
    return h, w


@dataclasses.dataclass(frozen=True)
class ChainSpec:
    """The preprocessing chain of one trained artifact (see the module docstring)."""

    image_size: tuple[int, int] | None
    unet_size: int
    landmark_size: int
    frame: tuple[int, int]
    region_sizes: dict
    assume_aspect: float | None
    unet: str
    unet_sha256: str
    landmarks: str | None = None
    landmarks_sha256: str | None = None
    #: the orientation / polarity step (:meth:`~.chain.Preprocessor.orient`); a description
    #: written before the step existed has no key: those chains ran without it
    orient: bool = False
    #: the size the orientation step scores its candidates at (None: the U-Net's size)
    orient_size: int | None = None
    #: the orientation classifier of the orientation step (None: the U-Net's mask mass decides)
    orient_model: str | None = None
    orient_model_sha256: str | None = None
    #: how much surer another class must be than "as given" for the classifier to turn a film
    #: (:func:`~.orientation.classify`); None without a classifier. Descriptions written before
    #: it was recorded ran with :data:`LEGACY_ORIENT_MARGIN`
    orient_margin: float | None = None
    #: how often the landmark net looks (:class:`~.chain.ChainConfig`); descriptions written
    #: before it was recorded ran with one look
    landmark_passes: int = 1
    #: the classifier's confidence from which its proposal stands without the outline check
    #: (:class:`~.chain.ChainConfig`); None without a classifier. Descriptions written before
    #: it was recorded checked every proposal (None)
    orient_trust: float | None = None

    def __post_init__(self):
        pairs = {"frame": _pair(self.frame, "frame")}
        if self.image_size is not None:
            pairs["image_size"] = _pair(self.image_size, "image_size")
        sizes = {str(k): _pair(v, f"region {k}") for k, v in dict(self.region_sizes).items()}
        if not sizes:
            raise ValueError("chain region_sizes: at least one region")
        for key, value in {**pairs, "region_sizes": sizes}.items():
            object.__setattr__(self, key, value)
        if self.orient_size is not None and not (
            isinstance(self.orient_size, int) and self.orient_size > 0
        ):
            raise ValueError(f"chain orient_size: a positive integer, got {self.orient_size!r}")
        if self.orient_model_sha256 is None:
            object.__setattr__(self, "orient_margin", None)
            object.__setattr__(self, "orient_trust", None)
        elif self.orient_margin is None:
            object.__setattr__(self, "orient_margin", LEGACY_ORIENT_MARGIN)
        elif not 0 <= self.orient_margin < 1:
            raise ValueError(f"chain orient_margin: in [0, 1), got {self.orient_margin!r}")
        if self.orient_trust is not None and not 0 < self.orient_trust <= 1:
            raise ValueError(f"chain orient_trust: in (0, 1], got {self.orient_trust!r}")
        if self.landmark_passes not in (1, 2):
            raise ValueError(f"chain landmark_passes: 1 or 2, got {self.landmark_passes!r}")
        if self.assume_aspect is not None and not self.assume_aspect > 0:
            raise ValueError(f"chain assume_aspect: must be > 0, got {self.assume_aspect!r}")

    @classmethod
    def describe(
        cls,
        unet_path,
        landmarks_path,
        unet_size: int,
        landmark_size: int,
        frame,
        region_sizes: dict,
        image_size=None,
        assume_aspect: float | None = None,
        orient: bool = False,
        orient_size: int | None = None,
        orient_model_path=None,
        orient_margin: float | None = None,
        landmark_passes: int = 1,
        orient_trust: float | None = None,
    ) -> ChainSpec:
        """A new description of a chain built from these model files (hashed here);
        ``orient_margin`` None with a classifier: the chain's default
        (:data:`~.chain.ORIENT_CLASS_MARGIN`); ``orient_trust`` None: every proposal checked."""
        if orient_model_path and orient_margin is None:
            from tf_boneage.preprocessing.chain import ORIENT_CLASS_MARGIN

            orient_margin = ORIENT_CLASS_MARGIN
        return cls(
            image_size=tuple(image_size) if image_size is not None else None,
            unet_size=int(unet_size),
            landmark_size=int(landmark_size),
            frame=tuple(frame),
            region_sizes=dict(region_sizes),
            assume_aspect=assume_aspect,
            unet=str(unet_path),
            unet_sha256=sha256(unet_path),
            landmarks=str(landmarks_path) if landmarks_path else None,
            landmarks_sha256=sha256(landmarks_path) if landmarks_path else None,
            orient=bool(orient),
            orient_size=int(orient_size) if orient_size else None,
            orient_model=str(orient_model_path) if orient_model_path else None,
            orient_model_sha256=sha256(orient_model_path) if orient_model_path else None,
            orient_margin=float(orient_margin) if orient_model_path else None,
            landmark_passes=int(landmark_passes),
            orient_trust=float(orient_trust) if orient_trust is not None else None,
        )

    @classmethod
    def of_chain(
        cls, pre, unet_path, landmarks_path, image_size, assume_aspect, orient_model_path=None
    ) -> ChainSpec:
        """The description of a loaded :class:`~.chain.Preprocessor` built from these files."""
        if (pre.orient_model is None) != (not orient_model_path):
            raise ValueError("of_chain: give the orientation model's path exactly when it has one")
        c = pre.config
        return cls.describe(
            unet_path,
            landmarks_path,
            c.unet_size,
            c.landmark_size,
            c.frame.size,
            c.region_sizes,
            image_size,
            assume_aspect,
            c.orient,
            c.orient_size,
            orient_model_path,
            c.orient_margin,
            c.landmark_passes,
            c.orient_trust,
        )

    def preprocessor(self):
        """The :class:`~.chain.Preprocessor` this description names: its model files loaded,
        its frame, region sizes, orientation step and landmark looks (a new chain setting is
        read here once, not at every place that builds a chain)."""
        from tf_boneage.preprocessing import chain

        return chain.load(
            self.unet,
            self.landmarks,
            self.frame,
            self.region_sizes,
            self.orient,
            self.orient_size,
            self.orient_model,
            self.orient_margin,
            self.landmark_passes,
            self.orient_trust,
        )

    def to_dict(self) -> dict:
        doc = dataclasses.asdict(self)
        doc["region_sizes"] = {k: list(v) for k, v in self.region_sizes.items()}
        doc["frame"] = list(self.frame)
        doc["image_size"] = list(self.image_size) if self.image_size else None
        return doc

    @classmethod
    def from_dict(cls, doc: dict, source: str = "chain description") -> ChainSpec:
        names = {f.name for f in dataclasses.fields(cls)}
        required = {f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING}
        if not isinstance(doc, dict):
            raise ValueError(f"{source}: expected an object, got {type(doc).__name__}")
        missing, unknown = required - set(doc), set(doc) - names
        if missing or unknown:
            raise ValueError(
                f"{source}: missing {sorted(missing)}, unknown {sorted(unknown)}"
                if missing and unknown
                else f"{source}: missing {sorted(missing)}"
                if missing
                else f"{source}: unknown {sorted(unknown)}"
            )
        try:
            return cls(**doc)
        except ValueError as exc:
            raise ValueError(f"{source}: {exc}") from None

    def differences(self, other: ChainSpec) -> list[str]:
        """What differs from ``other``, one line per setting (paths are ignored: the hashes
        say whether the same weights are meant)."""
        out = []
        for field in dataclasses.fields(self):
            if field.name in ("unet", "landmarks", "orient_model"):
                continue
            mine, theirs = getattr(self, field.name), getattr(other, field.name)
            if mine != theirs:
                out.append(f"{field.name}: {theirs!r} here, {mine!r} in the artifact")
        return out

    def write(self, path) -> Path:
        """Write as JSON atomically."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        os.replace(tmp, path)
        return path

    @classmethod
    def read(cls, path) -> ChainSpec:
        path = Path(path)
        try:
            doc = json.loads(path.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: no chain description") from None
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not JSON ({exc.msg}, line {exc.lineno})") from None
        return cls.from_dict(doc, str(path))


def settle(folder, spec: ChainSpec) -> ChainSpec:
    """Record ``spec`` in ``folder/chain.json`` if the folder has none; else check that it is
    the one recorded (raises ``ValueError`` listing every difference: a cache, once started,
    is resumed only by the chain that started it)."""
    path = Path(folder) / CHAIN_FILE
    if not path.exists():
        spec.write(path)
        return spec
    recorded = ChainSpec.read(path)
    diff = recorded.differences(spec)
    if diff:
        raise ValueError(f"{path} was built by another chain; differences:\n  " + "\n  ".join(diff))
    return recorded
