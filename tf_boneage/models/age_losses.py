"""Losses of the classification ("binning") head beside the paper's MAE on its expected value.

Trained on the MAE of the expected age alone (PAPER.md), the 240-way softmax can collapse onto
one bin: once a bin holds all the mass, the gradient of the expected value with respect to
the logit of bin k is ``p_k (k - E)``, zero for every other bin, so mass can no longer move
to ages no film has been given yet. On rsna100 every classification network of a preset run
trained so answered at most 162-170 months, for films of up to 228 (RESULTS.md). A cross-entropy against
a Gaussian label distribution around the true age (label distribution learning, Gao et al.,
DLDL) has gradient ``p_k - q_k`` for every bin and keeps the whole range reachable.
"""

from __future__ import annotations

from keras import ops


def gaussian_bins(age, num_bins: int, start: float = 1.0, sigma: float = 12.0):
    """Target distributions over the bins ``start, start + 1, ...`` (months).

    Args:
        age: (B,) or (B, 1) true ages in months.
        num_bins: number of bins (the head's 240).
        start: the first bin's age (the paper's 1 month).
        sigma: the Gaussian's standard deviation in months (> 0).

    Returns float32 (B, num_bins), each row summing to 1 (ages beyond the bins put their
    mass on the nearest end).
    """
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0 months, got {sigma!r}")
    age = ops.reshape(ops.cast(age, "float32"), (-1, 1))
    bins = ops.arange(num_bins, dtype="float32") + start
    logits = -ops.square(bins[None, :] - age) / (2.0 * sigma * sigma)
    return ops.softmax(logits, axis=-1)


def soft_bin_cross_entropy(age, logits, start: float = 1.0, sigma: float = 12.0):
    """Per-sample cross-entropy ``-sum_k q_k log softmax(logits)_k`` (nats) of the head's
    ``logits`` (B, num_bins) against :func:`gaussian_bins` of ``age`` (B,) / (B, 1) months.
    Returns float32 (B,).

    Taken from the logits (``log_softmax``), not the probabilities: its gradient is then
    exactly ``p_k - q_k``, also for bins whose probability underflowed to 0 (clipping the
    probabilities instead would zero the very gradient this loss exists for).
    """
    logits = ops.cast(logits, "float32")
    target = gaussian_bins(age, logits.shape[-1], start, sigma)
    return -ops.sum(target * ops.log_softmax(logits, axis=-1), axis=-1)
