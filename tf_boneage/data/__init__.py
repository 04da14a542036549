"""Data stage: image IO, manifests, splits, annotations, tf.data pipelines, synthetic phantoms."""
