"""Driver: ``python training/export.py --help``. The logic is
:func:`tf_boneage.training.export.main` (also ``tf-boneage train export``)."""

from tf_boneage.training.export import main

if __name__ == "__main__":
    raise SystemExit(main())
