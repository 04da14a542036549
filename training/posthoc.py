"""Driver: ``python training/posthoc.py --help``. The logic is
:func:`tf_boneage.training.posthoc.main` (also ``tf-boneage train posthoc``)."""

from tf_boneage.training.posthoc import main

if __name__ == "__main__":
    raise SystemExit(main())
