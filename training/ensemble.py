"""Driver: ``python training/ensemble.py --help``. The logic is
:func:`tf_boneage.training.ensemble.main` (also ``tf-boneage train ensemble``)."""

from tf_boneage.training.ensemble import main

if __name__ == "__main__":
    raise SystemExit(main())
