"""What SVDConv2D and SVDDense share: factors `u`, `s`, `v` and their regularisers.

A layer in SVD form stores `W = U diag(s) V^T` for its matrix view `W` of
shape `(rows, cols)`: `u` is `(rows, r)`, `s` is `(r,)`, `v` is `(cols, r)` (the
`tf.linalg.svd` convention `m = u @ diag(s) @ adjoint(v)`). The forward pass
folds `sqrt(|s|)` into both factors, `A = U sqrt|s|` and
`B = V sqrt|s| sign(s)`, so `W = A @ B^T` (Yang et al., CVPR Workshops 2020).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from typing import TypeAlias

import tensorflow as tf
from numpy.typing import ArrayLike

from lrpet_tf._keras import keras
from lrpet_tf.layers.svd_regularizers import OrthogonalityRegularizer
from lrpet_tf.layers.svd_regularizers import SingularValueSparsity
from lrpet_tf.layers.svd_regularizers import check_sparsity
from lrpet_tf.layers.svd_regularizers import check_weight
from lrpet_tf.ops.arguments import check_int
from lrpet_tf.ops.svd_penalties import SparsityKind
from lrpet_tf.ops.svd_penalties import orthogonality_penalty
from lrpet_tf.ops.svd_penalties import sparsity_penalty

__all__ = ["SVDLayer"]

# What `keras.activations.get` / `keras.initializers.get` accept (a dict: a serialized one).
Activation: TypeAlias = str | dict[str, Any] | Callable[[tf.Tensor], tf.Tensor]
Initializer: TypeAlias = str | dict[str, Any] | keras.initializers.Initializer


class SVDLayer(keras.layers.Layer):
    """Base class of the SVD-form layers (not used directly).

    Args:
        rank: Number of singular triplets `r`; None for the full rank
            `min(rows, cols)`.
        activation: Activation applied after the bias.
        use_bias: Whether to add a bias.
        orthogonality: Weight lambda_o of the orthogonality penalty on `u`
            and `v` (0 disables it).
        sparsity: None, `"l1"`, `"hoyer"` or `"hoyer_square"` on `s`.
        sparsity_weight: Weight lambda_s of the sparsity penalty.
        u_initializer, s_initializer, v_initializer, bias_initializer:
            Initializers (the released code's He-normal factors and N(0, 1)
            singular values by default).
        **kwargs: Base layer arguments (name, dtype, trainable).
    """

    def __init__(
        self,
        rank: int | None = None,
        activation: Activation | None = None,
        use_bias: bool = True,
        orthogonality: float = 0.0,
        sparsity: SparsityKind | None = None,
        sparsity_weight: float = 0.0,
        u_initializer: Initializer = "he_normal",
        s_initializer: Initializer | None = None,
        v_initializer: Initializer = "he_normal",
        bias_initializer: Initializer = "zeros",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.rank = check_int(rank, "rank", also=(None,))
        self.activation = keras.activations.get(activation)
        self.use_bias = bool(use_bias)
        self.orthogonality = check_weight(orthogonality, "orthogonality")
        self.sparsity = check_sparsity(sparsity)
        self.sparsity_weight = check_weight(sparsity_weight, "sparsity_weight")
        self.u_initializer = keras.initializers.get(u_initializer)
        self.s_initializer = keras.initializers.get(
            s_initializer or keras.initializers.RandomNormal(0.0, 1.0)
        )
        self.v_initializer = keras.initializers.get(v_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self._orthogonality_regularizer = None
        self._sparsity_regularizer = None

    # Subclasses define `matrix_shape` (rows, cols) once built.

    def _build_factors(self, rows, cols, out_channels):
        max_rank = min(rows, cols)
        if self.rank is not None and self.rank > max_rank:
            raise ValueError(
                f"Expected `rank` <= {max_rank}, the max rank of layer {self.name!r} "
                f"(its matrix view is {rows} x {cols}). Received: rank={self.rank}"
            )
        r = self.rank or max_rank
        self._orthogonality_regularizer = OrthogonalityRegularizer(self.orthogonality)
        if self.sparsity is not None:
            self._sparsity_regularizer = SingularValueSparsity(self.sparsity, self.sparsity_weight)
        self.u = self.add_weight(
            name="u",
            shape=(rows, r),
            initializer=self.u_initializer,
            regularizer=self._orthogonality_regularizer,
        )
        self.s = self.add_weight(
            name="s",
            shape=(r,),
            initializer=self.s_initializer,
            regularizer=self._sparsity_regularizer,
        )
        self.v = self.add_weight(
            name="v",
            shape=(cols, r),
            initializer=self.v_initializer,
            regularizer=self._orthogonality_regularizer,
        )
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias", shape=(out_channels,), initializer=self.bias_initializer
            )

    @property
    def current_rank(self) -> int:
        """`r`, the number of singular triplets stored."""
        return int(self.s.shape[0])

    def factors(self, dtype: tf.DType | str | None = None) -> tuple[tf.Tensor, tf.Tensor]:
        """`(A, B)` with `W = A @ B^T`: `A = u sqrt|s|`, `B = v sqrt|s| sign(s)`."""
        s = tf.convert_to_tensor(self.s)
        root = tf.sqrt(tf.abs(s))
        a = tf.convert_to_tensor(self.u) * root
        b = tf.convert_to_tensor(self.v) * (root * tf.sign(s))
        if dtype is not None:
            a, b = tf.cast(a, dtype), tf.cast(b, dtype)
        return a, b

    def matrix(self) -> tf.Tensor:
        """The dense matrix view `W = U diag(s) V^T` as a tensor."""
        a, b = self.factors()
        return tf.matmul(a, b, transpose_b=True)

    def _finish(self, y):
        if self.bias is not None:
            y = y + tf.cast(self.bias, y.dtype)
        return self.activation(y)

    def set_regularization_weights(
        self, orthogonality: float | None = None, sparsity_weight: float | None = None
    ) -> None:
        """Changes lambda_o and/or lambda_s (live: no retrace needed)."""
        if orthogonality is not None:
            self.orthogonality = check_weight(orthogonality, "orthogonality")
            if self._orthogonality_regularizer is not None:
                self._orthogonality_regularizer.set_weight(self.orthogonality)
        if sparsity_weight is not None:
            self.sparsity_weight = check_weight(sparsity_weight, "sparsity_weight")
            if self._sparsity_regularizer is not None:
                self._sparsity_regularizer.set_weight(self.sparsity_weight)

    def regularization_values(self) -> tuple[tf.Tensor, tf.Tensor]:
        """Unweighted `(orthogonality, sparsity)` penalties of this layer."""
        orth = orthogonality_penalty(tf.convert_to_tensor(self.u)) + orthogonality_penalty(
            tf.convert_to_tensor(self.v)
        )
        sparse = sparsity_penalty(tf.convert_to_tensor(self.s), self.sparsity or "l1")
        return orth, sparse

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "rank": self.rank,
                "activation": keras.activations.serialize(self.activation),
                "use_bias": self.use_bias,
                "orthogonality": self.orthogonality,
                "sparsity": self.sparsity,
                "sparsity_weight": self.sparsity_weight,
                "u_initializer": keras.initializers.serialize(self.u_initializer),
                "s_initializer": keras.initializers.serialize(self.s_initializer),
                "v_initializer": keras.initializers.serialize(self.v_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            }
        )
        return config

    def set_factors(
        self, u: ArrayLike, s: ArrayLike, v: ArrayLike, bias: ArrayLike | None = None
    ) -> None:
        """Assigns factors (numpy arrays of this layer's shapes) and the bias.

        Every shape is checked before the first assignment, so a wrong one
        leaves the layer as it was.

        Raises:
            ValueError: A value whose shape is not its variable's, or a
                `bias` for a layer without one.
        """
        if bias is not None and self.bias is None:
            raise ValueError(f"Layer {self.name!r} has no bias (use_bias=False). Received: bias")
        pairs = [("u", self.u, u), ("s", self.s, s), ("v", self.v, v), ("bias", self.bias, bias)]
        values = []
        for argument, variable, value in pairs:
            if variable is None or value is None:
                continue
            value = tf.cast(value, variable.dtype)
            if tuple(value.shape) != tuple(variable.shape):
                raise ValueError(
                    f"Expected `{argument}` of shape {tuple(variable.shape)} (layer "
                    f"{self.name!r}). Received: {argument} of shape {tuple(value.shape)}"
                )
            values.append((variable, value))
        for variable, value in values:
            variable.assign(value)
