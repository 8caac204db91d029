"""Keras model -> .tflite bytes with a chosen batch, I/O types and named tensors."""

import tempfile

import numpy as np
import tensorflow as tf

from lrpet_tf import _keras
from lrpet_tf.export.flatbuffer_model import FlatbufferModel
from lrpet_tf.export.quiet import captured_output

__all__ = ["convert"]

SIGNATURE_KEY = "serving_default"
_IO_TYPES = {"float32": tf.float32, "int8": tf.int8, "uint8": tf.uint8}


def convert(model, batch_size=1, quantization=None, io_type="float32", calibration=None):
    """Converts a Keras model to the bytes of a .tflite file.

    The model is traced with a static batch (or a dynamic one for
    `batch_size=None`) in one `serving_default` signature whose inputs are
    named after the Keras inputs and whose outputs are named after the
    model's output layers; the file's input and output tensors carry the same
    names, in the Keras model's order. With a static batch the converter
    folds every shape computation into constants, so no SHAPE / PACK /
    RESHAPE chain is left around FULLY_CONNECTED.

    Args:
        model: A Keras model with known inputs (Functional or Sequential).
        batch_size: The static batch, or None for a dynamic one.
        quantization: None, "float16", "dynamic" or "int8".
        io_type: "float32", or for int8 "int8" / "uint8" input and output tensors.
        calibration: For int8, TFLite's representative-dataset generator function.

    Returns:
        The .tflite file's bytes.

    Raises:
        RuntimeError: If the converter fails (its log attached).
    """
    input_names = input_names_of(model)
    output_names = output_names_of(model)
    specs = [
        tf.TensorSpec((batch_size,) + tuple(t.shape)[1:], _dtype(t), name=name)
        for t, name in zip(tf.nest.flatten(model.inputs), input_names)
    ]

    def serve(*inputs):
        outputs = model(inputs[0] if len(inputs) == 1 else list(inputs), training=False)
        return dict(zip(output_names, tf.nest.flatten(outputs)))

    with tempfile.TemporaryDirectory() as saved_model, captured_output() as log:
        try:
            _save(model, serve, specs, saved_model)
            converter = tf.lite.TFLiteConverter.from_saved_model(
                saved_model, signature_keys=[SIGNATURE_KEY]
            )
            _configure(converter, quantization, io_type, calibration, batch_size)
            content = converter.convert()
            failure = None
        except Exception as e:  # noqa: BLE001 - re-raised below with the log
            failure = e
    if failure is not None:
        raise RuntimeError(
            f"TFLite conversion of model {model.name!r} failed: {failure}\n"
            f"Converter output:\n{log[0][-4000:]}"
        ) from failure
    return _name_tensors(content, input_names, output_names)


def input_names_of(model):
    """Signature input names: the Keras input tensors' names, in the model's input order."""
    return [t.name for t in tf.nest.flatten(model.inputs)]


def output_names_of(model):
    """Signature output names: the output layers' names (`name_1`, ... for repeats).

    A layer wrapped for quantization-aware training (tfmot's `quant_<name>`
    wrapper, see `prepare_qat`) gives its wrapped layer's name, so the QAT
    int8 file names its outputs as the float file does.
    """
    names = []
    for tensor in tf.nest.flatten(model.outputs):
        layer = _keras.producing_layer(tensor)
        if hasattr(layer, "quantize_config") and hasattr(layer, "layer"):
            layer = layer.layer
        names.append(layer.name)
    unique = []
    for name in names:
        candidate, count = name, 0
        while candidate in unique:
            count += 1
            candidate = f"{name}_{count}"
        unique.append(candidate)
    return unique


def _dtype(tensor):
    dtype = tensor.dtype
    return tf.as_dtype(dtype if isinstance(dtype, str) else dtype.name)


def _save(model, serve, specs, directory):
    """Writes a SavedModel whose `serving_default` signature is `serve(*specs)`.

    The SavedModel holds the signature and the model's variables, not the
    Keras model: saving the model object makes Keras serialize every layer's
    call (tf_keras traces each layer again), which took 80% of the time of a
    MobileNetV2 conversion and adds nothing to the .tflite file (the bytes
    are identical either way).
    """
    module = tf.Module()
    module.model_variables = [_keras.backing_variable(v) for v in model.variables]
    function = tf.function(serve, input_signature=specs)
    tf.saved_model.save(
        module, directory, signatures={SIGNATURE_KEY: function.get_concrete_function()}
    )


def _configure(converter, quantization, io_type, calibration, batch_size):
    if quantization is not None:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantization == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if quantization == "int8" and calibration is not None:
        converter.representative_dataset = _rebatched(calibration, batch_size)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    # A quantization-aware model (prepare_qat) carries its learned ranges:
    # Optimize.DEFAULT alone converts it to int8.
    if io_type != "float32":
        converter.inference_input_type = _IO_TYPES[io_type]
        converter.inference_output_type = _IO_TYPES[io_type]


def _rebatched(calibration, batch_size):
    """The calibration generator, regrouped into batches of the file's static batch."""
    if batch_size is None:
        return calibration

    def generator():
        pending = None
        for sample in calibration():
            arrays = [np.asarray(a) for a in sample]
            pending = (
                arrays
                if pending is None
                else [np.concatenate([p, a], axis=0) for p, a in zip(pending, arrays)]
            )
            while len(pending[0]) >= batch_size:
                yield [p[:batch_size] for p in pending]
                pending = [p[batch_size:] for p in pending]

    return generator


def _name_tensors(content, input_names, output_names):
    """Names the file's input/output tensors as their signature keys, in Keras's order."""
    model = FlatbufferModel(content)
    signature = model.signature(SIGNATURE_KEY)
    inputs = [signature["inputs"][name] for name in input_names]
    outputs = [signature["outputs"][name] for name in output_names]
    names = dict(zip(inputs, input_names))
    names.update(zip(outputs, output_names))
    return model.edited(tensor_names=names, input_order=inputs, output_order=outputs)
