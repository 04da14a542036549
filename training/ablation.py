"""Driver: ``python training/ablation.py --help``. The logic is
:func:`tf_boneage.training.ablation.main` (also ``tf-boneage train ablation``)."""

from tf_boneage.training.ablation import main

if __name__ == "__main__":
    raise SystemExit(main())
