"""Driver: ``python training/region.py --help``. The logic is
:func:`tf_boneage.training.region.main` (also ``tf-boneage train region``)."""

from tf_boneage.training.region import main

if __name__ == "__main__":
    raise SystemExit(main())
