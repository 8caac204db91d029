"""The LRPET Keras callback: low-rank projection with energy transfer."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING
from typing import Any
from typing import Literal

from lrpet_tf import _keras
from lrpet_tf._keras import keras
from lrpet_tf.callbacks.projection_schedule import ProjectionSchedule
from lrpet_tf.callbacks.projection_summaries import ProjectionSummaries
from lrpet_tf.callbacks.projector import OnNonfinite
from lrpet_tf.callbacks.projector import ProjectionStats
from lrpet_tf.callbacks.projector import Projector
from lrpet_tf.callbacks.projector import check_on_nonfinite
from lrpet_tf.graph.rank_guard import warn_small_ranks
from lrpet_tf.graph.targets import LayerSelector
from lrpet_tf.graph.targets import LayerTypes
from lrpet_tf.graph.targets import check_layer_types
from lrpet_tf.graph.targets import check_selector
from lrpet_tf.graph.targets import select_targets
from lrpet_tf.ops.arguments import check_int
from lrpet_tf.ops.energy_transfer import EnergyTransfer
from lrpet_tf.ops.energy_transfer import check_energy_transfer
from lrpet_tf.ops.rank_policy import RankPolicy
from lrpet_tf.ops.rank_policy import get_rank_policy
from lrpet_tf.ops.ranks import ramp_rank

if TYPE_CHECKING:  # not imported at runtime: the callback needs no part of export/
    from lrpet_tf.export.latency_table import LatencyTable

__all__ = ["LRPET"]

_logger = logging.getLogger("lrpet_tf")


class LRPET(keras.callbacks.Callback):
    """Trains a compact model by low-rank projection with energy transfer.

    Guo et al., "Compact Model Training by Low-Rank Projection with Energy
    Transfer", arXiv 2204.05566 (IEEE TNNLS 2024). Training alternates
    ordinary optimizer steps on the full weights with projecting each kernel's
    matrix view `M` (`(kh*kw*c, n)` for a conv) onto its best rank-r
    approximation. Before the projection the kernel is merged with the
    BatchNormalization that follows it (`M * a`, `a = gamma/sqrt(var+eps)`)
    so the approximation that matters at inference is the one optimised;
    after it, the kept singular values are scaled so the Frobenius energy is
    unchanged ("scale", the official code). When `fit` returns every
    projected kernel has rank <= r and `lrpet_tf.factorize(model, ranks=cb)`
    splits it into two thin layers without changing the model's function.

    Args:
        prune_ratio: The paper's global `g` in [0, 1): each layer keeps
            `r = int(K - K*g)` of its max rank `K = min(rows, cols)`.
        ranks: Instead of `prune_ratio`: an int (capped at each layer's K), a
            dict layer name -> rank (only those layers are projected), or a
            `lrpet_tf.ops.RankPolicy`. Exactly one of the two is given.
        frequency: `"epoch"` (right after each epoch's last training step,
            so validation metrics and epoch-end checkpoints see the projected
            model) or an int N (whenever the optimizer's step count reaches a
            multiple of N). Resumed runs (`BackupAndRestore`, checkpoints
            with `initial_epoch`) project at exactly the same points.
        energy_transfer: `"scale"` (default, official code), `"additive"`
            (`s'_i = sqrt(s_i^2 + E_pruned / r)`) or None (plain truncation).
        bn_rectification: Project the BN-merged kernel (default True). Needs
            a Functional/Sequential model to find each conv's BN by graph edge.
        layer_types: Kinds of layers to project: `("conv",)` (the paper:
            every Conv1D/2D/3D, including the first conv, 1x1 and shortcut
            convs) and/or `"dense"`.
        include: Layer names or a predicate `layer -> bool` to narrow the
            selection (names may also add Dense layers).
        exclude: Layer names or a predicate; wins over `include`.
        warmup_epochs: Epochs of full-rank training before the first
            projection (0 in the paper).
        ramp_epochs: `E` of a rank ramp (0, the paper: every projection keeps
            `r`). Beyond the paper, after tensorflow-model-optimization's
            `PolynomialDecay`: the projection that follows epoch `e` of
            training after the warm-up keeps
            `r_e = r + floor((K - r) * (1 - min(1, e / E)) ** 3)` singular
            values, `r` from `e >= E` on, so the first projections remove
            little energy. With a step frequency `e` is fractional (optimizer
            steps since the warm-up over the steps per epoch, which `fit`
            must know). If training ends before the ramp does, the kernels
            are left at the ramp's rank (`current_ranks`, a warning says so),
            and `factorize(model, ranks=cb)` truncates them to `ranks`.
        round_to: With `prune_ratio`: round each rank up to a multiple of
            this int (4 or 8 suit XNNPACK), or `"latency"`: to the top of its
            step on `latency_table`'s measured staircase, where the extra
            rank costs no time.
        latency_table: A `lrpet_tf.LatencyTable` for `round_to="latency"`.
        project_at_end: Project once more when training ends if steps ran
            since the last projection, so every kernel ends at rank <= r.
        on_nonfinite: `"skip"` (leave a layer whose kernel has NaN/Inf alone
            and warn) or `"raise"` (leave the model as it is and raise).
        log_dir: If given, TensorBoard summaries per projection and layer
            (energy kept, rank, singular-value histogram) go to
            `<log_dir>/lrpet`. Off by default.
        verbose: 0 silent; 1 (or 2) one line per projection, printed between
            epochs, never inside Keras's progress bar.

    Layers whose rank comes out <= 2 (below their K) are named in one
    warning when training starts: a rank-2 first conv on one input channel
    collapsed a small CNN from 77% to 29% (see `PruneRatio(min_rank=...)`).

    Attributes:
        ranks: Layer name -> target rank `r`, available once training has started.
        current_ranks: Layer name -> rank of the last projection (the
            ramp's), None before the first.
        projection_count: Number of projections run so far.
        last_stats: `ProjectionStats` of the last projection.

    Example:
        >>> cb = lrpet_tf.LRPET(prune_ratio=0.57)
        >>> model.fit(x, y, epochs=400, callbacks=[cb])
        >>> compact = lrpet_tf.fold_batchnorm(lrpet_tf.factorize(model, ranks=cb))
    """

    def __init__(
        self,
        prune_ratio: float | None = None,
        ranks: int | dict[str, int] | RankPolicy | None = None,
        frequency: Literal["epoch"] | int = "epoch",
        energy_transfer: EnergyTransfer = "scale",
        bn_rectification: bool = True,
        layer_types: LayerTypes = ("conv",),
        include: LayerSelector = None,
        exclude: LayerSelector = None,
        warmup_epochs: int = 0,
        ramp_epochs: int = 0,
        round_to: int | Literal["latency"] | None = None,
        latency_table: LatencyTable | None = None,
        project_at_end: bool = True,
        on_nonfinite: OnNonfinite = "skip",
        log_dir: str | os.PathLike[str] | None = None,
        verbose: int = 1,
    ) -> None:
        super().__init__()
        self.policy = get_rank_policy(prune_ratio, ranks, round_to, latency_table)
        self.round_to = round_to
        self.schedule = ProjectionSchedule(frequency, warmup_epochs, ramp_epochs)
        check_energy_transfer(energy_transfer)
        check_on_nonfinite(on_nonfinite)
        if not isinstance(bn_rectification, bool):
            raise TypeError(
                "Expected `bn_rectification` to be a bool. Received: "
                f"bn_rectification={bn_rectification!r}"
            )
        check_int(verbose, "verbose", 0, 2)
        self.prune_ratio = prune_ratio
        self.energy_transfer = energy_transfer
        self.bn_rectification = bn_rectification
        self.layer_types = check_layer_types(layer_types)
        check_selector(include, "include")
        check_selector(exclude, "exclude")
        self.include = include
        self.exclude = exclude
        if not isinstance(project_at_end, bool):
            raise ValueError(
                f"Expected `project_at_end` to be True or False. "
                f"Received: project_at_end={project_at_end!r}"
            )
        self.project_at_end = bool(project_at_end)
        self.on_nonfinite = on_nonfinite
        self.verbose = verbose
        self.log_dir = log_dir
        self._summaries = ProjectionSummaries(log_dir) if log_dir else None
        self.projection_count = 0
        self.last_stats: ProjectionStats | None = None
        self._projector: Projector | None = None
        self._projector_model = None
        self._messages: list[str] = []

    @property
    def skipped_layers(self) -> list[tuple[str, str]]:
        """`(layer name, reason)` for layers of the chosen kinds left out (frozen)."""
        return list(self._projector.skipped_layers) if self._projector else []

    @property
    def frequency(self) -> Literal["epoch"] | int:
        return self.schedule.frequency

    @property
    def ramp_epochs(self) -> int:
        return self.schedule.ramp_epochs

    @property
    def ranks(self) -> dict[str, int]:
        """Layer name -> target rank of every projected layer (after training starts)."""
        if self._projector is None:
            raise AttributeError(
                "`LRPET.ranks` is known once training starts (it depends on "
                "the model). Call `model.fit(..., callbacks=[cb])` first, or "
                "`cb.prepare(model)`."
            )
        return self._projector.ranks

    @property
    def rectified_layers(self) -> dict[str, str]:
        """Layer name -> the BatchNormalization its projection is rectified for.

        Those layers are projected with the BN merged in (the kernel the
        exported model will hold); the others are projected as they are.
        Known once training starts, like `ranks`.
        """
        ranks = self.ranks  # the same error before prepare
        return {
            t.name: t.batchnorm.name
            for t in self._projector.targets
            if t.batchnorm is not None and t.name in ranks
        }

    @property
    def current_ranks(self) -> dict[str, int] | None:
        """Layer name -> rank of the last projection (the ramp's point); None before any."""
        return dict(self.last_stats.ranks) if self.last_stats is not None else None

    def prepare(self, model: keras.Model) -> None:
        """Resolves layers, ranks and BN pairs for `model` and traces nothing yet.

        Called by `fit` at the start of training; call it yourself to inspect
        `ranks` or to validate the arguments against a model before training.
        Warns once about layers pruned to rank <= 2.

        Raises:
            ValueError: For ranks out of range or unknown layer names.
        """
        if self._projector is not None and self._projector_model is model:
            return
        projector = Projector(
            model,
            self.policy,
            energy_transfer=self.energy_transfer,
            bn_rectification=self.bn_rectification,
            layer_types=self.layer_types,
            include=self.include,
            exclude=self.exclude,
            on_nonfinite=self.on_nonfinite,
        )
        if projector.rectification_unavailable:
            _logger.warning(
                "LRPET: model %r is subclassed, so the BatchNormalization after "
                "each conv cannot be found by graph edge; projecting without "
                "BN rectification.",
                model.name,
            )
        if not projector.targets:
            _logger.warning("LRPET: model %r has no layers to project.", model.name)
        constrained = [
            t.name for t in projector.targets if getattr(t.layer, "kernel_constraint", None)
        ]
        if constrained:
            _logger.warning(
                "LRPET: layers %s have a kernel_constraint. The optimizer applies it "
                "after each step and the projection runs after that, so projected "
                "kernels need not satisfy it.",
                constrained,
            )
        if projector.skipped_layers:
            _logger.info("LRPET: not projecting %s", projector.skipped_layers)
        warn_small_ranks(
            [(t.name, t.rank, min(t.matrix_shape)) for t in projector.targets], "LRPET"
        )
        self._projector = projector
        self._projector_model = model
        self.projection_count = 0

    def project(self, ranks: Mapping[str, int] | None = None) -> ProjectionStats:
        """Runs one projection of `self.model` now and returns its `ProjectionStats`.

        `fit` calls it on schedule. To project outside training (e.g. a
        trained model, before `factorize`): `cb.set_model(model); cb.project()`.

        Args:
            ranks: Layer name -> rank for this projection only (`fit` passes
                the ramp's); default `self.ranks`.

        Raises:
            ValueError: If the callback has no model yet.
        """
        if self.model is None:
            raise ValueError(
                "LRPET.project() needs a model: pass the callback to `fit`, or call "
                "`cb.set_model(model)` first."
            )
        if self._projector_model is not self.model:
            self.prepare(self.model)
        stats = self._projector(ranks)
        self.projection_count += 1
        self.last_stats = stats
        step = self._optimizer_step()
        self.schedule.projected(step)
        if stats.skipped_nonfinite:
            _logger.warning(
                "LRPET: left layers with NaN/Inf weights unprojected: %s",
                stats.skipped_nonfinite,
            )
        if stats.skipped_dead:
            _logger.warning(
                "LRPET: left dead layers (largest singular value < 1e-4) as they are: %s",
                stats.skipped_dead,
            )
        if self._summaries is not None:
            self._summaries.write(stats, step)
        if self.verbose and stats.energy_kept:
            worst = min(stats.energy_kept, key=stats.energy_kept.get)
            unchanged = f" ({len(stats.unchanged)} already at rank)" if stats.unchanged else ""
            ramp = ""
            if stats.ranks != self.ranks:
                total, target = sum(stats.ranks.values()), sum(self.ranks.values())
                ramp = f"; rank ramp at {total} of target {target} (summed over layers)"
            self._messages.append(
                f"LRPET: projected {stats.projected} layers{unchanged} in "
                f"{stats.seconds * 1e3:.1f} ms; energy kept before transfer: "
                f"mean {_mean_energy(stats):.4f}, min "
                f"{stats.energy_kept[worst]:.4f} ({worst}){ramp}"
            )
        return stats

    def ramp_ranks(self, progress: float) -> dict[str, int]:
        """Layer name -> rank of a projection at ramp progress `progress` (epochs since warm-up).

        Raises:
            ValueError: Before `fit` or `prepare(model)` (no layers, no ranks yet).
        """
        if self._projector is None:
            raise ValueError(
                "LRPET.ramp_ranks() needs the layers and ranks: pass the callback to `fit`, "
                "or call `cb.prepare(model)` first."
            )
        return {
            t.name: ramp_rank(t.rank, min(t.matrix_shape), progress, self.schedule.ramp_epochs)
            for t in self._projector.targets
        }

    def _project_at(self, progress):
        if progress is None:
            return
        if self._projector_model is not self.model:
            self.prepare(self.model)
        self.project(self.ramp_ranks(progress) if self.schedule.ramp_epochs else None)

    def _flush_messages(self):
        # Printed between epochs, so they never break Keras's progress bar.
        for message in self._messages:
            print(message, flush=True)
        self._messages = []

    def _built(self, model):
        return all(getattr(layer, "built", True) for layer in _keras.flatten_layers(model))

    def _optimizer_step(self):
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is None:
            return 0
        return int(_keras.backing_variable(optimizer.iterations).numpy())

    # -- Keras events: the schedule decides (see ProjectionSchedule) ----------

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        if self._built(self.model):
            self.prepare(self.model)
        else:
            # A subclassed model builds its layers in the first step: check
            # the layer names now, resolve ranks after the first step.
            select_targets(self.model, self.layer_types, self.include, self.exclude)
        steps = (self.params or {}).get("steps")
        self.schedule.train_begin(self._optimizer_step(), steps)

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._flush_messages()
        progress = self.schedule.epoch_begin(epoch)
        if self._projector_model is self.model:
            self._project_at(progress)

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if self._projector_model is not self.model:
            self.prepare(self.model)  # deferred from on_train_begin
        step = self._optimizer_step() if self.schedule.per_step else None
        self._project_at(self.schedule.batch_end(batch, step))

    def on_test_begin(self, logs: dict[str, Any] | None = None) -> None:
        if self._projector_model is self.model:
            self._project_at(self.schedule.test_begin())

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._project_at(self.schedule.epoch_end())
        if logs is not None and self.last_stats is not None and self.last_stats.energy_kept:
            # Shown by the progress bar (Keras 3) and recorded in History.
            logs["lrpet_energy_kept"] = _mean_energy(self.last_stats)

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        progress = self.schedule.train_end(self._optimizer_step())
        if self.project_at_end:
            self._project_at(progress)
        if self.current_ranks is not None and self.current_ranks != self.ranks:
            _logger.warning(
                "LRPET: training ended before the rank ramp (ramp_epochs=%d) did; the "
                "kernels are at rank %d in all, not the target %d. Train longer, or "
                "`factorize(model, ranks=cb)` truncates them to the target ranks.",
                self.schedule.ramp_epochs,
                sum(self.current_ranks.values()),
                sum(self.ranks.values()),
            )
        self._flush_messages()
        if self._summaries is not None:
            self._summaries.close()

    def get_config(self) -> dict[str, Any]:
        return {
            "prune_ratio": self.prune_ratio if self.round_to is None else None,
            "ranks": None
            if self.prune_ratio is not None and self.round_to is None
            else self.policy,
            "frequency": self.schedule.frequency,
            "energy_transfer": self.energy_transfer,
            "bn_rectification": self.bn_rectification,
            "layer_types": self.layer_types,
            "include": self.include,
            "exclude": self.exclude,
            "warmup_epochs": self.schedule.warmup_epochs,
            "ramp_epochs": self.schedule.ramp_epochs,
            "project_at_end": self.project_at_end,
            "on_nonfinite": self.on_nonfinite,
            "log_dir": self.log_dir,
            "verbose": self.verbose,
        }


def _mean_energy(stats):
    return sum(stats.energy_kept.values()) / len(stats.energy_kept)
