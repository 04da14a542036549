"""A resumable training loop with exact resume at epoch boundaries.

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


def strategy_for(name: str) -> tf.distribute.Strategy:
    """``default`` | ``mirrored`` (all GPUs, else all logical CPUs) | ``multi-worker``
    (``TF_CONFIG`` as usual)."""
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
        return tf.distribute.MirroredStrategy(devices)
    if name == "multi-worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"strategy must be default|mirrored|multi-worker, got {name!r}")


def is_multi_worker(strategy: tf.distribute.Strategy) -> bool:
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """True except on the non-chief workers of a multi-worker run (they must not write the
    shared outputs)."""
    if not is_multi_worker(strategy):
        return True
    resolver = strategy.cluster_resolver
    return resolver.task_type in (None, "chief") or (
        resolver.task_type == "worker" and resolver.task_id == 0
    )


def worker_dir(out: Path, strategy: tf.distribute.Strategy) -> Path:
    """``out`` for the chief, ``out/workerK`` for the other workers (their own copy of every
    file: Keras' multi-worker convention, so no two processes write one file)."""
    if is_chief(strategy):
        return out
    return out / f"worker{strategy.cluster_resolver.task_id}"


def distributed_epoch(model: keras.Model, dataset: tf.data.Dataset,
                      strategy: tf.distribute.Strategy, global_batch: int) -> float:  # fmt: skip
    """One epoch of ``model`` (compiled with a per-sample loss such as ``"mae"``) by
    ``strategy.run``: the multi-worker path (Keras 3's ``model.fit`` cannot unpack the
    per-replica inputs of ``MultiWorkerMirroredStrategy``, keras-team/keras#20329, #20585).
    Gradients are all-reduced across workers, so every worker ends with the same weights.
    ``dataset`` yields global batches of ``global_batch``; returns the mean training loss."""
    loss_fn = _loss_fn(model)
    replicas = strategy.num_replicas_in_sync
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    dist = strategy.experimental_distribute_dataset(dataset.with_options(options))

    @tf.function
    def step(x, y):
        def replica(x, y):
            with tf.GradientTape() as tape:
                pred = model(x, training=True)
                per = loss_fn(tf.reshape(tf.cast(y, pred.dtype), tf.shape(pred)), pred)
                if per.shape.rank == 0:  # a loss over the whole batch (BCE - log Jaccard)
                    loss = per / replicas
                else:
                    loss = tf.nn.compute_average_loss(per, global_batch_size=global_batch)
            grads = tape.gradient(loss, model.trainable_variables)
            model.optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
            return loss

        return strategy.reduce("SUM", strategy.run(replica, args=(x, y)), axis=None)

    total, steps = 0.0, 0
    for x, y in dist:
        total += float(step(x, y))
        steps += 1
    return total / max(1, steps)


def _loss_fn(model: keras.Model):
    """The compiled loss as a callable: per-sample for names (``"mae"``), as given for
    ``keras.losses.Loss`` objects."""
    return keras.losses.get(model.loss) if isinstance(model.loss, str) else model.loss


def evaluate_loss(model: keras.Model, dataset: tf.data.Dataset) -> float:
    """Mean loss of ``model`` over ``dataset`` on this worker (no distribution); a batch-level
    loss is weighted by its batch size."""
    loss_fn = _loss_fn(model)
    total, n = 0.0, 0
    for x, y in dataset:
        pred = model(x, training=False)
        per = loss_fn(tf.reshape(tf.cast(y, pred.dtype), tf.shape(pred)), pred)
        size = int(tf.shape(pred)[0])
        total += float(tf.reduce_sum(per)) if per.shape.rank else float(per) * size
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


def fit(build, train_for_epoch, val, out: Path, epochs: int, learning_rate: float,
        patience: int, strategy: tf.distribute.Strategy, stop_after: int | None = None,
        select: str = "best"):  # fmt: skip
    """Train ``build()`` (a compiled model, built inside ``strategy.scope()``).

    ``train_for_epoch(epoch)`` returns that epoch's dataset; ``val`` the validation dataset.
    ``stop_after`` ends the process-level loop after that many epochs (to test resuming).
    ``select="best"`` returns the weights of the lowest validation loss, ``"last"`` those of
    the last epoch (the validation split then only serves the logs and early stopping).
    Returns ``(model, state dict)``.
    """
    out.mkdir(parents=True, exist_ok=True)
    ckpt, state_path = out / "checkpoint.keras", out / "state.json"
    with strategy.scope():
        if ckpt.exists() and state_path.exists():
            model = keras.saving.load_model(ckpt)
            state = json.loads(state_path.read_text())
            print(f"resuming at epoch {state['epoch']} from {ckpt}")
        else:
            model = build()
            state = {"epoch": 0, "best": None, "wait": 0, "seconds": 0.0}
    logs = [keras.callbacks.CSVLogger(str(out / "history.csv"), append=True),
            keras.callbacks.TensorBoard(str(out / "tensorboard"), write_graph=False)]  # fmt: skip
    done = 0
    while state["epoch"] < epochs and state["wait"] < patience:
        epoch = state["epoch"]
        model.optimizer.learning_rate.assign(cosine_lr(learning_rate, epoch, epochs))
        reseed_dropout(model, epoch)
        start = time.perf_counter()
        if is_multi_worker(strategy):
            batch = int(next(iter(train_for_epoch(epoch)))[1].shape[0])
            train_loss = distributed_epoch(model, train_for_epoch(epoch), strategy, batch)
            loss = evaluate_loss(model, val)
            print(f"Epoch {epoch + 1}/{epochs} - loss: {train_loss:.4f} - val_loss: {loss:.4f}")
        else:
            history = model.fit(train_for_epoch(epoch), validation_data=val,
                                initial_epoch=epoch, epochs=epoch + 1, verbose=2,
                                callbacks=logs, shuffle=False)  # fmt: skip
            loss = float(history.history["val_loss"][-1])
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
    if select == "best" and (out / "best.keras").exists():
        model.set_weights(keras.saving.load_model(out / "best.keras").get_weights())
    return model, state
