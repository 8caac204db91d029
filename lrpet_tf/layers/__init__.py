"""Keras layers of lrpet_tf: the SVD-form layers of SVD training and their regularisers."""

from lrpet_tf.layers.svd_conv2d import SVDConv2D
from lrpet_tf.layers.svd_dense import SVDDense
from lrpet_tf.layers.svd_layer import SVDLayer
from lrpet_tf.layers.svd_monitor import SVDTrainingMetric
from lrpet_tf.layers.svd_monitor import attach_svd_metrics
from lrpet_tf.layers.svd_regularizers import OrthogonalityRegularizer
from lrpet_tf.layers.svd_regularizers import SingularValueSparsity
from lrpet_tf.layers.svd_regularizers import set_regularization

__all__ = [
    "OrthogonalityRegularizer",
    "SVDConv2D",
    "SVDDense",
    "SVDLayer",
    "SVDTrainingMetric",
    "SingularValueSparsity",
    "attach_svd_metrics",
    "set_regularization",
]
