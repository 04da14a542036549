"""Driver: ``python training/evaluate.py --help``. The logic is
:func:`tf_boneage.training.evaluation.main` (also ``tf-boneage train evaluate``)."""

from tf_boneage.training.evaluation import main

if __name__ == "__main__":
    raise SystemExit(main())
