"""Show SVD training's regularisers and rank in the Keras logs.

`SVDTrainingMetric` is a Keras metric whose value is computed from the SVD
layers' weights (the penalties and the rank depend on nothing else), so after
each step and epoch the logs and `History` hold the current unweighted
orthogonality and sparsity penalties (summed over layers) and the total rank
at the pruning energy. `attach_svd_metrics` adds them to a model;
`decompose` does it for you.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from typing import Literal

import tensorflow as tf

from lrpet_tf import _keras
from lrpet_tf._keras import keras
from lrpet_tf.layers.svd_layer import SVDLayer
from lrpet_tf.ops.ranks import energy_rank

__all__ = ["SVDTrainingMetric", "attach_svd_metrics", "svd_layers"]

QUANTITIES = ("orthogonality", "sparsity", "rank")


def svd_layers(model: keras.Model) -> list[SVDLayer]:
    """All SVD-form layers of `model`, nested models included."""
    return [layer for layer in _keras.flatten_layers(model) if isinstance(layer, SVDLayer)]


class _LayerRefs:
    """Holds the summarised layers out of sight of Keras's trackers and savers.

    Held in a list attribute, the layers would be tracked by the metric, and
    `model.save` would store their weights under the metric instead of under
    the model's layers (tf_keras then cannot load them).
    """

    def __init__(self, layers):
        self.layers = tuple(layers)


class SVDTrainingMetric(keras.metrics.Metric):
    """A weight-derived metric of a model's SVD layers.

    Args:
        layers: The SVD layers to summarise.
        quantity: `"orthogonality"` (sum of `||A^T A - I||_F^2 / r^2` over
            layers and factors), `"sparsity"` (sum of each layer's sparsity
            measure; L1 for layers without one) or `"rank"` (sum over layers
            of the smallest rank keeping `1 - energy` of the energy of `s`).
        energy: For `"rank"`, the energy fraction pruning will remove.
        name: Log name (default `svd_<quantity>`).
    """

    def __init__(
        self,
        layers: Iterable[SVDLayer],
        quantity: Literal["orthogonality", "sparsity", "rank"],
        energy: float = 0.01,
        name: str | None = None,
        **kwargs: Any,
    ) -> None:
        if quantity not in QUANTITIES:
            raise ValueError(
                f"Expected `quantity` in {QUANTITIES}. Received: quantity={quantity!r}"
            )
        super().__init__(name=name or f"svd_{quantity}", **kwargs)
        self._source = _LayerRefs(layers)
        self.quantity = quantity
        self.energy = float(energy)

    def update_state(self, *args: Any, **kwargs: Any) -> None:
        """Nothing to accumulate: the value is read from the weights."""

    def reset_state(self) -> None:
        """Nothing to reset."""

    def result(self) -> tf.Tensor:
        total = tf.constant(0.0, tf.float32)
        for layer in self._source.layers:
            if self.quantity == "rank":
                value = tf.cast(energy_rank(tf.convert_to_tensor(layer.s), self.energy), tf.float32)
            else:
                orthogonality, sparsity = layer.regularization_values()
                value = orthogonality if self.quantity == "orthogonality" else sparsity
            total += tf.cast(value, tf.float32)
        return total


def attach_svd_metrics(model: keras.Model, energy: float = 0.01) -> keras.Model:
    """Adds `svd_orthogonality`, `svd_sparsity` and `svd_rank` to `model`'s logs.

    Keras 3 and tf_keras both report metrics tracked as model attributes.
    Re-attach after loading a saved model.

    Args:
        model: A model with SVD layers.
        energy: The energy fraction for `svd_rank` (use the one you will
            prune with).

    Returns:
        The model.
    """
    layers = svd_layers(model)
    if not layers:
        raise ValueError(f"Model {model.name!r} has no SVD layers.")
    model.svd_orthogonality_metric = SVDTrainingMetric(layers, "orthogonality")
    model.svd_sparsity_metric = SVDTrainingMetric(layers, "sparsity")
    model.svd_rank_metric = SVDTrainingMetric(layers, "rank", energy=energy)
    return model
