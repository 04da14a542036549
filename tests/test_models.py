"""Models, heads and losses with tiny shapes (style of keras-hub model tests)."""

import math

import keras
import numpy as np
import pytest

from tf_boneage.models import (
    BCEJaccardLoss,
    DiceCoefficient,
    ExpectedValue,
    JaccardIndex,
    LandmarkNet,
    RegionNet,
    UNet,
    UnitToMonths,
    probability_model,
)

RNG = np.random.default_rng(0)


def tiny_unet():
    return UNet((16, 16, 1), depth=2, base_filters=4)


def tiny_landmarks():
    return LandmarkNet((16, 16, 1), filters=(4, 8), dense_units=8, dropout=0.0)


def tiny_region(head="regression", sex=False, block="authors"):
    return RegionNet(
        (24, 16, 1),
        head=head,
        sex_input=sex,
        block=block,
        filters=(4, 4, 8, 8, 8, 8),
        dense_units=8,
        pool_padding="same",
        dropout=0.0,
    )


def _region_x(model, n=4):
    x = {"image": RNG.random((n, 24, 16, 1), dtype=np.float32)}
    if "male" in model.input:
        x["male"] = (RNG.random((n, 1)) < 0.5).astype(np.float32)
    return x


CASES = {
    "unet": (
        tiny_unet,
        lambda m: RNG.random((4, 16, 16, 1), dtype=np.float32),
        (4, 16, 16, 1),
        BCEJaccardLoss(),
        lambda: (RNG.random((4, 16, 16, 1)) < 0.4).astype(np.float32),
    ),
    "landmarks": (
        tiny_landmarks,
        lambda m: RNG.random((4, 16, 16, 1), dtype=np.float32),
        (4, 6),
        "mse",
        lambda: RNG.random((4, 6)).astype(np.float32),
    ),
    "region_regression": (
        tiny_region,
        _region_x,
        (4, 1),
        "mae",
        lambda: RNG.uniform(1, 228, (4, 1)).astype(np.float32),
    ),
    "region_classification_sex": (
        lambda: tiny_region("classification", True),
        _region_x,
        (4, 1),
        "mae",
        lambda: RNG.uniform(1, 228, (4, 1)).astype(np.float32),
    ),
    "region_paper_block": (
        lambda: tiny_region(block="paper"),
        _region_x,
        (4, 1),
        "mae",
        lambda: RNG.uniform(1, 228, (4, 1)).astype(np.float32),
    ),
}


@pytest.fixture(params=list(CASES))
def case(request):
    build, make_x, shape, loss, make_y = CASES[request.param]
    model = build()
    return model, make_x(model), shape, loss, make_y()


def test_output_shape_and_dtype(case):
    model, x, shape, _, _ = case
    y = model(x)
    assert tuple(y.shape) == shape and y.dtype == "float32"


def test_one_step_lowers_the_loss(case):
    model, x, _, loss, y = case
    keras.utils.set_random_seed(0)
    model.compile(keras.optimizers.Adam(1e-4), loss=loss)
    loss_fn = keras.losses.get(loss) if isinstance(loss, str) else loss

    def current():  # dropout is 0 in the tiny models; batch norm uses batch statistics
        return float(keras.ops.mean(loss_fn(y, model(x, training=True))))

    before = current()
    model.train_on_batch(x, y)
    assert current() < before


def test_config_and_keras_file_round_trip(case, tmp_path):
    model, x, _, _, _ = case
    clone = model.__class__.from_config(model.get_config())
    clone.set_weights(model.get_weights())
    np.testing.assert_allclose(clone(x), model(x), atol=1e-6)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert type(loaded) is type(model)
    np.testing.assert_allclose(loaded(x), model(x), atol=1e-6)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_outputs_float32(policy):
    keras.mixed_precision.set_global_policy(policy)
    try:
        for build, make_x in [
            (tiny_unet, CASES["unet"][1]),
            (tiny_landmarks, CASES["unet"][1]),
            (lambda: tiny_region("classification", True), _region_x),
        ]:
            model = build()
            assert model.layers[1].compute_dtype != "float32"
            assert model(make_x(model)).dtype == "float32"
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_paper_size_region_net():
    model = RegionNet()
    assert model.get_layer("block6_pool").output.shape[1:] == (6, 4, 384)
    assert model.count_params() == 24_755_169


def test_probability_model_shares_weights():
    model = tiny_region("classification")
    x = _region_x(model)
    probs = probability_model(model)(x).numpy()
    assert probs.shape == (4, 240)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    np.testing.assert_allclose(model(x).numpy()[:, 0], probs @ np.arange(1, 241), rtol=1e-5)
    with pytest.raises(ValueError, match="no classification head"):
        probability_model(tiny_region())


# ---- the binning layer on known distributions --------------------------------------------


def _one_hot(month):
    p = np.zeros(240, np.float32)
    p[month - 1] = 1.0
    return p


@pytest.mark.parametrize(
    ("probs", "expected"),
    [
        (_one_hot(1), 1.0),
        (_one_hot(240), 240.0),
        (_one_hot(37), 37.0),
        (np.full(240, 1 / 240, np.float32), 120.5),
        ((_one_hot(10) + _one_hot(20)) / 2, 15.0),
        ((_one_hot(100) * 0.25 + _one_hot(200) * 0.75), 175.0),
    ],
)
def test_expected_value_known_distributions(probs, expected):
    out = ExpectedValue()(probs[None])
    assert out.shape == (1, 1) and float(out[0, 0]) == pytest.approx(expected, rel=1e-5)


def test_unit_to_months():
    out = UnitToMonths()(np.array([[-1.0], [0.0], [0.5], [1.0]], np.float32)).numpy()[:, 0]
    np.testing.assert_allclose(out, [0.0, 120.0, 180.0, 240.0])


# ---- the segmentation loss on 3x3 masks, computed by hand ---------------------------------

EPS = 1e-7
Y4 = np.array([[1, 1, 0], [1, 1, 0], [0, 0, 0]], np.float32)  # four hand pixels
HALF = np.array([[1, 1, 0], [0, 0, 0], [0, 0, 0]], np.float32)
SHIFTED = np.array([[0, 1, 1], [0, 0, 0], [0, 0, 0]], np.float32)  # overlaps HALF in 1 pixel

LOSS_TABLE = [
    # all correct: H = -log(1 - eps) ~ 1e-7, J = 1
    ("all-correct", Y4, Y4, -math.log(1 - EPS) - math.log(1.0)),
    # all wrong: H = -log(eps), J = eps / (9 + eps)
    ("all-wrong", Y4, 1 - Y4, -math.log(EPS) - math.log(EPS / (9 + EPS))),
    # half overlap: 2 of 9 pixels wrong; |A and B| = 1, |A or B| = 3
    (
        "half-overlap",
        HALF,
        SHIFTED,
        -2 / 9 * math.log(EPS) - 7 / 9 * math.log(1 - EPS) - math.log((1 + EPS) / (3 + EPS)),
    ),
    # p = 0.5 everywhere: H = log 2, J = 2 / (4 + 4.5 - 2)
    ("uniform-half", Y4, np.full((3, 3), 0.5, np.float32), math.log(2) - math.log(2 / 6.5)),
]


@pytest.mark.parametrize(("name", "y", "p", "expected"), LOSS_TABLE, ids=[r[0] for r in LOSS_TABLE])
def test_bce_jaccard_loss_by_hand(name, y, p, expected):
    loss = BCEJaccardLoss(eps=EPS)
    got = float(loss(y[None, ..., None], p[None, ..., None]))
    assert got == pytest.approx(expected, rel=1e-4, abs=1e-5)


def test_per_pixel_jaccard_is_the_literal_paper_formula():
    # literal form on a perfect mask: J = (1/9) * sum_{y=1} 1 = 4/9, H ~ 0
    loss = BCEJaccardLoss(eps=EPS, jaccard="per_pixel")
    got = float(loss(Y4[None, ..., None], Y4[None, ..., None]))
    assert got == pytest.approx(-math.log(4 / 9), rel=1e-4)


def test_loss_batch_mean_and_serialization():
    y = np.stack([Y4, HALF])[..., None]
    p = np.stack([Y4, SHIFTED])[..., None]
    loss = BCEJaccardLoss(eps=EPS)
    assert float(loss(y, p)) == pytest.approx((LOSS_TABLE[0][3] + LOSS_TABLE[2][3]) / 2, rel=1e-4)
    clone = BCEJaccardLoss.from_config(loss.get_config())
    assert float(clone(y, p)) == pytest.approx(float(loss(y, p)))


@pytest.mark.parametrize(
    ("metric", "expected"),
    [(JaccardIndex, (1.0 + 1 / 3) / 2), (DiceCoefficient, (1.0 + 2 * 1 / 4) / 2)],
)
def test_overlap_metrics_by_hand(metric, expected):
    m = metric()
    m.update_state(np.stack([Y4, HALF])[..., None], np.stack([Y4, SHIFTED])[..., None] * 0.9)
    assert float(m.result()) == pytest.approx(expected)
    m.reset_state()
    m.update_state(np.zeros((1, 3, 3, 1)), np.zeros((1, 3, 3, 1)))  # empty vs empty
    assert float(m.result()) == 1.0


# ---- invalid arguments echo the bad value -------------------------------------------------


@pytest.mark.parametrize(
    ("build", "bad"),
    [
        (lambda: UNet((15, 16, 1), depth=2), "15x16"),
        (lambda: UNet((16, 16, 1), depth=0), "0"),
        (lambda: UNet((16, 16, 1), base_filters=-3), "-3"),
        (lambda: LandmarkNet((16, 16, 1), filters=(4, 8), dropout=1.5), "1.5"),
        (lambda: LandmarkNet((18, 16, 1), filters=(4, 8)), "18x16"),
        (lambda: RegionNet(head="ordinal"), "ordinal"),
        (lambda: RegionNet(block="resnet"), "resnet"),
        (lambda: RegionNet((64, 64, 1)), "64x64"),
        (lambda: RegionNet(pool_padding="full"), "full"),
        (lambda: RegionNet(dropout=-0.1), "-0.1"),
        (lambda: ExpectedValue(num_bins=1), "1"),
        (lambda: UnitToMonths(scale=0), "0"),
        (lambda: BCEJaccardLoss(jaccard="dice"), "dice"),
        (lambda: BCEJaccardLoss(eps=0.7), "0.7"),
        (lambda: JaccardIndex(threshold=1.2), "1.2"),
    ],
)
def test_invalid_arguments(build, bad):
    with pytest.raises(ValueError, match=bad.replace(".", r"\.")):
        build()


# ---- FLOPs and the summary table ----------------------------------------------------------


def test_layer_flops_by_hand():
    from tf_boneage.models.summary import model_flops, parameter_split

    x = keras.Input((4, 5, 2))
    y = keras.layers.Conv2D(3, 3, padding="same")(x)  # 2 * 4*5 * 3*3 * 2*3 = 2160
    y = keras.layers.Conv2DTranspose(1, 2, strides=2)(y)  # 2 * 4*5 * 2*2 * 3*1 = 480
    y = keras.layers.Flatten()(y)
    y = keras.layers.Dense(7)(y)  # 2 * (8*10*1) * 7 = 1120
    model = keras.Model(x, y)
    assert model_flops(model) == 2160 + 480 + 1120
    assert parameter_split(model) == (3 * 3 * 2 * 3 + 3 + 2 * 2 * 3 + 1, 80 * 7 + 7)


def test_summary_prints_every_preset_model(capsys):
    from tf_boneage.models import summary
    from tf_boneage.models.presets import PRESETS

    assert summary.main(["--presets", "synthetic"]) == 0
    out = capsys.readouterr().out
    for name in PRESETS["synthetic"]:
        assert f"| synthetic | {name} |" in out
    with pytest.raises(ValueError, match="'huge'"):
        from tf_boneage.models.presets import build

        build("huge", "unet")


def test_batchnorm_recalibration_matches_batch_statistics():
    from tf_boneage.models.batchnorm import batchnorm_layers, recalibrate

    model = tiny_unet()
    x = RNG.random((8, 16, 16, 1), dtype=np.float32) * 0.3 + 0.6  # far from the init stats
    batch_stats = model(x, training=True).numpy()
    assert not np.allclose(model(x, training=False), batch_stats, atol=1e-3)
    momenta = [layer.momentum for layer in batchnorm_layers(model)]
    assert recalibrate(model, x) == len(momenta) > 0
    np.testing.assert_allclose(model(x, training=False), batch_stats, atol=1e-3)
    assert [layer.momentum for layer in batchnorm_layers(model)] == momenta


def test_batchnorm_recalibration_averages_several_batches():
    from tf_boneage.models.batchnorm import batchnorm_layers, recalibrate

    model = tiny_unet()
    a = (
        np.full((4, 16, 16, 1), 0.2, np.float32)
        + RNG.random((4, 16, 16, 1), dtype=np.float32) * 0.1
    )
    b = a + 0.6
    recalibrate(model, [a, b])
    first = batchnorm_layers(model)[0]
    mean_two = first.moving_mean.numpy().copy()
    recalibrate(model, np.concatenate([a, b]))
    # the first layer's batch mean is linear in the input: the average of two equal batches
    np.testing.assert_allclose(mean_two, first.moving_mean.numpy(), rtol=1e-4, atol=1e-5)


def test_clean_batches_stream_the_first_inputs_in_small_batches():
    """Up to ``limit`` inputs, re-cut into batches of at most ``size``, read one dataset
    batch at a time (a generator: nothing past the limit is read)."""
    import tensorflow as tf

    from tf_boneage.models.batchnorm import clean_batches

    x = np.arange(50, dtype=np.float32).reshape(25, 2)
    read = []

    def rows():
        for i in range(0, 25, 10):
            read.append(i)
            yield x[i : i + 10], np.zeros(len(x[i : i + 10]))

    out = clean_batches(rows(), limit=13, size=4)
    assert not read  # lazy
    batches = list(out)
    assert [len(b) for b in batches] == [4, 4, 2, 3]  # 10 of the first batch, 3 of the second
    np.testing.assert_array_equal(np.concatenate(batches), x[:13])
    assert read == [0, 10]  # the third dataset batch is never read
    ds = tf.data.Dataset.from_tensor_slices(({"image": x, "male": x[:, 0]}, x[:, 1])).batch(8)
    dicts = list(clean_batches(ds, limit=100, size=5))
    assert [len(b["image"]) for b in dicts] == [5, 3, 5, 3, 5, 3, 1]
    np.testing.assert_array_equal(np.concatenate([b["male"] for b in dicts]), x[:, 0])


def test_unet_at_another_size_is_the_same_network():
    """``unet.at_size``: the same layers and weights for another square input (the orientation
    step scores at a small size). At the same size it answers exactly as the original; on a
    film of constant value every pixel away from the border answers the same at any size."""
    from tf_boneage.models.unet import at_size

    keras.utils.set_random_seed(1)
    net = UNet((32, 32, 1), depth=2, base_filters=4)
    x = np.random.default_rng(0).random((2, 32, 32, 1)).astype(np.float32)
    np.testing.assert_array_equal(at_size(net, 32)(x).numpy(), net(x).numpy())
    small = at_size(net, 16)
    assert small.input_shape == (None, 16, 16, 1) and small.output_shape == (None, 16, 16, 1)
    for a, b in zip(small.get_weights(), net.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    # inference mode (batch norm by its moving statistics): far from the border (more than the
    # receptive field) a flat film gives the same answer at any size
    flat = np.full((1, 96, 96, 1), 0.4, np.float32)
    big = at_size(net, 96)(flat, training=False).numpy()[0, 46:50, 46:50]
    mid = at_size(net, 64)(flat[:, :64, :64], training=False).numpy()[0, 30:34, 30:34]
    np.testing.assert_allclose(mid, big, rtol=1e-5)
    with pytest.raises(ValueError, match="multiple of 4"):
        at_size(net, 18)
