"""Turn a model's Conv2D/Dense layers into SVD-form layers: `decompose`."""

from __future__ import annotations

from typing import Literal

import tensorflow as tf

from lrpet_tf._keras import keras
from lrpet_tf.graph.layer_graph import LayerGraph
from lrpet_tf.graph.layer_graph import Replacement
from lrpet_tf.graph.rewrite_report import LayerChange
from lrpet_tf.graph.rewrite_report import RewriteReport
from lrpet_tf.graph.targets import LayerSelector
from lrpet_tf.graph.targets import LayerTypes
from lrpet_tf.graph.targets import select_targets
from lrpet_tf.layers.svd_conv2d import SCHEMES
from lrpet_tf.layers.svd_conv2d import SVDConv2D
from lrpet_tf.layers.svd_dense import SVDDense
from lrpet_tf.layers.svd_monitor import attach_svd_metrics
from lrpet_tf.layers.svd_regularizers import check_sparsity
from lrpet_tf.layers.svd_regularizers import check_weight
from lrpet_tf.ops.arguments import check_number
from lrpet_tf.ops.low_rank_factors import exact_svd
from lrpet_tf.ops.matrix_view import kernel_to_matrix
from lrpet_tf.ops.matrix_view import matrix_shape
from lrpet_tf.ops.matrix_view import spatial_kernel_to_matrix
from lrpet_tf.ops.matrix_view import spatial_matrix_shape
from lrpet_tf.ops.ranks import break_even_rank
from lrpet_tf.ops.svd_penalties import SparsityKind

__all__ = ["decompose"]

INITS = ("svd", "random")


def decompose(
    model: keras.Model,
    scheme: Literal["channel", "spatial"] = "channel",
    orthogonality: float = 1.0,
    sparsity: SparsityKind | None = None,
    sparsity_weight: float = 0.0,
    init: Literal["svd", "random"] = "svd",
    layer_types: LayerTypes = ("conv",),
    include: LayerSelector = None,
    exclude: LayerSelector = None,
    rank_energy: float = 0.01,
    return_report: bool = False,
) -> keras.Model | tuple[keras.Model, RewriteReport]:
    """Returns a new model with Conv2D/Dense layers replaced by SVD-form layers.

    Yang et al., CVPR Workshops 2020 (SVD training). Each chosen Conv2D
    becomes an `SVDConv2D` (same filters, kernel size, strides, padding,
    dilation, activation, bias, name) and each chosen Dense an `SVDDense`, at
    full rank. With `init="svd"` the factors are the SVD of the current
    kernel, so the new model computes the same function (start from a trained
    dense model); with `init="random"` they are drawn as the released code
    does (He-normal `u`, `v`; N(0, 1) `s`; zero bias) for training from
    scratch. The model gets the `svd_orthogonality`, `svd_sparsity` and
    `svd_rank` metrics in its logs (see `attach_svd_metrics`).

    Args:
        model: A built Functional or Sequential model (not modified).
        scheme: `"channel"` or `"spatial"` decomposition of conv kernels.
        orthogonality: lambda_o of the orthogonality penalty.
        sparsity: None, `"l1"`, `"hoyer"` or `"hoyer_square"`.
        sparsity_weight: lambda_s (stage 1 of the method trains with 0, then
            `set_regularization(model, sparsity_weight=...)`).
        init: `"svd"` or `"random"`.
        layer_types, include, exclude: Which layers, as for `lrpet_tf.LRPET`
            (default: every Conv2D). Conv1D/Conv3D and channels-first convs
            have no SVD layer and are left as they are (listed in the report).
        rank_energy: Energy fraction of the `svd_rank` log metric.
        return_report: Also return a `RewriteReport`.

    Returns:
        The new model, or `(model, report)`.

    Raises:
        ValueError / TypeError: For bad arguments, before any work.

    Example:
        >>> svd_model = decompose(model, scheme="channel", orthogonality=1.0,
        ...                       sparsity="hoyer", sparsity_weight=1e-3)
    """
    if scheme not in SCHEMES:
        raise ValueError(f"Expected `scheme` to be one of {SCHEMES}. Received: scheme={scheme!r}")
    if init not in INITS:
        raise ValueError(f"Expected `init` to be one of {INITS}. Received: init={init!r}")
    check_weight(orthogonality, "orthogonality")
    check_weight(sparsity_weight, "sparsity_weight")
    check_sparsity(sparsity)
    check_number(rank_energy, "rank_energy", 0, 1, high_open=True)
    graph = LayerGraph(model)
    targets, skipped = select_targets(model, layer_types, include, exclude)
    report = RewriteReport("decompose")
    report.changes.extend(LayerChange(name, "skipped", why) for name, why in skipped)
    chosen = {}
    for layer in targets:
        reason = _unsupported(layer)
        if reason:
            report.changes.append(LayerChange(layer.name, "skipped", reason))
        else:
            chosen[id(layer)] = layer
    regularization = {
        "orthogonality": orthogonality,
        "sparsity": sparsity,
        "sparsity_weight": sparsity_weight,
    }

    def plan(g):
        replacements = {}
        for node in g.nodes:
            layer = node.layer
            if id(layer) in chosen and id(layer) not in replacements:
                replacement, change = _decomposed(layer, scheme, init, regularization)
                replacements[id(layer)] = replacement
                report.changes.append(change)
        return replacements

    result = graph.rebuild(plan)
    if chosen:
        attach_svd_metrics(result, energy=rank_energy)
    return (result, report) if return_report else result


def _is_conv(layer):
    return isinstance(layer, keras.layers.Conv2D)


def _unsupported(layer):
    if isinstance(layer, keras.layers.Dense):
        return None
    if not _is_conv(layer):
        return f"{type(layer).__name__} has no SVD layer (SVDConv2D is 2-D)"
    if layer.data_format != "channels_last":
        return "channels_first convolution"
    if layer.padding not in ("valid", "same"):
        return f"padding={layer.padding!r}"
    return None


def _decomposed(layer, scheme, init, regularization):
    """Replacement: the SVD-form layer of `layer`, and its report entry.

    With `init="svd"` its factors are set from the SVD of `layer`'s kernel
    once built, so the new model computes the same function.
    """
    common = dict(
        activation=layer.activation,
        use_bias=layer.use_bias,
        name=layer.name,
        dtype=layer.dtype_policy,
        **regularization,
    )
    if _is_conv(layer):
        svd_layer = SVDConv2D(
            layer.filters,
            layer.kernel_size,
            strides=layer.strides,
            padding=layer.padding,
            dilation_rate=layer.dilation_rate,
            scheme=scheme,
            **common,
        )
    else:
        svd_layer = SVDDense(layer.units, **common)
    scheme = scheme if _is_conv(layer) else "channel"
    kernel_shape = tuple(int(d) for d in layer.kernel.shape)
    shape = (spatial_matrix_shape if scheme == "spatial" else matrix_shape)(kernel_shape)
    change = LayerChange(
        layer.name,
        "decomposed",
        f"{type(layer).__name__} -> {type(svd_layer).__name__} ({scheme})",
        kernel_shape=kernel_shape,
        max_rank=min(shape),
        rank=min(shape),
        break_even=float(break_even_rank(shape)),
    )

    def copy_svd():
        kernel = tf.cast(layer.kernel.numpy(), tf.float64)
        view = spatial_kernel_to_matrix if scheme == "spatial" else kernel_to_matrix
        s, u, v = exact_svd(view(kernel))
        svd_layer.set_factors(u, s, v, layer.bias.numpy() if layer.use_bias else None)

    return Replacement([svd_layer], copy_svd if init == "svd" else None), change
