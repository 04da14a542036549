"""Driver: ``python training/landmarks.py --help``. The logic is
:func:`tf_boneage.training.landmarks.main` (also ``tf-boneage train landmarks``)."""

from tf_boneage.training.landmarks import main

if __name__ == "__main__":
    raise SystemExit(main())
