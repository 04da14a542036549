"""Names of the region runs and ensembles: made and parsed here, nowhere else.

A run name is ``<region>_<head>_<sex>``: region ``A`` / ``B`` / ``C`` (``raw`` for the
unregistered-image baseline, which uses region A's crop size), head ``reg`` (regression) or
``cls`` (240-bin classification), sex ``both``, ``male``, ``female`` or ``input`` (sex as a
second input). In an ensemble, ``<region>_<head>_sex`` stands for the male / female pair of
runs used together (the male model for boys, the female model for girls).
"""

from __future__ import annotations

import dataclasses

HEADS = {"regression": "reg", "classification": "cls"}
SEXES = ("both", "male", "female", "input", "sex")
REGIONS = ("A", "B", "C")


@dataclasses.dataclass(frozen=True)
class Run:
    """One region run (or, with ``sex="sex"``, a sex-specific pair in an ensemble)."""

    region: str
    head: str  # "regression" | "classification"
    sex: str  # both | male | female | input | sex
    input: str = "cache"  # "cache": registered region crops; "raw": the unregistered image

    def __post_init__(self):
        if self.region not in REGIONS:
            raise ValueError(f"region must be one of {REGIONS}, got {self.region!r}")
        if self.head not in HEADS:
            raise ValueError(f"head must be one of {tuple(HEADS)}, got {self.head!r}")
        if self.sex not in SEXES:
            raise ValueError(f"sex must be one of {SEXES}, got {self.sex!r}")
        if self.input not in ("cache", "raw"):
            raise ValueError(f"input must be cache or raw, got {self.input!r}")

    @property
    def name(self) -> str:
        prefix = "raw" if self.input == "raw" else self.region
        return f"{prefix}_{HEADS[self.head]}_{self.sex}"

    @property
    def pair(self) -> tuple[str, str]:
        """The male and female run names of a ``sex`` member."""
        if self.sex != "sex":
            raise ValueError(f"{self.name} is not a sex-specific pair")
        stem = self.name[: -len("_sex")]
        return f"{stem}_male", f"{stem}_female"

    def overrides(self) -> list[str]:
        """``key=value`` overrides of :class:`~tf_boneage.training.config.RegionConfig`."""
        return [
            f"region={self.region}",
            f"head={self.head}",
            f"sex={self.sex}",
            f"input={self.input}",
        ]


def parse(name: str) -> Run:
    """``"B_cls_male"`` -> ``Run("B", "classification", "male")``; a clear error otherwise."""
    parts = name.split("_")
    short = {v: k for k, v in HEADS.items()}
    if len(parts) != 3 or parts[1] not in short or parts[2] not in SEXES:
        raise ValueError(
            f"{name!r} is not a run name REGION_HEAD_SEX (e.g. A_reg_both, B_cls_male, "
            f"C_cls_sex, raw_reg_both)"
        )
    region, head, sex = parts
    if region == "raw":
        return Run("A", short[head], sex, "raw")
    return Run(region, short[head], sex)


def pair_of(name: str) -> tuple[str, str] | None:
    """``"A_cls_male"`` -> ``("A_cls", "male")``; None for runs that are not sex-specific."""
    run = parse(name)
    if run.sex not in ("male", "female"):
        return None
    return name[: -len(run.sex) - 1], run.sex


def table_runs(regions: str = "ABC", heads=("regression", "classification")) -> list[Run]:
    """The paper's table: per region regression for both sexes / male / female and
    classification male / female; then the raw-image baseline (regression, both sexes)."""
    out = []
    for region in regions:
        for head in heads:
            sexes = ("both", "male", "female") if head == "regression" else ("male", "female")
            out += [Run(region, head, sex) for sex in sexes]
    out.append(Run("A", "regression", "both", "raw"))
    return out


#: What ``tf-boneage demo`` trains in its budget.
DEMO_RUNS = ("A_reg_both", "B_reg_both", "C_reg_both", "A_cls_male", "A_cls_female", "raw_reg_both")

#: The paper's ensembles: name -> member names (``X_sex``: the sex-specific pair of X).
ENSEMBLES = {
    "ABC_reg_both": ["A_reg_both", "B_reg_both", "C_reg_both"],
    "ABC_reg_sex": ["A_reg_sex", "B_reg_sex", "C_reg_sex"],
    "ABC_cls_sex": ["A_cls_sex", "B_cls_sex", "C_cls_sex"],
    **{f"{r}_ens_sex": [f"{r}_reg_sex", f"{r}_cls_sex"] for r in REGIONS},
    # the paper's final model: every sex-specific regression and classification model
    "final": [f"{r}_{h}_sex" for r in REGIONS for h in HEADS.values()],
    # what `tf-boneage demo` trains in its budget (not in the paper)
    "demo": ["A_reg_both", "B_reg_both", "C_reg_both", "A_cls_sex"],
}


def table_column(row: str, suffix: str) -> str:
    """The model or ensemble behind a cell of the paper's table: row ``A`` / ``B`` / ``C`` /
    ``ABC``, column suffix ``reg_both`` / ``reg_sex`` / ``cls_sex`` / ``ens_sex``
    (``ABC`` + ``ens_sex`` is the paper's final model)."""
    if row == "ABC" and suffix == "ens_sex":
        return "final"
    return f"{row}_{suffix}"
