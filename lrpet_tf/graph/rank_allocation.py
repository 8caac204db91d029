"""Per-layer ranks for a parameter budget, from a trained model's sensitivity.

A global prune ratio gives every layer the same share of its rank. On small
networks the layers are far from equally sensitive, and the same parameter
count placed where the model loses least is worth much more (0.4 points of
Fashion-MNIST accuracy at 6x in benchmarks/RESULTS.md section 5).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING
from typing import Literal

import numpy as np
import tensorflow as tf
from numpy.typing import ArrayLike

from lrpet_tf._keras import keras
from lrpet_tf.graph.fold_batchnorm import fold_batchnorm
from lrpet_tf.graph.layer_graph import fits_input
from lrpet_tf.graph.layer_graph import require_graph_model
from lrpet_tf.graph.output_positions import output_positions
from lrpet_tf.graph.rank_guard import warn_small_ranks
from lrpet_tf.graph.targets import check_ranked_layers
from lrpet_tf.graph.targets import layers_by_name
from lrpet_tf.ops.arguments import check_int
from lrpet_tf.ops.arguments import check_number
from lrpet_tf.ops.costs import factorized_macs
from lrpet_tf.ops.costs import factorized_params
from lrpet_tf.ops.costs import kernel_macs
from lrpet_tf.ops.matrix_view import kernel_to_matrix
from lrpet_tf.ops.matrix_view import matrix_shape
from lrpet_tf.ops.matrix_view import matrix_to_kernel
from lrpet_tf.ops.projection import low_rank_projection
from lrpet_tf.ops.rank_policy import HasRanks
from lrpet_tf.ops.rank_policy import check_latency_table
from lrpet_tf.ops.ranks import break_even_rank
from lrpet_tf.ops.ranks import budget_ranks
from lrpet_tf.ops.ranks import max_rank

if TYPE_CHECKING:  # export/ builds on graph/: imported for the annotations only
    from lrpet_tf.export.latency_table import LatencyTable

__all__ = ["allocate_ranks"]


COSTS = ("params", "macs", "latency")


def allocate_ranks(
    model: keras.Model,
    x: ArrayLike,
    y: ArrayLike,
    ranks: dict[str, int] | HasRanks,
    loss: Callable[[tf.Tensor, tf.Tensor], tf.Tensor] | None = None,
    budget: float | None = None,
    batch_size: int = 256,
    return_costs: bool = False,
    cost: Literal["params", "macs", "latency"] = "params",
    latency_table: LatencyTable | None = None,
) -> dict[str, int] | tuple[dict[str, int], dict[str, dict[int, float]]]:
    """Chooses per-layer ranks with the budget of `ranks`, where the model loses least.

    1. The model's BatchNormalization is folded into a copy
       (`fold_batchnorm`), so each kernel is the BN-merged kernel LRPET's
       rectified projection works on; `model` itself is not changed.
    2. For each layer of `ranks` and each rank r from 1 to below its
       break-even rank (from there `factorize` keeps the layer dense, as it
       saves nothing), that kernel alone
       is replaced by its rank-r projection with "scale" energy transfer
       (`lrpet_tf.ops.low_rank_projection`, LRPET's own op) and the mean
       `loss` on `(x, y)` is measured; the layer's cost of rank r is the
       increase over the unprojected model, made non-increasing in r (a
       rank-r layer can be any lower-rank one).
    3. The ranks with the least summed cost whose spend, in the unit of
       `cost`, is at most that of `ranks` (or `budget`) are found exactly
       (`lrpet_tf.ops.budget_ranks`): `"params"` counts the factorized
       weights (`r * (rows + cols)` per layer), `"macs"` the factorized
       MACs per example, `"latency"` the layers' measured LiteRT time from
       `latency_table` (`lrpet_tf.latency_table`; a layer whose factorized
       pair is not measured faster costs its dense time, as
       `factorize(..., latency_table=...)` keeps it dense).

    The sum of one-layer-at-a-time costs ignores how layers interact and what
    training recovers: it says where rank is cheap. Measure on training
    data, never on the data you report. Cost: one forward pass over `x` per
    layer and candidate rank; with `cost="latency"` the candidates are only
    the top rank of each step of the layer's latency staircase (the ranks of
    a step take the same time, and the top one loses least), so the ranks
    returned sit at step tops.

    Args:
        model: A trained Functional or Sequential model (BN may follow its
            convs).
        x, y: Inputs and targets the loss is measured on (arrays of the same
            length, e.g. a few thousand training images).
        ranks: The layers to allocate over and the budget: a dict layer name
            -> rank, or an object with such a `ranks` dict (an `LRPET`
            callback after `prepare(model)`), e.g. the uniform
            `LRPET(prune_ratio=0.65)`'s.
        loss: `loss(y_true, y_pred)` -> per-example or mean loss tensor.
            Default: the model's compiled loss.
        budget: Instead of the spend of `ranks`: the most the allocated
            layers may spend, in the unit of `cost` (parameters without
            biases, MACs per example, or the layers' summed milliseconds;
            `LatencyTable.predicted_ms` adds the rest of the model).
        batch_size: Forward-pass batch size.
        return_costs: Also return the measured costs.
        cost: `"params"` (default), `"macs"` or `"latency"`.
        latency_table: A `lrpet_tf.LatencyTable` with every layer of
            `ranks`, for `cost="latency"`.

    Returns:
        A dict layer name -> rank, for `LRPET(ranks=...)`; with
        `return_costs`, `(ranks, costs)` where `costs` maps layer name ->
        {rank: loss increase}.

    Raises:
        ValueError: Before any forward pass, for unknown or unsupported layer
            names, ranks below 1 or above a layer's max rank, `x` and `y` of
            different lengths or empty, `batch_size` < 1, an unknown `cost`,
            `cost="latency"` without a table or with one that lacks a layer,
            a negative `budget` or one below the cheapest ranks' spend, or
            no `loss` for an uncompiled model.
        TypeError: For a subclassed model (via `fold_batchnorm`).

    Example:
        >>> cb = lrpet_tf.LRPET(prune_ratio=0.65)
        >>> cb.prepare(dense_model)
        >>> ranks = lrpet_tf.allocate_ranks(dense_model, x_train[:3000], y_train[:3000], cb)
        >>> model.fit(..., callbacks=[lrpet_tf.LRPET(ranks=ranks)])   # a fresh model
    """
    require_graph_model(model)
    baseline = _baseline_ranks(ranks)
    layers = check_ranked_layers(model, baseline)
    x, y = _check_data(model, x, y)
    batch_size = check_int(batch_size, "batch_size")
    loss = _loss_function(model, loss)
    spend = _spend_function(model, layers, cost, latency_table)
    steps = latency_table.rank_steps() if cost == "latency" else {}
    candidates = {
        name: _candidate_ranks(layer.kernel.shape, steps.get(name))
        for name, layer in layers.items()
    }
    lowest = sum(min(spend(n, r) for r in candidates[n]) for n in layers)
    if budget is None:
        budget = sum(spend(name, rank) for name, rank in baseline.items())
    check_number(budget, "budget", low=0)
    if budget < lowest:
        raise ValueError(
            f"Expected `budget` >= {lowest} ({cost}: every layer at its cheapest candidate "
            f"rank). Received: budget={budget!r}"
        )

    folded = fold_batchnorm(model)
    folded_layers = layers_by_name(folded)
    base = _mean_loss(folded, x, y, loss, batch_size)
    costs = {}
    for name in baseline:
        costs[name] = _rank_costs(
            folded_layers[name], candidates[name], folded, x, y, loss, batch_size, base
        )
    amounts = {name: {r: spend(name, r) for r in curve} for name, curve in costs.items()}
    allocated, _ = budget_ranks(costs, None, budget, spend=amounts)
    warn_small_ranks(
        [
            (name, r, max_rank(kernel_to_matrix(layers[name].kernel).shape))
            for name, r in allocated.items()
        ],
        "allocate_ranks",
    )
    return (allocated, costs) if return_costs else allocated


def _candidate_ranks(kernel_shape, steps=None):
    """Ranks 1 to below break-even: from there `factorize` keeps the layer dense.

    Given the layer's latency staircase (`[(first, last), ...]`), only the top
    of each step: a step's ranks all take the same time, and the top loses
    no more than the ranks below it (the cost curve is non-increasing).
    """
    shape = matrix_shape(kernel_shape)
    top = max(1, min(math.ceil(break_even_rank(shape)) - 1, max_rank(shape)))
    if steps is None:
        return range(1, top + 1)
    return sorted({min(int(last), top) for first, last in steps if first <= top})


def _spend_function(model, layers, cost, latency_table):
    """`spend(name, rank)` in the unit of `cost`, checked before any work."""
    if cost not in COSTS:
        raise ValueError(f"Expected `cost` in {COSTS}. Received: cost={cost!r}")
    if cost == "params":
        unit = {
            n: factorized_params(layer.kernel.shape, 1, use_bias=False)
            for n, layer in layers.items()
        }
        return lambda name, rank: int(rank) * unit[name]
    if cost == "macs":
        positions = output_positions(model, list(layers.values()))
        shapes = {n: tuple(int(d) for d in layer.kernel.shape) for n, layer in layers.items()}

        def macs(name, rank):
            shape, p = shapes[name], positions[id(layers[name])]
            if rank < break_even_rank(matrix_shape(shape)):
                return factorized_macs(shape, rank, p)
            return kernel_macs(shape, p)

        return macs
    if latency_table is None:
        raise ValueError(
            'cost="latency" needs a measured table: pass `latency_table=` '
            "(lrpet_tf.latency_table(model)). Received: latency_table=None"
        )
    check_latency_table(latency_table)
    latency_table.require(list(layers))
    return latency_table.layer_ms


def _baseline_ranks(ranks):
    found = ranks if isinstance(ranks, dict) else getattr(ranks, "ranks", None)
    if not isinstance(found, dict) or not found:
        raise ValueError(
            "Expected `ranks` to be a non-empty dict layer name -> rank, or an object with "
            f"one in `.ranks` (an LRPET callback after `prepare(model)`). Received: ranks={ranks!r}"
        )
    return {name: check_int(rank, f"ranks[{name!r}]") for name, rank in found.items()}


def _check_data(model, x, y):
    inputs = tf.nest.flatten(model.inputs)
    if len(inputs) != 1 or isinstance(x, (list, tuple, dict)):
        raise ValueError(
            "Expected a one-input model and `x` one array of its inputs (allocate_ranks "
            f"supports those). Received: a model with {len(inputs)} inputs, x of type "
            f"{type(x).__name__}"
        )
    x, y = np.asarray(x), np.asarray(y)
    if len(x) == 0 or len(x) != len(y):
        raise ValueError(
            "Expected `x` and `y` of the same non-zero length. "
            f"Received: len(x)={len(x)}, len(y)={len(y)}"
        )
    if not fits_input(inputs[0], x.shape):
        raise ValueError(
            f"Expected `x` to be inputs of shape {tuple(inputs[0].shape)[1:]} "
            f"(model {model.name!r}). Received: x of shape {x.shape}"
        )
    return x, y


def _loss_function(model, loss):
    if loss is not None:
        if not callable(loss):
            raise ValueError(f"Expected `loss` to be callable. Received: loss={loss!r}")
        return loss
    compiled = getattr(model, "loss", None)
    if compiled is None:
        raise ValueError(
            f"Model {model.name!r} is not compiled with a loss: pass `loss`, e.g. "
            "keras.losses.SparseCategoricalCrossentropy(from_logits=True). Received: loss=None"
        )
    return keras.losses.get(compiled) if isinstance(compiled, str) else compiled


def _mean_loss(model, x, y, loss, batch_size):
    total = 0.0
    for start in range(0, len(x), batch_size):
        y_batch = y[start : start + batch_size]
        values = loss(y_batch, model(x[start : start + batch_size], training=False))
        values = tf.cast(tf.reshape(values, [-1]), tf.float64)
        # A per-example loss sums; a mean loss counts once per example.
        total += float(tf.reduce_mean(values)) * len(y_batch)
    return total / len(x)


def _rank_costs(layer, ranks, model, x, y, loss, batch_size, base):
    weights = layer.get_weights()
    kernel = weights[0]
    matrix = kernel_to_matrix(kernel)
    curve, best = {}, np.inf
    try:
        for rank in ranks:
            projected = low_rank_projection(matrix[tf.newaxis], [rank]).matrices[0]
            layer.set_weights([matrix_to_kernel(projected, kernel.shape).numpy()] + weights[1:])
            best = min(best, _mean_loss(model, x, y, loss, batch_size) - base)
            curve[rank] = best
    finally:
        layer.set_weights(weights)
    return curve
