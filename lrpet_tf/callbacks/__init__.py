"""The LRPET callback, its schedule and its compiled projection step."""

from lrpet_tf.callbacks.lrpet import LRPET
from lrpet_tf.callbacks.projection_schedule import ProjectionSchedule
from lrpet_tf.callbacks.projector import ProjectionStats
from lrpet_tf.callbacks.projector import Projector

__all__ = ["LRPET", "ProjectionSchedule", "ProjectionStats", "Projector"]
