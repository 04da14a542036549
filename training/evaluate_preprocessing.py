"""Driver: ``python training/evaluate_preprocessing.py --help``. The logic is
:func:`tf_boneage.training.preprocessing_report.main` (also ``tf-boneage train preprocessing-report``)."""

from tf_boneage.training.preprocessing_report import main

if __name__ == "__main__":
    raise SystemExit(main())
