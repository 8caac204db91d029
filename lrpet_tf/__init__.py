"""lrpet_tf: low-rank training and compression for Keras, shipped to TFLite.

Two published methods, and the path from their result to a phone:

* `LRPET`: a Keras callback for low-rank projection with energy transfer
  (Guo et al., arXiv 2204.05566).
* `svd_training`: layers trained in SVD form with orthogonality and sparsity
  regularisers (Yang et al., CVPR Workshops 2020).
* `factorize`, `fold_batchnorm`, `export_tflite`: the compact model of two
  thin standard layers per low-rank layer, BN merged, verified on LiteRT.
* `model_report`: MACs, parameters and ranks per layer.
* `allocate_ranks`: per-layer ranks for a parameter budget, placed where a
  trained model is least sensitive.
* `recalibrate_batchnorm`: exact BN statistics after the last projection.

Keras 3 (TensorFlow backend) is used by default; set `TF_USE_LEGACY_KERAS=1`
to use tf_keras instead. `lrpet_tf.keras` is the Keras module in use, so code
that must run in both modes builds its models with it.
"""

from lrpet_tf import ops
from lrpet_tf import svd_training
from lrpet_tf._keras import keras
from lrpet_tf.callbacks import LRPET
from lrpet_tf.export import ExportResult
from lrpet_tf.export import LatencyTable
from lrpet_tf.export import TFLiteModel
from lrpet_tf.export import TFLiteVerificationError
from lrpet_tf.export import export_tflite
from lrpet_tf.export import latency_table
from lrpet_tf.export import measure_latency
from lrpet_tf.graph import LayerGraph
from lrpet_tf.graph import ModelReport
from lrpet_tf.graph import RewriteReport
from lrpet_tf.graph import allocate_ranks
from lrpet_tf.graph import factorize
from lrpet_tf.graph import fold_batchnorm
from lrpet_tf.graph import model_report
from lrpet_tf.graph import prune_ratio_for_macs
from lrpet_tf.graph import recalibrate_batchnorm
from lrpet_tf.ops.rank_policy import FixedRank
from lrpet_tf.ops.rank_policy import PruneRatio
from lrpet_tf.ops.rank_policy import RankPolicy
from lrpet_tf.version import __version__

__all__ = [
    "ExportResult",
    "FixedRank",
    "LRPET",
    "LatencyTable",
    "LayerGraph",
    "ModelReport",
    "PruneRatio",
    "RankPolicy",
    "RewriteReport",
    "TFLiteModel",
    "TFLiteVerificationError",
    "__version__",
    "allocate_ranks",
    "export_tflite",
    "factorize",
    "fold_batchnorm",
    "keras",
    "latency_table",
    "measure_latency",
    "model_report",
    "ops",
    "prune_ratio_for_macs",
    "recalibrate_batchnorm",
    "svd_training",
]
