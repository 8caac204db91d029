"""Plain-text tables for the reports printed by lrpet_tf."""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

__all__ = ["format_table"]


def format_table(
    headers: Sequence[str], rows: Sequence[Sequence[Any]], title: str | None = None
) -> str:
    """Formats `rows` (sequences of values) under `headers` as aligned text.

    Numbers (Python or NumPy) are right-aligned, everything else
    left-aligned; ints get thousands separators, floats four significant
    digits, and None shows as "-".

    Args:
        headers: Column names.
        rows: Sequences of cell values, one per row.
        title: Optional line above the table.

    Returns:
        The table as one string.
    """

    def cell(value):
        if value is None:
            return "-"
        if isinstance(value, bool):
            return str(value)
        if isinstance(value, numbers.Integral):
            return f"{int(value):,}"
        if isinstance(value, numbers.Real):
            return f"{value:.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
        return str(value)

    def is_number(value):
        return isinstance(value, numbers.Real) and not isinstance(value, bool)

    text = [[cell(v) for v in row] for row in rows]
    numeric = [
        all(is_number(row[i]) or row[i] is None for row in rows) for i in range(len(headers))
    ]
    widths = [max([len(h)] + [len(r[i]) for r in text]) for i, h in enumerate(headers)]

    def line(values):
        parts = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)]
        return "  ".join(parts).rstrip()

    out = []
    if title:
        out.append(title)
    out.append(line(headers))
    out.append("  ".join("-" * w for w in widths))
    out.extend(line(r) for r in text)
    return "\n".join(out)
