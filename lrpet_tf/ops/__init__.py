"""Pure TensorFlow math of lrpet_tf (no Keras).

SVD convention everywhere: `s, u, v = tf.linalg.svd(m)` with
`m = u @ diag(s) @ adjoint(v)`, `s` descending. Kernels are in Keras layout
`(*kernel_size, in_channels, out_channels)`; matrix views have the output
channels as columns.
"""

from lrpet_tf.ops.batchnorm import batchnorm_scale
from lrpet_tf.ops.batchnorm import fold_batchnorm_weights
from lrpet_tf.ops.batchnorm import merge_column_scale
from lrpet_tf.ops.batchnorm import unmerge_column_scale
from lrpet_tf.ops.costs import factorized_macs
from lrpet_tf.ops.costs import factorized_params
from lrpet_tf.ops.costs import kernel_macs
from lrpet_tf.ops.energy_transfer import ENERGY_TRANSFER_MODES
from lrpet_tf.ops.energy_transfer import check_energy_transfer
from lrpet_tf.ops.energy_transfer import transfer_energy
from lrpet_tf.ops.low_rank_factors import exact_svd
from lrpet_tf.ops.low_rank_factors import low_rank_factors
from lrpet_tf.ops.matrix_view import kernel_to_matrix
from lrpet_tf.ops.matrix_view import matrix_shape
from lrpet_tf.ops.matrix_view import matrix_to_kernel
from lrpet_tf.ops.matrix_view import spatial_kernel_to_matrix
from lrpet_tf.ops.matrix_view import spatial_matrix_shape
from lrpet_tf.ops.matrix_view import spatial_matrix_to_kernel
from lrpet_tf.ops.projection import Projection
from lrpet_tf.ops.projection import low_rank_projection
from lrpet_tf.ops.rank_policy import FixedRank
from lrpet_tf.ops.rank_policy import PruneRatio
from lrpet_tf.ops.rank_policy import RankPolicy
from lrpet_tf.ops.rank_policy import get_rank_policy
from lrpet_tf.ops.ranks import break_even_rank
from lrpet_tf.ops.ranks import budget_ranks
from lrpet_tf.ops.ranks import energy_kept
from lrpet_tf.ops.ranks import energy_rank
from lrpet_tf.ops.ranks import max_rank
from lrpet_tf.ops.ranks import numerical_rank
from lrpet_tf.ops.ranks import ramp_rank
from lrpet_tf.ops.ranks import rank_from_prune_ratio
from lrpet_tf.ops.ranks import round_rank
from lrpet_tf.ops.svd_penalties import SPARSITY_KINDS
from lrpet_tf.ops.svd_penalties import orthogonality_penalty
from lrpet_tf.ops.svd_penalties import sparsity_penalty

__all__ = [
    "ENERGY_TRANSFER_MODES",
    "FixedRank",
    "Projection",
    "PruneRatio",
    "RankPolicy",
    "SPARSITY_KINDS",
    "batchnorm_scale",
    "break_even_rank",
    "budget_ranks",
    "check_energy_transfer",
    "energy_kept",
    "energy_rank",
    "exact_svd",
    "factorized_macs",
    "factorized_params",
    "fold_batchnorm_weights",
    "get_rank_policy",
    "kernel_macs",
    "kernel_to_matrix",
    "low_rank_factors",
    "low_rank_projection",
    "matrix_shape",
    "matrix_to_kernel",
    "max_rank",
    "merge_column_scale",
    "numerical_rank",
    "orthogonality_penalty",
    "ramp_rank",
    "rank_from_prune_ratio",
    "round_rank",
    "spatial_kernel_to_matrix",
    "spatial_matrix_shape",
    "spatial_matrix_to_kernel",
    "sparsity_penalty",
    "transfer_energy",
    "unmerge_column_scale",
]
