"""The tiny end-to-end graph the export, predict and TFLite tests share (untrained weights with
a hand's landmarks, so the crops are real), its images and the Keras-path reference."""

import cv2
import numpy as np
import tensorflow as tf

from tf_boneage.export.end_to_end import BoneAgeGraph, members_from_spec
from tf_boneage.models import LandmarkNet, RegionNet, UNet
from tf_boneage.preprocessing.chain import ChainConfig, Preprocessor
from tf_boneage.preprocessing.registration import Frame

SIZES = {"A": (32, 24), "B": (16, 16), "C": (16, 24)}
INPUT = (48, 48)
PARAMS = {
    "male": {"weights": [0.3, 0.3, 0.2, 0.2], "bias": 1.0},
    "female": {"weights": [0.1, 0.5, 0.2, 0.2], "bias": -2.0},
}


def _graph(seed=0):
    import keras

    keras.utils.set_random_seed(seed)
    unet = UNet((32, 32, 1), depth=2, base_filters=4)
    marks = LandmarkNet((32, 32, 1), filters=(4, 8), dense_units=8)
    # a hand's landmarks (tip, thumb, capitate) plus the small random kernel: untrained, all
    # three sit at the centre and the registration collapses to empty crops
    marks.get_layer("landmarks").bias.assign([0.5, 0.15, 0.8, 0.55, 0.5, 0.7])
    models = {}
    for region in "AB":
        for head, short in (("regression", "reg"), ("classification", "cls")):
            for sex in ("male", "female"):
                m = RegionNet(
                    (*SIZES[region], 1),
                    head=head,
                    filters=(4, 4, 8, 8, 8, 8),
                    dense_units=8,
                    pool_padding="same",
                )
                last = m.get_layer("bin_logits" if head == "classification" else "unit_age")
                last.kernel.assign(last.kernel * 200.0)  # make the age depend on the image
                models[f"{region}_{short}_{sex}"] = m
    pre = Preprocessor(
        unet,
        marks,
        ChainConfig(unet_size=32, landmark_size=32, frame=Frame(104, 80), region_sizes=SIZES),
    )
    members = members_from_spec(
        ["A_reg_sex", "A_cls_sex", "B_reg_sex", "B_cls_sex"], models.__getitem__
    )
    return BoneAgeGraph(pre, members, PARAMS, INPUT)


def _images(n=4, seed=0):
    """Hand-like blobs of different sizes (decoding and resizing are part of the graph)."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        h, w = 60 + 4 * k, 50 + 2 * k
        img = np.zeros((h, w), np.uint8)
        cv2.ellipse(img, (w // 2, h // 2 + 5), (w // 4, h // 3), 0, 0, 360, 150 + 20 * k, -1)
        img = np.clip(img + rng.normal(0, 10, img.shape), 0, 255).astype(np.uint8)
        out.append(img)
    return out


def _png(img, bits=8):
    if bits == 16:
        img = img.astype(np.uint16) * 257
    return cv2.imencode(".png", img)[1].tobytes()


def _keras_path(graph, images, male):
    """The Keras-model path: the graph's Python method, eagerly, image by image."""
    out = []
    for img, m in zip(images, male, strict=True):
        x = tf.constant(img[None, ..., None] / 255.0, tf.float32)
        shape = tf.constant([[img.shape[0], img.shape[1]]], tf.float32)
        out.append(graph.predict_decoded(x, tf.constant([m], tf.float32), shape))
    return {k: np.concatenate([o[k].numpy() for o in out]) for k in out[0]}
