"""Drop small singular values of SVD-form layers: `prune`."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from lrpet_tf._keras import keras
from lrpet_tf.graph.layer_graph import LayerGraph
from lrpet_tf.graph.layer_graph import Replacement
from lrpet_tf.graph.layer_kinds import call_macs
from lrpet_tf.graph.model_report import model_report
from lrpet_tf.graph.rewrite_report import LayerChange
from lrpet_tf.graph.rewrite_report import RewriteReport
from lrpet_tf.layers.svd_layer import SVDLayer
from lrpet_tf.layers.svd_monitor import attach_svd_metrics
from lrpet_tf.layers.svd_monitor import svd_layers
from lrpet_tf.ops.arguments import check_int
from lrpet_tf.ops.arguments import check_number
from lrpet_tf.ops.ranks import break_even_rank
from lrpet_tf.ops.ranks import energy_kept
from lrpet_tf.ops.ranks import energy_rank

__all__ = ["energy_for_macs", "kept_indices", "prune"]


def _check_rule(**rule):
    """Exactly one pruning rule of `rule` (name -> value or None), and a valid one."""
    if sum(value is not None for value in rule.values()) != 1:
        names = ", ".join(f"`{name}`" for name in rule)
        given = ", ".join(f"{name}={value!r}" for name, value in rule.items())
        raise ValueError(f"Expected exactly one of {names}. Received: {given}")
    macs, energy, threshold = (rule.get(k) for k in ("macs", "energy", "threshold"))
    check_int(macs, "macs", also=(None,))
    check_number(energy, "energy", 0, 1, high_open=True, also=(None,))
    check_number(threshold, "threshold", low=0, also=(None,))


def kept_indices(
    singular_values: ArrayLike, energy: float | None = None, threshold: float | None = None
) -> np.ndarray:
    """Indices of the singular values SVD-training pruning keeps, largest |s| first.

    Exactly one rule: `energy` e keeps the smallest K whose top-K energy
    (by |s|) is at least `(1 - e)` of the layer's total; `threshold` keeps
    every |s| > threshold. At least one value is always kept.

    Raises:
        ValueError: Both rules or neither, or a value out of range.
    """
    _check_rule(energy=energy, threshold=threshold)
    s = np.abs(np.asarray(singular_values, np.float64))
    order = np.argsort(-s, kind="stable")
    if energy is not None:
        k = int(energy_rank(s, energy))
    else:
        k = max(1, int(np.sum(s > threshold)))
    return order[:k]


def prune(
    model: keras.Model,
    energy: float | None = None,
    threshold: float | None = None,
    macs: int | None = None,
    return_report: bool = False,
) -> keras.Model | tuple[keras.Model, RewriteReport]:
    """Returns a new model whose SVD layers keep only their large singular values.

    Step (3) of SVD training (Yang et al., CVPR Workshops 2020): per layer,
    keep the smallest K whose top-K energy is at least `(1 - energy)` of the
    layer's total energy `sum s^2` (or every |s| above `threshold`). The
    factors are physically sliced, so the pruned layers have rank K, no
    zeros are left (the gradient of `sqrt(|s|)` at 0 is infinite) and the
    model can be fine-tuned (step 4: `set_regularization(pruned,
    sparsity_weight=0)`). `lrpet_tf.factorize` then turns it into standard
    thin layers for export.

    The pruned model computes what the unpruned one computes with the
    dropped singular values set to zero.

    Args:
        model: A built Functional/Sequential model with SVD layers (not
            modified).
        energy: `e` in `[0, 1)`: the fraction of each layer's energy that
            may be removed (0.01 is typical).
        threshold: Instead of `energy`: an absolute threshold >= 0 on |s|.
        macs: Instead of `energy`: the most MACs per example the pruned
            model may have (as `lrpet_tf.model_report` counts them, each SVD
            layer in the cheaper of its two forms). The smallest `e` that
            fits is used: found exactly among the energies where some
            layer's rank changes, by bisection with real pruning.
        return_report: Also return a `RewriteReport` (rank and MACs per layer).

    Returns:
        The new model, or `(model, report)`.

    Raises:
        ValueError: Both or neither rule, values out of range, or a model
            without SVD layers.
    """
    _check_rule(energy=energy, threshold=threshold, macs=macs)
    graph = LayerGraph(model)
    if not svd_layers(model):
        raise ValueError(f"Model {model.name!r} has no SVD layers to prune.")
    if macs is not None:
        energy = energy_for_macs(model, int(macs))
    report = RewriteReport("prune")

    def plan(g):
        replacements = {}
        for node in g.nodes:
            layer = node.layer
            if not isinstance(layer, SVDLayer) or id(layer) in replacements:
                continue
            keep = kept_indices(layer.s.numpy(), energy, threshold)
            calls = g.calls(layer)
            change = LayerChange(
                layer.name,
                "pruned",
                max_rank=min(layer.matrix_shape),
                rank=len(keep),
                break_even=float(break_even_rank(layer.matrix_shape)),
                energy_kept=float(energy_kept(layer.s.numpy(), len(keep))),
                macs_before=sum(call_macs(layer, n.input_shape, n.output_shape) for n in calls),
                params_before=int(layer.count_params()),
            )
            report.changes.append(change)
            replacements[id(layer)] = _pruned(layer, keep, change, calls)
        return replacements

    result = graph.rebuild(plan)
    attach_svd_metrics(result, energy=0.01 if energy is None else energy)
    return (result, report) if return_report else result


def energy_for_macs(model: keras.Model, macs: int) -> float:
    """The smallest pruning energy `e` whose pruned model has at most `macs` MACs per example.

    `prune(model, macs=...)` uses it; call it to know `e` (e.g. for the
    `svd_rank` metric at the pruning energy). Exact: the candidates are the
    energies where some layer's rank changes, bisected with real pruning and
    `lrpet_tf.model_report`'s MAC count.

    Args:
        model: A model with SVD-form layers.
        macs: The budget (an int >= 1).

    Returns:
        `e` in `[0, 1)`.

    Raises:
        ValueError: If `macs` is not an int >= 1, or even every SVD layer at
            rank 1 exceeds it.
    """
    _check_rule(macs=macs)
    candidates = {0.0}
    for layer in svd_layers(model):
        squares = np.sort(np.square(np.abs(layer.s.numpy().astype(np.float64))))[::-1]
        total = squares.sum()
        if total > 0:
            # At e = 1 - (top-k energy) the layer's rank drops to k (energy_rank's rule).
            cumulative = np.cumsum(squares)[:-1] / total
            candidates.update(float(max(0.0, 1.0 - c + 1e-12)) for c in cumulative)
    candidates = sorted(e for e in candidates if e < 1.0)

    def fits(e):
        return model_report(prune(model, energy=e)).total_macs <= macs

    if not fits(candidates[-1]):
        lowest = model_report(prune(model, energy=candidates[-1])).total_macs
        raise ValueError(
            f"Expected `macs` >= {lowest}, the MACs of the model with every SVD layer at "
            f"rank 1. Received: macs={macs}"
        )
    low, high = 0, len(candidates) - 1  # candidates[high] fits
    while low < high:
        middle = (low + high) // 2
        if fits(candidates[middle]):
            high = middle
        else:
            low = middle + 1
    return candidates[high]


def _pruned(layer, keep, change, calls):
    """Replacement: the same SVD layer at rank K with the kept factors.

    Fills in the after-costs of its report entry once built.
    """
    pruned = type(layer).from_config(dict(layer.get_config(), rank=len(keep)))
    factors = (
        layer.u.numpy()[:, keep],
        layer.s.numpy()[keep],
        layer.v.numpy()[:, keep],
        layer.bias.numpy() if layer.use_bias else None,
    )

    def initialize():
        pruned.set_factors(*factors)
        change.params_after = int(pruned.count_params())
        change.macs_after = sum(call_macs(pruned, n.input_shape, n.output_shape) for n in calls)

    return Replacement([pruned], initialize)
