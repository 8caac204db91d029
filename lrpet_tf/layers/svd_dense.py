"""SVDDense: a Dense layer stored and trained in SVD form."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from lrpet_tf import _keras
from lrpet_tf._keras import keras
from lrpet_tf.layers.svd_layer import SVDLayer
from lrpet_tf.ops.arguments import check_int
from lrpet_tf.ops.costs import factorized_macs
from lrpet_tf.ops.costs import kernel_macs

__all__ = ["SVDDense"]


@_keras.register_serializable
class SVDDense(SVDLayer):
    """`y = activation(x @ U diag(s) V^T + bias)`, trained as `u`, `s`, `v`.

    Yang et al., "Learning Low-rank Deep Neural Networks via Singular Vector
    Orthogonality Regularization and Singular Value Sparsification", CVPR
    Workshops 2020. The kernel `(in, units)` is stored as `u` `(in, r)`,
    `s` `(r,)`, `v` `(units, r)`.

    Computation: the cheaper of two thin matmuls `(x @ A) @ B^T`
    (`r * (in + units)` MACs per row) and one matmul with the rebuilt kernel
    `A @ B^T` (`in * units` MACs per row) is chosen from the shapes, so a
    full-rank layer costs what a Dense costs and a pruned one less.

    Args:
        units: Output size.
        rank: `r`; None for full rank `min(in, units)`.
        **kwargs: See `SVDLayer` (activation, use_bias, orthogonality,
            sparsity, sparsity_weight, initializers) and `keras.layers.Layer`.

    Example:
        >>> layer = SVDDense(64, orthogonality=1.0, sparsity="hoyer", sparsity_weight=1e-3)
    """

    def __init__(self, units: int, rank: int | None = None, **kwargs: Any) -> None:
        super().__init__(rank=rank, **kwargs)
        self.units: int = check_int(units, "units")

    def build(self, input_shape: Sequence[int | None]) -> None:
        in_dim = int(input_shape[-1])
        self.matrix_shape = (in_dim, self.units)
        self._build_factors(in_dim, self.units, self.units)
        self.built = True

    def _two_ops(self):
        rows, cols = self.matrix_shape
        return self.current_rank * (rows + cols) < rows * cols

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        a, b = self.factors(inputs.dtype)
        if self._two_ops():
            y = tf.matmul(tf.tensordot(inputs, a, axes=1), b, transpose_b=True)
        else:
            y = tf.tensordot(inputs, tf.matmul(a, b, transpose_b=True), axes=1)
        return self._finish(y)

    def compute_output_shape(self, input_shape: Sequence[int | None]) -> tuple[int | None, ...]:
        return tuple(input_shape[:-1]) + (self.units,)

    def macs(self, input_shape: Sequence[int | None], output_shape: Sequence[int | None]) -> int:
        """MACs per example of the cheaper computation (see the class docstring)."""
        positions = 1
        for d in output_shape[1:-1]:
            positions *= int(d)
        shape = self.matrix_shape
        return min(
            kernel_macs(shape, positions), factorized_macs(shape, self.current_rank, positions)
        )

    def standard_layers(self) -> list[tuple[keras.layers.Layer, list[np.ndarray]]]:
        """Standard Keras layers computing the same function, with their weights.

        Returns:
            A list of `(layer, weights)` to apply in sequence: two thin Dense
            layers (`{name}_reduce` without bias, `{name}_expand` with the bias
            and activation) when that is cheaper, else one Dense.
        """
        a, b = (t.numpy() for t in self.factors())
        bias = [self.bias.numpy()] if self.use_bias else []
        common = {
            "activation": self.activation,
            "use_bias": self.use_bias,
            "dtype": self.dtype_policy,
        }
        if not self._two_ops():
            return [(keras.layers.Dense(self.units, name=self.name, **common), [a @ b.T] + bias)]
        r = self.current_rank
        reduce_ = keras.layers.Dense(
            r, use_bias=False, name=f"{self.name}_reduce", dtype=self.dtype_policy
        )
        expand = keras.layers.Dense(self.units, name=f"{self.name}_expand", **common)
        return [(reduce_, [a]), (expand, [b.T] + bias)]

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "units": self.units}
