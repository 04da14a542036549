"""Keras 3 functional models of the paper: U-Net (``unet``), landmark regressor (``landmarks``),
orientation classifier (``orientation``),
region networks with regression and binning heads (``region``), their layers (``layers``) and
losses / metrics (``losses``). Every class is registered for ``.keras`` save / load with
``safe_mode=True``."""

from tf_boneage.models.landmarks import LandmarkNet
from tf_boneage.models.layers import ExpectedValue, UnitToMonths
from tf_boneage.models.losses import BCEJaccardLoss, DiceCoefficient, JaccardIndex
from tf_boneage.models.orientation import OrientationNet
from tf_boneage.models.region import RegionNet, probability_model
from tf_boneage.models.unet import UNet

__all__ = [
    "BCEJaccardLoss",
    "DiceCoefficient",
    "ExpectedValue",
    "JaccardIndex",
    "LandmarkNet",
    "OrientationNet",
    "RegionNet",
    "UNet",
    "UnitToMonths",
    "probability_model",
]
