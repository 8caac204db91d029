"""Where each layer's kernel is applied: `output_positions`."""

from lrpet_tf.graph.layer_graph import LayerGraph
from lrpet_tf.graph.layer_kinds import spatial_positions

__all__ = ["output_positions"]


def output_positions(model, layers):
    """id(layer) -> output positions per example, summed over the layer's calls.

    A conv's MACs are `positions * prod(kernel_shape)`, and its rank-r
    factorization's `positions * r * (rows + cols)` (`lrpet_tf.ops.costs`).

    Args:
        model: A Functional or Sequential model (nested models are walked).
        layers: The layers to count (conv or dense).
    """
    wanted = {id(layer) for layer in layers}
    positions = dict.fromkeys(wanted, 0)
    for graph in LayerGraph(model).walk():
        for node in graph.nodes:
            if id(node.layer) in wanted:
                positions[id(node.layer)] += spatial_positions(
                    node.output_shape, node.layer, node.layer.name
                )
    return positions
