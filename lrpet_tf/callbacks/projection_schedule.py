"""When LRPET projects, and to which point of the rank ramp: a small state machine.

The LRPET callback forwards Keras's training events to a `ProjectionSchedule`
and projects whenever an event returns a number: the ramp progress `e` (epochs
of training since the warm-up ended) that sets the ranks of that projection.
Nothing here knows Keras, so the schedule is tested on its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from typing import Literal

from lrpet_tf.ops.arguments import check_int

__all__ = ["ProjectionSchedule"]


class ProjectionSchedule:
    """The projection schedule of the LRPET callback.

    Args:
        frequency: `"epoch"` to project after each epoch's training steps
            (every epoch, including the last: the paper's CIFAR schedule), or
            an int N to project whenever the optimizer's step count reaches a
            multiple of N (the paper's ImageNet schedule uses 250).
        warmup_epochs: Epochs (counted from epoch 0, so `initial_epoch` and
            resumed runs agree) during which no projection happens: a short
            full-rank warm-up, as Pufferfish and Cuttlefish recommend. 0 (the
            paper) projects from the first epoch on.
        ramp_epochs: `E` of the rank ramp (0: none, the paper). The progress
            `e` a projection reports is the number of epochs trained since
            the warm-up: `epoch + 1 - warmup_epochs` after an epoch, and
            `(step - warmup_epochs * steps_per_epoch) / steps_per_epoch` for
            step frequencies (which then need the epoch length).

    Every decision is a function of the epoch index and the optimizer's step
    count, both restored by checkpoints and `BackupAndRestore`, so a resumed
    run projects at the same points, with the same progress, as an
    uninterrupted one.

    Events (each returns None, or the progress `e` of a projection to run now):
        `train_begin(step, steps_per_epoch)`, `epoch_begin(epoch)`,
        `batch_end(batch, step)`, `epoch_end()`, `test_begin()`,
        `train_end(step)`; and `projected(step)` records a projection.
    """

    def __init__(
        self,
        frequency: Literal["epoch"] | int = "epoch",
        warmup_epochs: int = 0,
        ramp_epochs: int = 0,
    ) -> None:
        check_int(frequency, "frequency", also=("epoch",), hint="a step count")
        self.frequency = frequency
        self.warmup_epochs = check_int(warmup_epochs, "warmup_epochs", low=0)
        self.ramp_epochs = check_int(ramp_epochs, "ramp_epochs", low=0)
        self._epoch = 0
        self._step = 0
        self._steps_per_epoch: int | None = None
        self._projected_step: int | None = None
        self._epoch_done = False
        self._starting = False
        self._in_fit = False

    # -- pure decisions ---------------------------------------------------------

    @property
    def per_step(self) -> bool:
        """True when projections follow the optimizer's step count."""
        return self.frequency != "epoch"

    def in_warmup(self, epoch: int) -> bool:
        return epoch < self.warmup_epochs

    def after_epoch(self, epoch: int) -> bool:
        """Whether to project once epoch `epoch` (0-based) has trained."""
        return not self.per_step and not self.in_warmup(epoch)

    def after_steps(self, epoch: int, previous_step: int, step: int) -> bool:
        """Whether to project after the optimizer went from `previous_step` to `step`.

        True when a multiple of `frequency` lies in `(previous_step, step]`
        (so `steps_per_execution > 1` does not skip projections).
        """
        if not self.per_step or self.in_warmup(epoch):
            return False
        return step // self.frequency > previous_step // self.frequency

    def due_at_start(self, epoch: int, step: int) -> bool:
        """Whether a projection was due exactly where training (re)starts.

        True when training starts at optimizer step `step > 0` and epoch
        `epoch`, and the schedule projected right before that point: after
        epoch `epoch - 1`, or at a multiple of `frequency` equal to `step`.
        """
        if step <= 0:
            return False
        if self.per_step:
            return step % self.frequency == 0 and not self.in_warmup(epoch)
        return epoch > 0 and self.after_epoch(epoch - 1)

    def step_progress(self, step: int) -> float:
        """Epochs trained since the warm-up at optimizer step `step` (needs the epoch length)."""
        spe = self._steps_per_epoch
        return (step - self.warmup_epochs * spe) / spe

    # -- events -----------------------------------------------------------------

    def train_begin(self, step: int, steps_per_epoch: int | None = None) -> None:
        """Training starts at optimizer step `step`.

        Raises:
            ValueError: For a ramp with a step frequency when the epoch
                length is unknown.
        """
        if self.ramp_epochs and self.per_step and not steps_per_epoch:
            raise ValueError(
                f"LRPET(ramp_epochs={self.ramp_epochs}, frequency={self.frequency}) counts the "
                "ramp in epochs of optimizer steps, but this `fit` does not know how many "
                "steps an epoch has (a dataset of unknown length). Pass `steps_per_epoch` "
                "to `fit`, or use frequency='epoch'."
            )
        self._step = int(step)
        self._steps_per_epoch = steps_per_epoch
        self._projected_step = None
        self._starting = True
        self._in_fit = True

    def epoch_begin(self, epoch: int) -> float | None:
        """Epoch `epoch` starts. On the first epoch of a (resumed) fit, a due projection."""
        self._epoch = int(epoch)
        self._epoch_done = False
        if not self._starting:
            return None
        self._starting = False
        # Resuming (BackupAndRestore, initial_epoch): if the run stopped right
        # where a projection was due, a saver that ran before the callback may
        # hold the unprojected weights. Projecting weights already projected
        # changes nothing.
        if not self.due_at_start(self._epoch, self._step):
            return None
        if self.per_step:
            return self.step_progress(self._step)
        return float(self._epoch - self.warmup_epochs)

    def batch_end(self, batch: int, step: int | None = None) -> float | None:
        """Batch `batch` of the epoch has trained; `step` is the optimizer's count (step mode)."""
        if self.per_step:
            previous, self._step = self._step, int(step)
            if self.after_steps(self._epoch, previous, self._step):
                return self.step_progress(self._step) if self._steps_per_epoch else 0.0
            return None
        if self._steps_per_epoch and batch + 1 >= self._steps_per_epoch:
            # The epoch's last step: project before any epoch-end callback
            # (ModelCheckpoint, BackupAndRestore) saves the weights.
            return self.epoch_end()
        return None

    def epoch_end(self) -> float | None:
        """The epoch ends (if its last step did not already project)."""
        if self._epoch_done or not self.after_epoch(self._epoch):
            return None
        self._epoch_done = True
        return float(self._epoch + 1 - self.warmup_epochs)

    def test_begin(self) -> float | None:
        """Validation inside `fit` when the epoch length is unknown: project first."""
        return self.epoch_end() if self._in_fit else None

    def train_end(self, step: int) -> float | None:
        """Training ends at optimizer step `step`: a last projection if steps ran since one."""
        self._in_fit = False
        if self._projected_step == int(step):
            return None
        if self._steps_per_epoch:
            return self.step_progress(int(step))
        return float(self._epoch + 1 - self.warmup_epochs)

    def projected(self, step: int) -> None:
        """Records that a projection ran at optimizer step `step`."""
        self._projected_step = int(step)

    @property
    def in_fit(self) -> bool:
        return self._in_fit

    def get_config(self) -> dict[str, Any]:
        return {
            "frequency": self.frequency,
            "warmup_epochs": self.warmup_epochs,
            "ramp_epochs": self.ramp_epochs,
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> ProjectionSchedule:
        return cls(**config)
