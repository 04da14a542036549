"""Driver: ``python training/interval_coverage.py --help``. The logic is
:func:`tf_boneage.training.evaluation.coverage_main` (also ``tf-boneage train coverage``)."""

from tf_boneage.training.evaluation import coverage_main as main

if __name__ == "__main__":
    raise SystemExit(main())
