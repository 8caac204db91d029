"""Hand-off to tensorflow-model-optimization for quantization-aware training."""

from lrpet_tf import _keras

__all__ = ["is_quantization_aware", "prepare_qat"]

_QAT_LAYER_TYPES = ("QuantizeWrapper", "QuantizeWrapperV2", "QuantizeLayer")


def is_quantization_aware(model):
    """Whether `model` was prepared by `prepare_qat` (has tfmot quantize layers)."""
    return any(type(layer).__name__ in _QAT_LAYER_TYPES for layer in _keras.flatten_layers(model))


def prepare_qat(model):
    """Returns a copy of a compact model ready for quantization-aware training.

    Wraps `tfmot.quantization.keras.quantize_model`: fake-quantization of
    weights and activations is inserted so that a few epochs of fine-tuning
    adapt the model to int8. Because a compact model (after
    `lrpet_tf.factorize`, optionally `fold_batchnorm`) is made of standard
    Conv2D / Dense / BatchNormalization layers, tfmot's default registry
    quantizes every layer, the factorized pairs included, and the int8 file
    keeps them as separate ops. Compile and fit the returned model, then
    `export_tflite(qat_model, path, quantization="int8")` (no representative
    dataset needed: the ranges were learned).

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
            quantize (e.g. SVD-form layers: factorize them first).

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
        layer.name
        for layer in _keras.flatten_layers(model)
        if type(layer).__module__.startswith("lrpet_tf")
    ]
    if custom:
        raise TypeError(
            f"Layers {custom} are lrpet_tf SVD-form layers, which tfmot cannot quantize. "
            "Convert them to standard layers first: lrpet_tf.factorize(model)."
        )
    return tfmot.quantization.keras.quantize_model(model)
