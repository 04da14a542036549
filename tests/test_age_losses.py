"""The classification head's bin cross-entropy (tf_boneage.models.age_losses): values by hand,
the collapsed softmax it rescues, the errors, and the training step that uses it."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from tf_boneage.models.age_losses import gaussian_bins, soft_bin_cross_entropy
from tf_boneage.models.layers import ExpectedValue
from tf_boneage.training import config as config_lib
from tf_boneage.training.region import RegionTask

E = math.exp(-0.5)  # one sigma away
E2 = math.exp(-2.0)  # two sigmas away


@pytest.mark.parametrize(
    ("age", "num_bins", "start", "sigma", "expected"),
    [
        # bins 1, 2, 3 around 2 months, sigma 1: weights e^-1/2, 1, e^-1/2
        (2.0, 3, 1.0, 1.0, [E / (1 + 2 * E), 1 / (1 + 2 * E), E / (1 + 2 * E)]),
        # bins 0, 1, 2 around 0 months, sigma 1: 1, e^-1/2, e^-2
        (0.0, 3, 0.0, 1.0, [1 / (1 + E + E2), E / (1 + E + E2), E2 / (1 + E + E2)]),
        # sigma 2 on bins 1, 3 (start 1, two bins: 1, 2) around 1.5: equal halves
        (1.5, 2, 1.0, 2.0, [0.5, 0.5]),
        # an age far beyond the last bin puts (almost) everything on it
        (500.0, 3, 1.0, 1.0, [0.0, 0.0, 1.0]),
    ],
)
def test_gaussian_bins_by_hand(age, num_bins, start, sigma, expected):
    got = gaussian_bins(np.array([age]), num_bins, start, sigma).numpy()
    np.testing.assert_allclose(got[0], expected, atol=1e-6)
    assert abs(got.sum() - 1) < 1e-6


def test_cross_entropy_by_hand():
    # target [e^-1/2, 1, e^-1/2] / Z against softmax(log [1, 2, 1]) = [0.25, 0.5, 0.25]
    z = 1 + 2 * E
    q = np.array([E / z, 1 / z, E / z])
    logits = np.log([[1.0, 2.0, 1.0], [1.0, 1.0, 1.0]]).astype("float32")
    got = soft_bin_cross_entropy(np.array([2.0, 2.0]), logits, start=1.0, sigma=1.0).numpy()
    assert got.shape == (2,)
    assert got[0] == pytest.approx(-(q * np.log([0.25, 0.5, 0.25])).sum(), rel=1e-5)
    assert got[1] == pytest.approx(np.log(3), rel=1e-5)  # uniform: log 3 whatever the target
    # logits 200 apart: the far bins' probabilities underflow, the loss stays finite
    far = soft_bin_cross_entropy(np.array([3.0]), np.array([[200.0, 0.0, 0.0]]), 1.0, 1.0)
    assert np.isfinite(far.numpy()).all() and far.numpy()[0] > 100


def test_the_minimum_is_at_the_target():
    q = np.log(gaussian_bins(np.array([[40.0]]), 100, 1.0, 5.0))
    at_target = soft_bin_cross_entropy(np.array([40.0]), q, 1.0, 5.0).numpy()[0]
    shifted = np.log(gaussian_bins(np.array([[45.0]]), 100, 1.0, 5.0))
    off = soft_bin_cross_entropy(np.array([40.0]), shifted, 1.0, 5.0).numpy()[0]
    assert at_target < off


@pytest.mark.parametrize("sigma", [0.0, -1.0])
def test_sigma_must_be_positive(sigma):
    with pytest.raises(ValueError, match="sigma"):
        gaussian_bins(np.array([1.0]), 3, 1.0, sigma)


def test_a_collapsed_softmax_gets_a_gradient_only_from_the_cross_entropy():
    """Why the loss exists: all mass on bin 3 of 5 (3 months), the film 5 months old. The
    MAE of the expected value has no gradient left on the logits; the cross-entropy raises
    the logits of the bins around the true age (gradient p - q)."""
    logits = tf.Variable([[0.0, 0.0, 120.0, 0.0, 0.0]])
    expected = ExpectedValue(5, 1.0)
    with tf.GradientTape(persistent=True) as tape:
        probs = tf.nn.softmax(logits)
        mae = tf.abs(expected(probs) - 5.0)[:, 0]
        cross = soft_bin_cross_entropy(np.array([5.0]), logits, 1.0, 1.0)
    assert float(mae[0]) == pytest.approx(2.0, abs=1e-4)
    assert np.abs(tape.gradient(mae, logits).numpy()).max() < 1e-12
    q = gaussian_bins(np.array([5.0]), 5, 1.0, 1.0).numpy()[0]
    g = tape.gradient(cross, logits).numpy()[0]
    np.testing.assert_allclose(g, np.array([0, 0, 1, 0, 0]) - q, atol=1e-6)
    assert g[4] < -0.5  # descent raises bin 5


# ---- the training step -------------------------------------------------------------------


def _task(tmp_path, **overrides):
    manifest = tmp_path / "m.csv"
    manifest.write_text("id\n")
    settings = {"head": "classification", "image_size": (16, 16), "filters": (4, 4)}
    settings.update(dense_units=8, dropout=0.0, **overrides)
    cfg = config_lib.RegionConfig(manifest=str(manifest), **settings).validate()
    rows = pd.DataFrame(
        {"id": [1, 2], "boneage": [10.0, 200.0], "male": [True, False], "split": ["train", "val"]}
    )
    return RegionTask(cfg, tf.distribute.get_strategy(), rows)


@pytest.mark.parametrize("weight", [0.0, 3.0])
def test_training_loss_is_mae_plus_weighted_cross_entropy(tmp_path, weight):
    task = _task(tmp_path, bin_loss_weight=weight, bin_sigma=6.0)
    assert task.custom_step == (weight > 0)
    model = task.compiled_model()
    x = {"image": tf.random.stateless_uniform((2, 16, 16, 1), (1, 2))}
    y = tf.constant([30.0, 150.0])
    got = task.training_loss(model, x, y).numpy()
    logit_model = tf.keras.Model(model.inputs, model.get_layer("bin_logits").output)
    age = model(x, training=True).numpy()[:, 0]
    logits = logit_model(x, training=True)
    want = np.abs(age - y.numpy()) + weight * soft_bin_cross_entropy(y, logits, 1.0, 6.0).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5)


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"bin_loss_weight": -1.0}, "bin_loss_weight"),
        ({"bin_sigma": 0.0}, "bin_sigma"),
    ],
)
def test_bin_loss_settings_are_checked(tmp_path, overrides, key):
    with pytest.raises(config_lib.ConfigError, match=f"'{key}'"):
        _task(tmp_path, **overrides)


def test_a_regression_run_records_no_bin_loss(tmp_path):
    task = _task(tmp_path, head="regression", bin_loss_weight=4.0)
    assert task.config.bin_loss_weight == 0.0 and not task.custom_step
