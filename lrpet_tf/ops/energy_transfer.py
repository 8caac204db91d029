"""Energy transfer: what LRPET does to the kept singular values.

Guo et al., "Compact Model Training by Low-Rank Projection with Energy
Transfer", arXiv 2204.05566. With singular values `s` (descending) and a kept
rank `r`, the pruned values are set to zero and the kept ones become:

* `"scale"` (the official code): `s'_i = s_i * sqrt(sum_all s^2 / sum_{i<=r} s^2)`,
  which conserves the Frobenius energy `sum s^2` exactly.
* `"additive"` (the abstract's "uniformly transfer the energy"):
  `s'_i = sqrt(s_i^2 + E_pruned / r)` with `E_pruned = sum_{i>r} s^2`, which
  also conserves the energy, spread evenly instead of proportionally.
* `None`: plain truncation (the TRP-style baseline and the ablation).
"""

from __future__ import annotations

from typing import Literal
from typing import TypeAlias

import tensorflow as tf
from numpy.typing import ArrayLike

__all__ = ["ENERGY_TRANSFER_MODES", "check_energy_transfer", "transfer_energy"]

ENERGY_TRANSFER_MODES = ("scale", "additive", None)
# The type of an `energy_transfer` argument: one of `ENERGY_TRANSFER_MODES`.
EnergyTransfer: TypeAlias = Literal["scale", "additive"] | None


def check_energy_transfer(mode: EnergyTransfer) -> EnergyTransfer:
    """Raises a ValueError unless `mode` is one of `ENERGY_TRANSFER_MODES`."""
    if mode not in ENERGY_TRANSFER_MODES:
        raise ValueError(
            f"Expected `energy_transfer` to be one of {ENERGY_TRANSFER_MODES}. "
            f"Received: energy_transfer={mode!r}"
        )
    return mode


def transfer_energy(
    singular_values: tf.Tensor | ArrayLike,
    ranks: tf.Tensor | ArrayLike,
    mode: EnergyTransfer = "scale",
) -> tf.Tensor:
    """Zeroes singular values past each rank and moves their energy to the rest.

    Args:
        singular_values: A float tensor `(..., k)`, each row in descending order.
        ranks: An int tensor broadcastable to `singular_values.shape[:-1]`: how
            many values to keep in each row (`1 <= r <= k`).
        mode: `"scale"`, `"additive"` or `None` (see the module docstring).

    Returns:
        A tensor like `singular_values` with the new values (zeros past `r`).

    Raises:
        ValueError: If `mode` is not one of the three modes.
    """
    check_energy_transfer(mode)
    s = tf.convert_to_tensor(singular_values)
    k = tf.shape(s)[-1]
    ranks = tf.cast(ranks, tf.int32)
    keep = tf.range(k) < ranks[..., tf.newaxis]
    zeros = tf.zeros_like(s)
    kept = tf.where(keep, s, zeros)
    if mode is None:
        return kept
    energy_all = tf.reduce_sum(tf.square(s), axis=-1, keepdims=True)
    energy_kept = tf.reduce_sum(tf.square(kept), axis=-1, keepdims=True)
    if mode == "scale":
        factor = tf.sqrt(tf.math.divide_no_nan(energy_all, energy_kept))
        return kept * factor
    pruned_share = (energy_all - energy_kept) / tf.cast(ranks[..., tf.newaxis], s.dtype)
    return tf.where(keep, tf.sqrt(tf.square(s) + pruned_share), zeros)
