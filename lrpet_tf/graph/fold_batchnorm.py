"""Merge inference-mode BatchNormalization into the preceding layer."""

from __future__ import annotations

import logging

import numpy as np

from lrpet_tf._keras import keras
from lrpet_tf.graph.layer_graph import LayerGraph
from lrpet_tf.graph.layer_graph import Replacement
from lrpet_tf.graph.layer_graph import set_weights_of
from lrpet_tf.graph.layer_kinds import can_absorb_batchnorm
from lrpet_tf.graph.layer_kinds import is_depthwise
from lrpet_tf.graph.layer_kinds import layer_kernel
from lrpet_tf.graph.rewrite_report import LayerChange
from lrpet_tf.graph.rewrite_report import RewriteReport
from lrpet_tf.ops.batchnorm import fold_batchnorm_weights

__all__ = ["fold_batchnorm"]

_logger = logging.getLogger("lrpet_tf")


def fold_batchnorm(
    model: keras.Model, return_report: bool = False
) -> keras.Model | tuple[keras.Model, RewriteReport]:
    """Returns a new model with each foldable BatchNormalization merged away.

    A BatchNormalization is folded when it directly and solely follows a
    Conv1D/2D/3D, DepthwiseConv1D/2D or Dense layer with a linear activation
    (paired by graph edge, see `LayerGraph.pairing_problem`). The layer's
    kernel is scaled per output channel by `a = gamma / sqrt(var + eps)` and
    its bias becomes `(bias - mean) * a + beta`; whatever followed the BN
    (an activation, an add) now follows the merged layer. Nested models are
    folded too. Every other BN is left as it is, listed in the report and
    logged (logger "lrpet_tf", level WARNING).

    The result computes the input model's inference function (`training=False`)
    to float tolerance. The input model is not modified.

    Args:
        model: A built Functional or Sequential model.
        return_report: Also return a `RewriteReport` of what was folded and
            what was left, and why.

    Returns:
        The new model, or `(model, report)` with `return_report=True`.

    Raises:
        TypeError: For a subclassed model (no layer graph to rewrite).
        ValueError: For an unbuilt Sequential model.

    Example:
        >>> folded = lrpet_tf.fold_batchnorm(model)
        >>> np.allclose(folded(x), model(x, training=False), atol=1e-5)
        True
    """
    graph = LayerGraph(model)
    report = RewriteReport("fold_batchnorm")

    def plan(g):
        replacements = {}
        for node in g.nodes:
            bn = node.layer
            if not isinstance(bn, keras.layers.BatchNormalization):
                continue
            host = g.producer(node.inputs[0]) if len(node.inputs) == 1 else None
            if host is None:
                reason = "does not follow a layer it can merge into"
            elif not can_absorb_batchnorm(host.layer):
                reason = f"follows {type(host.layer).__name__} {host.layer.name!r}"
            else:
                reason = g.pairing_problem(host, node)
            if reason is not None:
                if not any(c.layer == bn.name for c in report.changes):
                    report.changes.append(LayerChange(bn.name, "skipped", reason))
                continue
            replacements[id(host.layer)] = _folded_layer(host.layer, bn)
            replacements[id(bn)] = _skip_batchnorm
            report.changes.append(LayerChange(bn.name, "folded", f"into {host.layer.name}"))
        return replacements

    folded = graph.rebuild(plan)
    skipped = [c for c in report.changes if c.action == "skipped"]
    if skipped:
        _logger.warning(
            "fold_batchnorm left %d BatchNormalization layer(s) as they are (e.g. %s: %s)%s",
            len(skipped),
            skipped[0].layer,
            skipped[0].detail,
            "" if return_report else "; return_report=True lists them all",
        )
    return (folded, report) if return_report else folded


def _skip_batchnorm(args, kwargs):
    return args[0]


def _folded_layer(host, bn):
    """Replacement: `host` with the BN that follows it merged into its kernel and bias."""
    kernel = np.asarray(layer_kernel(host).numpy(), np.float64)
    bias = host.bias.numpy() if getattr(host, "use_bias", False) else None

    def value(variable):
        return None if variable is None else np.asarray(variable.numpy(), np.float64)

    new_kernel, new_bias = fold_batchnorm_weights(
        kernel,
        None if bias is None else np.asarray(bias, np.float64),
        value(getattr(bn, "gamma", None) if bn.scale else None),
        value(getattr(bn, "beta", None) if bn.center else None),
        value(bn.moving_mean),
        value(bn.moving_variance),
        bn.epsilon,
        channel_axes=2 if is_depthwise(host) else 1,
    )
    dtype = layer_kernel(host).numpy().dtype
    weights = [new_kernel.numpy().astype(dtype), new_bias.numpy().astype(dtype)]
    layer = type(host).from_config(dict(host.get_config(), use_bias=True))
    return Replacement([layer], set_weights_of([(layer, weights)]))
