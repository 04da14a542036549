"""Driver: ``python training/region_boxes.py --help``. The logic is
:func:`tf_boneage.training.region_boxes.main` (also ``tf-boneage train region-boxes``)."""

from tf_boneage.training.region_boxes import main

if __name__ == "__main__":
    raise SystemExit(main())
