"""Mixed precision as a config switch, exercised on the CPU: half-precision
compute with float32 variables, float32 heads and losses, dynamic loss scaling for float16."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_boneage.training import config as config_lib
from tf_boneage.training.region import RegionTask, load_rows


@pytest.mark.parametrize(
    ("precision", "half", "scaled", "head"),
    [
        ("mixed_float16", "float16", True, "classification"),  # softmax + expected value
        ("mixed_bfloat16", "bfloat16", False, "regression"),  # tanh + scale
    ],
)
def test_mixed_precision_trains_with_float32_heads(
    synth_dir, tmp_path, precision, half, scaled, head
):
    cfg = config_lib.load(
        config_lib.RegionConfig,
        "synthetic",
        None,
        [f"manifest={synth_dir / 'manifest.csv'}", "input=raw", "image_size=32x24",
         f"precision={precision}", f"head={head}", "batch_size=8", "dense_units=8"],
    )  # fmt: skip
    task = RegionTask(cfg, tf.distribute.get_strategy(), load_rows(cfg))
    model = task.compiled_model()
    assert keras.config.dtype_policy().name == "float32"  # the global policy is restored
    conv = next(la for la in model.layers if isinstance(la, keras.layers.Conv2D))
    assert conv.compute_dtype == half and conv.kernel.dtype == "float32"
    assert model.get_layer("boneage").compute_dtype == "float32"
    assert model.outputs[0].dtype == "float32"
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer) is scaled
    x, y, aug = next(iter(task.build_inputs("train")))
    x, y = task.augment(x, y, aug)  # as the train step does on the device
    before = [v.numpy().copy() for v in model.trainable_variables]
    # the multi-worker path's own step; with float16 the first steps may overflow at the
    # initial loss scale (2**15): skipped, the scale halved, never an inf in the weights
    for steps in range(1, 21):  # noqa: B007 (read after the loop)
        loss = task.train_step(model, x, y)
        assert loss.dtype == tf.float32 and np.isfinite(float(loss))
        after = [v.numpy() for v in model.trainable_variables]
        if any(not np.array_equal(a, b) for a, b in zip(before, after, strict=True)):
            break
    else:
        pytest.fail("no step was applied in 20")
    assert all(np.isfinite(v).all() for v in after)
    if scaled:
        assert float(model.optimizer.dynamic_scale) == 2.0 ** (15 - (steps - 1))
    model.train_step = task.fit_step(model)  # as the loop does for (x, y, aug) batches
    history = model.fit(task.build_inputs("train").take(2), epochs=1, verbose=0)
    model.__dict__.pop("train_step")
    assert np.isfinite(history.history["loss"][-1])
    if scaled:
        assert float(model.optimizer.dynamic_scale) > 1.0  # loss scaling is on
    # a checkpoint (resume) keeps the policy and the loss scaling
    model.save(tmp_path / "checkpoint.keras")
    with task.precision():  # as loop.run reloads a checkpoint
        again = keras.saving.load_model(tmp_path / "checkpoint.keras")
    assert again.get_layer(conv.name).compute_dtype == half
    assert isinstance(again.optimizer, keras.optimizers.LossScaleOptimizer) is scaled
