"""TFLite export, verification against Keras, and latency measurement."""

from lrpet_tf.export.export_tflite import ExportResult
from lrpet_tf.export.export_tflite import TFLiteVerificationError
from lrpet_tf.export.export_tflite import export_tflite
from lrpet_tf.export.latency import LatencyResult
from lrpet_tf.export.latency import measure_latency
from lrpet_tf.export.tflite_model import TFLiteModel

__all__ = [
    "ExportResult",
    "LatencyResult",
    "TFLiteModel",
    "TFLiteVerificationError",
    "export_tflite",
    "measure_latency",
]
