"""Driver: ``python training/table.py --help``. The logic is
:func:`tf_boneage.training.table.main` (also ``tf-boneage train table``)."""

from tf_boneage.training.table import main

if __name__ == "__main__":
    raise SystemExit(main())
