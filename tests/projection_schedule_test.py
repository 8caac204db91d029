"""The projection schedule as a state machine, without Keras."""

import pytest

from lrpet_tf.callbacks.projection_schedule import ProjectionSchedule
from lrpet_tf.ops import ramp_rank

pytestmark = pytest.mark.keras_independent  # a state machine (conftest.py)


def run_epochs(schedule, epochs, steps, start_epoch=0):
    """Feeds a fit's events; returns (event, epoch, batch, progress) of each projection."""
    fired = []
    schedule.train_begin(start_epoch * steps, steps)
    step = start_epoch * steps
    for epoch in range(start_epoch, epochs):
        p = schedule.epoch_begin(epoch)
        if p is not None:
            fired.append(("begin", epoch, None, p))
            schedule.projected(step)
        for batch in range(steps):
            step += 1
            p = schedule.batch_end(batch, step if schedule.per_step else None)
            if p is not None:
                fired.append(("batch", epoch, batch, p))
                schedule.projected(step)
        p = schedule.epoch_end()
        if p is not None:
            fired.append(("end", epoch, None, p))
            schedule.projected(step)
    p = schedule.train_end(step)
    if p is not None:
        fired.append(("train_end", None, None, p))
    return fired


def test_epoch_schedule_projects_on_each_last_batch_with_epoch_progress():
    fired = run_epochs(ProjectionSchedule("epoch", warmup_epochs=1), epochs=4, steps=3)
    assert fired == [("batch", e, 2, float(e)) for e in (1, 2, 3)]


def test_step_schedule_progress_is_fractional_epochs_after_warmup():
    fired = run_epochs(ProjectionSchedule(2, warmup_epochs=1, ramp_epochs=2), epochs=3, steps=4)
    # Steps 6, 8 in epoch 1 and 10, 12 in epoch 2: (step - 4) / 4 epochs after the warm-up.
    assert [(f[1], f[3]) for f in fired] == [(1, 0.5), (1, 1.0), (2, 1.5), (2, 2.0)]


def test_unknown_epoch_length_projects_at_epoch_end_and_test_begin():
    schedule = ProjectionSchedule("epoch")
    schedule.train_begin(0, None)
    schedule.epoch_begin(0)
    assert schedule.batch_end(0) is None
    assert schedule.test_begin() == 1.0  # validation sees the projected model
    assert schedule.epoch_end() is None  # already projected this epoch
    schedule.epoch_begin(1)
    assert schedule.epoch_end() == 2.0


def test_resumed_fit_projects_where_the_interrupted_one_was_due():
    uninterrupted = run_epochs(ProjectionSchedule("epoch", ramp_epochs=3), epochs=4, steps=2)
    resumed = run_epochs(ProjectionSchedule("epoch", ramp_epochs=3), 4, 2, start_epoch=2)
    # The resumed fit first repeats the projection that followed epoch 1 (a no-op
    # on weights already projected), with the same progress, then continues.
    assert resumed[0] == ("begin", 2, None, 2.0)
    assert resumed[1:] == uninterrupted[2:]


def test_train_end_projects_only_when_steps_ran_since_the_last_projection():
    schedule = ProjectionSchedule(5)
    fired = run_epochs(schedule, epochs=2, steps=4)  # steps 5 and... 8 is not a multiple
    assert fired[-1] == ("train_end", None, None, 2.0)
    schedule = ProjectionSchedule(4)
    assert run_epochs(schedule, epochs=2, steps=4)[-1][0] == "batch"


def test_ramp_with_step_frequency_needs_the_epoch_length():
    with pytest.raises(ValueError, match="steps_per_epoch"):
        ProjectionSchedule(10, ramp_epochs=2).train_begin(0, None)
    ProjectionSchedule(10).train_begin(0, None)  # no ramp: fine
    ProjectionSchedule("epoch", ramp_epochs=2).train_begin(0, None)  # epochs: fine


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(frequency=0), "frequency"),
        (dict(frequency="step"), "frequency"),
        (dict(warmup_epochs=-1), "warmup_epochs"),
        (dict(ramp_epochs=1.5), "ramp_epochs"),
        (dict(ramp_epochs=True), "ramp_epochs"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ProjectionSchedule(**kwargs)


def test_config_round_trip():
    schedule = ProjectionSchedule(7, warmup_epochs=2, ramp_epochs=5)
    assert ProjectionSchedule.from_config(schedule.get_config()).get_config() == {
        "frequency": 7,
        "warmup_epochs": 2,
        "ramp_epochs": 5,
    }


@pytest.mark.parametrize(
    "rank, k, e, ramp, expected",
    [
        (8, 16, 0, 3, 16),  # start of the ramp: K
        (8, 16, 1, 3, 8 + 2),  # floor(8 * (2/3)^3) = floor(2.37)
        (8, 16, 2, 3, 8),  # floor(8 / 27) = 0
        (8, 16, 5, 3, 8),  # past the end: r
        (2, 9, 0.5, 2, 2 + 2),  # floor(7 * 0.75^3) = floor(2.95)
        (4, 4, 0, 3, 4),  # r = K
        (3, 20, 1, 0, 3),  # no ramp
    ],
)
def test_ramp_rank_formula(rank, k, e, ramp, expected):
    assert ramp_rank(rank, k, e, ramp) == expected
