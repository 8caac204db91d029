"""The compiled projection step of LRPET: all layers, one `tf.function`.

`Projector` is what the LRPET callback calls; the callback only decides when.
At construction it resolves which kernels to project, their ranks and the
BatchNormalization that follows each one (by graph edge), groups kernels whose
matrix views have the same shape, and traces one `tf.function` that, per
group, runs one batched `tf.linalg.svd` (in float32) where the variables
live, applies energy transfer and BN rectification (`lrpet_tf.ops`) and writes
back with `variable.assign`, so it works under `tf.distribute` strategies
(every replica gets the same values; under a multi-worker strategy, those the
first replica computed). Optimizer slots, biases and BN variables are never written.
"""

from __future__ import annotations

import collections
import dataclasses
import time
from collections.abc import Mapping
from typing import Literal
from typing import TypeAlias

import numpy as np
import tensorflow as tf

from lrpet_tf import _keras
from lrpet_tf._keras import keras
from lrpet_tf.graph.layer_graph import LayerGraph
from lrpet_tf.graph.targets import LayerSelector
from lrpet_tf.graph.targets import LayerTypes
from lrpet_tf.graph.targets import check_layer_names
from lrpet_tf.graph.targets import layers_by_name
from lrpet_tf.graph.targets import select_targets
from lrpet_tf.ops.batchnorm import batchnorm_scale
from lrpet_tf.ops.energy_transfer import EnergyTransfer
from lrpet_tf.ops.energy_transfer import check_energy_transfer
from lrpet_tf.ops.matrix_view import kernel_to_matrix
from lrpet_tf.ops.matrix_view import matrix_shape
from lrpet_tf.ops.matrix_view import matrix_to_kernel
from lrpet_tf.ops.projection import low_rank_projection
from lrpet_tf.ops.rank_policy import RankPolicy
from lrpet_tf.ops.rank_policy import check_rank_in_range
from lrpet_tf.ops.rank_policy import checked_rank
from lrpet_tf.ops.ranks import numerical_rank

__all__ = ["Projector", "ProjectionStats", "ProjectionTarget", "check_on_nonfinite"]

DEAD_LAYER_THRESHOLD = 1e-4
NONFINITE_POLICIES = ("skip", "raise")
# The type of an `on_nonfinite` argument: one of `NONFINITE_POLICIES`.
OnNonfinite: TypeAlias = Literal["skip", "raise"]


def check_on_nonfinite(value):
    """Raises a ValueError unless `value` is "skip" or "raise"."""
    if value not in NONFINITE_POLICIES:
        raise ValueError(
            f'Expected `on_nonfinite` to be "skip" or "raise". Received: on_nonfinite={value!r}'
        )
    return value


@dataclasses.dataclass(eq=False)
class ProjectionTarget:
    """One kernel the projector rewrites.

    Attributes:
        layer: The Conv/Dense layer.
        rank: The kept rank `r`.
        matrix_shape: `(rows, cols)` of the kernel's matrix view.
        batchnorm: The BatchNormalization used for rectification, or None.
    """

    layer: keras.layers.Layer
    rank: int
    matrix_shape: tuple
    batchnorm: keras.layers.BatchNormalization | None = None

    @property
    def name(self):
        return self.layer.name


@dataclasses.dataclass
class ProjectionStats:
    """What one projection did.

    Attributes:
        energy_kept: Layer name -> fraction of the (BN-merged) kernel's energy
            in its top-r singular values before energy transfer.
        singular_values: Layer name -> all singular values of the (BN-merged)
            kernel before the projection (numpy, descending).
        ranks: Layer name -> the rank projected to.
        unchanged: Layers already of numerical rank <= r (NumPy's rule in
            float32, as `factorize` uses), left bit-for-bit as they were, so
            projecting twice in a row changes nothing.
        skipped_dead: Layers left alone because their largest singular value
            was below the dead-layer threshold.
        skipped_nonfinite: Layers left alone because their kernel (or BN
            statistics) held NaN or Inf.
        seconds: Wall time of the projection.
    """

    energy_kept: dict[str, float]
    singular_values: dict[str, np.ndarray]
    ranks: dict[str, int]
    unchanged: list[str]
    skipped_dead: list[str]
    skipped_nonfinite: list[str]
    seconds: float

    @property
    def projected(self) -> int:
        """Number of layers whose kernel was rewritten."""
        left = len(self.unchanged) + len(self.skipped_dead) + len(self.skipped_nonfinite)
        return len(self.energy_kept) - left


class Projector:
    """Projects a model's kernels onto their ranks with one compiled function.

    Args:
        model: A built Keras model. Functional/Sequential models get BN
            rectification through their layer graph; for a subclassed model
            kernels are projected without it (a warning says so).
        policy: A `RankPolicy` giving each layer's rank.
        energy_transfer: `"scale"`, `"additive"` or `None`.
        bn_rectification: Project the BN-merged kernel (see `lrpet_tf.ops`).
        layer_types, include, exclude: Which layers (see `select_targets`).
        batch_by_shape: Group same-shaped matrices into one batched SVD (the
            default); False runs one SVD per layer (for benchmarks).
        on_nonfinite: `"skip"` leaves a layer whose kernel holds NaN/Inf as
            it is and reports it; `"raise"` leaves the whole model as it is
            and raises ValueError naming the layers.

    Raises:
        ValueError: For ranks out of range, layer names the model lacks, or
            layers not built yet.
    """

    def __init__(
        self,
        model: keras.Model,
        policy: RankPolicy,
        energy_transfer: EnergyTransfer = "scale",
        bn_rectification: bool = True,
        layer_types: LayerTypes = ("conv",),
        include: LayerSelector = None,
        exclude: LayerSelector = None,
        batch_by_shape: bool = True,
        on_nonfinite: OnNonfinite = "skip",
    ) -> None:
        check_energy_transfer(energy_transfer)
        check_on_nonfinite(on_nonfinite)
        if policy.layer_names():
            # The rank dict names the layers: check them as `ranks`, not `include`.
            check_layer_names(policy.layer_names(), layers_by_name(model), "ranks", model.name)
            if include is None:
                include = list(policy.layer_names())
        layers, self.skipped_layers = select_targets(
            model, layer_types=layer_types, include=include, exclude=exclude
        )
        unbuilt = [layer.name for layer in layers if not layer.built]
        if unbuilt:
            raise ValueError(
                f"Layers {unbuilt} of model {model.name!r} are not built yet; "
                "build the model (call it on data, or give it an Input) first."
            )
        self.model = model
        self.energy_transfer = energy_transfer
        self.on_nonfinite = on_nonfinite
        self.rectification_unavailable = bn_rectification and not _keras.has_layer_graph(model)
        followers = _batchnorm_followers(model) if bn_rectification else {}
        self.targets = []
        for layer in layers:
            if not policy.covers(layer.name):
                continue
            shape = matrix_shape(layer.kernel.shape)
            self.targets.append(
                ProjectionTarget(
                    layer=layer,
                    rank=checked_rank(policy, layer.name, shape),
                    matrix_shape=shape,
                    batchnorm=followers.get(id(layer)),
                )
            )
        groups = collections.defaultdict(list)
        for i, target in enumerate(self.targets):
            dtype = target.layer.kernel.dtype
            key = (target.matrix_shape, str(dtype)) if batch_by_shape else (i,)
            groups[key].append(target)
        self._groups = list(groups.values())
        # The ranks are an argument of fixed shape (one int32 vector per
        # group), so a rank ramp reuses the one trace.
        signature = [[tf.TensorSpec([len(g)], tf.int32) for g in self._groups]]
        # Traced once per Projector (a sweep over prune ratios makes many).
        self._function = _keras.quiet_retracing(
            tf.function(self._project_all, input_signature=signature)
        )

    @property
    def ranks(self) -> dict[str, int]:
        """Layer name -> kept rank."""
        return {t.name: t.rank for t in self.targets}

    def __call__(self, ranks: Mapping[str, int] | None = None) -> ProjectionStats:
        """Projects every target once and returns `ProjectionStats`.

        Args:
            ranks: Layer name -> rank for this projection (e.g. a point of the
                rank ramp); each in `[1, K]`. Default: the targets' ranks.
        """
        start = time.perf_counter()
        ranks = self.ranks if ranks is None else {**self.ranks, **self._checked(ranks)}
        group_ranks = [tf.constant([ranks[t.name] for t in g], tf.int32) for g in self._groups]
        outputs = self._function(group_ranks) if self.targets else []
        stats = ProjectionStats({}, {}, {}, [], [], [], 0.0)
        for group, (energy, singular_values, finite, low_rank) in zip(self._groups, outputs):
            energy, singular_values = np.asarray(energy), np.asarray(singular_values)
            for i, target in enumerate(group):
                name = target.name
                stats.energy_kept[name] = float(energy[i])
                stats.singular_values[name] = singular_values[i]
                stats.ranks[name] = int(ranks[name])
                if not finite[i]:
                    stats.skipped_nonfinite.append(name)
                elif singular_values[i, 0] < DEAD_LAYER_THRESHOLD:
                    stats.skipped_dead.append(name)
                elif low_rank[i]:
                    stats.unchanged.append(name)
        stats.seconds = time.perf_counter() - start
        if stats.skipped_nonfinite and self.on_nonfinite == "raise":
            raise ValueError(
                "LRPET found NaN or Inf in the kernel or BatchNormalization "
                f"statistics of layers {stats.skipped_nonfinite}; no kernel was modified."
            )
        return stats

    def _checked(self, ranks):
        """`ranks` for this call, checked before any kernel changes: known layers, [1, K]."""
        if not isinstance(ranks, Mapping):
            raise ValueError(
                f"Expected `ranks` to be a dict of layer name -> rank. Received: ranks={ranks!r}"
            )
        max_rank = {t.name: min(t.matrix_shape) for t in self.targets}
        unknown = [name for name in ranks if name not in max_rank]
        if unknown:
            raise ValueError(
                f"`ranks` names layers that are not projected here: {unknown}. "
                f"Projected layers: {sorted(max_rank)}"
            )
        return {
            name: check_rank_in_range(r, max_rank[name], f"ranks[{name!r}]")
            for name, r in ranks.items()
        }

    def _project_all(self, group_ranks):
        outputs, writes = [], []
        for group, ranks in zip(self._groups, group_ranks):
            variables = [_keras.backing_variable(t.layer.kernel) for t in group]
            device = getattr(variables[0], "device", "") or None
            with tf.device(device):
                originals = [tf.convert_to_tensor(v) for v in variables]
                matrices = tf.stack([kernel_to_matrix(k) for k in originals])
                scale = None
                if any(t.batchnorm is not None for t in group):
                    scale = tf.stack([_column_scale(t) for t in group])
                finite = tf.reduce_all(tf.math.is_finite(matrices), axis=[1, 2])
                if scale is not None:
                    finite &= tf.reduce_all(tf.math.is_finite(scale), axis=1)
                    scale = tf.where(finite[:, tf.newaxis], scale, tf.ones_like(scale))
                safe = tf.where(
                    finite[:, tf.newaxis, tf.newaxis], matrices, tf.zeros_like(matrices)
                )
                result = low_rank_projection(safe, ranks, self.energy_transfer, column_scale=scale)
                # Already of numerical rank <= r (NumPy's rule in float32, as
                # `factorize` uses): left bit-for-bit as it is. The kernel's own
                # rank decides, not the BN-merged one's: a BN scale spanning many
                # orders of magnitude makes the merged matrix look numerically
                # low-rank when the kernel is not.
                own_values = result.kernel_singular_values
                low_rank = numerical_rank(own_values, group[0].matrix_shape) <= ranks
            alive = result.max_singular_value >= DEAD_LAYER_THRESHOLD
            outputs.append((result.energy_kept, result.singular_values, finite, low_rank))
            writes.append((variables, originals, result.matrices, finite & alive & ~low_rank))
        all_finite = tf.reduce_all(tf.concat([o[2] for o in outputs], axis=0))
        targets, values = [], []
        for variables, originals, projected, ok in writes:
            if self.on_nonfinite == "raise":
                ok = ok & all_finite
            for i, (variable, original) in enumerate(zip(variables, originals)):
                new = matrix_to_kernel(projected[i], original.shape)
                targets.append(variable)
                values.append(tf.where(ok[i], new, original))
        for variable, value in zip(targets, _from_first_replica(targets, values)):
            variable.assign(value)
        return outputs


def _from_first_replica(variables, values):
    """`values` as the cluster's first replica computed them, on every worker.

    Under a multi-worker strategy each worker runs the projection itself, on
    its own copies of the inputs. Training keeps the kernels in sync but not
    BatchNormalization's moving statistics, which Keras 3 keeps per replica
    (aggregation "none"), so the BN-rectified projections of two workers
    differ; and an SVD of equal inputs need not agree to the last bit on
    different machines. Every worker therefore writes global replica 0's
    values: an all-reduce SUM to which the other replicas contribute zeros,
    an exact broadcast. Within one worker nothing is needed (a cross-replica
    `assign` writes the value computed on the primary device to every local
    copy), so plain variables and single-worker strategies pass through.
    """
    if not variables or not isinstance(variables[0], tf.distribute.DistributedValues):
        return values
    strategy = variables[0].distribute_strategy
    local_replicas = len(strategy.experimental_local_results(variables[0]))
    if strategy.num_replicas_in_sync <= local_replicas:
        return values

    def broadcast(*replica_values):
        context = tf.distribute.get_replica_context()
        first = tf.equal(context.replica_id_in_sync_group, 0)
        return context.all_reduce(
            tf.distribute.ReduceOp.SUM,
            [tf.where(first, v, tf.zeros_like(v)) for v in replica_values],
        )

    results = strategy.run(broadcast, args=tuple(values))
    return [strategy.experimental_local_results(r)[0] for r in results]


def _column_scale(target):
    """The BN merge scale `a` of a target (ones when it has no BN)."""
    cols = target.matrix_shape[1]
    bn = target.batchnorm
    if bn is None:
        return tf.ones((cols,), tf.float32)
    gamma = _keras.backing_variable(bn.gamma) if bn.scale else None
    variance = _keras.backing_variable(bn.moving_variance)
    return tf.cast(
        batchnorm_scale(
            None if gamma is None else tf.cast(gamma, tf.float32),
            tf.cast(variance, tf.float32),
            bn.epsilon,
        ),
        tf.float32,
    )


def _batchnorm_followers(model):
    """id(layer) -> the BatchNormalization that directly and solely follows it."""
    if not _keras.has_layer_graph(model):
        return {}
    followers = {}
    for graph in LayerGraph(model).walk():
        for node in graph.nodes:
            bn_node = graph.batchnorm_after(node)
            if bn_node is not None:
                followers[id(node.layer)] = bn_node.layer
    return followers
