"""Keras regularizers of SVD training, with weights changeable between fits.

`OrthogonalityRegularizer` is attached to the `u` and `v` factors of the SVD
layers, `SingularValueSparsity` to `s`; Keras adds them to the training loss
like any `kernel_regularizer`, so they are summed over layers and factors as
the method defines (`lrpet_tf.ops.orthogonality_penalty`,
`lrpet_tf.ops.sparsity_penalty`). Each keeps its weight in a non-trainable
`tf.Variable`, so `set_regularization` changes it between `fit` calls (the
pipeline turns sparsity off for fine-tuning) without retracing or rebuilding.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from lrpet_tf import _keras
from lrpet_tf._keras import keras
from lrpet_tf.ops.arguments import check_number
from lrpet_tf.ops.svd_penalties import SPARSITY_KINDS
from lrpet_tf.ops.svd_penalties import SparsityKind
from lrpet_tf.ops.svd_penalties import orthogonality_penalty
from lrpet_tf.ops.svd_penalties import sparsity_penalty

__all__ = ["OrthogonalityRegularizer", "SingularValueSparsity", "set_regularization"]


def check_weight(value, argument):
    """Validates a regulariser weight: a finite float >= 0."""
    return check_number(value, argument, low=0)


def check_sparsity(kind):
    """Validates a sparsity kind: None or one of `SPARSITY_KINDS`."""
    if kind is not None and kind not in SPARSITY_KINDS:
        raise ValueError(
            f"Expected `sparsity` to be None or one of {SPARSITY_KINDS}. "
            f"Received: sparsity={kind!r}"
        )
    return kind


class _WeightedRegularizer(keras.regularizers.Regularizer):
    def __init__(self, weight: float) -> None:
        self.weight = tf.Variable(check_weight(weight, "weight"), trainable=False, dtype=tf.float32)

    def set_weight(self, value: float) -> None:
        self.weight.assign(check_weight(value, "weight"))

    def get_config(self) -> dict[str, Any]:
        return {"weight": float(self.weight.numpy())}


@_keras.register_serializable
class OrthogonalityRegularizer(_WeightedRegularizer):
    """`weight * ||A^T A - I||_F^2 / r^2` on a factor `A` of shape `(rows, r)`.

    Args:
        weight: The method's lambda_o (1.0 on CIFAR, 2.0 on ImageNet).
    """

    def __call__(self, factor: tf.Tensor) -> tf.Tensor:
        return tf.cast(self.weight, factor.dtype) * orthogonality_penalty(factor)


@_keras.register_serializable
class SingularValueSparsity(_WeightedRegularizer):
    """`weight * sparsity(s)` with L1, Hoyer or Hoyer-square sparsity.

    Args:
        kind: `"l1"`, `"hoyer"` or `"hoyer_square"`.
        weight: The method's lambda_s.
    """

    def __init__(self, kind: SparsityKind, weight: float) -> None:
        if kind not in SPARSITY_KINDS:
            check_sparsity(kind)
        super().__init__(weight)
        self.kind = kind

    def __call__(self, singular_values: tf.Tensor) -> tf.Tensor:
        weight = tf.cast(self.weight, singular_values.dtype)
        return weight * sparsity_penalty(singular_values, self.kind)

    def get_config(self) -> dict[str, Any]:
        return {"kind": self.kind, **super().get_config()}


def set_regularization(
    model: keras.Model, orthogonality: float | None = None, sparsity_weight: float | None = None
) -> int:
    """Changes the regulariser weights of every SVD layer of `model`.

    Takes effect at the next training step, without recompiling. To switch
    the sparsity kind, rebuild with `decompose(..., sparsity=...)` or the
    layers' `sparsity` argument.

    Args:
        model: A model containing SVD layers (nested models are searched).
        orthogonality: New lambda_o, or None to leave it.
        sparsity_weight: New lambda_s (0 turns sparsity off), or None.

    Returns:
        The number of SVD layers changed.

    Raises:
        ValueError: For a negative weight, or a model without SVD layers.
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"Expected `model` to be a Keras model. Received: model={model!r}")
    if orthogonality is not None:
        check_weight(orthogonality, "orthogonality")
    if sparsity_weight is not None:
        check_weight(sparsity_weight, "sparsity_weight")
    layers = [
        layer
        for layer in _keras.flatten_layers(model)
        if hasattr(layer, "set_regularization_weights")
    ]
    if not layers:
        raise ValueError(
            f"Model {model.name!r} has no SVD layers (SVDConv2D, SVDDense) to regularise."
        )
    for layer in layers:
        layer.set_regularization_weights(orthogonality, sparsity_weight)
    return len(layers)
