"""Truncated SVD projection with energy transfer and BN rectification.

SVD convention: `s, u, v = tf.linalg.svd(m, full_matrices=False)` gives
`m = u @ diag(s) @ adjoint(v)`, `s` descending. All functions take a batch of
same-shaped matrices `(b, rows, cols)` so that a whole group of layers is
projected by one batched SVD.
"""

from __future__ import annotations

import collections

import numpy as np
import tensorflow as tf
from numpy.typing import ArrayLike

from lrpet_tf.ops.batchnorm import merge_column_scale
from lrpet_tf.ops.batchnorm import unmerge_column_scale
from lrpet_tf.ops.energy_transfer import EnergyTransfer
from lrpet_tf.ops.energy_transfer import transfer_energy
from lrpet_tf.ops.ranks import energy_kept

__all__ = ["Projection", "low_rank_projection"]

Projection = collections.namedtuple(
    "Projection",
    ["matrices", "energy_kept", "max_singular_value", "singular_values", "kernel_singular_values"],
)
Projection.__doc__ = """Result of `low_rank_projection`.

Attributes:
    matrices: The projected matrices `(b, rows, cols)`.
    energy_kept: `(b,)`, fraction of the (merged) matrix's energy in its top
        `r` singular values before energy transfer, `sum_{i<=r} s^2 / sum s^2`.
    max_singular_value: `(b,)`, the largest singular value of the (merged)
        matrix, used to spot dead layers.
    singular_values: `(b, min(rows, cols))`, all singular values of the
        (merged) matrix before the projection, descending.
    kernel_singular_values: `(b, min(rows, cols))`, the singular values of
        the unmerged matrix `M` itself (equal to `singular_values` without a
        column scale), descending.
"""


def low_rank_projection(
    matrices: tf.Tensor | ArrayLike,
    ranks: tf.Tensor | ArrayLike,
    energy_transfer: EnergyTransfer = "scale",
    column_scale: tf.Tensor | ArrayLike | None = None,
) -> Projection:
    """Projects each matrix onto rank `r` (LRPET, Guo et al. arXiv 2204.05566).

    With `column_scale` `a` (BN rectification), the merged matrix `M~ = M * a`
    is projected and the result is un-merged with `M~' * a / (a^2 + 1e-5)`;
    otherwise `M` itself is projected. The projection keeps the top `r`
    singular triplets and sets the singular values by `transfer_energy`.

    The SVD runs in float32 (or float64 for float64 input); the result is cast
    back to the input dtype, so float16/bfloat16 kernels are handled.

    Args:
        matrices: `(b, rows, cols)` float tensor.
        ranks: `(b,)` int tensor, `1 <= r <= min(rows, cols)`.
        energy_transfer: `"scale"`, `"additive"` or `None`.
        column_scale: Optional `(b, cols)` per-column scale `a`.

    Returns:
        A `Projection`.

    Example:
        >>> m = tf.random.normal((2, 36, 8))
        >>> p = low_rank_projection(m, tf.constant([2, 4]))
        >>> p.matrices.shape
        TensorShape([2, 36, 8])
    """
    matrices = tf.convert_to_tensor(matrices)
    _check_shapes(matrices, ranks, column_scale)
    out_dtype = matrices.dtype
    work_dtype = tf.float64 if out_dtype == tf.float64 else tf.float32
    x = tf.cast(matrices, work_dtype)
    if column_scale is not None:
        column_scale = tf.cast(column_scale, work_dtype)
        x = merge_column_scale(x, column_scale)
    s, u, v = tf.linalg.svd(x, full_matrices=False)
    kernel_s = s
    if column_scale is not None:
        kernel_s = _unmerged_singular_values(matrices, work_dtype)
    new_s = transfer_energy(s, ranks, energy_transfer)
    y = tf.matmul(u * new_s[..., tf.newaxis, :], v, adjoint_b=True)
    if column_scale is not None:
        y = unmerge_column_scale(y, column_scale)
    return Projection(
        matrices=tf.cast(y, out_dtype),
        energy_kept=tf.cast(energy_kept(s, ranks), work_dtype),
        max_singular_value=s[..., 0],
        singular_values=s,
        kernel_singular_values=kernel_s,
    )


def _check_shapes(matrices, ranks, column_scale):
    """ValueErrors naming the argument, for what is known before the SVD runs.

    Ranks are checked when their value is known (eager calls, constants); a
    tensor traced inside a tf.function is the caller's to check (the LRPET
    `Projector` checks its ranks before it calls its tf.function). One rank
    (a scalar or a length-1 list) applies to every matrix.
    """
    shape = matrices.shape
    if shape.rank is None:
        return  # traced with an unknown rank: nothing is known yet
    if shape.rank != 3:
        raise ValueError(
            f"Expected `matrices` to be a batch (b, rows, cols). Received: shape {shape}"
        )
    if tf.executing_eagerly() and isinstance(ranks, tf.Variable):
        ranks = ranks.value()
    value = tf.get_static_value(ranks)
    if value is not None:
        value = np.asarray(value)
        known = [d for d in shape[1:] if d is not None]
        k = min(known) if known else None  # either dimension bounds the rank
        per_matrix = value.ndim == 1 and (shape[0] is None or value.shape[0] == shape[0])
        if (
            not (value.shape in ((), (1,)) or per_matrix)
            or not np.issubdtype(value.dtype, np.integer)
            or (value < 1).any()
            or (k is not None and (value > k).any())
        ):
            count = "one int per matrix" if shape[0] is None else f"{shape[0]} int(s)"
            bound = f"in [1, {k}]" if k is not None else ">= 1"
            raise ValueError(
                f"Expected `ranks` to be {count} {bound} (or one for all) for `matrices` of "
                f"shape {tuple(shape)}. Received: ranks={value.tolist()!r}"
            )
    if column_scale is not None:
        scale_shape = tf.TensorShape(
            column_scale.shape if hasattr(column_scale, "shape") else np.shape(column_scale)
        )
        if not scale_shape.is_compatible_with([shape[0], shape[2]]):
            raise ValueError(
                f"Expected `column_scale` of shape (b, cols) = ({shape[0]}, {shape[2]}). "
                f"Received: shape {scale_shape}"
            )


def _unmerged_singular_values(matrices, dtype):
    """Singular values of `M` itself, from the eigenvalues of its smaller Gram matrix.

    `sqrt(eig(M^T M))` (or `M M^T` when rows < cols) in float64: values-only,
    and cheaper than a second SVD of `M` (the merged SVD cannot give them: a
    BN scale spanning many orders of magnitude leaves `M`'s small directions
    below the merged matrix's float32 round-off). Accurate to about
    `1e-8 * s_max`, well below the numerical-rank tolerance of a float32
    kernel (`s_max * max(rows, cols) * 1.2e-7`).
    """
    m = tf.cast(matrices, tf.float64)
    rows, cols = m.shape[-2], m.shape[-1]
    gram = tf.matmul(m, m, adjoint_a=rows >= cols, adjoint_b=rows < cols)
    values = tf.sqrt(tf.maximum(tf.linalg.eigvalsh(gram), 0.0))
    return tf.cast(tf.reverse(values, axis=[-1]), dtype)
