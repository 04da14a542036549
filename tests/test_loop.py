"""The training loop's batch-norm statistics before validation (``val_recalibration``), on a toy
task whose answer is known by hand."""

import dataclasses

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from tf_boneage.training import loop
from tf_boneage.training.task import Task

#: the clean inputs (16 x 3), their first 8 rows' column means are known exactly
CLEAN = np.random.default_rng(0).normal([2.0, -1.0, 5.0], 1.0, (16, 3)).astype(np.float32)
TARGET = CLEAN.sum(1, keepdims=True)


@dataclasses.dataclass
class ToyConfig:
    learning_rate: float = 1e-2
    batch_size: int = 4
    val_recalibration: int = 8


class ToyTask(Task):
    """Batch norm then a dense layer; training batches are 'augmented' (x 3 + 4), so their
    statistics differ from the clean images' as the chain's augmented films do."""

    def __init__(self, config, clean=True, custom=False):
        super().__init__(config, tf.distribute.get_strategy())
        self.clean, self.custom_step = clean, custom

    def build_model(self):
        inputs = keras.Input((3,))
        x = keras.layers.BatchNormalization(name="bn")(inputs)
        return keras.Model(inputs, keras.layers.Dense(1)(x))

    def build_losses(self):
        return "mse"

    def build_inputs(self, split, epoch=0):
        if split == "train":
            ds = tf.data.Dataset.from_tensor_slices((CLEAN * 3 + 4, TARGET))
        else:
            ds = tf.data.Dataset.from_tensor_slices((CLEAN[8:], TARGET[8:]))
        return ds.batch(4)

    def recalibration_batches(self, limit):
        if not self.clean:
            return None
        return (CLEAN[i : i + 4] for i in range(0, min(limit, 16), 4))


@pytest.mark.parametrize("custom", [False, True], ids=["model.fit", "custom step"])
def test_validation_sees_statistics_of_the_clean_training_images(tmp_path, custom):
    keras.utils.set_random_seed(0)
    task = ToyTask(ToyConfig(), custom=custom)
    model, state = loop.run(task, tmp_path, epochs=1, patience=5, select="last")
    bn = model.get_layer("bn")
    # two clean batches of 4 averaged with equal weight: the mean of the first 8 rows
    np.testing.assert_allclose(bn.moving_mean.numpy(), CLEAN[:8].mean(0), rtol=1e-5, atol=1e-5)
    # the logged validation loss is the loss of the model as it is now (nothing moved since)
    logged = pd.read_csv(tmp_path / "history.csv")["val_loss"].iloc[-1]
    pred = model(CLEAN[8:], training=False).numpy()
    assert logged == pytest.approx(np.mean((pred - TARGET[8:]) ** 2), rel=1e-4)
    assert state["best"] == pytest.approx(logged, rel=1e-6)


def test_without_it_the_moving_statistics_are_the_trained_ones(tmp_path):
    keras.utils.set_random_seed(0)
    task = ToyTask(ToyConfig(val_recalibration=0))
    model, _ = loop.run(task, tmp_path, epochs=1, patience=5, select="last")
    # 4 steps at momentum 0.99 from 0: 1 - 0.99**4 = 3.9 % of the way to the augmented mean
    moving = model.get_layer("bn").moving_mean.numpy()
    assert np.abs(moving).max() < 0.05 * np.abs(CLEAN * 3 + 4).mean(0).max()
    assert np.abs(moving - CLEAN[:8].mean(0)).min() > 0.5


def test_a_task_without_clean_batches_is_refused(tmp_path):
    task = ToyTask(ToyConfig(), clean=False)
    with pytest.raises(ValueError, match="ToyTask has no clean batches for val_recalibration"):
        loop.run(task, tmp_path, epochs=1, patience=5)


def test_a_negative_count_is_a_config_error(tmp_path):
    from tf_boneage.training import config as config_lib

    manifest = tmp_path / "m.csv"
    manifest.write_text("id\n")
    cfg = config_lib.LandmarkConfig(manifest=str(manifest), val_recalibration=-1)
    with pytest.raises(config_lib.ConfigError, match="val_recalibration"):
        cfg.validate()
