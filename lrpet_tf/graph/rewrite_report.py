"""What a rewrite did to each layer it considered: `RewriteReport`."""

from __future__ import annotations

import dataclasses

from lrpet_tf.graph.kernel_rank import KernelRank
from lrpet_tf.graph.table import format_table

__all__ = ["LayerChange", "RewriteReport"]


@dataclasses.dataclass
class LayerChange(KernelRank):
    """One layer a rewrite considered.

    Attributes:
        layer: Layer name.
        action: What happened: `"folded"`, `"factorized"`, `"kept"` or
            `"skipped"` (left as is because the rewrite cannot handle it).
        detail: Why, in words.
        kernel_shape, max_rank, rank, break_even, energy_kept: For
            factorization, the layer's kernel, K, the rank used, the break-even
            rank and the fraction of energy the rank keeps.
        macs_before, macs_after, params_before, params_after: Costs per
            example of the layer before and after the rewrite.
    """

    layer: str
    action: str
    detail: str = ""
    macs_before: int | None = None
    macs_after: int | None = None
    params_before: int | None = None
    params_after: int | None = None


@dataclasses.dataclass
class RewriteReport:
    """The list of `LayerChange`s of one rewrite, printable as a table."""

    rewrite: str
    changes: list[LayerChange] = dataclasses.field(default_factory=list)

    def by_action(self, action: str) -> list[str]:
        """Names of the layers with this action."""
        return [c.layer for c in self.changes if c.action == action]

    def __str__(self) -> str:
        headers = [
            "layer",
            "action",
            "K",
            "rank",
            "break-even",
            "energy kept",
            "MACs before",
            "MACs after",
            "detail",
        ]
        rows = [
            [
                c.layer,
                c.action,
                c.max_rank,
                c.rank,
                c.break_even,
                c.energy_kept,
                c.macs_before,
                c.macs_after,
                c.detail,
            ]
            for c in self.changes
        ]
        return format_table(headers, rows, title=f"{self.rewrite}:")
