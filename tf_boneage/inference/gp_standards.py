"""Greulich-Pyle standard deviations of skeletal age by chronological age and sex.

Source: W. W. Greulich and S. I. Pyle, *Radiographic Atlas of Skeletal Development of the
Hand and Wrist*, 2nd ed., Stanford University Press, 1959: the standard deviations of
skeletal age of the Brush Foundation Study children at each chronological age, as commonly
reproduced in bone-age reporting tools. Values in months; chronological age in months.
Transcribed for this project: verify against the atlas before any clinical use.
"""

from __future__ import annotations

import numpy as np

#: chronological age (months) -> SD of skeletal age (months)
SD_MALE = {
    3: 0.72,
    6: 1.13,
    9: 1.43,
    12: 1.97,
    18: 3.52,
    24: 3.92,
    30: 4.52,
    36: 5.08,
    42: 5.40,
    48: 6.66,
    54: 8.36,
    60: 8.79,
    72: 9.17,
    84: 8.91,
    96: 9.10,
    108: 9.00,
    120: 9.79,
    132: 10.09,
    144: 10.38,
    156: 10.44,
    168: 10.72,
    180: 11.32,
    192: 12.86,
    204: 13.05,
}
SD_FEMALE = {
    3: 0.72,
    6: 1.16,
    9: 1.36,
    12: 1.77,
    18: 3.49,
    24: 4.64,
    30: 5.37,
    36: 5.97,
    42: 7.48,
    48: 8.98,
    54: 10.73,
    60: 11.65,
    72: 10.23,
    84: 9.64,
    96: 10.23,
    108: 10.74,
    120: 11.73,
    132: 11.94,
    144: 10.24,
    156: 10.67,
    168: 11.30,
    180: 9.23,
    192: 7.31,
}


def gp_sd(chronological_months: float, male: bool) -> float:
    """SD (months) at a chronological age, linearly interpolated; clamped at the table's ends."""
    table = SD_MALE if male else SD_FEMALE
    ages = np.array(sorted(table), float)
    return float(np.interp(chronological_months, ages, [table[a] for a in sorted(table)]))


def sds(bone_age_months: float, chronological_months: float, male: bool) -> float:
    """Standard deviation score: (bone age - chronological age) / SD(chronological age, sex)."""
    return (bone_age_months - chronological_months) / gp_sd(chronological_months, male)
