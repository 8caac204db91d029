"""Hand-off to tensorflow-model-optimization for quantization-aware training."""

from __future__ import annotations

import functools

from lrpet_tf import _keras
from lrpet_tf._keras import keras
from lrpet_tf.graph.targets import layers_by_name

__all__ = ["is_quantization_aware", "prepare_qat"]

_QAT_LAYER_TYPES = ("QuantizeWrapper", "QuantizeWrapperV2", "QuantizeLayer")


def is_quantization_aware(model: keras.Model) -> bool:
    """Whether `model` was prepared by `prepare_qat` (has tfmot quantize layers)."""
    return any(type(layer).__name__ in _QAT_LAYER_TYPES for layer in _keras.flatten_layers(model))


def prepare_qat(model: keras.Model) -> keras.Model:
    """Returns a copy of a compact model ready for quantization-aware training.

    Wraps tfmot's default 8-bit scheme (`quantize_model`): fake-quantization
    of weights and activations is inserted so that a few epochs of
    fine-tuning adapt the model to int8. Because a compact model (after
    `lrpet_tf.factorize`, optionally `fold_batchnorm`) is made of standard
    Conv2D / Dense / BatchNormalization layers, tfmot's default registry
    quantizes every layer, the factorized pairs included, and the int8 file
    keeps them as separate ops. Compile and fit the returned model, then
    `export_tflite(qat_model, path, quantization="int8")` (no representative
    dataset needed: the ranges were learned).

    Layers without weights that tfmot's registry does not know (for example
    `Rescaling`, as in the zero channels of a CIFAR ResNet's option-A
    shortcut) get a quantize config that fake-quantizes only their output
    (8 bits, moving-average range, like tfmot's own `Add` or `Concatenate`),
    so the int8 file has a range for every tensor. A layer with weights
    outside the registry has no such safe default: it is refused.
    An average pooling of pool size 1 (a strided subsampling, as in that
    shortcut) gets no output quantizer, unlike tfmot's default for pooling:
    it only selects values, so, like `MaxPooling2D` in tfmot's registry, it
    keeps its input's scale. A second learned range, nearly but not exactly
    the input's, makes the int8 converter fail on TFLite's same-scale
    constraint for `AVERAGE_POOL_2D`.
    The config class is registered with Keras serialization under
    `lrpet_tf>OutputQuantizeConfig` when `prepare_qat` first needs it; export
    the QAT model directly, or load a saved one under
    `tfmot.quantization.keras.quantize_scope()` in a process that has called
    `prepare_qat`.

    tensorflow-model-optimization works only with tf_keras models: run with
    `TF_USE_LEGACY_KERAS=1` (set before TensorFlow is imported) and
    `pip install lrpet_tf[legacy]`.

    Args:
        model: A Functional or Sequential compact model of standard layers.

    Returns:
        The quantization-aware tf_keras model (a new model).

    Raises:
        RuntimeError: In Keras 3 mode (QAT needs tf_keras), or if
            tensorflow-model-optimization is not installed.
        TypeError: For a subclassed model, or one with layers tfmot cannot
            quantize: SVD-form layers (factorize them first), or layers with
            weights outside tfmot's default registry.

    Example:
        >>> qat = lrpet_tf.export.prepare_qat(compact)
        >>> qat.compile(...); qat.fit(x, y, epochs=2)
        >>> lrpet_tf.export_tflite(qat, "saved_models/m_int8.tflite", quantization="int8")
    """
    if _keras.IS_KERAS_3:
        raise RuntimeError(
            "Quantization-aware training uses tensorflow-model-optimization, which "
            "works only with tf_keras (Keras 2) models, and this process uses Keras 3. "
            "Set TF_USE_LEGACY_KERAS=1 before importing TensorFlow or lrpet_tf and "
            "install the extra: pip install lrpet_tf[legacy]. Without QAT, use "
            "post-training int8: export_tflite(model, path, quantization='int8', "
            "representative_dataset=...)."
        )
    try:
        import tensorflow_model_optimization as tfmot
    except ImportError as e:
        raise RuntimeError(
            "prepare_qat needs tensorflow-model-optimization: pip install lrpet_tf[legacy]."
        ) from e
    if not _keras.has_layer_graph(model):
        raise TypeError(
            "prepare_qat needs a Functional or Sequential model (tfmot rebuilds the "
            f"graph). Received: model={model.name!r} of type {type(model).__name__}"
        )
    custom = [
        name
        for name, layer in layers_by_name(model).items()
        if type(layer).__module__.startswith("lrpet_tf")
    ]
    if custom:
        raise TypeError(
            f"Layers {custom} are lrpet_tf SVD-form layers, which tfmot cannot quantize. "
            "Convert them to standard layers first: lrpet_tf.factorize(model)."
        )
    nested = [layer.name for layer in model.layers if _keras.has_layer_graph(layer)]
    if nested:
        raise TypeError(
            f"Layers {nested} of {model.name!r} are models nested inside it, which "
            "tensorflow-model-optimization cannot quantize. Rebuild the model with their "
            "layers inline (call them on the outer model's tensors)."
        )
    layers = list(layers_by_name(model).values())
    quantize = tfmot.quantization.keras
    registry = quantize.default_8bit.Default8BitQuantizeRegistry()
    unknown = [
        layer
        for layer in layers
        if not isinstance(layer, keras.layers.InputLayer) and not registry.supports(layer)
    ]
    weighted = [f"{layer.name} ({type(layer).__name__})" for layer in unknown if layer.weights]
    if weighted:
        raise TypeError(
            f"Layers {weighted} have weights and are not in tfmot's default 8-bit "
            "registry, so prepare_qat cannot choose how to quantize them. Annotate them "
            "with tfmot.quantization.keras.quantize_annotate_layer(layer, quantize_config=...) "
            "and call tfmot.quantization.keras.quantize_apply yourself."
        )
    overrides = {layer.name: True for layer in unknown}
    overrides.update({layer.name: False for layer in layers if _is_subsampling(layer)})
    if not overrides:
        return quantize.quantize_model(model)
    config_class = _output_quantize_config_class()

    def annotate(layer):
        config = None
        if layer.name in overrides:
            config = config_class(quantize_output=overrides[layer.name])
        return quantize.quantize_annotate_layer(layer, quantize_config=config)

    # Like tfmot's quantize_annotate_model (the clone wraps the same layers),
    # with lrpet_tf's config on the unknown layers (output range) and on the
    # subsampling poolings (none); the registry's configs everywhere else.
    annotated = keras.models.clone_model(model, clone_function=annotate)
    with quantize.quantize_scope({config_class.__name__: config_class}):
        return quantize.quantize_apply(annotated)


def _is_subsampling(layer):
    """An average pooling of pool size 1: it selects values, keeping their scale."""
    pooling = (keras.layers.AveragePooling1D, keras.layers.AveragePooling2D)
    return isinstance(layer, pooling) and all(size == 1 for size in layer.pool_size)


@functools.cache
def _output_quantize_config_class():
    """The QuantizeConfig class that fake-quantizes only a layer's output (built once).

    Built on first use because its base class is tfmot's, which cannot be
    imported in Keras 3 mode.
    """
    import tensorflow_model_optimization as tfmot

    quantize = tfmot.quantization.keras

    @keras.utils.register_keras_serializable(package="lrpet_tf")
    class OutputQuantizeConfig(quantize.QuantizeConfig):
        """No weight or activation quantizers; optionally an 8-bit moving-average output range."""

        def __init__(self, quantize_output=True):
            self.quantize_output = bool(quantize_output)

        def get_weights_and_quantizers(self, layer):
            return []

        def get_activations_and_quantizers(self, layer):
            return []

        def set_quantize_weights(self, layer, quantize_weights):
            pass

        def set_quantize_activations(self, layer, quantize_activations):
            pass

        def get_output_quantizers(self, layer):
            if not self.quantize_output:
                return []
            return [
                quantize.quantizers.MovingAverageQuantizer(
                    num_bits=8, per_axis=False, symmetric=False, narrow_range=False
                )
            ]

        def get_config(self):
            return {"quantize_output": self.quantize_output}

    return OutputQuantizeConfig
