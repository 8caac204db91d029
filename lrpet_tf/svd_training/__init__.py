"""SVD training: layers trained as U, s, V with orthogonality and sparsity.

Yang, Tang, Wen, Yan, Hu, Li, Li, Chen, "Learning Low-rank Deep Neural
Networks via Singular Vector Orthogonality Regularization and Singular Value
Sparsification", CVPR Workshops 2020 (arXiv 2004.09031). The pipeline:

    svd_model = svd_training.decompose(model, scheme="channel", orthogonality=1.0,
                                       sparsity="hoyer", sparsity_weight=0.0)
    svd_model.compile(...); svd_model.fit(...)          # (1) orthogonality only
    svd_training.set_regularization(svd_model, sparsity_weight=1e-3)
    svd_model.fit(...)                                   # (2) + sparsity
    pruned = svd_training.prune(svd_model, energy=0.01)  # (3) drop small s
    svd_training.set_regularization(pruned, sparsity_weight=0.0)
    pruned.compile(...); pruned.fit(...)                 # (4) fine-tune
    compact = lrpet_tf.factorize(pruned)                 # standard thin layers

Note: `prune` returns SVD-form layers at the pruned rank (so step 4 can keep
the orthogonality penalty); `lrpet_tf.factorize` converts them to standard
layers for export.
"""

# `import x as x`: explicit re-exports (PEP 484), listed in __all__ below.
from lrpet_tf.graph.svd_decompose import decompose as decompose
from lrpet_tf.graph.svd_prune import energy_for_macs as energy_for_macs
from lrpet_tf.graph.svd_prune import kept_indices as kept_indices
from lrpet_tf.graph.svd_prune import prune as prune
from lrpet_tf.layers import *  # noqa: F403 - the SVD layers, their regularisers and metrics
from lrpet_tf.layers import __all__ as _LAYERS

__all__ = sorted([*_LAYERS, "decompose", "energy_for_macs", "kept_indices", "prune"])
