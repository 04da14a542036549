"""Driver: ``python training/plot_predictions.py --help``. The logic is
:func:`tf_boneage.training.evaluation.plot_predictions_main` (also ``tf-boneage train plot``)."""

from tf_boneage.training.evaluation import plot_predictions_main as main

if __name__ == "__main__":
    raise SystemExit(main())
