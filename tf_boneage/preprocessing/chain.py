"""The whole preprocessing chain of the paper as one TensorFlow module:

image -> U-Net mask -> cleanup -> background removed -> histogram-equalised -> landmarks ->
registration to the canonical frame -> regions A, B, C, plus QC numbers.

The same object serves the offline cache (``tf_boneage.preprocessing.cache``), the training
scripts and the exported serving graph, so training data and serving never drift apart.
"""

from __future__ import annotations

import dataclasses

import keras
import tensorflow as tf

import tf_boneage.models  # noqa: F401  (registers the custom classes for load_model)
from tf_boneage.preprocessing import contrast, mask, regions, registration, warp

#: Plausibility checks of the landmarks (in square original pixels).
THUMB_RATIO = (0.3, 1.2)  # |thumb - capitate| / |tip - capitate|
AXIS_FRACTION = (0.25, 1.3)  # |tip - capitate| / the image's longer side

#: orientation candidates: quarter turns 0-3 (counter-clockwise) of the normal film, then of
#: the inverted film (a MONOCHROME1 film stored without its inversion)
CANDIDATES = 8
#: the film as given wins unless another candidate's mask mass is larger by this share of the
#: image (fitted on rsna100 `val`: 0.01 keeps 99.4 % of upright films as they are and turns
#: 98.6-98.8 % of turned ones right, against 98.8 % both ways without it)
ORIENT_MARGIN = 0.01
#: with an orientation classifier, the film as given wins unless another orientation is more
#: probable by this much (fitted on rsna100 `val`, 500 films x 8 orientations, classifier o22:
#: 0.3 keeps 99.6 % of upright films as they are against 99.0 % at 0, turned and inverted ones
#: right 99.40 % either way; at 0.5 the turned ones lose, 99.26 %; RESULTS.md)
ORIENT_CLASS_MARGIN = 0.3
#: (rows, columns) of the occupancy grid over the canonical frame (QC of the registration:
#: :mod:`tf_boneage.export.outline`)
OUTLINE_SIZE = (52, 40)


#: with a canonical outline (an export's), the orientation step keeps the film as given unless
#: the turned / inverted candidate's registration fits the outline better by this much
FIT_MARGIN = 0.0


def soft_dice(occ: tf.Tensor, outline: tf.Tensor) -> tf.Tensor:
    """Soft Dice of occupancies (B, 52, 40, 1) with an outline (52, 40): (B,) in [0, 1]."""
    n = OUTLINE_SIZE[0] * OUTLINE_SIZE[1]
    occ = tf.reshape(tf.cast(occ, tf.float32), [-1, n])
    ref = tf.reshape(tf.cast(outline, tf.float32), [1, n])
    both = tf.reduce_sum(occ * ref, -1)
    return tf.math.divide_no_nan(2.0 * both, tf.reduce_sum(occ, -1) + tf.reduce_sum(ref, -1))


#: a pixel at or below this value is black (clipped by under-exposure)
BLACK = 1.0 / 255.0


def sharpness(images: tf.Tensor, masks: tf.Tensor) -> tf.Tensor:
    """How much of the film's detail is in its finest octave, inside the hand: mean
    |x - up(down(x, 2))| / mean |x - up(down(x, 4))| (block means, bilinear back). A film
    that was stored at a lower resolution and scaled up has little detail left at the top
    octave (a ratio near 0); a sharp one about half. ``images`` (B, H, W, 1), ``masks`` (B, s,
    s, 1) -> (B,)."""
    size = tf.shape(images)[1:3]
    x = tf.cast(images, tf.float32)
    half = tf.image.resize(tf.nn.avg_pool2d(x, 2, 2, "VALID"), size, "bilinear")
    quarter = tf.image.resize(tf.nn.avg_pool2d(x, 4, 4, "VALID"), size, "bilinear")
    hand = mask.at_size(masks, size)
    fine = tf.reduce_sum(tf.abs(x - half) * hand, [1, 2, 3])
    coarse = tf.reduce_sum(tf.abs(x - quarter) * hand, [1, 2, 3])
    return tf.math.divide_no_nan(fine, coarse)


#: a pixel step "textured" for :func:`step_share`: the film changes by at least this much over
#: the three pixels around it (4 grey levels of 255)
STEP_TEXTURE = 4.0 / 255.0
#: neighbouring pixels closer than this (half a grey level of 255) are equal for
#: :func:`step_share` (half a 16-bit step of noise does not part them)
STEP_EQUAL = 0.5 / 255.0


def _steps(x: tf.Tensor, hand: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Along the width of ``x`` (B, H, W, 1): per film, how many textured places inside
    ``hand`` (B, H, W, 1) hold two equal neighbours, and how many textured places there are
    (both (B,)). Place i, between pixels i and i + 1, is textured when |x[i+2] - x[i-1]| >=
    :data:`STEP_TEXTURE`; its neighbours are equal when |x[i+1] - x[i]| < :data:`STEP_EQUAL`."""
    step = tf.abs(x[:, :, 2:-1] - x[:, :, 1:-2])
    span = tf.abs(x[:, :, 3:] - x[:, :, :-3])
    textured = tf.cast(span >= STEP_TEXTURE, tf.float32) * hand[:, :, 1:-2]
    equal = tf.cast(step < STEP_EQUAL, tf.float32) * textured
    return tf.reduce_sum(equal, [1, 2, 3]), tf.reduce_sum(textured, [1, 2, 3])


def step_share(images: tf.Tensor, masks: tf.Tensor) -> tf.Tensor:
    """How much of the film is made of repeated pixels: among the places inside the hand where
    the film changes (:func:`_steps`, along rows and columns), the share where two neighbouring
    pixels are equal. A film scaled up from a smaller image by repeating pixels (nearest
    neighbour, or area resampling upwards) changes in steps: about (f - 1) / f of its places
    are flat, f the factor (0.5 from half the size, 0.67 from a third), while it keeps fine
    detail at block edges that :func:`sharpness` reads as sharp; 200 rsna100 ``val`` films:
    0.03 to 0.20, median 0.06. ``images`` (B, H, W, 1), ``masks`` (B, s, s, 1) -> (B,) in
    [0, 1] (0 where nothing changes)."""
    x = tf.cast(images, tf.float32)
    hand = mask.at_size(masks, tf.shape(x)[1:3])
    across, n_across = _steps(x, hand)
    down, n_down = _steps(tf.transpose(x, [0, 2, 1, 3]), tf.transpose(hand, [0, 2, 1, 3]))
    return tf.math.divide_no_nan(across + down, n_across + n_down)


def black_share(images: tf.Tensor, masks: tf.Tensor) -> tf.Tensor:
    """The share of the hand's pixels that are black (:data:`BLACK`): under-exposure clipped
    them and what they showed is gone. (B, H, W, 1), (B, s, s, 1) -> (B,)."""
    hand = mask.at_size(masks, tf.shape(images)[1:3])
    black = tf.cast(tf.cast(images, tf.float32) <= BLACK, tf.float32)
    return tf.math.divide_no_nan(
        tf.reduce_sum(black * hand, [1, 2, 3]), tf.reduce_sum(hand, [1, 2, 3])
    )


#: samples per side of one :data:`OUTLINE_SIZE` cell in :func:`black_map`
BLACK_SAMPLES = 4


def black_map(images: tf.Tensor, forward: tf.Tensor, frame: registration.Frame) -> tf.Tensor:
    """Where the film is black (:data:`BLACK`: clipped by under-exposure) in the canonical
    frame: (B, H, W, 1) films and their registrations ``forward`` (B, 3, 3) -> (B, 52, 40, 1),
    the share of black samples (:data:`BLACK_SAMPLES` squared, bilinear) in each cell of the
    :data:`OUTLINE_SIZE` grid, float32 in [0, 1] (0 outside the film). Unlike
    :func:`black_share`, it does not depend on the film's own mask, which shrinks to what is
    left of a clipped hand: where every registered hand has tissue (the canonical outline's
    core, :func:`~tf_boneage.export.outline.core_share_tf`), a good film has almost no black."""
    h, w = OUTLINE_SIZE[0] * BLACK_SAMPLES, OUTLINE_SIZE[1] * BLACK_SAMPLES
    black = tf.cast(tf.cast(images, tf.float32) <= BLACK, tf.float32)
    n = tf.shape(forward)[0]
    to_frame = warp.scale_matrix(
        tf.fill([n], frame.width / w), tf.fill([n], frame.height / h)
    )  # grid coordinates -> frame coordinates
    grid = warp.warp_affine(black, warp.invert_affine(forward) @ to_frame, (h, w))
    return tf.nn.avg_pool2d(grid, BLACK_SAMPLES, BLACK_SAMPLES, "VALID")


#: the grey-level quantiles whose distance is a film's :func:`grey_range`
GREY_QUANTILES = (0.01, 0.99)


def grey_range(images: tf.Tensor) -> tf.Tensor:
    """The spread of a film's grey levels: its 99th minus its 1st percentile
    (:data:`GREY_QUANTILES`, in 1/255 steps), (B, H, W, 1) in [0, 1] -> (B,) in [0, 1]. A
    film darkened or brightened until it clipped, or one of uniform grey, has little range
    left (500 ``val`` films: 0.086 to 1, median 0.61). One histogram of the film as given (no
    resize: a resize outside the region networks took int8 in the selective int8 export)."""
    low, high = contrast.grey_quantiles(images, GREY_QUANTILES)
    return high - low


def occupancy(registered: tf.Tensor) -> tf.Tensor:
    """(B, H, W, 1) registered images (background removed: 0) -> (B, 52, 40, 1), the share
    of hand pixels in each cell of the :data:`OUTLINE_SIZE` grid, float32 in [0, 1]."""
    hand = tf.cast(registered > 0.0, tf.float32)
    return tf.clip_by_value(warp.resize(hand, OUTLINE_SIZE), 0.0, 1.0)


def content(registered: tf.Tensor) -> tf.Tensor:
    """(B, H, W, 1) registered images (background removed: 0) -> (B, 52, 40, 1), the mean
    grey level in each cell of the :data:`OUTLINE_SIZE` grid, float32 in [0, 1]: where the
    bones, the soft tissue and the gaps of a registered hand lie."""
    return tf.clip_by_value(warp.resize(tf.cast(registered, tf.float32), OUTLINE_SIZE), 0.0, 1.0)


def pattern_match(maps: tf.Tensor, template: tf.Tensor, weights: tf.Tensor) -> tf.Tensor:
    """Pearson correlation of each content map (B, 52, 40, 1) with a template (52, 40), every
    cell weighted by ``weights`` (52, 40) >= 0 (the canonical outline: where hands are):
    (B,) in [-1, 1]; 0 where a map or the template is constant."""
    n = OUTLINE_SIZE[0] * OUTLINE_SIZE[1]
    x = tf.reshape(tf.cast(maps, tf.float32), [-1, n])
    t = tf.reshape(tf.cast(template, tf.float32), [1, n])
    w = tf.reshape(tf.cast(weights, tf.float32), [1, n])
    w = tf.math.divide_no_nan(w, tf.reduce_sum(w))
    x = x - tf.reduce_sum(w * x, -1, keepdims=True)
    t = t - tf.reduce_sum(w * t, -1, keepdims=True)
    cov = tf.reduce_sum(w * x * t, -1)
    return tf.math.divide_no_nan(
        cov, tf.sqrt(tf.reduce_sum(w * x * x, -1) * tf.reduce_sum(w * t * t, -1))
    )


def rot90(x: tf.Tensor, k: int) -> tf.Tensor:
    """(B, s, s, C) square images turned ``k`` quarter turns counter-clockwise (``np.rot90``
    over axes 1, 2), from reverses and transposes (built-in TFLite ops)."""
    k %= 4
    if k == 1:
        return tf.transpose(tf.reverse(x, [2]), [0, 2, 1, 3])
    if k == 2:
        return tf.reverse(x, [1, 2])
    if k == 3:
        return tf.reverse(tf.transpose(x, [0, 2, 1, 3]), [2])
    return x


def turn_points(points: tf.Tensor, k: int) -> tf.Tensor:
    """Normalised (x, y) points (..., 2) of a square image -> where they land when the image
    is turned by :func:`rot90` ``k`` times (one turn: (x, y) -> (y, 1 - x))."""
    x, y = points[..., 0], points[..., 1]
    for _ in range(k % 4):
        x, y = y, 1.0 - x
    return tf.stack([x, y], -1)


def _turned_size(original_size: tf.Tensor, turns: tf.Tensor) -> tf.Tensor:
    """(B, 2) sizes of upright films -> the sizes of the films turned by ``turns`` (B,)."""
    original_size = tf.cast(original_size, tf.float32)
    odd = tf.equal(turns % 2, 1)[:, None]
    return tf.where(odd, tf.reverse(original_size, [1]), original_size)


def _select(stacked: tf.Tensor, index: tf.Tensor, n: int) -> tf.Tensor:
    """``stacked`` (B, n, ...) -> (B, ...) the entry ``index`` (B,) of each row: a one-hot
    weighted sum (exact; a batched gather fails in LiteRT)."""
    onehot = tf.one_hot(index, n, dtype=stacked.dtype)
    onehot = tf.reshape(
        onehot, tf.concat([tf.shape(onehot), tf.ones([tf.rank(stacked) - 2], tf.int32)], 0)
    )
    return tf.reduce_sum(stacked * onehot, 1)


@dataclasses.dataclass
class ChainConfig:
    """Sizes of the chain: the U-Net's and the landmark net's square inputs, the canonical
    frame, and the output size (h, w) of each region crop."""

    unet_size: int = 96
    landmark_size: int = 96
    frame: registration.Frame = dataclasses.field(default_factory=registration.Frame)
    region_sizes: dict = dataclasses.field(
        default_factory=lambda: {"A": (104, 80), "B": (48, 64), "C": (64, 72)}
    )
    #: find the film's orientation and polarity first (:meth:`Preprocessor.orient`); off for
    #: artifacts made before the step existed (their ``chain.json`` has no ``orient``)
    orient: bool = False
    #: the square size the orientation step scores its eight candidates at (a multiple of the
    #: U-Net's ``2**depth``); None: the U-Net's own size. Smaller saves most of the step's
    #: time at full resolution: the choice held at 2/3 of the U-Net's size on rsna100 `val`, not at
    #: 1/2 (RESULTS.md)
    orient_size: int | None = None
    #: the orientation classifier's margin for the film as given (:func:`.orientation.classify`;
    #: recorded in ``chain.json`` as ``orient_margin``)
    orient_margin: float = ORIENT_CLASS_MARGIN
    #: 2: the landmark net looks twice, the second time at the film turned so that its hand
    #: stands upright by the first look's tip -> capitate axis (:meth:`Preprocessor.landmarks`):
    #: the net learnt turns of up to 25 degrees, and its points drift with larger ones (rsna100
    #: ``val``: 8.5 % of the tip-capitate distance at 30 degrees with one look, 3.0 % with two;
    #: RESULTS.md). 1 for artifacts made before it existed
    landmark_passes: int = 1
    #: with a classifier and an outline: a proposal the classifier is at least this sure of
    #: stands without the outline check (:meth:`Preprocessor._keep_as_given`), which can
    #: overrule a right turn when the sideways film as given also fits the outline (two
    #: landmark looks register a sideways hand well). None: every proposal is checked (artifacts
    #: made before it existed)
    orient_trust: float | None = None

    def __post_init__(self):
        if self.landmark_passes not in (1, 2):
            raise ValueError(f"landmark_passes must be 1 or 2, got {self.landmark_passes!r}")
        if self.orient_trust is not None and not 0 < self.orient_trust <= 1:
            raise ValueError(f"orient_trust must be in (0, 1], got {self.orient_trust!r}")


def upright_matrix(points: tf.Tensor, true_size: tf.Tensor, side: int) -> tf.Tensor:
    """(B, 3, 3) map from the pixels of a (side, side) image turned so that its hand stands
    upright to the pixels of the image as given (continuous coordinates; the
    :func:`~.warp.warp_affine` convention), about the image's centre, at the film's true
    proportions: ``points`` (B, 3, 2) normalised (x, y) of tip, thumb and capitate in the image
    as given, ``true_size`` (B, 2) (height, width) of the square-pixel film it shows. The turn
    brings the tip straight above the capitate; no trigonometry (cosine and sine are the
    axis' own components)."""
    h, w = true_size[:, 0], true_size[:, 1]
    dx = (points[:, 0, 0] - points[:, 2, 0]) * w
    dy = (points[:, 0, 1] - points[:, 2, 1]) * h
    length = tf.maximum(tf.sqrt(dx * dx + dy * dy), 1e-6)
    cos, sin = -dy / length, dx / length  # the axis turned clockwise from straight up
    zero, one = tf.zeros_like(cos), tf.ones_like(cos)
    cx, cy = w / 2, h / 2
    # true pixels: p -> c + R (p - c), R turning clockwise by the axis' angle
    turn = tf.stack(
        [
            tf.stack([cos, -sin, cx - cos * cx + sin * cy], -1),
            tf.stack([sin, cos, cy - sin * cx - cos * cy], -1),
            tf.stack([zero, zero, one], -1),
        ],
        1,
    )
    to_true = warp.scale_matrix(w / side, h / side)
    return warp.invert_affine(to_true) @ turn @ to_true


@dataclasses.dataclass
class _Oriented:
    """A batch after the orientation step: the films as chosen (turned back is done by the
    landmark and registration steps; inverted films are inverted here), their cleaned masks
    and U-Net probabilities at the U-Net's size, the quarter turns (B,) int32, inversions (B,)
    bool, the classifier's confidence (B,) and the original sizes (B, 2) as the film stands."""

    images: tf.Tensor
    masks: tf.Tensor
    probs: tf.Tensor
    turns: tf.Tensor
    inverted: tf.Tensor
    confidence: tf.Tensor
    original_size: tf.Tensor | None


class Preprocessor(tf.Module):
    """Runs the chain on a batch of decoded images (B, H, W, 1) float32 in [0, 1].

    Args:
        unet: segmentation model, input (unet_size, unet_size, 1).
        landmark_model: landmark model, input (landmark_size, landmark_size, 1), or ``None``
            to stop after contrast (landmarks then come from the caller).
        config: sizes.
        orient_model: the orientation classifier (:mod:`tf_boneage.models.orientation`) of the
            orientation step when ``config.orient``; ``None``: the U-Net's mask mass decides
            (:meth:`orient`).
    """

    def __init__(
        self,
        unet: keras.Model,
        landmark_model: keras.Model | None = None,
        config: ChainConfig | None = None,
        orient_model: keras.Model | None = None,
    ):
        super().__init__(name="preprocessor")
        self.unet = unet
        self.landmark_model = landmark_model
        self.config = config or ChainConfig()
        self.orient_model = orient_model
        if orient_model is not None and self.config.orient_size:
            raise ValueError(
                "chain orient_size scores the U-Net's orientation candidates; with an "
                "orientation classifier leave it out"
            )
        #: the canonical outline (52, 40) once an export has fitted one (a variable the
        #: serving graph shares): the orientation step then checks its choice against it
        self.outline = None
        #: the U-Net at ``config.orient_size`` (its weights copied), or None: the U-Net itself
        self.orient_unet = None
        size = self.config.orient_size
        if self.config.orient and size and size != self.config.unet_size:
            from tf_boneage.models import unet as unet_lib

            try:
                self.orient_unet = unet_lib.at_size(unet, size)
            except ValueError as exc:
                raise ValueError(f"chain orient_size={size}: {exc}") from None

    def segment(self, images: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """(clean masks at the U-Net's size (B, s, s, 1), probabilities (B, s, s, 1))."""
        probs = tf.cast(self.unet(self.unet_input(images), training=False), tf.float32)
        return mask.clean_mask(probs), probs

    def unet_input(self, images: tf.Tensor) -> tf.Tensor:
        """The U-Net's input: images at (unet_size, unet_size)."""
        s = self.config.unet_size
        return warp.resize(images, (s, s))

    def enhance(self, images: tf.Tensor, masks: tf.Tensor) -> tf.Tensor:
        """Background removed and equalised inside the hand, at the images' size."""
        return contrast.equalize(mask.remove_background(images, masks), masks)

    def landmark_input(self, enhanced: tf.Tensor) -> tf.Tensor:
        """The landmark model's input: enhanced images at (landmark_size, landmark_size)."""
        s = self.config.landmark_size
        return warp.resize(enhanced, (s, s))

    def landmarks(
        self,
        enhanced: tf.Tensor,
        turns: tf.Tensor | None = None,
        original_size: tf.Tensor | None = None,
    ) -> tf.Tensor:
        """Normalised (B, 6) landmarks predicted on the enhanced images; with ``turns`` (B,)
        (from :meth:`orient`) predicted on the upright image and turned back to the film's.
        With ``config.landmark_passes`` 2 the net looks again at the image turned so that the
        first look's hand stands upright (:func:`upright_matrix`; ``original_size`` (B, 2) the
        film's square-pixel (h, w) as given, else its pixels are taken as square), and those
        points are carried back."""
        small = self.landmark_input(enhanced)
        if turns is None:
            turns = tf.zeros(tf.shape(small)[:1], tf.int32)
            upright = small
        else:
            upright = _select(tf.stack([rot90(small, -j) for j in range(4)], 1), turns, 4)
        pts = tf.reshape(
            tf.cast(self.landmark_model(upright, training=False), tf.float32), [-1, 3, 2]
        )
        if self.config.landmark_passes == 2:
            s = self.config.landmark_size
            size = tf.shape(enhanced)[1:3]
            h, w = registration.square_size(size, original_size, tf.shape(small)[0])
            odd = tf.equal(turns % 2, 1)  # the upright image shows the film turned a quarter
            true_size = tf.stack([tf.where(odd, w, h), tf.where(odd, h, w)], -1)
            back = upright_matrix(pts, true_size, s)
            second = warp.warp_affine(upright, back, (s, s))
            again = tf.reshape(
                tf.cast(self.landmark_model(second, training=False), tf.float32), [-1, 3, 2]
            )
            pts = warp.apply(back, again * s) / s
        turned = tf.stack([turn_points(pts, j) for j in range(4)], 1)
        return tf.reshape(_select(turned, turns, 4), [-1, 6])

    def orient(self, images: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """The film's orientation and polarity, from the U-Net. It segments upright hands of
        normal polarity best, so of the :data:`CANDIDATES` (four quarter turns of the film and
        of its inverse) the one with the largest mask mass (the mean probability over pixels
        above 0.5) wins; the film as given gets :data:`ORIENT_MARGIN`. Measured with the
        rsna100 U-Net on 500 `val` films at every quarter turn, normal and inverted (RESULTS).

        The candidates are scored at ``config.orient_size`` when it is set (by a copy of the
        U-Net at that size), else at the U-Net's size.

        Returns ``(probs, turns, inverted, as_given)``: the winner's probabilities (B, s, s, 1)
        turned back to the film's orientation, the quarter turns (B,) int32 that make the film
        upright (:func:`rot90` by ``-turns``), whether the film was inverted (B,) bool, and
        the probabilities of the film as given (B, s, s, 1); ``s`` the scoring size
        (:meth:`upright_probs` gives the chosen candidate's at the U-Net's size).
        """
        net = self.orient_unet or self.unet
        s = int(net.input_shape[1])
        small = warp.resize(images, (s, s))
        cands = [rot90(p, -j) for p in (small, 1.0 - small) for j in range(4)]
        # one U-Net call per candidate: one call on all eight would hold eight batches'
        # activations at once (23 GB for 200 films at 96 px)
        probs = tf.stack([tf.cast(net(c, training=False), tf.float32) for c in cands], 1)
        mass = tf.reduce_mean(tf.where(probs > 0.5, probs, 0.0), [2, 3, 4])  # (B, 8)
        mass += tf.one_hot(0, CANDIDATES) * ORIENT_MARGIN
        best = tf.argmax(mass, 1, output_type=tf.int32)
        upright = _select(probs, best, CANDIDATES)
        turns = best % 4
        back = tf.stack([rot90(upright, j) for j in range(4)], 1)
        return _select(back, turns, 4), turns, best >= 4, probs[:, 0]

    def upright_probs(self, images: tf.Tensor, turns: tf.Tensor) -> tf.Tensor:
        """The U-Net's probabilities (B, s, s, 1) at its own size for films already of the
        chosen polarity, predicted on them turned upright (by ``-turns``) and turned back:
        after an orientation step that scored at a smaller size."""
        x = self.unet_input(images)
        upright = _select(tf.stack([rot90(x, -j) for j in range(4)], 1), turns, 4)
        probs = tf.cast(self.unet(upright, training=False), tf.float32)
        return _select(tf.stack([rot90(probs, j) for j in range(4)], 1), turns, 4)

    def candidate_fit(self, images, probs, turns, inverted, original_size, upright_size):
        """The registration fit (:func:`soft_dice` with ``self.outline``) of one orientation
        candidate, cheaply: equalised and registered at the landmark net's size, the mask
        warped straight into the :data:`OUTLINE_SIZE` grid. (B,)."""
        masks = mask.clean_mask(probs)
        s = self.config.landmark_size
        small = warp.resize(images, (s, s))
        small = tf.where(inverted[:, None, None, None], 1.0 - small, small)
        size = tf.shape(images)[1:3]
        if upright_size and original_size is not None:
            original_size = _turned_size(original_size, turns)
        h, w = registration.square_size(size, original_size, tf.shape(images)[0])
        marks = self.landmarks(self.enhance(small, masks), turns, tf.stack([h, w], -1))
        forward, _ = registration.registration_matrix(marks, size, self.config.frame, original_size)
        n = tf.shape(images)[:1]
        frame, u = self.config.frame, tf.cast(tf.shape(probs)[1], tf.float32)
        h, w = tf.cast(size[0], tf.float32), tf.cast(size[1], tf.float32)
        to_grid = warp.scale_matrix(
            tf.fill(n, OUTLINE_SIZE[1] / frame.width), tf.fill(n, OUTLINE_SIZE[0] / frame.height)
        )
        from_mask = warp.scale_matrix(tf.fill(n, w / u), tf.fill(n, h / u))
        occ = regions.warp_affine(
            masks, warp.invert_affine(to_grid @ forward @ from_mask), OUTLINE_SIZE
        )
        return soft_dice(occ, self.outline)

    def _keep_as_given(
        self, images, probs, turns, inverted, original_size, upright_size, as_given=None
    ):
        """Whether each film stays as given (B,) bool: the proposed orientation (``probs`` of
        the film turned by ``turns`` and inverted, in the film's orientation) does not register
        closer to ``self.outline`` than the film as given (by more than :data:`FIT_MARGIN`);
        and the U-Net's probabilities of the film as given (``as_given``, computed when not
        passed). The caller lets a proposal of at least ``config.orient_trust`` confidence
        stand whatever this says."""
        if as_given is None:
            as_given = self.segment(images)[1]
        fit = self.candidate_fit(images, probs, turns, inverted, original_size, upright_size)
        fit0 = self.candidate_fit(
            images,
            as_given,
            tf.zeros_like(turns),
            tf.zeros_like(inverted),
            original_size,
            upright_size,
        )
        return fit <= fit0 + FIT_MARGIN, as_given

    def qc(self, masks, probs, landmarks, image_size, original_size=None) -> dict:
        """QC numbers per image: ``mask_area`` (fraction of the image), ``mask_confidence``
        (mean probability inside the mask) and ``landmark_plausibility``, the fraction of 4
        checks passed: thumb-capitate / tip-capitate distance in :data:`THUMB_RATIO`,
        tip-capitate distance / the image's longer side in :data:`AXIS_FRACTION` (square pixels), all
        landmarks inside the image, all landmarks on the mask."""
        area = tf.reduce_mean(masks, axis=[1, 2, 3])
        confidence = tf.math.divide_no_nan(
            tf.reduce_sum(probs * masks, [1, 2, 3]), tf.reduce_sum(masks, [1, 2, 3])
        )
        oh, ow = registration.square_size(image_size, original_size, tf.shape(area)[0])
        pts = tf.reshape(landmarks, [-1, 3, 2]) * tf.stack([ow, oh], -1)[:, None]
        axis = tf.norm(pts[:, 0] - pts[:, 2], axis=-1)
        thumb = tf.norm(pts[:, 1] - pts[:, 2], axis=-1) / tf.maximum(axis, 1e-6)
        axis_frac = axis / tf.maximum(oh, ow)
        s = tf.shape(masks)[1]
        idx = tf.cast(
            tf.clip_by_value(tf.reshape(landmarks, [-1, 3, 2]), 0.0, 0.999)
            * tf.cast(s, tf.float32),
            tf.int32,
        )
        # a flat gather (GATHER_ND with batch dimensions fails in LiteRT: index out of bounds)
        flat = tf.reshape(masks, [tf.shape(masks)[0], -1])
        idx = tf.clip_by_value(idx, 0, s - 1)  # NaN landmarks cast to any integer
        on_mask = tf.gather(flat, idx[..., 1] * s + idx[..., 0], batch_dims=1)
        checks = tf.stack(
            [
                (thumb >= THUMB_RATIO[0]) & (thumb <= THUMB_RATIO[1]),
                (axis_frac >= AXIS_FRACTION[0]) & (axis_frac <= AXIS_FRACTION[1]),
                tf.reduce_all(tf.reshape(landmarks, [-1, 6]) >= -0.02, -1)
                & tf.reduce_all(tf.reshape(landmarks, [-1, 6]) <= 1.02, -1),
                tf.reduce_all(on_mask > 0.5, -1),
            ],
            -1,
        )
        return {
            "mask_area": area,
            "mask_confidence": confidence,
            "landmark_plausibility": tf.reduce_mean(tf.cast(checks, tf.float32), -1),
        }

    def __call__(
        self,
        images: tf.Tensor,
        original_size: tf.Tensor | None = None,
        landmarks: tf.Tensor | None = None,
        upright_size: bool = False,
    ) -> dict:
        """Run the chain. ``landmarks`` (B, 6) override the landmark model when given.
        ``upright_size``: ``original_size`` is an assumption about the film held upright (a
        graph's ``assume_aspect`` for films squashed to a square): a film the orientation step
        finds turned by 90 or 270 degrees gets it turned too.

        Returns a dict: ``mask`` (B, s, s, 1), ``enhanced`` (B, H, W, 1), ``landmarks``
        (B, 6), ``registered`` (B, frame h, frame w, 1), ``forward`` (B, 3, 3), ``right``
        (B,), ``quarter_turns`` (B,) int32 and ``inverted`` (B,) bool (all 0 / False unless
        ``config.orient``), ``occupancy`` and ``content`` (B, 52, 40, 1) (:func:`occupancy`, :func:`content`), ``black_map`` (B, 52, 40, 1)
        (:func:`black_map`), ``sharpness``, ``step_share`` and ``grey_range`` (B,)
        (:func:`sharpness`, :func:`step_share`, :func:`grey_range`), ``region_A`` / ``region_B`` / ``region_C`` crops and the QC numbers.
        """
        images = tf.cast(images, tf.float32)
        if self.config.orient and self.orient_model is not None:
            o = self._orient_by_classifier(images, original_size, upright_size)
        elif self.config.orient:
            o = self._orient_by_mask_mass(images, original_size, upright_size)
        else:
            n = tf.shape(images)[:1]
            masks, probs = self.segment(images)
            o = _Oriented(
                images,
                masks,
                probs,
                tf.zeros(n, tf.int32),
                tf.zeros(n, tf.bool),
                tf.ones(n, tf.float32),
                original_size,
            )
        enhanced = self.enhance(o.images, o.masks)
        if landmarks is None:
            landmarks = self.landmarks(
                enhanced, o.turns if self.config.orient else None, o.original_size
            )
        size = tf.shape(o.images)[1:3]
        frame = self.config.frame
        forward, right = registration.registration_matrix(landmarks, size, frame, o.original_size)
        registered = regions.warp_affine(enhanced, warp.invert_affine(forward), frame.size)
        out = {
            "mask": o.masks,
            "enhanced": enhanced,
            "landmarks": landmarks,
            "registered": registered,
            "forward": forward,
            "right": right,
            "quarter_turns": o.turns,
            "inverted": o.inverted,
            "orientation_confidence": o.confidence,
            **self._image_measures(o.images, o.masks, registered, forward),
        }
        for name, crop_size in self.config.region_sizes.items():
            out[f"region_{name}"] = regions.extract(enhanced, forward, name, crop_size, frame)
        out.update(self.qc(o.masks, o.probs, landmarks, size, o.original_size))
        return out

    def _orient_by_classifier(self, images, original_size, upright_size) -> _Oriented:
        """The orientation step with the classifier: its proposal (turns, inversion), checked
        against the canonical outline when the chain has one, unless the classifier is at
        least ``config.orient_trust`` sure (:meth:`_keep_as_given`); the chosen film's mask."""
        from tf_boneage.preprocessing import orientation

        turns, inverted, confidence = orientation.classify(
            self.orient_model, images, self.config.orient_margin
        )
        chosen = tf.where(inverted[:, None, None, None], 1.0 - images, images)
        probs = self.upright_probs(chosen, turns)
        if self.outline is not None:  # the classifier proposes, the outline accepts
            # only when it proposes a change for some film of the batch: a film proposed
            # as given is kept as given by the check anyway (the same fit twice), and the
            # check costs a U-Net and two landmark passes (0.3 s on a full-size film)
            proposed = (turns != 0) | inverted
            trusted = tf.zeros_like(proposed)
            if self.config.orient_trust is not None:  # a sure classifier stands alone
                trusted = proposed & (confidence >= self.config.orient_trust)
            keep, as_given = tf.cond(
                tf.reduce_any(proposed & ~trusted),
                lambda: self._keep_as_given(
                    images, probs, turns, inverted, original_size, upright_size
                ),
                lambda: (tf.ones_like(inverted), probs),
            )
            keep &= ~trusted
            probs = tf.where(keep[:, None, None, None], as_given, probs)
            turns = tf.where(keep, tf.zeros_like(turns), turns)
            inverted = tf.logical_and(inverted, tf.logical_not(keep))
            chosen = tf.where(inverted[:, None, None, None], 1.0 - images, images)
        if upright_size and original_size is not None:
            original_size = _turned_size(original_size, turns)
        masks = mask.clean_mask(probs)
        return _Oriented(chosen, masks, probs, turns, inverted, confidence, original_size)

    def _orient_by_mask_mass(self, images, original_size, upright_size) -> _Oriented:
        """The orientation step without a classifier: the U-Net's largest mask over the
        film's eight orientations (:meth:`orient`), turned only when the registration then
        fits the canonical outline better (when the chain has one)."""
        probs, turns, inverted, as_given = self.orient(images)
        if self.outline is not None:  # turn only when the registration fits better
            keep, _ = self._keep_as_given(
                images, probs, turns, inverted, original_size, upright_size, as_given
            )
            probs = tf.where(keep[:, None, None, None], as_given, probs)
            turns = tf.where(keep, tf.zeros_like(turns), turns)
            inverted = tf.logical_and(inverted, tf.logical_not(keep))
        images = tf.where(inverted[:, None, None, None], 1.0 - images, images)
        if self.orient_unet is not None:  # scored small: the chosen film at full size
            probs = self.upright_probs(images, turns)
        if upright_size and original_size is not None:
            original_size = _turned_size(original_size, turns)
        confidence = tf.ones(tf.shape(images)[:1], tf.float32)
        return _Oriented(
            images, mask.clean_mask(probs), probs, turns, inverted, confidence, original_size
        )

    def _image_measures(self, images, masks, registered, forward) -> dict:
        """The QC measures of the film and of its registration: ``occupancy`` and ``content``
        of the frame, ``sharpness``, ``step_share``, ``black_map`` and ``grey_range`` of the
        film."""
        return {
            "occupancy": occupancy(registered),
            "content": content(registered),
            "sharpness": sharpness(images, masks),
            "step_share": step_share(images, masks),
            "black_map": black_map(images, forward, self.config.frame),
            "grey_range": grey_range(images),
        }


def load(
    unet_path,
    landmarks_path=None,
    frame=None,
    region_sizes=None,
    orient: bool = False,
    orient_size: int | None = None,
    orient_model_path=None,
    orient_margin: float | None = None,
    landmark_passes: int = 1,
    orient_trust: float | None = None,
) -> Preprocessor:
    """A :class:`Preprocessor` from saved ``.keras`` models (paths) or Keras models already
    built (:mod:`tf_boneage.export.rebuild` passes those); sizes read from the models;
    ``frame`` (h, w) defaults to the paper's ``registration.PAPER_FRAME``; ``orient`` and
    ``orient_size``: see :meth:`Preprocessor.orient`; ``orient_model_path``: the orientation
    classifier of the orientation step (``orient`` must be on); ``orient_margin``: its margin
    (None: :data:`ORIENT_CLASS_MARGIN`); ``landmark_passes``, ``orient_trust``: see
    :class:`ChainConfig`."""
    if _model(orient_model_path, load=False) is not None and not orient:
        raise ValueError("an orientation model needs the orientation step (orient=True)")
    unet = _model(unet_path)
    marks = _model(landmarks_path)
    config = ChainConfig(
        unet_size=int(unet.input_shape[1]),
        landmark_size=int(marks.input_shape[1]) if marks is not None else 96,
        frame=registration.Frame(*(frame or registration.PAPER_FRAME)),
        orient=bool(orient),
        orient_size=int(orient_size) if orient_size else None,
        orient_margin=ORIENT_CLASS_MARGIN if orient_margin is None else float(orient_margin),
        landmark_passes=int(landmark_passes),
        orient_trust=None if orient_trust is None else float(orient_trust),
    )
    if region_sizes is not None:
        config.region_sizes = dict(region_sizes)
    return Preprocessor(unet, marks, config, _model(orient_model_path))


def _model(source, load: bool = True):
    """A Keras model as given, or loaded from its ``.keras`` file (``compile=False``: inference
    weights only, an export must not carry optimizer slots); None for None or "".
    ``load=False``: the path itself instead of the loaded model."""
    if isinstance(source, keras.Model):
        return source
    if not source:
        return None
    return keras.saving.load_model(source, compile=False) if load else source


def to_input_size(image, size: tuple[int, int]):
    """Resize one decoded image (H, W) to the chain's input ``size`` (h, w) with the chain's own
    resize (TF ops): used by the cache and the contact sheet, so nothing resizes differently."""
    batch = tf.constant(image, tf.float32)[None, ..., None]
    return warp.resize(batch, tuple(size)).numpy()[0, ..., 0]
