"""A read-only view of a Functional/Sequential model's layer graph, and rebuild.

Every rewrite in lrpet_tf (BN folding, factorization, SVD decomposition and
pruning) is "walk the graph, replace some layer calls, clone the rest". This
module is that mechanism, written once:

* `LayerGraph(model)` lists the layer calls in topological order with their
  input and output edges, and answers who consumes a tensor. Conv->BN pairing
  is by graph edge (`LayerGraph.batchnorm_after`), never by layer order.
* `LayerGraph.rebuild(plan)` replays the graph into a NEW model. `plan(graph)`
  maps `id(layer)` to a replacement callable `(args, kwargs) -> outputs`,
  usually a `Replacement` (new layers called in a chain, their weights set
  once the first call has built them); every other layer is cloned from its
  config with its weights copied (a shared layer is cloned once and stays
  shared), and nested Functional models are rebuilt recursively with the same
  plan function. The given model is never modified, so a failure midway
  leaves it exactly as it was.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Mapping
from typing import Any
from typing import TypeAlias

import tensorflow as tf

from lrpet_tf import _keras
from lrpet_tf._keras import keras

__all__ = ["CallNode", "LayerGraph", "Replacement", "fits_input", "require_graph_model"]

# What `LayerGraph.rebuild` calls instead of a layer: `(args, kwargs) -> outputs`.
ReplacementCall: TypeAlias = Callable[[tuple, dict], Any]
# `plan(graph) -> {id(layer): replacement}`.
RebuildPlan: TypeAlias = Callable[["LayerGraph"], Mapping[int, ReplacementCall]]


def fits_input(tensor, shape):
    """Whether a batch of `shape` fits the model input `tensor` (its None dims fit any size)."""
    expected, shape = tuple(tensor.shape), tuple(shape)
    return len(shape) == len(expected) and all(
        e is None or e == d for e, d in zip(expected[1:], shape[1:])
    )


def require_graph_model(model, argument="model"):
    """Raises a clear error unless `model` is a built Functional/Sequential model."""
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"Expected `{argument}` to be a Keras model. Received: "
            f"{argument}={model!r} of type {type(model).__name__}"
        )
    if isinstance(model, keras.Sequential) and not _keras.has_layer_graph(model):
        raise ValueError(
            f"`{argument}` is a Sequential model that is not built yet, so it "
            "has no layer graph. Give it an input shape first (start it with "
            "`keras.Input(shape)` or call it on data). Received: "
            f"{argument}={model.name!r}"
        )
    if not _keras.has_layer_graph(model):
        raise TypeError(
            f"`{argument}` must be a Functional or Sequential model: rewrites "
            "walk the layer graph, and a subclassed model has none (its "
            "`call` is arbitrary Python). Rebuild it with the Functional API, "
            "e.g. `keras.Model(inputs, outputs)`. Received: "
            f"{argument}={model.name!r} of type {type(model).__name__}"
        )


class Replacement:
    """New layers standing in for one layer in `LayerGraph.rebuild`.

    The first new layer is called with the replaced call's arguments, each
    next one with the previous one's output. The layers are shared between
    the calls of a shared layer. After the first call has built them,
    `initialize()` runs once (it sets their weights).

    Args:
        layers: The new layers, in call order.
        initialize: A function of no arguments, or None.
    """

    def __init__(self, layers, initialize=None):
        self.layers = list(layers)
        self._initialize = initialize

    def __call__(self, args, kwargs):
        out = self.layers[0](*args, **kwargs)
        for layer in self.layers[1:]:
            out = layer(out)
        if self._initialize is not None:
            initialize, self._initialize = self._initialize, None
            initialize()
        return out


def set_weights_of(pairs):
    """An `initialize` for `Replacement`: `layer.set_weights(weights)` for each pair."""

    def initialize():
        for layer, weights in pairs:
            layer.set_weights(weights)

    return initialize


@dataclasses.dataclass(eq=False)
class CallNode:
    """One call of a layer in the graph.

    Attributes:
        layer: The layer (or nested model) called.
        args, kwargs: The call arguments, symbolic tensors where edges are.
        outputs: Flat list of the call's output tensors.
        inputs: Flat list of the call's symbolic input tensors.
    """

    layer: Any  # a keras.layers.Layer, or in Keras 3 a stateless op such as `x + 3`
    args: tuple
    kwargs: dict
    outputs: list
    inputs: list

    @property
    def input_shape(self):
        return tuple(self.inputs[0].shape) if self.inputs else None

    @property
    def output_shape(self):
        return tuple(self.outputs[0].shape)


class LayerGraph:
    """The layer calls of a Functional or Sequential model, in topological order.

    Args:
        model: A built Functional or Sequential model.

    Raises:
        TypeError: For a subclassed model or something that is not a model.
        ValueError: For a Sequential model that is not built.
    """

    def __init__(self, model: keras.Model) -> None:
        require_graph_model(model)
        self.model = model
        self.inputs, self.outputs = _keras.model_io(model)
        self.nodes = []
        self._producer: dict[Any, CallNode] = {}
        self._consumers: dict[Any, list[CallNode]] = {}
        self._calls: dict[int, list[CallNode]] = {}
        for layer, args, kwargs, outputs in _keras.call_nodes(model):
            inputs = [t for t in tf.nest.flatten((args, kwargs)) if _keras.is_symbolic(t)]
            node = CallNode(layer, args, kwargs, outputs, inputs)
            self.nodes.append(node)
            self._calls.setdefault(id(layer), []).append(node)
            for t in outputs:
                self._producer[_keras.tensor_key(t)] = node
            for t in inputs:
                self._consumers.setdefault(_keras.tensor_key(t), []).append(node)
        self._output_keys = {_keras.tensor_key(t) for t in tf.nest.flatten(self.outputs)}

    def calls(self, layer: keras.layers.Layer) -> list[CallNode]:
        """All calls of `layer` in this graph (more than one for a shared layer)."""
        return self._calls.get(id(layer), [])

    def consumers(self, node: CallNode) -> list[CallNode]:
        """Nodes that take any output of `node` as input (each listed once)."""
        seen, result = set(), []
        for t in node.outputs:
            for consumer in self._consumers.get(_keras.tensor_key(t), []):
                if id(consumer) not in seen:
                    seen.add(id(consumer))
                    result.append(consumer)
        return result

    def is_model_output(self, node: CallNode) -> bool:
        return any(_keras.tensor_key(t) in self._output_keys for t in node.outputs)

    def producer(self, tensor: Any) -> CallNode | None:
        """The node that produced `tensor`, or None for a model input."""
        return self._producer.get(_keras.tensor_key(tensor))

    def nested_models(self) -> list[keras.Model]:
        """The Functional/Sequential models called as layers in this graph."""
        seen, result = set(), []
        for node in self.nodes:
            layer = node.layer
            if _keras.has_layer_graph(layer) and id(layer) not in seen:
                seen.add(id(layer))
                result.append(layer)
        return result

    def walk(self) -> Iterator[LayerGraph]:
        """Yields this graph and the graphs of nested models, recursively."""
        yield self
        for inner in self.nested_models():
            yield from LayerGraph(inner).walk()

    def batchnorm_after(self, node: CallNode) -> CallNode | None:
        """The BatchNormalization node that directly and solely follows `node`.

        Returns None unless `node`'s only consumer is a BatchNormalization for
        which `pairing_problem` finds nothing wrong.
        """
        if len(node.outputs) != 1:
            return None
        consumers = self._consumers.get(_keras.tensor_key(node.outputs[0]), [])
        if len(consumers) != 1:
            return None
        bn_node = consumers[0]
        if not isinstance(bn_node.layer, keras.layers.BatchNormalization):
            return None
        return None if self.pairing_problem(node, bn_node) else bn_node

    def pairing_problem(self, node: CallNode, bn_node: CallNode) -> str | None:
        """Why the BN call `bn_node` cannot be merged into the call `node`.

        The BN merges (at inference, and for LRPET's rectification) when:
        the layer of `node` is called once and has a linear activation (or
        none); its single output is not a model output and feeds only
        `bn_node`; the BN is called once, not forced to `training=True`, and
        normalizes only the channel axis of `node`'s output.

        Returns:
            None when the pair merges, else a short reason.
        """
        layer, bn = node.layer, bn_node.layer
        activation = getattr(layer, "activation", None)
        if activation is not None and activation is not keras.activations.linear:
            name = getattr(activation, "__name__", str(activation))
            return f"{layer.name} has a non-linear activation ({name}) before the BN"
        if len(self.calls(layer)) != 1:
            return f"{layer.name} is shared (called {len(self.calls(layer))} times)"
        if len(self.calls(bn)) != 1:
            return f"the BN is shared (called {len(self.calls(bn))} times)"
        if len(node.outputs) != 1 or self.is_model_output(node):
            return f"the output of {layer.name} is also a model output"
        if len(self.consumers(node)) != 1:
            others = [n.layer.name for n in self.consumers(node) if n is not bn_node]
            return f"the output of {layer.name} also feeds {others}"
        if bn_node.kwargs.get("training") is True:
            return "the BN is called with training=True"
        rank = len(node.outputs[0].shape)
        bn_axes = bn.axis if isinstance(bn.axis, (list, tuple)) else [bn.axis]
        bn_axes = sorted(a % rank for a in bn_axes)
        if bn_axes != [channel_axis(layer, rank)]:
            return f"the BN normalizes axes {bn_axes}, not the channel axis"
        return None

    def rebuild(self, plan: RebuildPlan, name: str | None = None) -> keras.Model:
        """Replays the graph into a new model, replacing layers as `plan` says.

        Args:
            plan: A function `plan(graph) -> {id(layer): replacement}`, called
                for this graph and for each nested model's graph. A
                replacement is a callable `(args, kwargs) -> outputs` built to
                be called once per call of the layer (keep state in it to share
                new layers between calls).
            name: Name of the new model (default: the original's).

        Returns:
            A new model of the same kind (Sequential stays Sequential).
        """
        replacements = plan(self)
        tensors = {}
        new_inputs_flat = []
        for t in tf.nest.flatten(self.inputs):
            new_t = _keras.make_input(t, name=_keras.producing_layer(t).name)
            tensors[_keras.tensor_key(t)] = new_t
            new_inputs_flat.append(new_t)
        new_inputs = tf.nest.pack_sequence_as(self.inputs, new_inputs_flat)

        def lookup(value):
            if _keras.is_symbolic(value):
                return tensors[_keras.tensor_key(value)]
            return value

        clones = {}
        for node in self.nodes:
            args = tf.nest.map_structure(lookup, node.args)
            kwargs = tf.nest.map_structure(lookup, node.kwargs)
            key = id(node.layer)
            if key in replacements:
                out = replacements[key](args, kwargs)
            else:
                first_call = key not in clones
                if first_call:
                    clones[key] = self._clone(node.layer, plan)
                out = clones[key](*args, **kwargs)
                if first_call and clones[key] is not node.layer:
                    if not _keras.has_layer_graph(node.layer):
                        clones[key].set_weights(node.layer.get_weights())
            for old_t, new_t in zip(node.outputs, tf.nest.flatten(out)):
                tensors[_keras.tensor_key(old_t)] = new_t
        new_outputs = tf.nest.map_structure(lookup, self.outputs)
        model = keras.Model(new_inputs, new_outputs, name=name or self.model.name)
        if isinstance(self.model, keras.Sequential):
            model = _as_sequential(model, new_inputs_flat, name or self.model.name)
        return model

    @staticmethod
    def _clone(layer, plan):
        if not isinstance(layer, keras.layers.Layer):
            # A stateless Keras op in the graph (e.g. `x + 3` in Keras 3's
            # MobileNetV3): nothing to copy, so the new graph calls it too.
            return layer
        if _keras.has_layer_graph(layer):
            return LayerGraph(layer).rebuild(plan)
        try:
            return layer.__class__.from_config(layer.get_config())
        except Exception as e:  # noqa: BLE001 - re-raised with context
            raise TypeError(
                f"Cannot clone layer {layer.name!r} of type "
                f"{type(layer).__name__}: its `get_config()`/`from_config()` "
                "round trip failed. Custom layers must implement `get_config` "
                f"so rewrites can copy them. Cause: {e}"
            ) from e


def channel_axis(layer, rank):
    """The output-channel axis of a conv/dense layer's output of rank `rank`."""
    if getattr(layer, "data_format", "channels_last") == "channels_first":
        return 1
    return rank - 1


def _as_sequential(functional, inputs, name):
    """Re-wraps a chain-shaped functional model as a Sequential model."""
    layers = [
        layer for layer in functional.layers if not isinstance(layer, keras.layers.InputLayer)
    ]
    (input_tensor,) = inputs
    spec = _keras.make_input(input_tensor, name=_keras.producing_layer(input_tensor).name)
    return keras.Sequential([spec, *layers], name=name)
