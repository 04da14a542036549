"""Training as a library: typed configs, the resumable loop, one module per stage.

=====================  =====================================================================
module                 owns
=====================  =====================================================================
``config``             typed configs per job, the preset files (``presets/*.yaml``), overrides
``runtime``            seeds, logical CPUs, the ``tf.distribute`` strategy, atomic JSON
``task``               :class:`~.task.Task`: build_model / build_inputs / build_losses / steps
``loop``               :func:`~.loop.run`: resumable epochs of a Task
``runs``               run and ensemble names (made and parsed only there)
``segmentation``       U-Net rounds (pose masks, then pseudo-labels)
``landmarks``          the landmark regressor
``orientation``        the orientation classifier (quarter turns x polarity)
``region``             one region network (region x head x sex, or the raw baseline)
``ensemble``           the per-sex linear ensembles, fitted on ``val``
``evaluation``         the paper's table on ``test``, plots, interval coverage
``export``             SavedModel (TF Serving), per-stage models, TFLite
``table``              every step above in order, resumable
``ablation``           runs compared on ``val`` with bootstrap intervals
``posthoc``            a finished run's predictions another way (weights, test-time views)
``reports``            a table run's small text reports, kept in a repository
``perturbed_copies``   invisibly changed copies of a split's films; caches of one chain joined
=====================  =====================================================================

Every stage has ``run(...)`` (the library call) and ``main(argv)`` (the command line); the
scripts in ``training/`` and ``tf-boneage train STAGE`` call ``main``.
"""

#: ``tf-boneage train STAGE`` -> (module, function) of this package
STAGES = {
    "segmentation": ("segmentation", "main"),
    "landmarks": ("landmarks", "main"),
    "orientation": ("orientation", "main"),
    "region": ("region", "main"),
    "ensemble": ("ensemble", "main"),
    "evaluate": ("evaluation", "main"),
    "coverage": ("evaluation", "coverage_main"),
    "plot": ("evaluation", "plot_predictions_main"),
    "export": ("export", "main"),
    "table": ("table", "main"),
    "region-boxes": ("region_boxes", "main"),
    "preprocessing-report": ("preprocessing_report", "main"),
    "ablation": ("ablation", "main"),
    "posthoc": ("posthoc", "main"),
    "errors": ("errors", "main"),
    "reports": ("reports", "main"),
    "perturbed-copies": ("perturbed_copies", "main"),
}


def stage_main(stage: str):
    """The ``main(argv)`` of ``stage`` (imported on demand: TensorFlow loads only when used)."""
    import importlib

    if stage not in STAGES:
        raise KeyError(f"unknown stage {stage!r}; stages: {', '.join(STAGES)}")
    module, function = STAGES[stage]
    return getattr(importlib.import_module(f"{__name__}.{module}"), function)
