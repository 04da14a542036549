"""Driver: ``python training/orientation.py --help``. The logic is
:func:`tf_boneage.training.orientation.main` (also ``tf-boneage train orientation``)."""

from tf_boneage.training.orientation import main

if __name__ == "__main__":
    raise SystemExit(main())
