"""Driver: ``python training/perturbed_copies.py --help``. The logic is
:func:`tf_boneage.training.perturbed_copies.main` (also ``tf-boneage train perturbed-copies``)."""

from tf_boneage.training.perturbed_copies import main

if __name__ == "__main__":
    raise SystemExit(main())
