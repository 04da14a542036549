"""A trainable stage, in the style of TF Model Garden's ``official/core/base_task.Task``.

A :class:`Task` says *what* is trained (model, optimizer, losses, metrics, inputs, one
training step and one validation step); :func:`tf_boneage.training.loop.run` says *how*
(strategy scope, resumable epochs, cosine schedule, atomic checkpoints, early stopping).
Each stage module (``segmentation``, ``landmarks``, ``region``) defines one Task subclass and a
``run(config)`` function; the drivers in ``training/`` and ``tf-boneage train STAGE`` call
that function.

Where a new stage goes: a module of this package with a ``Task`` subclass, a typed config in
:mod:`.config` and a ``run`` / ``main`` pair (``docs/ARCHITECTURE.md``).
"""

from __future__ import annotations

import contextlib

import keras
import tensorflow as tf


class Task:
    """One trainable stage. Subclasses implement :meth:`build_model`,
    :meth:`build_losses` and :meth:`build_inputs`; the rest has defaults.

    Args:
        config: the stage's typed config (:mod:`tf_boneage.training.config`); it must have
            ``learning_rate`` and ``batch_size`` (per replica).
        strategy: the ``tf.distribute`` strategy the job runs under.

    :func:`tf_boneage.training.loop.run` builds the model, optimizer and inputs under the
    strategy's scope and trains epoch by epoch, resumably (``model.fit``, or ``strategy.run``
    of :meth:`train_step` when the task sets ``custom_step`` or runs multi-worker), after the
    pattern of TF Model Garden's ``base_task.Task``.

    Example:
        >>> from tf_boneage.training import config, region, runtime  # doctest: +SKIP
        >>> cfg = config.load(config.RegionConfig, "rsna100", None,
        ...                   ["manifest=runs/cache/manifest.csv", "region=B"])  # doctest: +SKIP
        >>> region.run(cfg)  # builds region.RegionTask and runs the loop  # doctest: +SKIP
    """

    def __init__(self, config, strategy: tf.distribute.Strategy):
        self.config = config
        self.strategy = strategy

    @property
    def global_batch(self) -> int:
        """Images per step over all replicas."""
        return int(self.config.batch_size) * self.strategy.num_replicas_in_sync

    # --- what is trained ----------------------------------------------------------------------
    def build_model(self) -> keras.Model:
        """The (uncompiled) Keras model."""
        raise NotImplementedError

    def build_optimizer(self) -> keras.optimizers.Optimizer:
        """Adam at the config's rate (the loop sets the rate of each epoch)."""
        return keras.optimizers.Adam(self.config.learning_rate)

    def build_losses(self):
        """The training loss: a Keras loss name (per sample) or a ``keras.losses.Loss``."""
        raise NotImplementedError

    def build_metrics(self) -> list:
        """Metrics reported besides the loss."""
        return []

    def build_inputs(self, split: str, epoch: int = 0) -> tf.data.Dataset:
        """``split="train"``: the batches of one epoch (seeded by the epoch, so a resumed run
        sees the same order); ``split="val"``: the validation batches, ``(x, y)``."""
        raise NotImplementedError

    def recalibration_batches(self, limit: int):
        """Up to ``limit`` clean (un-augmented) training inputs, an iterable of input batches
        for :func:`~tf_boneage.models.batchnorm.recalibrate` (before each validation when the
        config's ``val_recalibration`` is set, and after training); None: the stage has none."""
        return None

    def initialize(self, model: keras.Model) -> None:
        """Called once on a new model before training (e.g. warm start); default nothing."""

    def compiled_model(self) -> keras.Model:
        """:meth:`build_model` compiled with :meth:`build_optimizer`, :meth:`build_losses` and
        :meth:`build_metrics` (``jit_compile`` off: slower on the CPU).

        The model is built under the config's ``precision`` (a Keras dtype policy:
        ``mixed_float16`` / ``mixed_bfloat16`` compute in half precision with float32
        variables; the models' output heads are float32 layers, so losses are too). Keras
        wraps the optimizer of a ``mixed_float16`` model in a ``LossScaleOptimizer`` (dynamic
        loss scaling); :meth:`train_step` scales its loss the same way."""
        with self.precision():
            model = self.build_model()
        self.initialize(model)
        model.compile(
            self.build_optimizer(),
            loss=self.build_losses(),
            metrics=self.build_metrics(),
            jit_compile=False,
        )
        return model

    @contextlib.contextmanager
    def precision(self):
        """The config's ``precision`` as the global Keras dtype policy inside the block (models
        built or reloaded from a checkpoint there compute in it), the previous one after."""
        previous = keras.config.dtype_policy()
        keras.config.set_dtype_policy(getattr(self.config, "precision", "float32"))
        try:
            yield
        finally:
            keras.config.set_dtype_policy(previous)

    # --- one step -----------------------------------------------------------------------------
    def loss_fn(self, model: keras.Model):
        """The compiled loss as a callable (per sample for names such as ``"mae"``)."""
        return keras.losses.get(model.loss) if isinstance(model.loss, str) else model.loss

    def _per_sample(self, model, x, y, training: bool):
        pred = model(x, training=training)
        return self.loss_fn(model)(tf.reshape(tf.cast(y, pred.dtype), tf.shape(pred)), pred), pred

    #: True when the loss needs more than the model's output (e.g. a head's inner layer):
    #: the loop then always trains by :meth:`train_step` (``strategy.run``) instead of
    #: ``model.fit``, and validates by :meth:`validation_step`.
    custom_step: bool = False

    def prepare_step(self, model: keras.Model) -> None:
        """Called by the loop before it traces :meth:`train_step` for ``model`` (outside any
        ``tf.function`` and replica context): build what the step needs beside the model."""

    def training_loss(self, model: keras.Model, x, y) -> tf.Tensor:
        """Per-sample (B,) or whole-batch scalar training loss; default the compiled loss of
        the model's output."""
        return self._per_sample(model, x, y, training=True)[0]

    def augment(self, x, y, aug: dict):
        """The stage's training augmentation of one (replica's) batch, on its device: ``aug``
        the batch's seed rows (:func:`tf_boneage.data.augment.attach_rows`); returns the
        augmented ``(x, y)``. Stages whose train batches carry ``aug`` implement it."""
        raise NotImplementedError(f"{type(self).__name__} has no device augmentation")

    def train_step(self, model: keras.Model, x, y, aug: dict | None = None) -> tf.Tensor:
        """One replica's step under ``strategy.run``: the stage's augmentation on the
        replica's device (:meth:`augment`, when the batch carries ``aug``), forward, loss
        scaled to the global batch, gradients, update. Returns this replica's share of the
        mean loss (sum it over replicas). The single-process path uses Keras' own
        ``Model.train_step`` (``model.fit``) unless :attr:`custom_step`, with the same
        augmentation before it (:meth:`fit_step`)."""
        if aug is not None:
            x, y = self.augment(x, y, aug)
        replicas = self.strategy.num_replicas_in_sync
        with tf.GradientTape() as tape:
            per = self.training_loss(model, x, y)
            if per.shape.rank == 0:  # a loss over the whole batch (BCE - log Jaccard)
                loss = per / replicas
            else:
                loss = tf.nn.compute_average_loss(per, global_batch_size=self.global_batch)
            scaled = model.optimizer.scale_loss(loss)  # loss scaling (mixed_float16), else 1
        grads = tape.gradient(scaled, model.trainable_variables)
        # a LossScaleOptimizer unscales the gradients and skips a step that overflowed
        model.optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return loss

    def fit_step(self, model: keras.Model):
        """Keras' ``model.train_step`` for ``model.fit`` over batches ``(x, y, aug)``: the
        stage's :meth:`augment` on the replica's device, then Keras' own step."""
        keras_step = type(model).train_step.__get__(model)

        def step(data):
            x, y, aug = data
            return keras_step(self.augment(x, y, aug))

        return step

    def validation_step(self, model: keras.Model, x, y) -> tuple[float, int]:
        """Summed loss and number of images of one validation batch (a batch-level loss is
        weighted by its batch size)."""
        per, pred = self._per_sample(model, x, y, training=False)
        size = int(tf.shape(pred)[0])
        total = float(tf.reduce_sum(per)) if per.shape.rank else float(per) * size
        return total, size
