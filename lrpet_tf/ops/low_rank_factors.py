"""Split a low-rank matrix into the two factors of the compact layers.

With `M = U diag(s) V^T` (SVD convention of `tf.linalg.svd`:
`m = u @ diag(s) @ adjoint(v)`), the rank-r factors are
`A = U_r diag(sqrt(s_r))` of shape `(rows, r)` and
`B = diag(sqrt(s_r)) V_r^T` of shape `(r, cols)`, so `A @ B` is the best
rank-r approximation of `M` and both factors carry the same scale.
"""

from __future__ import annotations

import tensorflow as tf
from numpy.typing import ArrayLike

from lrpet_tf.ops.ranks import energy_kept

__all__ = ["exact_svd", "low_rank_factors"]


def exact_svd(
    matrix: tf.Tensor | ArrayLike, compute_uv: bool = True
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor] | tf.Tensor:
    """`tf.linalg.svd` of a matrix in float64: `(s, u, v)`, or `s` alone.

    Used where a one-off decomposition must be as exact as the stored
    weights (factorization, reports, SVD initialisation). TensorFlow's SVD is
    used rather than NumPy's, which is several times slower on these shapes.
    """
    matrix = tf.cast(tf.convert_to_tensor(matrix), tf.float64)
    if not compute_uv:
        return tf.linalg.svd(matrix, compute_uv=False)
    return tf.linalg.svd(matrix, full_matrices=False)


def low_rank_factors(
    matrix: tf.Tensor | ArrayLike,
    rank: int,
    svd: tuple[tf.Tensor, tf.Tensor, tf.Tensor] | None = None,
) -> tuple[tf.Tensor, tf.Tensor, float]:
    """Returns `(A, B)` with `A @ B` the rank-`rank` truncated SVD of `matrix`.

    The SVD runs in float64 so the factors are as exact as the stored matrix;
    the factors are returned in the matrix's dtype.

    Args:
        matrix: A `(rows, cols)` tensor.
        rank: Kept rank, `1 <= rank <= min(rows, cols)`.
        svd: Optionally `exact_svd(matrix)`, if already computed.

    Returns:
        `(A, B)` of shapes `(rows, rank)` and `(rank, cols)`, and the kept
        fraction of energy `sum_{i<=r} s^2 / sum s^2` as a Python float.
    """
    matrix = tf.convert_to_tensor(matrix)
    s, u, v = svd if svd is not None else exact_svd(matrix)
    root = tf.sqrt(s[:rank])
    a = u[:, :rank] * root
    b = tf.transpose(v[:, :rank] * root)
    return tf.cast(a, matrix.dtype), tf.cast(b, matrix.dtype), float(energy_kept(s, rank))
