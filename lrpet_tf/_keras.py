"""The one place that decides which Keras lrpet_tf uses.

Keras 3 with the TensorFlow backend is the default (`import keras`). With the
environment variable `TF_USE_LEGACY_KERAS=1` (what tensorflow-model-optimization
needs), tf_keras (Keras 2) is used instead. Every other module of the package
does `from lrpet_tf._keras import keras` and goes through the small adapter
functions below for the few framework internals that differ between the two
(the layer graph of a Functional model, the backing `tf.Variable` of a weight).
"""

import os

import tensorflow as tf

__all__ = [
    "IS_KERAS_3",
    "keras",
    "backing_variable",
    "call_nodes",
    "flatten_layers",
    "has_layer_graph",
    "make_input",
    "model_io",
    "producing_layer",
    "quiet_retracing",
    "register_serializable",
    "tensor_key",
]


def _backend_error(backend):
    return (
        "lrpet_tf runs on the TensorFlow backend of Keras 3 (its projections "
        "are tf.functions and its exporter is TFLite). Received: "
        f"KERAS_BACKEND={backend!r}. Set KERAS_BACKEND=tensorflow (or "
        '"backend": "tensorflow" in ~/.keras/keras.json) before importing keras.'
    )


def _legacy_requested():
    return os.environ.get("TF_USE_LEGACY_KERAS", "0").strip().lower() in (
        "1",
        "true",
        "yes",
    )


if _legacy_requested():
    try:
        import tf_keras as keras  # noqa: F401
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError(
            "TF_USE_LEGACY_KERAS=1 asks lrpet_tf to use tf_keras (Keras 2), "
            "but tf_keras is not installed. Install it with "
            "`pip install lrpet_tf[legacy]`, or unset TF_USE_LEGACY_KERAS to "
            "use Keras 3."
        ) from e
    _tf_minor, _keras_minor = (v.split(".")[:2] for v in (tf.__version__, keras.__version__))
    if _tf_minor != _keras_minor:
        raise ImportError(
            f"tf_keras {keras.__version__} does not match TensorFlow {tf.__version__}: "
            "tf_keras works only with the TensorFlow of its own minor version. Install "
            f'the matching one: pip install "tf_keras~={".".join(_tf_minor)}.0".'
        )
    IS_KERAS_3 = False
else:
    _requested_backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    if _requested_backend != "tensorflow":
        # Checked before importing Keras: another backend may not even import.
        raise ImportError(_backend_error(_requested_backend))
    import keras  # noqa: F401

    if int(keras.__version__.split(".")[0]) < 3:  # pragma: no cover
        raise ImportError(
            "lrpet_tf needs Keras 3 (or tf_keras with TF_USE_LEGACY_KERAS=1). "
            f"Found keras=={keras.__version__}."
        )
    if keras.backend.backend() != "tensorflow":
        raise ImportError(_backend_error(keras.backend.backend()))
    IS_KERAS_3 = True


def register_serializable(cls):
    """Registers `cls` for `.keras` / SavedModel saving under package "lrpet_tf"."""
    return keras.saving.register_keras_serializable(package="lrpet_tf")(cls)


def backing_variable(variable):
    """Returns the `tf.Variable` (or distributed variable) behind a Keras weight.

    Keras 3 wraps each TensorFlow variable in a `keras.Variable`; tf_keras uses
    TensorFlow variables directly. Reads and `assign` inside a `tf.function`
    go through the returned object, so they work under `tf.distribute`.
    """
    if IS_KERAS_3:
        return variable.value
    return variable


def has_layer_graph(model):
    """True for Functional and built Sequential models (they carry a layer graph)."""
    if not isinstance(model, keras.Model):
        return False
    if IS_KERAS_3 and isinstance(model, keras.Sequential):
        return getattr(model, "_functional", None) is not None
    if IS_KERAS_3:
        return hasattr(model, "_nodes_by_depth")
    return bool(getattr(model, "_is_graph_network", False))


def _graph_owner(model):
    if IS_KERAS_3 and isinstance(model, keras.Sequential):
        return model._functional
    return model


def model_io(model):
    """Returns `(inputs, outputs)` of a graph model as the nested structures given."""
    owner = _graph_owner(model)
    if IS_KERAS_3:
        return owner._inputs_struct, owner._outputs_struct
    return owner._nested_inputs, owner._nested_outputs


def producing_layer(tensor):
    """The layer (an InputLayer for a model input) that produced a symbolic tensor."""
    return tensor._keras_history[0]


def quiet_retracing(function):
    """Turns off TensorFlow's "excessive retracing" warning for one `tf.function`.

    For functions traced once per object of a class (e.g. one projection per
    LRPET callback): TF counts traces per Python code object across objects
    and would warn from the sixth object in a process on, wrongly.
    """
    function._omit_frequent_tracing_warning = True
    return function


def tensor_key(tensor):
    """A hashable identity of a symbolic tensor: (layer id, node index, output index)."""
    history = tensor._keras_history
    return (id(history[0]), history[1], history[2])


def call_nodes(model):
    """Lists the layer calls of a graph model in topological order.

    Returns:
        A list of `(layer, args, kwargs, outputs)`, one per call of a layer
        (a shared layer appears once per call), producers before consumers.
        `args` and `kwargs` hold the symbolic input tensors in the structure
        the layer was called with; `outputs` is the flat list of output tensors.
        Input layers are not listed.
    """
    owner = _graph_owner(model)
    result = []
    for depth in sorted(owner._nodes_by_depth, reverse=True):
        for node in owner._nodes_by_depth[depth]:
            if IS_KERAS_3:
                layer = node.operation
                if isinstance(layer, keras.layers.InputLayer):
                    continue
                args, kwargs = node.arguments.args, node.arguments.kwargs
                outputs = list(node.outputs)
            else:
                if node.is_input:
                    continue
                layer = node.layer
                args, kwargs = node.call_args, node.call_kwargs
                outputs = tf.nest.flatten(node.outputs)
            result.append((layer, tuple(args), dict(kwargs), outputs))
    return result


def make_input(tensor, name=None):
    """A new `keras.Input` with the batch shape and dtype of a symbolic tensor."""
    dtype = tensor.dtype
    if not isinstance(dtype, str):
        dtype = dtype.name
    return keras.Input(batch_shape=tuple(tensor.shape), dtype=dtype, name=name)


def is_symbolic(value):
    """True for a symbolic Keras tensor (a graph edge), False for anything else."""
    return hasattr(value, "_keras_history") and not isinstance(value, tf.Tensor)


def flatten_layers(model):
    """All layers of `model`, recursing into nested models, each once."""
    return list(model._flatten_layers(include_self=False, recursive=True))
