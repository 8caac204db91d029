"""The paper's global prune ratio for a MACs budget: `prune_ratio_for_macs`."""

from __future__ import annotations

from lrpet_tf._keras import keras
from lrpet_tf.graph.model_report import model_report
from lrpet_tf.graph.output_positions import output_positions
from lrpet_tf.graph.targets import LayerSelector
from lrpet_tf.graph.targets import LayerTypes
from lrpet_tf.graph.targets import select_targets
from lrpet_tf.ops.arguments import check_int
from lrpet_tf.ops.costs import factorized_macs
from lrpet_tf.ops.costs import kernel_macs
from lrpet_tf.ops.matrix_view import matrix_shape
from lrpet_tf.ops.rank_policy import PruneRatio
from lrpet_tf.ops.ranks import break_even_rank

__all__ = ["prune_ratio_for_macs"]


def prune_ratio_for_macs(
    model: keras.Model,
    macs: int,
    layer_types: LayerTypes = ("conv",),
    include: LayerSelector = None,
    exclude: LayerSelector = None,
    min_rank: int = 1,
) -> float:
    """The smallest prune ratio g whose compact model has at most `macs` MACs per example.

    Every layer LRPET would project (the same `layer_types`, `include` and
    `exclude`) is counted at its rank `r = int(K - K*g)` as `factorize` builds
    it: two thin layers below the break-even rank, dense otherwise; the other
    layers keep their MACs (as `lrpet_tf.model_report` counts them). The
    search is exact: only the prune ratios where some layer's rank changes
    are candidates, and the smallest that fits is returned.

    Args:
        model: A built Functional or Sequential model.
        macs: The budget, MACs per example (e.g. `int(0.5 * model_report(model).total_macs)`).
        layer_types, include, exclude: Which layers, as for `lrpet_tf.LRPET`.
        min_rank: As `lrpet_tf.PruneRatio(g, min_rank=...)`.

    Returns:
        g, a float in `[0, 1)`, for `LRPET(prune_ratio=g)` (or
        `LRPET(ranks=PruneRatio(g, min_rank=...))`).

    Raises:
        ValueError: If `macs` is not a positive int, or even the largest
            prune ratio leaves more than `macs` (the layers left dense cost
            too much), before any model is built.

    Example:
        >>> total = lrpet_tf.model_report(model).total_macs
        >>> g = lrpet_tf.prune_ratio_for_macs(model, total // 2, exclude=["stem"])
        >>> model.fit(..., callbacks=[lrpet_tf.LRPET(prune_ratio=g, exclude=["stem"])])
    """
    macs = check_int(macs, "macs")
    layers, _ = select_targets(model, layer_types=layer_types, include=include, exclude=exclude)
    positions = output_positions(model, layers)
    costs = {}  # id(layer) -> (matrix shape, output positions, dense MACs)
    for layer in layers:
        kernel_shape = tuple(int(d) for d in layer.kernel.shape)
        p = positions[id(layer)]
        costs[id(layer)] = (matrix_shape(kernel_shape), p, kernel_macs(kernel_shape, p))
    total = model_report(model).total_macs
    others = total - sum(dense for _, _, dense in costs.values())

    def macs_at(g):
        policy = PruneRatio(g, min_rank=min_rank)
        spent = others
        for shape, positions, dense in costs.values():
            rank = policy.rank(None, shape)
            factorized = rank < break_even_rank(shape)
            spent += factorized_macs(shape, rank, positions) if factorized else dense
        return spent

    # r = int(K - K*g) changes where K*(1 - g) is an integer; the rank just
    # past such a point is the lower one, whatever the float rounding at it.
    candidates = {0.0}
    for shape, _, _ in costs.values():
        k = min(shape)
        for r in range(1, k):
            g = (k - r) / k
            candidates.update((g, min(g + 1e-12, 1.0 - 1e-12)))
    candidates = sorted(g for g in candidates if g < 1.0)
    if macs_at(candidates[-1]) > macs:
        raise ValueError(
            f"Expected `macs` >= {macs_at(candidates[-1])}: the MACs of {model.name!r} with "
            f"every projected layer at its smallest rank. Received: macs={macs}"
        )
    low, high = 0, len(candidates) - 1
    while low < high:
        middle = (low + high) // 2
        if macs_at(candidates[middle]) <= macs:
            high = middle
        else:
            low = middle + 1
    return float(candidates[high])
