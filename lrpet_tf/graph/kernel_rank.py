"""The rank facts of one layer's kernel, shared by the model and rewrite reports."""

from __future__ import annotations

import dataclasses

__all__ = ["KernelRank"]


@dataclasses.dataclass(kw_only=True)
class KernelRank:
    """A kernel's matrix view and rank, as the reports give them.

    Attributes:
        kernel_shape: The main kernel's shape, or None.
        max_rank: `K = min(rows, cols)` of the kernel's matrix view.
        rank: The rank in question (numerical, or the one a rewrite used).
        break_even: Rank below which a factorization pays
            (`lrpet_tf.ops.break_even_rank`).
        energy_kept: Fraction of the kernel's energy in its top `rank`
            singular values.
    """

    kernel_shape: tuple[int, ...] | None = None
    max_rank: int | None = None
    rank: int | None = None
    break_even: float | None = None
    energy_kept: float | None = None
