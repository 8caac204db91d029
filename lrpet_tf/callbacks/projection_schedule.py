"""When LRPET projects: after every epoch, or every N optimizer steps."""

import numbers

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

    The schedule is a pure function of the epoch index and the optimizer's
    step count, both restored by checkpoints and `BackupAndRestore`, so a
    resumed run projects at exactly the same points as an uninterrupted one.
    """

    def __init__(self, frequency="epoch", warmup_epochs=0):
        if frequency != "epoch" and (
            isinstance(frequency, bool)
            or not isinstance(frequency, numbers.Integral)
            or frequency < 1
        ):
            raise ValueError(
                'Expected `frequency` to be "epoch" or an int >= 1 (a step '
                f"count). Received: frequency={frequency!r}"
            )
        if (
            isinstance(warmup_epochs, bool)
            or not isinstance(warmup_epochs, numbers.Integral)
            or warmup_epochs < 0
        ):
            raise ValueError(
                "Expected `warmup_epochs` to be an int >= 0. Received: "
                f"warmup_epochs={warmup_epochs!r}"
            )
        self.frequency = frequency
        self.warmup_epochs = int(warmup_epochs)

    @property
    def per_step(self):
        """True when projections follow the optimizer's step count."""
        return self.frequency != "epoch"

    def in_warmup(self, epoch):
        return epoch < self.warmup_epochs

    def after_epoch(self, epoch):
        """Whether to project once epoch `epoch` (0-based) has trained."""
        return not self.per_step and not self.in_warmup(epoch)

    def after_steps(self, epoch, previous_step, step):
        """Whether to project after the optimizer went from `previous_step` to `step`.

        True when a multiple of `frequency` lies in `(previous_step, step]`
        (so `steps_per_execution > 1` does not skip projections).
        """
        if not self.per_step or self.in_warmup(epoch):
            return False
        return step // self.frequency > previous_step // self.frequency

    def due_at_start(self, epoch, step):
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

    def get_config(self):
        return {"frequency": self.frequency, "warmup_epochs": self.warmup_epochs}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
