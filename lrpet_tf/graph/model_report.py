"""Costs and ranks of a model, per layer and in total: `model_report`."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

from lrpet_tf import _keras
from lrpet_tf._keras import keras
from lrpet_tf.graph.kernel_rank import KernelRank
from lrpet_tf.graph.layer_graph import LayerGraph
from lrpet_tf.graph.layer_kinds import call_macs
from lrpet_tf.graph.layer_kinds import layer_kernel
from lrpet_tf.graph.layer_kinds import low_rank_kind
from lrpet_tf.graph.table import format_table
from lrpet_tf.graph.targets import check_ranked_layers
from lrpet_tf.layers.svd_layer import SVDLayer
from lrpet_tf.ops.low_rank_factors import exact_svd
from lrpet_tf.ops.matrix_view import matrix_shape
from lrpet_tf.ops.ranks import break_even_rank
from lrpet_tf.ops.ranks import energy_kept
from lrpet_tf.ops.ranks import numerical_rank

__all__ = ["LayerCost", "ModelReport", "model_report"]


@dataclasses.dataclass
class LayerCost(KernelRank):
    """One row of a `ModelReport`.

    Attributes:
        name: Layer name (nested models' layers are prefixed `outer/`).
        layer_type: Class name.
        kernel_shape: The main kernel's shape, or None.
        params: Parameters of the layer (counted once for a shared layer).
        macs: MACs per example over all of the layer's calls.
        max_rank: `K = min(rows, cols)` of the kernel's matrix view, for
            conv/dense layers.
        rank: Numerical rank of that matrix (NumPy's rule in float32).
        break_even: Rank below which a factorization pays (see
            `lrpet_tf.ops.break_even_rank`).
        energy_kept: Fraction of the kernel's energy in its top `rank`
            singular values (1.0 when `rank` is the numerical rank).
    """

    name: str
    layer_type: str
    params: int = 0
    macs: int = 0


@dataclasses.dataclass
class ModelReport:
    """Per-layer costs and ranks of a model, with totals.

    Attributes:
        name: The model's name.
        layers: List of `LayerCost`, in graph order.
        total_params: `model.count_params()`.
        total_macs: Sum of `macs` over layers.
        conv_macs: MACs of convolution layers only.
    """

    name: str
    layers: list[LayerCost]
    total_params: int
    total_macs: int
    conv_macs: int

    def __str__(self) -> str:
        headers = ["layer", "type", "kernel", "K", "rank", "break-even", "MACs", "params"]
        rows = [
            [
                c.name,
                c.layer_type,
                "x".join(map(str, c.kernel_shape)) if c.kernel_shape else None,
                c.max_rank,
                c.rank,
                c.break_even,
                c.macs,
                c.params,
            ]
            for c in self.layers
        ]
        rows.append(["total", "", None, None, None, None, self.total_macs, self.total_params])
        return format_table(headers, rows, title=f"Model {self.name!r}")


def model_report(model: keras.Model, ranks: Mapping[str, int] | None = None) -> ModelReport:
    """Counts MACs and parameters of `model` and analyses the rank of its kernels.

    Args:
        model: A built Functional or Sequential model with static spatial
            input shapes (nested models are walked).
        ranks: Optional dict layer name -> rank (conv/dense layers of the
            model, each rank in `[1, K]`); for those layers `rank` is the
            given value and `energy_kept` the fraction of energy a rank-r
            truncation keeps. Other conv/dense layers report their numerical
            rank.

    Returns:
        A `ModelReport`; `print(report)` shows the table.

    Example:
        >>> report = lrpet_tf.model_report(model)
        >>> report.total_macs, report.conv_macs
    """
    ranks = _checked_ranks(model, ranks)
    rows: list[LayerCost] = []
    _collect(LayerGraph(model), "", ranks, rows)
    total_macs = sum(r.macs for r in rows)
    conv_macs = sum(r.macs for r in rows if "Conv" in r.layer_type)
    return ModelReport(
        name=model.name,
        layers=rows,
        total_params=int(model.count_params()),
        total_macs=int(total_macs),
        conv_macs=int(conv_macs),
    )


def _checked_ranks(model, ranks):
    """`ranks` as a dict, checked before any work: low-rank layers of `model`, [1, K] each."""
    if ranks is None:
        return {}
    if not isinstance(ranks, Mapping):
        raise ValueError(
            f"Expected `ranks` to be a dict of layer name -> rank. Received: ranks={ranks!r}"
        )
    check_ranked_layers(model, ranks)
    return dict(ranks)


def _collect(graph, prefix, ranks, rows):
    by_layer = {}
    for node in graph.nodes:
        layer = node.layer
        if _keras.has_layer_graph(layer):
            _collect(LayerGraph(layer), f"{prefix}{layer.name}/", ranks, rows)
            continue
        macs = call_macs(layer, node.input_shape, node.output_shape)
        if id(layer) in by_layer:
            by_layer[id(layer)].macs += macs
            continue
        params = int(layer.count_params()) if getattr(layer, "built", False) else 0
        if params == 0 and macs == 0:
            continue
        row = LayerCost(
            name=prefix + layer.name,
            layer_type=type(layer).__name__,
            params=params,
            macs=int(macs),
        )
        kernel = layer_kernel(layer)
        if kernel is not None:
            row.kernel_shape = tuple(int(d) for d in kernel.shape)
        if kernel is not None and low_rank_kind(layer) is not None:
            _analyse_rank(row, np.asarray(kernel.numpy()), ranks.get(layer.name))
        elif isinstance(layer, SVDLayer):
            row.max_rank = int(min(layer.matrix_shape))
            row.rank = layer.current_rank
            row.break_even = float(break_even_rank(layer.matrix_shape))
        by_layer[id(layer)] = row
        rows.append(row)


def _analyse_rank(row, kernel, given_rank):
    shape = matrix_shape(kernel.shape)
    s = exact_svd(np.reshape(kernel, shape), compute_uv=False)
    row.max_rank = int(min(shape))
    row.break_even = float(break_even_rank(shape))
    if given_rank is not None:
        row.rank = int(given_rank)
    else:
        row.rank = int(numerical_rank(s, shape, kernel.dtype))
    row.energy_kept = float(energy_kept(s, row.rank))
