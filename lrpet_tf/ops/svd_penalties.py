"""The regularisers of SVD training (Yang et al., CVPR Workshops 2020).

A layer is stored as `W = U diag(s) V^T` with `U` of shape `(rows, r)` and
`V` of shape `(cols, r)` (the `tf.linalg.svd` convention
`m = u @ diag(s) @ adjoint(v)`). Training adds:

* orthogonality, per factor `A` (U or V): `||A^T A - I||_F^2 / r^2`;
* sparsity of `s`: L1 `||s||_1`, Hoyer `||s||_1 / ||s||_2`, or Hoyer-square
  `||s||_1^2 / ||s||_2^2` (scale-invariant measures that push towards few
  non-zero singular values without shrinking them all).

Each is summed over layers (and factors) and multiplied by its weight.
"""

from __future__ import annotations

from typing import Literal
from typing import TypeAlias

import tensorflow as tf
from numpy.typing import ArrayLike

__all__ = ["SPARSITY_KINDS", "orthogonality_penalty", "sparsity_penalty"]

SPARSITY_KINDS = ("l1", "hoyer", "hoyer_square")
# The type of a sparsity kind: one of `SPARSITY_KINDS`.
SparsityKind: TypeAlias = Literal["l1", "hoyer", "hoyer_square"]


def orthogonality_penalty(factor: tf.Tensor | ArrayLike) -> tf.Tensor:
    """`||A^T A - I||_F^2 / r^2` for a factor `A` of shape `(rows, r)`."""
    factor = tf.convert_to_tensor(factor)
    r = tf.shape(factor)[-1]
    gram = tf.matmul(factor, factor, transpose_a=True)
    residual = gram - tf.eye(r, dtype=factor.dtype)
    return tf.reduce_sum(tf.square(residual)) / tf.cast(r * r, factor.dtype)


def sparsity_penalty(singular_values: tf.Tensor | ArrayLike, kind: SparsityKind) -> tf.Tensor:
    """Sparsity measure of `s`: `"l1"`, `"hoyer"` or `"hoyer_square"`.

    Raises:
        ValueError: For an unknown `kind`.
    """
    if kind not in SPARSITY_KINDS:
        raise ValueError(
            f"Expected `sparsity` to be one of {SPARSITY_KINDS}. Received: sparsity={kind!r}"
        )
    s = tf.convert_to_tensor(singular_values)
    l1 = tf.reduce_sum(tf.abs(s))
    if kind == "l1":
        return l1
    squares = tf.reduce_sum(tf.square(s))
    if kind == "hoyer":
        return tf.math.divide_no_nan(l1, tf.sqrt(squares))
    return tf.math.divide_no_nan(tf.square(l1), squares)
