"""Driver: ``python training/segmentation.py --help``. The logic is
:func:`tf_boneage.training.segmentation.main` (also ``tf-boneage train segmentation``)."""

from tf_boneage.training.segmentation import main

if __name__ == "__main__":
    raise SystemExit(main())
