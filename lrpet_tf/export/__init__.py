"""TFLite export, verification against Keras, latency, and the QAT hand-off to tfmot."""

from lrpet_tf.export.export_tflite import ExportResult
from lrpet_tf.export.export_tflite import TFLiteVerificationError
from lrpet_tf.export.export_tflite import export_tflite
from lrpet_tf.export.flatbuffer_model import FlatbufferModel
from lrpet_tf.export.latency import LatencyResult
from lrpet_tf.export.latency import LatencyTimer
from lrpet_tf.export.latency import measure_latency
from lrpet_tf.export.latency_table import LatencyTable
from lrpet_tf.export.latency_table import LayerLatency
from lrpet_tf.export.latency_table import find_steps
from lrpet_tf.export.latency_table import latency_table
from lrpet_tf.export.metadata import ImageClassifierMetadata
from lrpet_tf.export.quantization_aware import is_quantization_aware
from lrpet_tf.export.quantization_aware import prepare_qat
from lrpet_tf.export.tflite_model import TFLiteModel

__all__ = [
    "ExportResult",
    "FlatbufferModel",
    "ImageClassifierMetadata",
    "LatencyResult",
    "LatencyTable",
    "LatencyTimer",
    "LayerLatency",
    "TFLiteModel",
    "TFLiteVerificationError",
    "export_tflite",
    "find_steps",
    "is_quantization_aware",
    "latency_table",
    "measure_latency",
    "prepare_qat",
]
