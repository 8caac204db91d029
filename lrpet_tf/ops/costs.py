"""Multiply-accumulate (MAC) and parameter counts of dense and factorized layers.

Counts are per example. A layer with kernel `(*kernel_size, c, n)` evaluated at
`P` output positions costs `P * prod(kernel_size) * c * n / groups` MACs; its
rank-r factorization (a conv with `r` filters, then a 1x1 conv to `n`) costs
`P * r * (prod(kernel_size) * c + n)`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["factorized_macs", "factorized_params", "kernel_macs"]


def kernel_macs(kernel_shape: Sequence[int], output_positions: int) -> int:
    """MACs of a layer with this kernel at `output_positions` positions.

    Args:
        kernel_shape: The kernel shape as Keras stores it; for a grouped conv
            the stored kernel already has `c / groups` input channels, and for
            a DepthwiseConv2D `(kh, kw, c, multiplier)` every entry is one MAC
            per position, so the product of the shape is right for all three.
        output_positions: Number of output positions per example (1 for Dense
            on a vector, `H_out * W_out` for Conv2D).
    """
    return int(np.prod(kernel_shape, dtype=np.int64)) * int(output_positions)


def factorized_macs(kernel_shape: Sequence[int], rank: int, output_positions: int) -> int:
    """MACs of the rank-`rank` two-layer form of a kernel, per example."""
    rows = int(np.prod(kernel_shape[:-1], dtype=np.int64))
    return int(rank) * (rows + int(kernel_shape[-1])) * int(output_positions)


def factorized_params(kernel_shape: Sequence[int], rank: int, use_bias: bool) -> int:
    """Parameters of the rank-`rank` two-layer form of a kernel."""
    rows = int(np.prod(kernel_shape[:-1], dtype=np.int64))
    n = int(kernel_shape[-1])
    return int(rank) * (rows + n) + (n if use_bias else 0)
