"""Model rewrites on Functional/Sequential layer graphs, and cost reports."""

from lrpet_tf.graph.factorize import factorize
from lrpet_tf.graph.fold_batchnorm import fold_batchnorm
from lrpet_tf.graph.layer_graph import LayerGraph
from lrpet_tf.graph.model_report import LayerCost
from lrpet_tf.graph.model_report import ModelReport
from lrpet_tf.graph.model_report import model_report
from lrpet_tf.graph.prune_ratio_for_macs import prune_ratio_for_macs
from lrpet_tf.graph.rank_allocation import allocate_ranks
from lrpet_tf.graph.recalibrate_batchnorm import recalibrate_batchnorm
from lrpet_tf.graph.rewrite_report import LayerChange
from lrpet_tf.graph.rewrite_report import RewriteReport
from lrpet_tf.graph.table import format_table

__all__ = [
    "LayerChange",
    "LayerCost",
    "LayerGraph",
    "ModelReport",
    "RewriteReport",
    "allocate_ranks",
    "factorize",
    "fold_batchnorm",
    "format_table",
    "model_report",
    "prune_ratio_for_macs",
    "recalibrate_batchnorm",
]
