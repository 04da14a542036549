"""The whole system as one TensorFlow graph: image -> bone age (months), uncertainty and QC.

Decode (``data.io.decode_image_bytes``), resize (``preprocessing.warp.resize``), the
:class:`~tf_boneage.preprocessing.chain.Preprocessor` (segmentation, cleanup, contrast,
landmarks, registration, regions), every region model of the ensemble and the per-sex linear
ensemble run in the graph, with the same TF-op implementations used to build the training
cache. The crops stay float32: the cache stores them as 8-bit PNGs (at most half a grey level
apart), and rounding them in the graph made the TFLite float32 model differ from the
SavedModel by up to 0.28 months wherever a pixel fell on a rounding boundary (0.014 without).

Outputs per image (float32 unless said):
- ``bone_age_months`` (B,): the ensemble's estimate, months;
- ``bone_age_std`` (B,): sqrt(mean variance of the classification members' 240-bin
  distributions + weighted variance of the members around the estimate), months, times a
  per-sex factor fitted on a validation split at export (:mod:`.calibration`; 1 if not);
- ``interval_low_months``, ``interval_high_months`` (B,): the 90 % interval, inside (0, 240),
  made on the logit scale from the same spread with a factor per sex and age band fitted on
  the validation split (:mod:`.interval`);
- ``member_months`` (B, M): every member's estimate (sex-specific members resolved by sex);
- ``mask_area``, ``mask_confidence``, ``landmark_plausibility`` (B,): QC of the chain, and
  ``mask_ok`` / ``landmarks_ok`` (B,) 0 / 1: the mask area and the plausibility at or above
  the limits the graph holds (:data:`MIN_MASK_AREA`, :data:`MIN_PLAUSIBILITY` when exported);
- ``landmarks`` (B, 6) normalised (x, y) of tip, thumb, capitate; ``right_hand`` (B,) 0 / 1;
- ``quarter_turns`` (B,) 0-3 quarter turns (counter-clockwise) that made the film upright and
  ``inverted`` (B,) 0 / 1 (the chain's orientation step; 0 when the chain has none), and
  ``orientation_confidence`` (B,) in [0, 1]: the orientation classifier's probability of the
  orientation it proposed (the outline check may still keep the film as given; 1 when the
  chain has no classifier);
- ``registration_fit`` (B,) in [0, 1]: the registered hand against the canonical outline, and
  ``registration_ok`` (B,) 0 / 1: the fit at or above the threshold fitted on ``val``
  (:mod:`.outline`; 1 while no outline is fitted);
- ``content_match`` (B,) in [-1, 1]: the registered image's grey levels against the mean
  registered hand (bones, soft tissue, the gaps between fingers), and ``content_ok`` (B,)
  0 / 1: at or above the threshold fitted on ``val`` (1 while no template is fitted);
- ``sharpness`` (B,): the share of the film's detail in its finest octave and ``black_share``
  (B,): the share of the registered hand's core (the canonical outline's, where every hand
  has tissue) that the film shows black (clipped by under-exposure); ``sharpness_ok`` and
  ``exposure_ok`` (B,) 0 / 1: inside the limits fitted on ``val`` (1 while none are fitted;
  :func:`exposure_ok`);
- ``step_share`` (B,) in [0, 1]: the share of the places inside the hand where the film
  changes that hold two equal neighbouring pixels (a film scaled up by repeating pixels changes
  in steps; :func:`~tf_boneage.preprocessing.chain.step_share`), and ``steps_ok`` (B,) 0 / 1:
  at or below the largest share fitted on ``val`` (1 while none is fitted);
- ``grey_range`` (B,) in [0, 1]: the spread of the film's grey levels (99th minus 1st
  percentile), and ``grey_range_ok`` (B,) 0 / 1: at or above the least range fitted on
  ``val`` (a film darkened or brightened until it clipped, or a uniform grey image, has
  nothing left to read: badly exposed);
- ``certainty_ok`` (B,) 0 / 1: ``bone_age_std`` at or below the largest fitted on ``val``
  (0: the region networks disagree on this film more than on any but the most uncertain good
  films; ``predict`` flags it, it does not reject it).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from tf_boneage.data.io import decode_image_bytes
from tf_boneage.ensemble import AGE_RANGE
from tf_boneage.export import interval, outline
from tf_boneage.models.region import feature_model, probability_model
from tf_boneage.preprocessing import regions, views, warp
from tf_boneage.preprocessing.chain import Preprocessor
from tf_boneage.training import runs

#: side of the square preview of each decoded film a native-size graph's ``explain_bytes``
#: returns (the overlay's input panel; the chain itself runs on the full film)
PREVIEW = 512

#: a film whose mask covers less of it than this holds no hand (QC)
MIN_MASK_AREA = 0.05
#: the least share of the chain's 4 landmark checks a film must pass (QC)
MIN_PLAUSIBILITY = 0.75
#: ``qc_max_std`` until one is fitted (months): no film is too uncertain
NO_STD_LIMIT = 1e6

OUTPUTS = (
    "bone_age_months",
    "bone_age_std",
    "interval_low_months",
    "interval_high_months",
    "member_months",
    "mask_area",
    "mask_confidence",
    "landmark_plausibility",
    "mask_ok",
    "landmarks_ok",
    "landmarks",
    "right_hand",
    "quarter_turns",
    "inverted",
    "orientation_confidence",
    "registration_fit",
    "registration_ok",
    "content_match",
    "content_ok",
    "sharpness",
    "black_share",
    "sharpness_ok",
    "exposure_ok",
    "grey_range",
    "grey_range_ok",
    "certainty_ok",
    "step_share",
    "steps_ok",
)

#: QC limits the graph gained after exports had been written, with the value that passes every
#: film: :func:`~tf_boneage.export.rebuild.rebuild` gives an older export the value and names
#: it as not fitted, so that a re-export fits it (``tf-boneage reexport --manifest``)
LATER_LIMITS = {"qc_max_steps": 1.0}


def exposure_ok(black, certain, max_black, doubt_black):
    """The exposure check: (B,) bool, False for a film with more of its hand's core clipped to
    black (``black`` (B,) in [0, 1], ``core_share_tf`` of the chain's ``black_map``) than
    ``max_black``, or more than ``doubt_black`` while its networks disagree (``certain`` (B,)
    bool False): a partly clipped hand the networks still agree on is read, one they do not is
    not (fitted on rsna100 `val` by ``training/export.py``; RESULTS.md, QC)."""
    doubtful = tf.logical_and(black > doubt_black, tf.logical_not(certain))
    return tf.logical_and(black <= max_black, tf.logical_not(doubtful))


@dataclasses.dataclass
class Member:
    """One ensemble member: a region crop and a model for both sexes, or a male / female pair."""

    name: str
    region: str
    both: keras.Model | None = None
    male: keras.Model | None = None
    female: keras.Model | None = None
    #: test-time views its estimate is averaged over (the runs' ``tta``; 1: the crop alone)
    tta: int = 1

    def models(self) -> list[keras.Model]:
        return [m for m in (self.both, self.male, self.female) if m is not None]


class _Head:
    """Mean and variance (months) of one region model; classification models give their bin
    distribution's variance, regression models variance 0."""

    def __init__(self, model: keras.Model, tta: int = 1):
        self.model = model
        self.tta = views.check(tta)
        self.sex_input = len(model.inputs) > 1
        try:
            self.probs = probability_model(model)
            ev = next(la for la in model.layers if la.__class__.__name__ == "ExpectedValue")
            self.bins = tf.range(ev.num_bins, dtype=tf.float32) + ev.start
        except (ValueError, StopIteration):
            self.probs = None

    def inputs(self, crops: tf.Tensor, male: tf.Tensor) -> dict:
        return {"image": crops, "male": male[:, None]} if self.sex_input else {"image": crops}

    def features(self, crops: tf.Tensor, male: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Grad-CAM features (B, h, w, C) and the age (B,) computed from them, months."""
        if not hasattr(self, "cam"):
            self.cam, self.cam_layer = feature_model(self.model)
        feats, age = self.cam(self.inputs(crops, male), training=False)
        return feats, tf.cast(age, tf.float32)[:, 0]

    def __call__(self, crops: tf.Tensor, male: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """(mean, variance) (B,) months, over the member's ``tta`` views of the crops (the
        classification head's bin distribution is averaged over views, its mean is then the
        mean of the views' expected values)."""
        inputs = self.inputs(views.views(crops, self.tta), tf.tile(male, [self.tta]))
        if self.probs is None:
            mean = tf.cast(self.model(inputs, training=False), tf.float32)[:, 0]
            mean = views.mean_over_views(mean, self.tta)
            return mean, tf.zeros_like(mean)
        p = tf.cast(self.probs(inputs, training=False), tf.float32)
        p = views.mean_over_views(p, self.tta)
        mean = tf.reduce_sum(p * self.bins, -1)
        var = tf.reduce_sum(p * tf.square(self.bins - mean[:, None]), -1)
        return mean, var


def grad_cam(features: tf.Tensor, grads: tf.Tensor) -> tf.Tensor:
    """Grad-CAM map (B, h, w) before the ReLU: sum_k mean_ij(grads[..., k]) * features[..., k].

    ``features`` and ``grads`` (B, h, w, C) float32: a layer's output and the gradient of the
    target (here the ensemble's age, months) with respect to it."""
    weights = tf.reduce_mean(grads, axis=[1, 2], keepdims=True)
    return tf.reduce_sum(features * weights, -1)


def ensemble_tensors(params: dict) -> tuple[tf.Tensor, tf.Tensor]:
    """Per-sex ensemble parameters (``LinearEnsemble.params``) as the graph holds them:
    weights (2, M) and biases (2,), row 0 male, row 1 female."""
    w = [params[s]["weights"] for s in ("male", "female")]
    b = [params[s]["bias"] for s in ("male", "female")]
    return tf.constant(w, tf.float32), tf.constant(b, tf.float32)


def ensemble_age(
    preds: tf.Tensor, male: tf.Tensor, weights: tf.Tensor, bias: tf.Tensor, clip: bool = True
):
    """The in-graph linear ensemble: ``preds`` (B, M) member estimates (months), ``male``
    (B,) 1 / 0 -> (age (B,) months, the weights used per image (B, M)). The same blend as
    :meth:`tf_boneage.ensemble.LinearEnsemble.predict` (tested to agree within 1e-4 months),
    clipped to 0-240 months; ``clip=False``: the blend itself (Grad-CAM differentiates it, so
    an estimate outside the range is still explained)."""
    rows = tf.where(male > 0.5, 0, 1)
    w = tf.gather(weights, rows)
    age = tf.reduce_sum(w * preds, -1) + tf.gather(bias, rows)
    return (tf.clip_by_value(age, *AGE_RANGE) if clip else age), w


class BoneAgeGraph(tf.Module):
    """End-to-end bone age.

    Args:
        preprocessor: the chain with its U-Net and landmark model.
        members: ensemble members (order = the ensemble's weight order).
        params: per-sex ensemble ``{"male": {"weights": [M], "bias": b}, "female": ...}``.
        input_size: (h, w) every image is resized to before the chain (the training images'
            size, e.g. 100 x 100 for the 100 px data), or ``None``: every film at its own
            size (the paper preset): segmented and landmarked on downscaled copies inside the
            chain, regions warped from its full-resolution pixels, one film at a time
            (:meth:`chain_bytes`).
        assume_aspect: width / height of the originals when the inputs were squashed to a
            square (the 100 px data: 0.74); ``None``: the decoded image's own shape.

    Outputs: the dict of the module docstring, each (B, ...) float32 (ages in months).
    Built from a ``training/table.py`` folder by :func:`from_runs`, or from an export alone by
    :func:`tf_boneage.export.rebuild.rebuild`; written for TF Serving by
    :func:`tf_boneage.export.saved_model.export_end_to_end`.

    Example:
        >>> from tf_boneage.export import rebuild, shipped
        >>> graph = rebuild.rebuild(shipped.locate())  # doctest: +SKIP
        >>> out = graph.predict_bytes(tf.constant([png_bytes]), tf.constant([1.0]))  # doctest: +SKIP
        >>> float(out["bone_age_months"][0]), float(out["interval_high_months"][0])  # doctest: +SKIP
    """

    def __init__(
        self,
        preprocessor: Preprocessor,
        members: list[Member],
        params: dict,
        input_size: tuple[int, int],
        assume_aspect: float | None = None,
    ):
        super().__init__(name="bone_age")
        self.preprocessor = preprocessor
        self.members = members
        self.heads = {id(m): _Head(m, member.tta) for member in members for m in member.models()}
        self.keras_models = [m for member in members for m in member.models()]
        self.input_size = None if input_size is None else tuple(int(v) for v in input_size)
        self.assume_aspect = assume_aspect
        self.weights, self.bias = ensemble_tensors(params)  # (2, M), (2,): male, female
        # per-sex factor on bone_age_std (row 0 male, row 1 female): 1 until calibrated
        self.std_scale = tf.Variable([1.0, 1.0], trainable=False, name="std_scale")
        # the 90 % interval's factor per sex (rows) and band of the estimate (:mod:`.interval`)
        bands = len(interval.BANDS) - 1
        self.interval_scale = tf.Variable(
            tf.ones([2, bands]), trainable=False, name="interval_scale"
        )
        # the canonical outline and the least registration fit accepted (:mod:`.outline`):
        # uniform and 0 (every film passes) until fitted
        self.outline = tf.Variable(
            tf.fill(outline.SIZE, 0.5), trainable=False, name="registration_outline"
        )
        self.qc_min_fit = tf.Variable(0.0, trainable=False, name="qc_min_fit")
        # the least mask area and landmark plausibility accepted: written into the export
        # with it, so that a later change of the defaults never re-judges an older model
        self.qc_min_area = tf.Variable(MIN_MASK_AREA, trainable=False, name="qc_min_area")
        self.qc_min_plausibility = tf.Variable(
            MIN_PLAUSIBILITY, trainable=False, name="qc_min_plausibility"
        )
        # the mean registered hand's content and the least match accepted: uniform and -1
        # (every film passes) until fitted
        self.content_template = tf.Variable(
            tf.fill(outline.SIZE, 0.5), trainable=False, name="content_template"
        )
        self.qc_min_match = tf.Variable(-1.0, trainable=False, name="qc_min_match")
        # the least sharpness and the largest black share of the hand accepted (fitted on val)
        self.qc_min_sharpness = tf.Variable(0.0, trainable=False, name="qc_min_sharpness")
        self.qc_max_black = tf.Variable(1.0, trainable=False, name="qc_max_black")
        # above this black share a film whose networks disagree is under-exposed too (1: off)
        self.qc_doubt_black = tf.Variable(1.0, trainable=False, name="qc_doubt_black")
        # the largest step share of a film accepted (1: every film, until fitted)
        self.qc_max_steps = tf.Variable(
            LATER_LIMITS["qc_max_steps"], trainable=False, name="qc_max_steps"
        )
        # the least grey range of a film accepted (0: every film, until fitted)
        self.qc_min_range = tf.Variable(0.0, trainable=False, name="qc_min_range")
        # the largest (calibrated) bone_age_std accepted, months (until fitted: every film)
        self.qc_max_std = tf.Variable(NO_STD_LIMIT, trainable=False, name="qc_max_std")

    def set_image_limits(
        self,
        min_sharpness: float,
        max_black: float,
        min_range: float = 0.0,
        doubt_black: float | None = None,
    ) -> None:
        """Set the least sharpness (>= 0), the largest black share (in (0, 1]), the least
        grey range (in [0, 1)) accepted and the black share (in (0, max_black]; None: off)
        above which a film the networks disagree on is rejected (:func:`exposure_ok`)."""
        doubt = max_black if doubt_black is None else doubt_black
        ok = min_sharpness >= 0 and 0 < max_black <= 1 and 0 <= min_range < 1
        if not (ok and 0 < doubt <= max_black):
            raise ValueError(
                f"limits out of range: {min_sharpness}, {max_black}, {min_range}, {doubt_black}"
            )
        self.qc_min_sharpness.assign(float(min_sharpness))
        self.qc_max_black.assign(float(max_black))
        self.qc_min_range.assign(float(min_range))
        self.qc_doubt_black.assign(1.0 if doubt_black is None else float(doubt_black))

    def set_step_limit(self, max_steps: float) -> None:
        """Set the largest step share accepted (in (0, 1]; 1: every film)."""
        if not 0 < max_steps <= 1:
            raise ValueError(f"step share limit out of range (0, 1]: {max_steps}")
        self.qc_max_steps.assign(float(max_steps))

    def set_std_limit(self, max_std: float) -> None:
        """Set the largest ``bone_age_std`` accepted (months, > 0)."""
        if not max_std > 0:
            raise ValueError(f"max_std must be > 0 months, got {max_std}")
        self.qc_max_std.assign(float(max_std))

    def set_outline(self, canonical, min_fit: float) -> None:
        """Set the canonical outline (52, 40) in [0, 1] and the least fit accepted (in [0, 1))."""
        canonical = np.asarray(canonical, np.float32)
        if canonical.shape != tuple(outline.SIZE) or not (
            (canonical >= 0).all() and (canonical <= 1).all()
        ):
            raise ValueError(f"outline must be {outline.SIZE} in [0, 1], got {canonical.shape}")
        if not 0 <= min_fit < 1:
            raise ValueError(f"min_fit must be in [0, 1), got {min_fit}")
        self.outline.assign(canonical)
        self.qc_min_fit.assign(float(min_fit))
        # the chain's orientation step checks its choice against the outline from now on
        self.preprocessor.outline = self.outline

    def set_template(self, template, min_match: float) -> None:
        """Set the mean registered content (52, 40) in [0, 1] and the least content match
        accepted (in [-1, 1))."""
        template = np.asarray(template, np.float32)
        if template.shape != tuple(outline.SIZE) or not (
            (template >= 0).all() and (template <= 1).all()
        ):
            raise ValueError(f"template must be {outline.SIZE} in [0, 1], got {template.shape}")
        if not -1 <= min_match < 1:
            raise ValueError(f"min_match must be in [-1, 1), got {min_match}")
        self.content_template.assign(template)
        self.qc_min_match.assign(float(min_match))

    def set_std_scale(self, male: float, female: float) -> None:
        """Scale ``bone_age_std`` per sex (see :mod:`tf_boneage.export.calibration`)."""
        if not (male > 0 and female > 0):
            raise ValueError(f"std scales must be > 0, got male={male}, female={female}")
        self.std_scale.assign([float(male), float(female)])

    def set_interval_scale(self, table) -> None:
        """Set the interval's factors ``[[male per band], [female per band]]`` (> 0)."""
        table = tf.constant(table, tf.float32)
        if table.shape != self.interval_scale.shape or not bool(tf.reduce_all(table > 0)):
            raise ValueError(f"interval scales must be {self.interval_scale.shape} and > 0")
        self.interval_scale.assign(table)

    def _regions(self) -> list[str]:
        return sorted({m.region for m in self.members})

    def _estimate(self, crops: dict, male: tf.Tensor):
        """Members and the per-sex ensemble from the region crops ``{region: (B, h, w, 1)}``:
        ``(age (B,), std (B,), member predictions (B, M), uncalibrated std (B,))``, months."""
        is_male = male > 0.5
        means, variances, is_cls = [], [], []
        for member in self.members:
            x = crops[member.region]
            if member.both is not None:
                mean, var = self.heads[id(member.both)](x, male)
                cls = self.heads[id(member.both)].probs is not None
            else:
                m_mean, m_var = self.heads[id(member.male)](x, male)
                f_mean, f_var = self.heads[id(member.female)](x, male)
                mean, var = tf.where(is_male, m_mean, f_mean), tf.where(is_male, m_var, f_var)
                cls = self.heads[id(member.male)].probs is not None
            means.append(mean)
            variances.append(var)
            is_cls.append(cls)
        preds = tf.stack(means, -1)  # (B, M)
        rows = tf.where(is_male, 0, 1)
        age, w = ensemble_age(preds, male, self.weights, self.bias)
        spread = tf.math.divide_no_nan(
            tf.reduce_sum(w * tf.square(preds - age[:, None]), -1), tf.reduce_sum(w, -1)
        )
        cls_var = [v for v, c in zip(variances, is_cls, strict=True) if c]
        bins_var = tf.reduce_mean(tf.stack(cls_var, -1), -1) if cls_var else tf.zeros_like(age)
        raw = tf.sqrt(bins_var + spread)
        return age, raw * tf.gather(self.std_scale, rows), preds, raw

    def _sized(self, images: tf.Tensor) -> tf.Tensor:
        """Images as the chain takes them: resized to ``input_size``, or as they are."""
        images = tf.cast(images, tf.float32)
        return images if self.input_size is None else warp.resize(images, self.input_size)

    def chain_bytes(self, image_bytes: tf.Tensor, keys: tuple[str, ...]) -> tuple[dict, tf.Tensor]:
        """The chain on encoded films of any sizes, one at a time (how a native-size graph
        serves): decoded at their own size (resized to ``input_size`` if the graph has one),
        the chain's outputs ``keys`` stacked (B, ...), plus a
        square preview (B, :data:`PREVIEW`, :data:`PREVIEW`, 1) of each decoded film for the
        overlays. Films are processed one after another (``parallel_iterations=1``): a batch
        of 3,000 px films never sits in memory at full size at once."""
        outputs = {**self._output_specs(), "right": tf.TensorSpec([], tf.bool)}
        spec = {k: outputs[k] for k in keys}

        def one(contents):
            image = decode_image_bytes(contents)
            shape = tf.cast(tf.shape(image)[:2], tf.float32)
            if self.assume_aspect is not None:
                shape = tf.stack([shape[0], shape[0] * self.assume_aspect])
            out = self.preprocessor(
                self._sized(image[None]), shape[None], upright_size=self.assume_aspect is not None
            )
            preview = warp.resize(image[None], (PREVIEW, PREVIEW))[0]
            return {k: out[k][0] for k in keys}, preview

        return tf.map_fn(
            one,
            image_bytes,
            fn_output_signature=(spec, tf.TensorSpec([PREVIEW, PREVIEW, 1], tf.float32)),
            parallel_iterations=1,
        )

    def _output_specs(self) -> dict:
        """Shapes of one image's chain outputs (what :meth:`chain_bytes` stacks)."""
        cfg = self.preprocessor.config
        specs = {
            f"region_{r}": tf.TensorSpec([*cfg.region_sizes[r], 1], tf.float32)
            for r in self._regions()
        }
        specs.update(
            mask_area=tf.TensorSpec([], tf.float32),
            mask_confidence=tf.TensorSpec([], tf.float32),
            landmark_plausibility=tf.TensorSpec([], tf.float32),
            landmarks=tf.TensorSpec([6], tf.float32),
            registered=tf.TensorSpec([cfg.frame.height, cfg.frame.width, 1], tf.float32),
            mask=tf.TensorSpec([cfg.unet_size, cfg.unet_size, 1], tf.float32),
            quarter_turns=tf.TensorSpec([], tf.int32),
            inverted=tf.TensorSpec([], tf.bool),
            orientation_confidence=tf.TensorSpec([], tf.float32),
            occupancy=tf.TensorSpec([*outline.SIZE, 1], tf.float32),
            content=tf.TensorSpec([*outline.SIZE, 1], tf.float32),
            sharpness=tf.TensorSpec([], tf.float32),
            step_share=tf.TensorSpec([], tf.float32),
            black_map=tf.TensorSpec([*outline.SIZE, 1], tf.float32),
            grey_range=tf.TensorSpec([], tf.float32),
        )
        return specs

    def _predict_keys(self) -> tuple[str, ...]:
        qc = ("mask_area", "mask_confidence", "landmark_plausibility", "landmarks", "right")
        qc += ("quarter_turns", "inverted", "orientation_confidence", "occupancy", "content")
        qc += ("sharpness", "step_share", "black_map", "grey_range")
        return (*(f"region_{r}" for r in self._regions()), *qc)

    def predict_decoded(
        self, images: tf.Tensor, male: tf.Tensor, original_size: tf.Tensor | None = None
    ) -> dict:
        """``images`` (B, H, W, 1) float32 in [0, 1] (any H, W: resized to ``input_size``;
        a native-size graph takes them as they are), ``male`` (B,) 1 / 0, ``original_size``
        (B, 2) (h, w) of the originals or 0 = unknown."""
        out = self.preprocessor(
            self._sized(images), original_size, upright_size=self.assume_aspect is not None
        )
        return self._answer(out, male)

    def _answer(self, out: dict, male: tf.Tensor) -> dict:
        """The outputs of the module docstring from the chain's outputs ``out``."""
        male = tf.cast(tf.reshape(male, [-1]), tf.float32)
        crops = {r: out[f"region_{r}"] for r in self._regions()}
        age, std, preds, raw = self._estimate(crops, male)
        low, high = interval.bounds_tf(age, raw, male, self.interval_scale)
        fit = outline.fit_tf(out["occupancy"], self.outline)
        match = outline.match_tf(out["content"], self.content_template, self.outline)
        black = outline.core_share_tf(out["black_map"], self.outline)
        # under-exposed: more of the hand's core clipped to black than any but the darkest
        # good films, or more than most and the networks disagree (:func:`exposure_ok`)
        certain = std <= self.qc_max_std
        return {
            "bone_age_months": age,
            "bone_age_std": std,
            "interval_low_months": low,
            "interval_high_months": high,
            "member_months": preds,
            "mask_area": out["mask_area"],
            "mask_confidence": out["mask_confidence"],
            "landmark_plausibility": out["landmark_plausibility"],
            "mask_ok": tf.cast(out["mask_area"] >= self.qc_min_area, tf.float32),
            "landmarks_ok": tf.cast(
                out["landmark_plausibility"] >= self.qc_min_plausibility, tf.float32
            ),
            "landmarks": out["landmarks"],
            "right_hand": tf.cast(out["right"], tf.float32),
            "quarter_turns": tf.cast(out["quarter_turns"], tf.float32),
            "inverted": tf.cast(out["inverted"], tf.float32),
            "orientation_confidence": out["orientation_confidence"],
            "registration_fit": fit,
            "registration_ok": tf.cast(fit >= self.qc_min_fit, tf.float32),
            "content_match": match,
            "content_ok": tf.cast(match >= self.qc_min_match, tf.float32),
            "sharpness": out["sharpness"],
            "black_share": black,
            "sharpness_ok": tf.cast(out["sharpness"] >= self.qc_min_sharpness, tf.float32),
            "exposure_ok": tf.cast(
                exposure_ok(black, certain, self.qc_max_black, self.qc_doubt_black), tf.float32
            ),
            "grey_range": out["grey_range"],
            "grey_range_ok": tf.cast(out["grey_range"] >= self.qc_min_range, tf.float32),
            "certainty_ok": tf.cast(certain, tf.float32),
            "step_share": out["step_share"],
            "steps_ok": tf.cast(out["step_share"] <= self.qc_max_steps, tf.float32),
        }

    def heatmap(self, crops: dict, male: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Grad-CAM of the ensemble from the region crops ``{region: (B, h, w, 1)}``: the signed
        map (B, frame h, frame w) in [-1, 1] (> 0 pushed the age up, < 0 down) and the age
        (B,), months. See :meth:`explain`."""
        is_male = male > 0.5
        with tf.GradientTape() as tape:
            feats, means = [], []
            for member in self.members:
                x = crops[member.region]
                pair = []
                for model in member.models():
                    f, a = self.heads[id(model)].features(x, male)
                    tape.watch(f)
                    pair.append((f, a))
                    feats.append((member.region, f))
                if member.both is not None:
                    means.append(pair[0][1])
                else:
                    means.append(tf.where(is_male, pair[0][1], pair[1][1]))
            age, _ = ensemble_age(tf.stack(means, -1), male, self.weights, self.bias, clip=False)
        grads = tape.gradient(age, [f for _, f in feats])
        age = tf.clip_by_value(age, *AGE_RANGE)  # the estimate as served
        frame = self.preprocessor.config.frame
        canvas = tf.zeros([tf.shape(male)[0], frame.height, frame.width], tf.float32)
        for (region, f), g in zip(feats, grads, strict=True):
            if g is None:
                continue
            cam = grad_cam(f, g)
            y0, x0, y1, x1 = (int(round(v)) for v in regions.box_pixels(region, frame))
            y0, x0 = max(0, y0), max(0, x0)
            y1, x1 = min(frame.height, max(y1, y0 + 1)), min(frame.width, max(x1, x0 + 1))
            cam = tf.image.resize(cam[..., None], (y1 - y0, x1 - x0))[..., 0]
            canvas += tf.pad(cam, [[0, 0], [y0, frame.height - y1], [x0, frame.width - x1]])
        canvas /= tf.maximum(tf.reduce_max(tf.abs(canvas), axis=[1, 2], keepdims=True), 1e-12)
        return canvas, age

    def explain(self, images: tf.Tensor, male: tf.Tensor, original_size: tf.Tensor) -> dict:
        """What drove the estimate (Grad-CAM of the ensemble, Selvaraju et al., ICCV 2017).

        For every member network: its feature maps A (B, h, w, C) at the deepest block at
        least 4 x 4 (see :func:`~tf_boneage.models.region.feature_model`), the gradient of the
        *ensemble's* age with respect to them, channel weights = the gradient's spatial mean,
        map = sum_k weight_k * A_k. A member's map is therefore already scaled by its ensemble
        weight. Maps are resized onto their region's box of the canonical frame, summed and
        divided by their largest magnitude per image. Unlike classification Grad-CAM, the sign
        is kept (no ReLU): positive where the features pushed the age up, negative where they
        pulled it down, which is most of what explains a young child's estimate.

        Args: ``images`` (B, H, W, 1) float32 in [0, 1], ``male`` (B,), ``original_size``
        (B, 2). Returns ``registered`` (B, frame h, frame w, 1) enhanced image in the
        canonical frame, ``heatmap`` (B, frame h, frame w) in [-1, 1] (of the crops as they
        are: members with test-time views are explained on the first, the crop itself),
        ``mask`` (B, s, s), ``bone_age_months`` (B,) the estimate as served (over the views)
        and ``landmarks`` (B, 6) normalised (x, y).
        """
        out = self.preprocessor(
            self._sized(images), original_size, upright_size=self.assume_aspect is not None
        )
        return self._explained(out, male)

    def _explained(self, out: dict, male: tf.Tensor) -> dict:
        male = tf.cast(tf.reshape(male, [-1]), tf.float32)
        crops = {r: out[f"region_{r}"] for r in self._regions()}
        canvas, _ = self.heatmap(crops, male)
        # the age served (over every member's test-time views), not the plain view's the
        # map explains: an overlay must state what serving_default answered
        age = self._estimate(crops, male)[0]
        return {
            "registered": out["registered"],
            "heatmap": canvas,
            "mask": out["mask"][..., 0],
            "bone_age_months": age,
            "landmarks": out["landmarks"],
        }

    def explain_bytes(self, image_bytes: tf.Tensor, male: tf.Tensor) -> dict:
        """:meth:`explain` of encoded images, decoded exactly as :meth:`predict_bytes` decodes
        them (what ``serving_default`` answers is what the overlay shows); adds ``images``
        (B, h, w, 1), the decoded input at ``input_size`` the chain saw (a native-size graph:
        a :data:`PREVIEW` square of it)."""
        if self.input_size is None:
            keys = (*self._predict_keys(), "registered", "mask")
            out, preview = self.chain_bytes(image_bytes, keys)
            return {**self._explained(out, male), "images": preview}
        images, shapes = self.decode(image_bytes)
        return {**self.explain(images, male, shapes), "images": images}

    def decode(self, image_bytes: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Encoded PNG / JPEG strings (B,) -> images (B, h, w, 1) at ``input_size`` and the
        decoded (h, w) of each original (B, 2). A native-size graph returns them at their own
        size: films of one size per call (one film, as the TFLite evaluation decodes)."""

        def one(contents):
            image = decode_image_bytes(contents)
            shape = tf.cast(tf.shape(image)[:2], tf.float32)
            return self._sized(image[None])[0], shape

        size = [None, None] if self.input_size is None else list(self.input_size)
        images, shapes = tf.map_fn(
            one,
            image_bytes,
            fn_output_signature=(
                tf.TensorSpec([*size, 1], tf.float32),
                tf.TensorSpec([2], tf.float32),
            ),
        )
        if self.assume_aspect is not None:
            shapes = tf.stack([shapes[:, 0], shapes[:, 0] * self.assume_aspect], -1)
        return images, shapes

    def predict_bytes(self, image_bytes: tf.Tensor, male: tf.Tensor) -> dict:
        """Encoded films (B,) and sex (B,) -> the outputs of the module docstring; a
        native-size graph runs the chain film by film (:meth:`chain_bytes`)."""
        if self.input_size is None:
            out, _ = self.chain_bytes(image_bytes, self._predict_keys())
            return self._answer(out, male)
        images, shapes = self.decode(image_bytes)
        return self.predict_decoded(images, male, shapes)


def members_from_spec(models: list[str], load, tta=None) -> list[Member]:
    """Ensemble members from column names (``A_reg_both``, ``A_cls_sex`` = the pair
    ``A_cls_male`` / ``A_cls_female``); ``load(run_name)`` returns that run's Keras model and
    ``tta(run_name)`` its test-time views (default 1; a sex pair must agree)."""
    tta = tta or (lambda name: 1)
    out = []
    for name in models:
        run = runs.parse(name)
        if run.input == "raw":
            raise ValueError(f"{name}: a raw-image run cannot be a member of the registered chain")
        if run.sex == "sex":
            male, female = run.pair
            if tta(male) != tta(female):
                raise ValueError(f"{name}: {male} and {female} differ in tta")
            member = Member(name, run.region, male=load(male), female=load(female))
            member.tta = tta(male)
        else:
            member = Member(name, run.region, both=load(name), tta=tta(name))
        out.append(member)
    return out


def run_tta(run_dir) -> int:
    """The test-time views a region run's predictions were made with (its ``config.yaml``'s
    ``tta``; 1 for a run without the key, made before it existed)."""
    import yaml

    path = Path(run_dir) / "config.yaml"
    doc = yaml.safe_load(path.read_text()) if path.is_file() else {}
    return views.check(int((doc or {}).get("tta", 1)))


def unet_of_runs(table_dir, unet=None):
    """The U-Net of a ``training/table.py`` folder: ``unet`` if given, else the one
    ``seg/report.json`` names, else the last ``seg/roundK/unet.keras``."""
    import json
    from pathlib import Path

    root = Path(table_dir)
    report = root / "seg" / "report.json"
    if not unet and report.is_file() and "unet" in json.loads(report.read_text()):
        unet = json.loads(report.read_text())["unet"]  # the one training/table.py used
    rounds = [Path(unet)] if unet else sorted((root / "seg").glob("round*/unet.keras"))
    if not rounds or not rounds[-1].is_file():
        raise FileNotFoundError(f"{root / 'seg'}: no roundK/unet.keras")
    return rounds[-1]


def from_runs(table_dir, spec, ensemble: str = "final") -> BoneAgeGraph:
    """Build the graph from the outputs of ``training/table.py``: the chain ``spec`` (a
    :class:`~tf_boneage.preprocessing.spec.ChainSpec`, the cache's ``chain.json`` as the export
    reads it: its U-Net, landmark net, orientation step, frame, sizes, landmark looks),
    ``region/NAME/model.keras`` and the ensemble ``ensemble`` of ``region/ensembles.json``."""
    import json
    from pathlib import Path

    import tf_boneage.models  # noqa: F401  (registers the custom layers)

    root = Path(table_dir)
    doc_path = root / "region" / "ensembles.json"
    if not doc_path.is_file():
        raise FileNotFoundError(f"{doc_path}: run training/ensemble.py first")
    doc = json.loads(doc_path.read_text())
    if ensemble not in doc:
        raise KeyError(f"{doc_path}: no ensemble {ensemble!r}; it has {sorted(doc)}")
    pre = spec.preprocessor()

    loaded = {}

    def load(name):
        path = root / "region" / name / "model.keras"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: ensemble member not trained")
        # inference weights only: no optimizer state travels into the SavedModel
        loaded[name] = keras.saving.load_model(path, compile=False)
        return loaded[name]

    members = members_from_spec(
        doc[ensemble]["models"], load, lambda name: run_tta(root / "region" / name)
    )
    graph = BoneAgeGraph(pre, members, doc[ensemble]["params"], spec.image_size, spec.assume_aspect)
    # every stage by name, for per-stage exports
    graph.stage_models = {"unet": pre.unet, "landmarks": pre.landmark_model, **loaded}
    if pre.orient_model is not None:
        graph.stage_models["orientation"] = pre.orient_model
    return graph
