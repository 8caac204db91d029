"""Split low-rank Conv/Dense layers into two thin standard layers."""

from __future__ import annotations

import numbers
from typing import TYPE_CHECKING

import numpy as np

from lrpet_tf._keras import keras
from lrpet_tf.graph.layer_graph import LayerGraph
from lrpet_tf.graph.layer_graph import Replacement
from lrpet_tf.graph.layer_graph import set_weights_of
from lrpet_tf.graph.layer_kinds import call_macs
from lrpet_tf.graph.layer_kinds import low_rank_kind
from lrpet_tf.graph.layer_kinds import spatial_positions
from lrpet_tf.graph.rank_guard import warn_small_ranks
from lrpet_tf.graph.rewrite_report import LayerChange
from lrpet_tf.graph.rewrite_report import RewriteReport
from lrpet_tf.graph.targets import LayerTypes
from lrpet_tf.graph.targets import check_layer_types
from lrpet_tf.graph.targets import check_ranked_layers
from lrpet_tf.graph.targets import layers_by_name
from lrpet_tf.layers.svd_layer import SVDLayer
from lrpet_tf.ops.costs import factorized_macs
from lrpet_tf.ops.costs import factorized_params
from lrpet_tf.ops.low_rank_factors import exact_svd
from lrpet_tf.ops.low_rank_factors import low_rank_factors
from lrpet_tf.ops.matrix_view import matrix_shape
from lrpet_tf.ops.rank_policy import HasRanks
from lrpet_tf.ops.rank_policy import RankPolicy
from lrpet_tf.ops.rank_policy import check_latency_table
from lrpet_tf.ops.rank_policy import checked_rank
from lrpet_tf.ops.rank_policy import get_rank_policy
from lrpet_tf.ops.ranks import break_even_rank
from lrpet_tf.ops.ranks import energy_kept
from lrpet_tf.ops.ranks import numerical_rank

if TYPE_CHECKING:  # export/ builds on graph/: imported for the annotations only
    from lrpet_tf.export.latency_table import LatencyTable

__all__ = ["factorize"]


def factorize(
    model: keras.Model,
    ranks: int | dict[str, int] | RankPolicy | HasRanks | None = None,
    layer_types: LayerTypes = ("conv", "dense"),
    return_report: bool = False,
    latency_table: LatencyTable | None = None,
) -> keras.Model | tuple[keras.Model, RewriteReport]:
    """Returns a new model with each low-rank Conv/Dense split into two layers.

    A layer with kernel `(*kernel_size, c, n)` whose matrix view
    `M = kernel.reshape(-1, n)` has rank `r` becomes (Guo et al., arXiv
    2204.05566, and the channel-wise scheme of Yang et al., CVPR-W 2020):

    1. `{name}_reduce`: the same conv class with `r` filters and the original
       kernel size, strides, padding, dilation and data format, no bias;
       kernel `U_r sqrt(s_r)` reshaped to `(*kernel_size, c, r)`.
    2. `{name}_expand`: a 1x1 conv (Dense for Dense) with `n` filters, the
       original bias, activation, regularizers and constraints; kernel
       `sqrt(s_r) V_r^T`.

    It costs `r * (prod(kernel_size) * c + n)` MACs per output position
    instead of `prod(kernel_size) * c * n`, so a layer is factorized only when
    `r` is below the break-even rank `prod(kernel_size)*c*n / (prod(kernel_size)*c + n)`;
    other layers stay dense and the report says so.

    SVD-form layers (`lrpet_tf.svd_training`, e.g. after `prune`) become the
    standard layers of `layer.standard_layers()`: the two thin layers of their
    scheme when that is cheaper, else one layer with the rebuilt kernel.

    When a layer's kernel has rank <= r (e.g. after training with the LRPET
    callback), the new model computes the same function to float tolerance.
    With a smaller rank than the kernel's, the kernel is truncated to its best
    rank-r approximation (the report gives the energy kept).

    Args:
        model: A built Functional or Sequential model (nested models are
            rewritten too). It is not modified.
        ranks: Where the ranks come from:
            * None: each kernel's numerical rank (NumPy's rule in float32),
              for every conv/dense layer of `layer_types`;
            * the `lrpet_tf.LRPET` callback that trained the model (its
              `ranks`), or any object with a `ranks` dict;
            * an int (capped at each layer's max rank), a dict layer name ->
              int (only those layers), or a `RankPolicy`.
        layer_types: Kinds considered when `ranks` does not name layers:
            `"conv"` (Conv1D/2D/3D) and/or `"dense"`.
        return_report: Also return a `RewriteReport` with, per layer, K, the
            rank, break-even, energy kept and MACs/params before and after.
        latency_table: A `lrpet_tf.LatencyTable` of the model's layers: a
            layer is then also kept dense where its measured factorized pair
            (at its rank) is not faster than the dense layer, and the report
            gives both times. It must have every layer that would be
            factorized.

    Returns:
        The new model, or `(model, report)` with `return_report=True`.

    Raises:
        TypeError: For a subclassed model or an unsupported `ranks` type.
        ValueError: For ranks outside `[1, K]`, names of layers the model does
            not have or that cannot be factorized, or an unbuilt model.

    Example:
        >>> cb = lrpet_tf.LRPET(prune_ratio=0.5)
        >>> model.fit(x, y, epochs=10, callbacks=[cb])
        >>> compact = lrpet_tf.factorize(model, ranks=cb)
    """
    graph = LayerGraph(model)
    layer_types = check_layer_types(layer_types)
    if latency_table is not None:
        check_latency_table(latency_table)
    policy = _rank_policy(ranks)
    if policy is not None:  # the named layers and their ranks, before any work
        check_ranked_layers(model, policy)
    by_name = layers_by_name(model)
    decided = {}
    for layer in by_name.values():
        decision = _decide(layer, policy, layer_types)
        if decision is not None:
            decided[id(layer)] = decision
    if latency_table is not None:
        latency_table.require(
            [
                layer.name
                for layer in by_name.values()
                if id(layer) in decided
                and decided[id(layer)]["rank"] < break_even_rank(decided[id(layer)]["matrix_shape"])
            ]
        )
    report = RewriteReport("factorize")

    def plan(g):
        replacements = {}
        for node in g.nodes:
            layer = node.layer
            if isinstance(layer, SVDLayer) and id(layer) not in replacements:
                replacements[id(layer)] = _standard_layers(layer)
                report.changes.append(_svd_change(layer, g.calls(layer)))
        for layer_id, decision in decided.items():
            calls = [n for n in g.nodes if id(n.layer) == layer_id]
            if not calls:
                continue
            layer = calls[0].layer
            change = _change_for(layer, decision, calls, latency_table)
            report.changes.append(change)
            if change.action == "factorized":
                replacements[layer_id] = _factorized_layer(
                    layer, decision["rank"], _kernel_svd(layer, decision)
                )
        return replacements

    compact = graph.rebuild(plan)
    warn_small_ranks(
        [(c.layer, c.rank, c.max_rank) for c in report.changes if c.action == "factorized"],
        "factorize",
    )
    return (compact, report) if return_report else compact


def _rank_policy(ranks):
    if ranks is None or isinstance(ranks, RankPolicy):
        return ranks
    if not isinstance(ranks, (dict, numbers.Integral)) and hasattr(type(ranks), "ranks"):
        try:
            found = ranks.ranks  # e.g. the LRPET callback that trained the model
        except AttributeError as e:
            raise ValueError(f"`ranks` has no ranks yet: {e} Received: ranks={ranks!r}") from e
        if isinstance(found, dict):
            ranks = dict(found)
    return get_rank_policy(ranks=ranks)


def _matrix_shape(layer):
    return matrix_shape(layer.kernel.shape)


def _decide(layer, policy, layer_types):
    kind = low_rank_kind(layer)
    if kind is None:
        return None
    decision = {"matrix_shape": _matrix_shape(layer), "svd": None}
    if policy is None:
        if kind not in layer_types:
            return None
        s = _kernel_svd(layer, decision)[0].numpy()
        rank = max(1, int(numerical_rank(s, decision["matrix_shape"], layer.kernel.numpy().dtype)))
    elif policy.covers(layer.name) and (policy.layer_names() or kind in layer_types):
        rank = checked_rank(policy, layer.name, decision["matrix_shape"])
    else:
        return None
    decision["rank"] = int(rank)
    return decision


def _kernel_svd(layer, decision):
    """`exact_svd` of the layer's matrix view, computed once per decision."""
    if decision["svd"] is None:
        matrix = np.reshape(layer.kernel.numpy(), decision["matrix_shape"])
        decision["svd"] = exact_svd(matrix)
    return decision["svd"]


def _change_for(layer, decision, calls, latency_table=None):
    kernel_shape = tuple(int(d) for d in layer.kernel.shape)
    rank, matrix_shape = decision["rank"], decision["matrix_shape"]
    break_even = break_even_rank(matrix_shape)
    macs_before = sum(call_macs(layer, n.input_shape, n.output_shape) for n in calls)
    params_before = int(layer.count_params())
    change = LayerChange(
        layer=layer.name,
        action="kept",
        kernel_shape=kernel_shape,
        max_rank=min(matrix_shape),
        rank=rank,
        break_even=float(break_even),
        macs_before=macs_before,
        macs_after=macs_before,
        params_before=params_before,
        params_after=params_before,
    )
    if rank >= break_even:
        change.detail = "rank not below break-even, stays dense"
        return change
    positions = sum(spatial_positions(n.output_shape, layer, layer.name) for n in calls)
    s = _kernel_svd(layer, decision)[0].numpy()
    change.action = "factorized"
    change.energy_kept = float(energy_kept(s, rank))
    if latency_table is not None and not latency_table.pays(layer.name, rank):
        factorized = latency_table.factorized_ms(layer.name, rank)
        measured = "not measured" if factorized is None else f"{factorized:.4f} ms"
        change.action = "kept"
        change.detail = (
            f"factorized pair not faster on the device ({measured} vs "
            f"{latency_table.dense_ms(layer.name):.4f} ms dense), stays dense"
        )
        return change
    change.macs_after = factorized_macs(kernel_shape, rank, positions)
    change.params_after = factorized_params(kernel_shape, rank, layer.use_bias)
    return change


def _svd_change(layer, calls):
    """Report entry of an SVD-form layer converted to standard layers."""
    macs = sum(call_macs(layer, n.input_shape, n.output_shape) for n in calls)
    parts = layer.standard_layers()
    return LayerChange(
        layer=layer.name,
        action="factorized" if len(parts) == 2 else "kept",
        detail="SVD form -> " + " + ".join(type(p).__name__ for p, _ in parts),
        max_rank=min(layer.matrix_shape),
        rank=layer.current_rank,
        break_even=float(break_even_rank(layer.matrix_shape)),
        macs_before=macs,
        macs_after=macs,
        params_before=int(layer.count_params()),
        params_after=sum(int(np.sum([np.size(w) for w in weights])) for _, weights in parts),
    )


def _standard_layers(layer):
    """Replacement: an SVD-form layer as the standard layers it exports to."""
    parts = layer.standard_layers()
    return Replacement([part for part, _ in parts], set_weights_of(parts))


def _factorized_layer(layer, rank, svd):
    """Replacement: the two thin layers of a rank-`rank` layer."""
    kernel = layer.kernel.numpy()
    kernel_shape = kernel.shape
    a, b, _ = low_rank_factors(np.reshape(kernel, matrix_shape(kernel_shape)), rank, svd=svd)
    config = layer.get_config()
    config.pop("lora_rank", None)
    config.pop("lora_alpha", None)
    name = layer.name
    if isinstance(layer, keras.layers.Dense):
        first = dict(config, name=f"{name}_reduce", units=rank)
        second = dict(config, name=f"{name}_expand")
        weights_b = [b.numpy()]
    else:
        ones = (1,) * (len(kernel_shape) - 2)
        first = dict(config, name=f"{name}_reduce", filters=rank)
        second = dict(
            config,
            name=f"{name}_expand",
            kernel_size=ones,
            strides=ones,
            padding="valid",
            dilation_rate=ones,
        )
        weights_b = [b.numpy().reshape(ones + (rank, kernel_shape[-1]))]
    first.update(
        use_bias=False,
        activation="linear",
        bias_regularizer=None,
        activity_regularizer=None,
        bias_constraint=None,
    )
    if layer.use_bias:
        weights_b.append(layer.bias.numpy())
    reduce_ = type(layer).from_config(first)
    expand = type(layer).from_config(second)
    weights_a = [a.numpy().reshape(kernel_shape[:-1] + (rank,))]
    return Replacement(
        [reduce_, expand], set_weights_of([(reduce_, weights_a), (expand, weights_b)])
    )
