"""The small-rank guard: one warning for every layer a rank choice leaves at rank <= 2.

A layer with a tiny max rank K, typically a first conv on 1-3 input channels
(K = 9 to 27), gets rank 2 or less at a large prune ratio. Measured on a small
CNN (Fashion-MNIST, g = 0.7): its rank-2 stem took the LRPET model from about
77% to 29% at the last projection, with every other layer keeping >= 0.9999 of
its energy; left dense, 74%. The official PyTorch loop collapses the same way.
Every place lrpet_tf decides ranks (`LRPET`, `factorize`, `allocate_ranks`)
calls `warn_small_ranks` once with all its layers.
"""

import logging

__all__ = ["SMALL_RANK", "small_ranks", "warn_small_ranks"]

SMALL_RANK = 2

_logger = logging.getLogger("lrpet_tf")


def small_ranks(entries):
    """The `(name, rank, max_rank)` entries pruned to rank <= 2 (layers kept at full K are not)."""
    return [
        (name, int(rank), int(k)) for name, rank, k in entries if rank <= SMALL_RANK and rank < k
    ]


def warn_small_ranks(entries, source):
    """Logs one warning naming every layer of `entries` pruned to rank <= 2.

    Args:
        entries: Iterable of `(layer name, rank, max rank K)`.
        source: Who chose the ranks, for the message (e.g. `"LRPET"`).

    Returns:
        The entries named (empty when nothing was logged).
    """
    small = small_ranks(entries)
    if small:
        _logger.warning(
            "%s: %d layer(s) pruned to rank <= %d: %s. So few singular values can collapse "
            "the model (a small CNN's rank-2 stem, K = 9, took it from 77%% to 29%%). "
            "Leave them dense (exclude=[...]) or give them a higher rank "
            "(ranks={...}, or PruneRatio(g, min_rank=3)).",
            source,
            len(small),
            SMALL_RANK,
            ", ".join(f"{name} (rank {r} of K={k})" for name, r, k in small),
        )
    return small
