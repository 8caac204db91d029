"""Rank rules: the paper's prune ratio, break-even, energy and numerical rank, budgets.

Notation of the papers: a layer's matrix view has max rank
`K = min(rows, cols)`; LRPET keeps `r = int(K - K*g)` for a global prune
ratio `g`; SVD training keeps the smallest `r` whose top-r energy is at least
`(1 - e)` of the total.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from collections.abc import Sequence

import numpy as np
import tensorflow as tf
from numpy.typing import ArrayLike
from numpy.typing import DTypeLike

__all__ = [
    "break_even_rank",
    "budget_ranks",
    "energy_kept",
    "energy_rank",
    "max_rank",
    "numerical_rank",
    "rank_from_prune_ratio",
    "ramp_rank",
    "round_rank",
]


def max_rank(matrix_shape: Sequence[int]) -> int:
    """`K = min(rows, cols)` of a matrix view shape `(rows, cols)`."""
    return int(min(matrix_shape))


def rank_from_prune_ratio(max_rank_value: int, prune_ratio: float) -> int:
    """The paper's rank rule `r = int(K - K*g)`, at least 1.

    Computed in float64 with a floor, as the official code does
    (`int(K - K*0.57)` for `K = 144` is 61).

    Args:
        max_rank_value: `K`.
        prune_ratio: `g` in `[0, 1)`.

    Returns:
        The kept rank `r` (an int, `1 <= r <= K`).
    """
    k = float(max_rank_value)
    return max(1, int(k - k * float(prune_ratio)))


def ramp_rank(rank: int, max_rank_value: int, progress: float, ramp_epochs: int) -> int:
    """The rank a projection keeps during a rank ramp (cubic, after tfmot's `PolynomialDecay`).

    `r_e = r + floor((K - r) * (1 - min(1, e / E)) ** 3)`: K at the start of
    the ramp, falling fast at first and slowly near the end, the target `r`
    from `e >= E` on. (Beyond the LRPET paper, which projects to `r` from the
    first projection on.)

    Args:
        rank: The target rank `r`.
        max_rank_value: `K`.
        progress: `e`, epochs of training since the ramp began (may be
            fractional, for projections every N steps).
        ramp_epochs: `E`; 0 means no ramp (always `r`).

    Returns:
        The rank to keep, an int in `[r, K]`.
    """
    rank, k = int(rank), int(max_rank_value)
    if ramp_epochs <= 0 or rank >= k:
        return rank
    remaining = 1.0 - min(1.0, max(0.0, float(progress)) / float(ramp_epochs))
    return rank + int(math.floor((k - rank) * remaining**3))


def break_even_rank(matrix_shape: Sequence[int]) -> float:
    """Rank below which a rank-r factorization costs fewer MACs than the layer.

    A `(rows, cols)` matrix view (`rows = kh*kw*c`, `cols = n`) costs
    `rows*cols` MACs per output position dense and `r*(rows + cols)` as two
    thin layers, so factorizing pays only for `r < rows*cols / (rows + cols)`.

    Returns:
        The break-even rank as a float.
    """
    rows, cols = matrix_shape
    return rows * cols / float(rows + cols)


def round_rank(rank: int, multiple: int | None, max_rank_value: int) -> int:
    """Rounds `rank` up to a multiple of `multiple` (hardware-friendly), capped at K."""
    if multiple is None or multiple <= 1:
        return int(rank)
    return int(min(max_rank_value, math.ceil(rank / multiple) * multiple))


def energy_rank(singular_values: tf.Tensor | ArrayLike, energy: float) -> tf.Tensor:
    """Smallest `r` whose top-r energy is at least `(1 - energy)` of the total.

    SVD training's pruning rule (Yang et al., CVPR-W 2020): values are ranked
    by magnitude, so unsorted or negative trained `s` work too.

    Args:
        singular_values: A tensor `(..., k)`; the rule applies to the last axis.
        energy: `e` in `[0, 1)`, the fraction of `sum s^2` that may be removed.

    Returns:
        An int32 tensor `(...)` of ranks, each at least 1.
    """
    s = tf.convert_to_tensor(singular_values)
    squares = tf.sort(tf.square(tf.cast(s, tf.float64)), axis=-1, direction="DESCENDING")
    total = tf.reduce_sum(squares, axis=-1, keepdims=True)
    cumulative = tf.math.divide_no_nan(tf.cumsum(squares, axis=-1), total)
    # A tiny slack absorbs float round-off when the threshold is hit exactly.
    short = tf.cast(cumulative < 1.0 - energy - 1e-12, tf.int32)
    return tf.maximum(tf.reduce_sum(short, axis=-1) + 1, 1)


def numerical_rank(
    singular_values: tf.Tensor | ArrayLike,
    matrix_shape: Sequence[int],
    dtype: DTypeLike = np.float32,
) -> tf.Tensor:
    """NumPy's numerical rank rule: the count of `s > s_max * max(rows, cols) * eps(dtype)`.

    Args:
        singular_values: `(..., k)` singular values of matrices of shape
            `matrix_shape` (any order; a batch of rows is ranked row by row).
        matrix_shape: `(rows, cols)` of those matrices.
        dtype: The precision the matrices were stored in (float32 kernels
            carry float32 round-off, so the tolerance uses float32's epsilon).

    Returns:
        An int32 tensor `(...)` (0 for an all-zero matrix).
    """
    s = tf.abs(tf.cast(tf.convert_to_tensor(singular_values), tf.float64))
    tolerance = tf.reduce_max(s, axis=-1, keepdims=True) * (
        max(matrix_shape) * float(np.finfo(dtype).eps)
    )
    return tf.reduce_sum(tf.cast(s > tolerance, tf.int32), axis=-1)


def energy_kept(
    singular_values: tf.Tensor | ArrayLike, ranks: int | tf.Tensor | ArrayLike
) -> tf.Tensor:
    """Fraction of the energy `sum s^2` held by the `r` largest |s|: `sum_{i<=r} s^2 / sum s^2`.

    Args:
        singular_values: `(..., k)` singular values (any order, any sign).
        ranks: Int or int tensor broadcastable to `(...)`: how many to keep.

    Returns:
        A float64 tensor `(...)`; 1.0 for an all-zero row.
    """
    squares = tf.sort(
        tf.square(tf.cast(tf.convert_to_tensor(singular_values), tf.float64)),
        axis=-1,
        direction="DESCENDING",
    )
    ranks = tf.cast(ranks, tf.int32)
    keep = tf.range(tf.shape(squares)[-1]) < tf.expand_dims(ranks, -1)
    kept = tf.reduce_sum(tf.where(keep, squares, tf.zeros_like(squares)), axis=-1)
    total = tf.reduce_sum(squares, axis=-1)
    return tf.where(total > 0, tf.math.divide_no_nan(kept, total), tf.ones_like(total))


def budget_ranks(
    costs: Mapping[str, Mapping[int, float]],
    unit_params: Mapping[str, int] | None,
    budget: float,
    spend: Mapping[str, Mapping[int, float]] | None = None,
) -> tuple[dict[str, int], float]:
    """The ranks with the least summed cost whose spend fits a budget (exact).

    A multiple-choice knapsack solved by dynamic programming over the layers,
    keeping only the Pareto-optimal (spend, cost) pairs after each layer, so
    it is exact and its work grows with the number of distinct spends, not
    with the size of the budget.

    Args:
        costs: Layer name -> {rank: cost}, the candidate ranks of each layer
            and what each costs (e.g. a loss increase).
        unit_params: Layer name -> parameters per unit of rank (`rows + cols`
            of the layer's matrix view: a rank-r factorization stores
            `r * (rows + cols)` weights); the spend of rank r is
            `r * unit_params[name]`. Ignored where `spend` is given.
        budget: The most the chosen ranks may spend in all.
        spend: Optionally layer name -> {rank: amount}, what each candidate
            rank spends in another unit (MACs, milliseconds).

    Returns:
        `(ranks, total_cost)`: layer name -> chosen rank, and the summed cost.
        Among equal costs the cheaper allocation is returned.

    Raises:
        ValueError: If even the lowest ranks spend more than `budget`.
    """

    def amount(name, rank):
        if spend is not None:
            return spend[name][rank]
        return int(rank) * int(unit_params[name])

    frontier: dict[float, tuple[float, dict[str, int]]] = {0: (0.0, {})}
    for name, curve in costs.items():
        options: dict[float, tuple[float, dict[str, int]]] = {}
        for used, (cost, ranks) in frontier.items():
            for rank, layer_cost in curve.items():
                spent = used + amount(name, rank)
                total = cost + float(layer_cost)
                if spent <= budget and (spent not in options or total < options[spent][0]):
                    options[spent] = (total, {**ranks, name: int(rank)})
        if not options:
            lowest = sum(min(amount(n, r) for r in c) for n, c in costs.items())
            raise ValueError(
                f"Expected `budget` >= {lowest} (every layer at its cheapest candidate "
                f"rank). Received: budget={budget}"
            )
        frontier, best = {}, math.inf
        for spent in sorted(options):
            if options[spent][0] < best:
                best = options[spent][0]
                frontier[spent] = options[spent]
    total, ranks = min(frontier.values(), key=lambda entry: entry[0])
    return ranks, total
