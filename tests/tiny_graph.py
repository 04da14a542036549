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


def _graph(seed=0, tta=1):
    import keras

    keras.utils.set_random_seed(seed)
    unet = UNet((32, 32, 1), depth=2, base_filters=4, normalize=True)  # exposure in the model
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
        ["A_reg_sex", "A_cls_sex", "B_reg_sex", "B_cls_sex"], models.__getitem__, lambda n: tta
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


#: the paper's frame and region sizes (a native-size graph warps from the film's own pixels)
PAPER_SIZES = {"A": (500, 375), "B": (240, 320), "C": (320, 360)}
#: normalised (x, y) of tip, thumb, capitate the native graph's landmark net always answers
HAND = [0.5, 0.15, 0.8, 0.55, 0.5, 0.7]


def _native_graph(input_size=None, seed=0, landmark_passes=1, hand=HAND):
    """A tiny graph at the paper's frame (2080 x 1600) and region sizes whose chain is known
    exactly: the U-Net's mask covers the whole film (zero kernel, bias +10) and the landmark
    net answers ``hand`` (:data:`HAND`) whatever the film (zero kernel), so the registration is fixed and
    a region crop is a pure resampling of the film. ``input_size=None``: native size;
    ``landmark_passes`` 2: the second look at the film turned upright by ``hand`` (the same
    answer again, carried back: a fixed registration still, another one unless ``hand`` is
    upright)."""
    import keras

    keras.utils.set_random_seed(seed)
    unet = UNet((32, 32, 1), depth=2, base_filters=4, normalize=True)  # exposure in the model
    last = unet.get_layer("mask")
    last.kernel.assign(tf.zeros_like(last.kernel))
    last.bias.assign([10.0])
    marks = LandmarkNet((32, 32, 1), filters=(4, 8), dense_units=8)
    head = marks.get_layer("landmarks")
    head.kernel.assign(tf.zeros_like(head.kernel))
    head.bias.assign(hand)
    models = {}
    for region in "ABC":
        m = RegionNet(
            (*PAPER_SIZES[region], 1),
            head="regression",
            filters=(4, 4, 8, 8, 8, 8),
            dense_units=8,
            pool_padding="same",
            name=f"region_{region}",
        )
        last = m.get_layer("unit_age")
        last.kernel.assign(last.kernel * 200.0)  # make the age depend on the image
        models[f"{region}_reg_both"] = m
    pre = Preprocessor(
        unet,
        marks,
        ChainConfig(
            unet_size=32,
            landmark_size=32,
            frame=Frame(2080, 1600),
            region_sizes=PAPER_SIZES,
            landmark_passes=landmark_passes,
        ),
    )
    names = ["A_reg_both", "B_reg_both", "C_reg_both"]
    members = members_from_spec(names, models.__getitem__)
    params = {s: {"weights": [0.4, 0.3, 0.3], "bias": 0.0} for s in ("male", "female")}
    return BoneAgeGraph(pre, members, params, input_size)


def _film(h=2000, w=1600, seed=0):
    """A smooth full-size 'film' (float32 (h, w) in [0, 1]): a bright blurred hand-sized
    ellipse on a dark gradient, no detail finer than ~40 px."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = 0.1 + 0.1 * yy / h
    cy, cx = h * (0.5 + 0.05 * rng.standard_normal()), w * 0.5
    inside = ((yy - cy) / (0.42 * h)) ** 2 + ((xx - cx) / (0.35 * w)) ** 2 < 1
    img = img + 0.5 * inside
    return cv2.GaussianBlur(img, (0, 0), h / 50).astype(np.float32)


def _labelled_rows(folder, n: int, seed: int, step: float = 5.0):
    """``n`` of :func:`_images` written as PNGs into ``folder``: a manifest-like table
    (``image_path``, ``male`` alternating, ``boneage`` 60 + ``step`` * k months)."""
    import pandas as pd

    rows = []
    for k, img in enumerate(_images(n, seed=seed)):
        path = folder / f"calib{k}.png"
        path.write_bytes(_png(img))
        rows.append({"image_path": str(path), "male": k % 2 == 0, "boneage": 60.0 + step * k})
    return pd.DataFrame(rows)
