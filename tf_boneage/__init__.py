"""tf_boneage: pediatric bone-age assessment after Iglovikov et al. (DLMIA 2018) in TensorFlow.

Stages, one module each (image -> age):
``data.io`` (decode) -> ``data.manifest`` / ``data.split`` / ``data.annotations`` (tables) ->
``data.pipeline`` + ``data.augment`` (tf.data) -> ``models`` (U-Net, landmarks, region nets).
``data.synthetic`` makes the embedded default dataset of hand-radiograph phantoms.
"""

__version__ = "0.2.0"
