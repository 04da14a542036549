"""Model sizes used across the project.

``paper``: the paper's full-resolution setting. The region networks take 500 x 375 (the authors'
public code); the paper does not give the U-Net's or the landmark network's input size, so we
chose 512 x 512 (U-Net, depth 5) and 256 x 256 (landmarks, six blocks to a 4 x 4 map), as
``training/presets/paper.yaml`` trains them.

``rsna100``: the 100 px real data (``../shared/data/rsna100``) on a CPU: U-Net and landmarks at
96 x 96, region A on a 104 x 80 registered frame (2080 x 1600 / 20), regions B (carpals) and C
(metacarpals + proximal phalanges) as crops resized to 48 x 64 and 64 x 72, ``same`` pooling.

``synthetic``: the embedded default (256 px phantoms) on a CPU, small enough for the demo.
"""

from __future__ import annotations

from tf_boneage.models.landmarks import LandmarkNet
from tf_boneage.models.region import RegionNet
from tf_boneage.models.unet import UNet

PRESETS = {
    "paper": {
        "unet": (UNet, {"input_shape": (512, 512, 1), "depth": 5, "base_filters": 16}),
        "landmarks": (
            LandmarkNet,
            {"input_shape": (256, 256, 1), "filters": (32, 64, 128, 128, 256, 256)},
        ),
        "region_A": (RegionNet, {"input_shape": (500, 375, 1)}),
        "region_A_classification": (
            RegionNet,
            {"input_shape": (500, 375, 1), "head": "classification"},
        ),
    },
    "rsna100": {
        "unet": (UNet, {"input_shape": (96, 96, 1), "depth": 4, "base_filters": 16}),
        "landmarks": (LandmarkNet, {"input_shape": (96, 96, 1), "filters": (32, 64, 128, 256)}),
        "region_A": (RegionNet, {"input_shape": (104, 80, 1), "pool_padding": "same"}),
        "region_B": (RegionNet, {"input_shape": (48, 64, 1), "pool_padding": "same"}),
        "region_C": (RegionNet, {"input_shape": (64, 72, 1), "pool_padding": "same"}),
        "region_A_classification": (
            RegionNet,
            {"input_shape": (104, 80, 1), "pool_padding": "same", "head": "classification"},
        ),
    },
    "synthetic": {
        "unet": (UNet, {"input_shape": (128, 128, 1), "depth": 4, "base_filters": 8}),
        "landmarks": (
            LandmarkNet,
            {"input_shape": (128, 128, 1), "filters": (16, 32, 64, 64, 64), "dense_units": 128},
        ),
        "region_A": (
            RegionNet,
            {
                "input_shape": (128, 96, 1),
                "pool_padding": "same",
                "filters": (16, 32, 64, 64, 128, 128),
                "dense_units": 256,
            },
        ),
    },
}


def build(preset: str, name: str):
    """Build model ``name`` of ``preset`` (see :data:`PRESETS`)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
    if name not in PRESETS[preset]:
        raise ValueError(
            f"preset {preset!r} has no model {name!r}; it has {sorted(PRESETS[preset])}"
        )
    cls, kwargs = PRESETS[preset][name]
    return cls(**kwargs, name=f"{preset}_{name}")
