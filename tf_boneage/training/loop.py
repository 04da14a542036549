"""The resumable training loop (``run``), with exact resume at epoch boundaries.

Each epoch gets its own input pipeline seeded by ``seed + epoch``, its learning rate from a
cosine schedule of the epoch number and its dropout masks from generators reseeded with the
epoch, so nothing depends on in-memory state: after a kill the
loop reloads ``checkpoint.keras`` (weights and optimizer state) and ``state.json`` (next epoch,
best validation loss, epochs without improvement) and continues exactly where it stopped
(``BackupAndRestore`` restores weights but restarts a dataset's shuffle sequence). The best
model by validation loss is kept in ``best.keras``; early stopping after ``patience`` epochs.
Writes are atomic (temporary file, then rename).
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import keras
import tensorflow as tf
from tqdm import tqdm

from tf_boneage.models.batchnorm import recalibrate
from tf_boneage.training.runtime import is_multi_worker


def distributed_epoch(
    task, model: keras.Model, dataset: tf.data.Dataset, label: str = "epoch"
) -> float:
    """One epoch of ``model`` by ``strategy.run`` over :meth:`Task.train_step`: the
    multi-worker path (Keras 3's ``model.fit`` cannot unpack the per-replica inputs of
    ``MultiWorkerMirroredStrategy``, keras-team/keras#20329, #20585). Gradients are all-reduced
    across workers, so every worker ends with the same weights. ``dataset`` yields global
    batches; returns the mean training loss. A tqdm bar labelled ``label`` counts the steps."""
    strategy = task.strategy
    with strategy.scope():
        task.prepare_step(model)
        # the optimizer's slots made here, not lazily inside a replica's traced step (with two
        # replicas that fails: "You must feed a value for placeholder tensor")
        if not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    dist = strategy.experimental_distribute_dataset(dataset.with_options(options))

    @tf.function
    def step(*batch):  # (x, y) or (x, y, aug): the augmentation runs on each replica
        per_replica = strategy.run(lambda *b: task.train_step(model, *b), args=batch)
        return strategy.reduce("SUM", per_replica, axis=None)

    total, steps = 0.0, 0
    bar = tqdm(desc=label, unit="step", leave=False, mininterval=1.0, disable=None)
    for batch in dist:
        total += float(step(*batch))
        steps += 1
        bar.update(1)
        bar.set_postfix(loss=f"{total / steps:.4f}", refresh=False)
    bar.close()
    return total / max(1, steps)


def evaluate_loss(task, model: keras.Model, dataset: tf.data.Dataset) -> float:
    """Mean loss of ``model`` over ``dataset`` on this worker by :meth:`Task.validation_step`."""
    total, n = 0.0, 0
    for x, y in dataset:
        batch_total, size = task.validation_step(model, x, y)
        total += batch_total
        n += size
    return total / max(1, n)


def cosine_lr(base: float, epoch: int, epochs: int, floor: float = 0.02) -> float:
    """Cosine decay from ``base`` to ``floor * base`` over ``epochs``."""
    t = epoch / max(1, epochs - 1)
    return base * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t)))


def reseed_dropout(model: keras.Model, seed: int) -> int:
    """Set the state of every layer's Keras seed generator (dropout) from ``seed``, so that
    an epoch's dropout masks depend on the epoch only, not on what ran before in this process
    (that state is not in the checkpoint). Returns the number of generators reset."""
    count = 0
    for k, layer in enumerate(model._flatten_layers(include_self=False, recursive=True)):
        generator = getattr(layer, "seed_generator", None)
        if generator is not None and hasattr(generator, "state"):
            state = generator.state
            state.assign(tf.constant([seed * 1000 + k, 0], dtype=state.dtype))
            count += 1
    return count


def _save_atomic(model: keras.Model, path: Path) -> None:
    tmp = path.with_name(f".{path.stem}.tmp.keras")
    model.save(tmp)
    os.replace(tmp, path)


class _EpochProgress(keras.callbacks.Callback):
    """A tqdm bar over one epoch's steps, labelled ``epoch 12/40`` (Keras' own display would
    say ``Epoch 1/1``: the loop calls ``fit`` once per epoch)."""

    def __init__(self, label: str):
        super().__init__()
        self.label = label
        self.bar = None

    def on_train_begin(self, logs=None):
        self.bar = tqdm(desc=self.label, unit="step", leave=False, mininterval=1.0, disable=None)

    def on_train_batch_end(self, batch, logs=None):
        self.bar.update(1)
        if logs and "loss" in logs:
            self.bar.set_postfix(loss=f"{float(logs['loss']):.4f}", refresh=False)

    def on_train_end(self, logs=None):
        self.bar.close()


class _RecalibrateBeforeValidation(keras.callbacks.Callback):
    """Before each validation inside ``model.fit``: :func:`recalibrate_for_validation`."""

    def __init__(self, task, images: int):
        super().__init__()
        self.task, self.images = task, images

    def on_test_begin(self, logs=None):
        recalibrate_for_validation(self.task, self.model, self.images)


def recalibrate_for_validation(task, model: keras.Model, images: int) -> int:
    """Reset ``model``'s batch-norm statistics to those of ``images`` clean training inputs
    (``task.recalibration_batches``), so that the validation loss measures the model as it will
    be used (recalibrated after training) rather than moving statistics that a few steps per
    epoch have not yet moved off their initial values. Training is unaffected: it normalises
    by each batch's own statistics. Returns the number of layers reset (0: nothing to do)."""
    if images <= 0:
        return 0
    batches = task.recalibration_batches(images)
    if batches is None:
        raise ValueError(f"{type(task).__name__} has no clean batches for val_recalibration")
    return recalibrate(model, batches)


def _append_history(path: Path, epoch: int, results: dict) -> None:
    """One ``epoch,loss,val_loss`` row of ``history.csv`` (the columns ``CSVLogger`` writes on
    the ``model.fit`` path), the header first when the file is new."""
    new = not path.exists()
    with path.open("a") as f:
        if new:
            f.write("epoch,loss,val_loss\n")
        f.write(f"{epoch},{results['loss']},{results['val_loss']}\n")


def _write_scalars(folder: Path, epoch: int, results: dict, learning_rate: float) -> None:
    """TensorBoard events of one epoch for the own-step path, as Keras' ``TensorBoard``
    callback writes them on the ``model.fit`` path: ``epoch_loss`` under ``train`` and
    ``validation``, ``epoch_learning_rate`` under ``train``."""
    for sub, values in (
        ("train", {"epoch_loss": results["loss"], "epoch_learning_rate": learning_rate}),
        ("validation", {"epoch_loss": results["val_loss"]}),
    ):
        writer = tf.summary.create_file_writer(str(folder / sub))
        with writer.as_default():
            for tag, value in values.items():
                tf.summary.scalar(tag, float(value), step=epoch)
        writer.close()


def _epoch_line(epoch: int, epochs: int, logs: dict, seconds: float) -> str:
    values = " - ".join(f"{k}: {float(v):.4f}" for k, v in logs.items() if k != "learning_rate")
    return f"epoch {epoch + 1}/{epochs} - {values} - {seconds:.0f} s"


def run(
    task, out: Path, epochs: int, patience: int, select: str = "best", stop_after: int | None = None
):
    """Train ``task`` (a :class:`~tf_boneage.training.task.Task`) into ``out``, resumably.

    The model is built and compiled inside the strategy's scope, or reloaded from
    ``out/checkpoint.keras`` with ``out/state.json`` after an interruption. Each epoch takes
    ``task.build_inputs("train", epoch)``, its rate from :func:`cosine_lr` and freshly seeded
    dropout; it is validated on ``task.build_inputs("val")``. ``stop_after`` ends this call
    after that many epochs (to test resuming). ``select="best"`` returns the weights of the
    lowest validation loss, ``"last"`` those of the last epoch (the validation split then only
    serves the logs and early stopping). Returns ``(model, state dict)``.
    """
    out.mkdir(parents=True, exist_ok=True)
    strategy = task.strategy
    learning_rate = float(task.config.learning_rate)
    ckpt, state_path = out / "checkpoint.keras", out / "state.json"
    with strategy.scope():
        if ckpt.exists() and state_path.exists():
            with task.precision():  # the run's dtype policy (mixed precision) on resume
                model = keras.saving.load_model(ckpt)
            state = json.loads(state_path.read_text())
            print(f"resuming at epoch {state['epoch'] + 1}/{epochs} from {ckpt}")
        else:
            model = task.compiled_model()
            state = {"epoch": 0, "best": None, "wait": 0, "seconds": 0.0}
    val = task.build_inputs("val")
    logs = [
        keras.callbacks.CSVLogger(str(out / "history.csv"), append=True),
        keras.callbacks.TensorBoard(str(out / "tensorboard"), write_graph=False),
    ]
    recalibration = int(getattr(task.config, "val_recalibration", 0))
    done = 0
    while state["epoch"] < epochs and state["wait"] < patience:
        epoch = state["epoch"]
        model.optimizer.learning_rate.assign(cosine_lr(learning_rate, epoch, epochs))
        reseed_dropout(model, epoch)
        start = time.perf_counter()
        train = task.build_inputs("train", epoch)
        # batches (x, y, aug) under several replicas: Keras' fit would take aug for sample
        # weights and cast them; our own strategy.run step augments each replica's rows
        device_rows = len(train.element_spec) == 3 and strategy.num_replicas_in_sync > 1
        if is_multi_worker(strategy) or task.custom_step or device_rows:
            label = f"epoch {epoch + 1}/{epochs}"
            train_loss = distributed_epoch(task, model, train, label)
            recalibrate_for_validation(task, model, recalibration)
            loss = evaluate_loss(task, model, val)
            results = {"loss": train_loss, "val_loss": loss}
            _append_history(out / "history.csv", epoch, results)
            rate = float(model.optimizer.learning_rate.numpy())
            _write_scalars(out / "tensorboard", epoch, results, rate)
        else:
            if len(train.element_spec) == 3:  # (x, y, aug): augmented in the train step
                model.train_step = task.fit_step(model)
            history = model.fit(
                train,
                validation_data=val,
                initial_epoch=epoch,
                epochs=epoch + 1,
                verbose=0,
                shuffle=False,
                callbacks=[
                    *logs,
                    _EpochProgress(f"epoch {epoch + 1}/{epochs}"),
                    _RecalibrateBeforeValidation(task, recalibration),
                ],
            )
            results = {k: v[-1] for k, v in history.history.items()}
            loss = float(results["val_loss"])
            model.__dict__.pop("train_step", None)  # the class's own again (saving)
        print(_epoch_line(epoch, epochs, results, time.perf_counter() - start), flush=True)
        if state["best"] is None or loss < state["best"]:
            state["best"], state["wait"] = loss, 0
            _save_atomic(model, out / "best.keras")
        else:
            state["wait"] += 1
        state["epoch"] = epoch + 1
        state["seconds"] += time.perf_counter() - start
        _save_atomic(model, ckpt)
        tmp = state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        os.replace(tmp, state_path)
        done += 1
        if stop_after is not None and done >= stop_after:
            break
    if state["wait"] >= patience and state["epoch"] < epochs:
        print(f"early stop after epoch {state['epoch']}/{epochs} ({patience} without improvement)")
    if select == "best" and (out / "best.keras").exists():
        model.set_weights(keras.saving.load_model(out / "best.keras").get_weights())
    return model, state
