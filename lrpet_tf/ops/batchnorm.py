"""BatchNormalization arithmetic: merge scale, LRPET's rectification, folding.

At inference a BatchNormalization that follows a linear layer computes
`y = a * (x - moving_mean) + beta` per output channel with
`a = gamma / sqrt(moving_variance + epsilon)`, so it can be merged into the
layer: kernel columns scaled by `a`, bias `(bias - moving_mean) * a + beta`.

LRPET's BN rectification projects the merged matrix `M * a` (column `j` scaled
by `a_j`) instead of `M`, then un-merges with the regularised inverse
`M' = M~' * a / (a^2 + 1e-5)` so a tiny `a` does not blow the kernel up.
"""

from __future__ import annotations

import tensorflow as tf
from numpy.typing import ArrayLike

__all__ = [
    "batchnorm_scale",
    "fold_batchnorm_weights",
    "merge_column_scale",
    "unmerge_column_scale",
]

UNMERGE_EPSILON = 1e-5


def batchnorm_scale(
    gamma: tf.Tensor | ArrayLike | None, moving_variance: tf.Tensor | ArrayLike, epsilon: float
) -> tf.Tensor:
    """Per-channel inference scale `a = gamma / sqrt(moving_variance + epsilon)`.

    Args:
        gamma: Per-channel scale, or `None` for a BatchNormalization built with
            `scale=False` (then `gamma = 1`).
        moving_variance: Per-channel moving variance.
        epsilon: The layer's epsilon.

    Returns:
        A tensor shaped like `moving_variance`.
    """
    moving_variance = tf.convert_to_tensor(moving_variance)
    # tf.constant, not tf.cast: casting a Python float goes through float32
    # and would make float64 folding inexact (1e-3 -> 1.0000000475e-3).
    epsilon = tf.constant(epsilon, dtype=moving_variance.dtype)
    inv_std = tf.math.rsqrt(moving_variance + epsilon)
    if gamma is None:
        return inv_std
    return tf.cast(gamma, moving_variance.dtype) * inv_std


def merge_column_scale(matrices: tf.Tensor, scale: tf.Tensor) -> tf.Tensor:
    """Scales column `j` of each matrix by `scale[..., j]`: `M~ = M * a`.

    Args:
        matrices: `(..., m, n)`.
        scale: `(..., n)`, broadcast against the leading axes of `matrices`.
    """
    return matrices * scale[..., tf.newaxis, :]


def unmerge_column_scale(
    matrices: tf.Tensor, scale: tf.Tensor, epsilon: float = UNMERGE_EPSILON
) -> tf.Tensor:
    """Regularised inverse of `merge_column_scale`: `M = M~ * a / (a^2 + eps)`."""
    a = scale[..., tf.newaxis, :]
    return matrices * a / (tf.square(a) + epsilon)


def fold_batchnorm_weights(
    kernel: tf.Tensor | ArrayLike,
    bias: tf.Tensor | ArrayLike | None,
    gamma: tf.Tensor | ArrayLike | None,
    beta: tf.Tensor | ArrayLike | None,
    moving_mean: tf.Tensor | ArrayLike,
    moving_variance: tf.Tensor | ArrayLike,
    epsilon: float,
    channel_axes: int = 1,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Merges an inference-mode BatchNormalization into the preceding layer.

    Args:
        kernel: The layer's kernel; its last `channel_axes` axes index the
            output channels (1 for Conv/Dense `(..., n)`, 2 for a
            DepthwiseConv2D `(kh, kw, c, multiplier)` whose output channel
            `i * multiplier + j` is `kernel[..., i, j]`).
        bias: The layer's bias, or `None` when it has none.
        gamma, beta: The BN scale and offset, `None` when the BN has
            `scale=False` / `center=False`.
        moving_mean, moving_variance, epsilon: The BN statistics.
        channel_axes: See `kernel`.

    Returns:
        `(kernel, bias)` of the merged layer (`bias` always present).
    """
    kernel = tf.convert_to_tensor(kernel)
    dtype = kernel.dtype
    moving_variance = tf.cast(moving_variance, dtype)
    moving_mean = tf.cast(moving_mean, dtype)
    scale = batchnorm_scale(gamma, moving_variance, epsilon)
    channel_shape = kernel.shape[kernel.shape.rank - channel_axes :]
    new_kernel = kernel * tf.reshape(scale, channel_shape)
    if bias is None:
        bias = tf.zeros_like(moving_mean)
    new_bias = (tf.cast(bias, dtype) - moving_mean) * scale
    if beta is not None:
        new_bias = new_bias + tf.cast(beta, dtype)
    return new_kernel, new_bias
