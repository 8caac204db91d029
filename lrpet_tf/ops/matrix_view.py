"""Kernel <-> matrix views used by every low-rank operation.

Keras stores a convolution kernel as `(*kernel_size, in_channels, out_channels)`
(for Conv2D: `(kh, kw, c, n)`) and a Dense kernel as `(in, out)`. All of
lrpet_tf works on a matrix whose columns are the output channels:

* channel-wise view: `(kh*kw*c, n)`, the input side flattened in Keras's
  memory order. A rank-r factorization `M = A @ B` of this view is a
  `kh x kw` conv with `r` filters (kernel `A` reshaped to `(kh, kw, c, r)`)
  followed by a 1x1 conv (kernel `B` reshaped to `(1, 1, r, n)`).
* spatial-wise view (SVD training, Conv2D only): rows indexed by `(kh, c)`,
  columns by `(kw, n)`, shape `(kh*c, kw*n)`. A rank-r factorization is a
  `kh x 1` conv with `r` filters followed by a `1 x kw` conv.

The functions accept a single kernel or a batch with one leading batch axis
when `batch=True`.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf
from numpy.typing import ArrayLike

__all__ = [
    "kernel_to_matrix",
    "matrix_shape",
    "matrix_to_kernel",
    "spatial_kernel_to_matrix",
    "spatial_matrix_shape",
    "spatial_matrix_to_kernel",
]


def matrix_shape(kernel_shape: Sequence[int] | tf.TensorShape) -> tuple[int, int]:
    """`(prod(kernel_shape[:-1]), kernel_shape[-1])`: the channel-wise view's shape, as ints."""
    shape = [int(d) for d in kernel_shape]
    rows = 1
    for d in shape[:-1]:
        rows *= d
    return (rows, shape[-1])


def spatial_matrix_shape(kernel_shape: Sequence[int] | tf.TensorShape) -> tuple[int, int]:
    """`(kh*c, kw*n)`: the spatial-wise view's shape of a Conv2D kernel `(kh, kw, c, n)`."""
    kh, kw, c, n = (int(d) for d in kernel_shape)
    return (kh * c, kw * n)


def kernel_to_matrix(kernel: tf.Tensor | ArrayLike) -> tf.Tensor:
    """Channel-wise matrix view of a kernel.

    Args:
        kernel: A tensor of shape `(*kernel_size, c, n)` (or `(in, out)`).

    Returns:
        A tensor of shape `(prod(kernel_size) * c, n)`.
    """
    kernel = tf.convert_to_tensor(kernel)
    return tf.reshape(kernel, matrix_shape(kernel.shape))


def matrix_to_kernel(
    matrix: tf.Tensor | ArrayLike, kernel_shape: Sequence[int] | tf.TensorShape
) -> tf.Tensor:
    """Inverse of `kernel_to_matrix`.

    Args:
        matrix: A tensor of shape `(prod(kernel_shape[:-1]), kernel_shape[-1])`.
        kernel_shape: The shape of the kernel to rebuild.

    Returns:
        A tensor of shape `kernel_shape`.
    """
    return tf.reshape(matrix, tuple(kernel_shape))


def spatial_kernel_to_matrix(kernel: tf.Tensor | ArrayLike) -> tf.Tensor:
    """Spatial-wise matrix view of a Conv2D kernel `(kh, kw, c, n)`.

    Returns:
        A tensor of shape `(kh*c, kw*n)`, entry `[(i, ci), (j, nj)]` equal to
        `kernel[i, j, ci, nj]`.
    """
    kernel = tf.convert_to_tensor(kernel)
    if kernel.shape.rank != 4:
        raise ValueError(
            "The spatial-wise view needs a Conv2D kernel of rank 4. "
            f"Received: kernel.shape={tuple(kernel.shape)}"
        )
    kh, kw, c, n = kernel.shape
    return tf.reshape(tf.transpose(kernel, (0, 2, 1, 3)), (kh * c, kw * n))


def spatial_matrix_to_kernel(
    matrix: tf.Tensor | ArrayLike, kernel_shape: Sequence[int] | tf.TensorShape
) -> tf.Tensor:
    """Inverse of `spatial_kernel_to_matrix` for a kernel of shape `kernel_shape`."""
    kh, kw, c, n = kernel_shape
    return tf.transpose(tf.reshape(matrix, (kh, c, kw, n)), (0, 2, 1, 3))
