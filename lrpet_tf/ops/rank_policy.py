"""Rank policies: how many singular values each low-rank layer keeps.

A policy maps a layer name and its matrix-view shape `(rows, cols)` to a rank
`r` with `1 <= r <= K = min(rows, cols)`. Policies are small, serializable
objects (`get_config` / `from_config`), so a callback that holds one can be
recreated from its config.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any
from typing import Literal
from typing import Protocol
from typing import TypeVar

from lrpet_tf.ops.arguments import check_int
from lrpet_tf.ops.arguments import check_number
from lrpet_tf.ops.ranks import rank_from_prune_ratio
from lrpet_tf.ops.ranks import round_rank

__all__ = [
    "FixedRank",
    "PruneRatio",
    "RankPolicy",
    "check_latency_table",
    "check_rank_in_range",
    "checked_rank",
    "get_rank_policy",
]

_Policy = TypeVar("_Policy", bound="RankPolicy")


class SupportsRankSteps(Protocol):
    """The type of a `latency_table` argument here: a `lrpet_tf.LatencyTable`."""

    def rank_steps(self) -> dict[str, list[tuple[int, int]]]: ...


class HasRanks(Protocol):
    """The type of an object with a `ranks` dict, such as a prepared `lrpet_tf.LRPET`."""

    @property
    def ranks(self) -> dict[str, int]: ...


class RankPolicy:
    """Base class: override `rank(name, matrix_shape)`."""

    def rank(self, name: str, matrix_shape: Sequence[int]) -> int:
        """Returns the rank to keep for layer `name` with this matrix shape."""
        raise NotImplementedError

    def covers(self, name: str) -> bool:
        """Whether the policy gives a rank for layer `name` (default: every layer)."""
        return True

    def layer_names(self) -> tuple[str, ...]:
        """Names the policy refers to explicitly (validated against the model)."""
        return ()

    def get_config(self) -> dict[str, Any]:
        return {}

    @classmethod
    def from_config(cls: type[_Policy], config: Mapping[str, Any]) -> _Policy:
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


def _check_round_to(round_to, latency=False):
    check_int(round_to, "round_to", also=(None, "latency") if latency else (None,))


def check_latency_table(value: Any, argument: str = "latency_table") -> None:
    """Raises a ValueError unless `value` is a `lrpet_tf.LatencyTable` (duck-typed)."""
    if not all(hasattr(value, m) for m in ("require", "rank_steps", "pays", "dense_ms")):
        raise ValueError(
            f"Expected `{argument}` to be a lrpet_tf.LatencyTable (lrpet_tf.latency_table(model) "
            f"or LatencyTable.load(path)). Received: {argument}={value!r}"
        )


def _rank_steps(latency_table):
    """Layer name -> [(first, last), ...] from a `LatencyTable` (or such a dict)."""
    steps = latency_table if isinstance(latency_table, dict) else None
    if steps is None and hasattr(latency_table, "rank_steps"):
        steps = latency_table.rank_steps()
    if not isinstance(steps, dict):
        raise ValueError(
            'Expected `latency_table` to be a lrpet_tf.LatencyTable (round_to="latency" '
            f"rounds each rank to the top of its latency step). Received: {latency_table!r}"
        )
    try:
        return {name: [(int(a), int(b)) for a, b in value] for name, value in steps.items()}
    except (TypeError, ValueError) as e:
        raise ValueError(
            "Expected `latency_table`'s rank steps as layer name -> [(first_rank, last_rank), "
            f"...]. Received: {steps!r} ({e})"
        ) from e


class PruneRatio(RankPolicy):
    """The paper's global rule `r = int(K - K*g)` (Guo et al., arXiv 2204.05566).

    Args:
        prune_ratio: `g` in `[0, 1)`, the fraction of each layer's max rank to
            prune (ResNet-56 on CIFAR-10 uses 0.57).
        round_to: Optionally round each rank up to a multiple of this (4 or 8
            suit XNNPACK's kernels), capped at K; or `"latency"`: up to the
            top of its step on the measured latency staircase of
            `latency_table` (the largest rank that costs the same time).
        min_rank: Keep every rank at least `min(K, min_rank)` (1, the
            paper's rule, by default). A layer with a tiny K, such as a
            first conv on 1-3 input channels (K = 9 to 27), gets rank 2 or
            less at large g, which can collapse the model (see `LRPET`);
            a floor of 3-4 (or excluding the layer) avoids it.
        latency_table: For `round_to="latency"`: a `lrpet_tf.LatencyTable`
            with every layer the policy ranks (or its `rank_steps()` dict).
    """

    def __init__(
        self,
        prune_ratio: float,
        round_to: int | Literal["latency"] | None = None,
        min_rank: int = 1,
        latency_table: SupportsRankSteps | dict[str, Sequence[tuple[int, int]]] | None = None,
    ) -> None:
        check_number(prune_ratio, "prune_ratio", 0, 1, high_open=True)
        _check_round_to(round_to, latency=True)
        check_int(min_rank, "min_rank")
        if (round_to == "latency") != (latency_table is not None):
            raise ValueError(
                'Expected `latency_table` exactly when round_to="latency". Received: '
                f"round_to={round_to!r}, latency_table={latency_table!r}"
            )
        self.prune_ratio: float = float(prune_ratio)
        self.round_to: int | Literal["latency"] | None = round_to
        self.min_rank: int = int(min_rank)
        self.steps: dict[str, list[tuple[int, int]]] | None = (
            _rank_steps(latency_table) if latency_table is not None else None
        )

    def rank(self, name: str | None, matrix_shape: Sequence[int]) -> int:
        k = min(matrix_shape)
        r = max(rank_from_prune_ratio(k, self.prune_ratio), min(k, self.min_rank))
        if self.round_to != "latency":
            return round_rank(r, self.round_to, k)
        if name not in self.steps:
            raise ValueError(
                f"`latency_table` has no measurements of layer {name!r}; measure it "
                "(lrpet_tf.latency_table(model)) or exclude the layer."
            )
        for first, last in self.steps[name]:
            if first <= r <= last:
                return min(k, last)
        return r

    def get_config(self) -> dict[str, Any]:
        return {
            "prune_ratio": self.prune_ratio,
            "round_to": self.round_to,
            "min_rank": self.min_rank,
            "latency_table": self.steps,
        }


class FixedRank(RankPolicy):
    """Explicit ranks: one int for every layer, or a dict layer name -> int.

    An int is capped at each layer's max rank K (so `FixedRank(16)` keeps a
    27-row first conv at 16 and a 3-channel-input 1x1 conv at 3). A dict must
    name existing layers and give ranks in `[1, K]`; layers not in the dict
    are not projected.

    Args:
        ranks: An int >= 1, or a dict of layer name -> int >= 1.
        round_to: Optionally round each rank up to a multiple of this.
    """

    def __init__(self, ranks: int | dict[str, int], round_to: int | None = None) -> None:
        if isinstance(ranks, dict):
            if not ranks:
                raise ValueError(
                    "Expected `ranks` to name at least one layer (a dict layer name -> rank). "
                    "Received: ranks={}"
                )
            for name, r in ranks.items():
                check_int(r, f"ranks[{name!r}]")
            self.ranks: int | dict[str, int] = dict(ranks)
        else:
            self.ranks = check_int(ranks, "ranks")
        _check_round_to(round_to)
        self.round_to = round_to

    def covers(self, name: str) -> bool:
        """Whether the policy gives a rank for layer `name`."""
        return not isinstance(self.ranks, dict) or name in self.ranks

    def layer_names(self) -> tuple[str, ...]:
        return tuple(self.ranks) if isinstance(self.ranks, dict) else ()

    def rank(self, name: str, matrix_shape: Sequence[int]) -> int:
        k = min(matrix_shape)
        if isinstance(self.ranks, dict):
            r = self.ranks[name]
            if r > k:
                raise ValueError(
                    f"Expected `ranks[{name!r}]` <= the layer's max rank {k} "
                    f"(its matrix view is {tuple(matrix_shape)}). Received: "
                    f"ranks[{name!r}]={r}"
                )
        else:
            r = min(self.ranks, k)
        return round_rank(r, self.round_to, k)

    def get_config(self) -> dict[str, Any]:
        return {"ranks": self.ranks, "round_to": self.round_to}


def check_rank_in_range(r: Any, k: int, argument: str) -> int:
    """Returns `r` as an int if it is one in `[1, k]`; else a ValueError naming `argument`."""
    return check_int(r, argument, 1, k, hint="the layer's max rank")


def checked_rank(policy: RankPolicy, name: str, matrix_shape: Sequence[int]) -> int:
    """`policy.rank(name, matrix_shape)`, checked to be an int in `[1, K]`.

    Every user of a policy (`LRPET`, `factorize`) asks through here, so a
    custom `RankPolicy` that returns 0 (a zeroed kernel) or more than K is
    refused before any kernel changes.
    """
    r = policy.rank(name, matrix_shape)
    argument = f"{type(policy).__name__}.rank({name!r}, {tuple(int(d) for d in matrix_shape)})"
    return check_rank_in_range(r, min(matrix_shape), argument)


def get_rank_policy(
    prune_ratio: float | None = None,
    ranks: int | dict[str, int] | RankPolicy | None = None,
    round_to: int | Literal["latency"] | None = None,
    latency_table: SupportsRankSteps | dict[str, Sequence[tuple[int, int]]] | None = None,
) -> RankPolicy:
    """Builds the rank policy from the public `prune_ratio` / `ranks` arguments.

    Exactly one must be given: `prune_ratio` (float in [0, 1)), or `ranks` (an
    int, a dict layer name -> int, or a `RankPolicy`). `round_to` (and
    `latency_table` for `round_to="latency"`) go to `PruneRatio`, or to
    `FixedRank` for an int multiple.

    Raises:
        ValueError: If both or neither are given, or a value is out of range.
        TypeError: If `ranks` is of an unsupported type.
    """
    if (prune_ratio is None) == (ranks is None):
        raise ValueError(
            "Expected exactly one of `prune_ratio` and `ranks`. Received: "
            f"prune_ratio={prune_ratio!r}, ranks={ranks!r}"
        )
    if prune_ratio is not None:
        return PruneRatio(prune_ratio, round_to=round_to, latency_table=latency_table)
    if isinstance(ranks, RankPolicy) or round_to == "latency" or latency_table is not None:
        if round_to is not None or latency_table is not None:
            raise ValueError(
                "`round_to` and `latency_table` apply to `prune_ratio` (or give "
                "ranks=PruneRatio(g, round_to=..., latency_table=...)). Received: "
                f"ranks={ranks!r}, round_to={round_to!r}"
            )
        return ranks
    if isinstance(ranks, (dict, numbers.Integral)) and not isinstance(ranks, bool):
        return FixedRank(ranks, round_to=round_to)
    raise TypeError(
        "Expected `ranks` to be an int, a dict of layer name -> int, or a "
        f"RankPolicy. Received: ranks={ranks!r} of type {type(ranks).__name__}"
    )
