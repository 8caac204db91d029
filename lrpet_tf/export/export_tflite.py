"""Export a Keras model to a verified .tflite file: `export_tflite`."""

import dataclasses
import os

import numpy as np
import tensorflow as tf

from lrpet_tf import _keras
from lrpet_tf._keras import keras
from lrpet_tf.export.quantization_aware import is_quantization_aware
from lrpet_tf.export.quiet import captured_output
from lrpet_tf.export.tflite_model import TFLiteModel

__all__ = ["ExportResult", "TFLiteVerificationError", "export_tflite"]

QUANTIZATIONS = (None, "float16", "dynamic", "int8")

# Allowed max |TFLite - Keras| relative to max(1, max |Keras output|).
_FLOAT_TOLERANCE = {None: 1e-4, "float16": 2e-2, "dynamic": 1e-1}
# int8: share of examples whose arg-max must agree, and the max error in
# steps of the output's int8 quantization (32 steps = 1/8 of its range).
_INT8_TOP1_AGREEMENT = 0.9
_INT8_MAX_STEPS = 32


class TFLiteVerificationError(RuntimeError):
    """The .tflite file disagrees with the Keras model beyond tolerance."""


@dataclasses.dataclass
class ExportResult:
    """What `export_tflite` wrote and how well it matches Keras.

    Attributes:
        path: Where the .tflite file was written.
        size_bytes: Its size.
        quantization: The quantization used.
        ops: Builtin op names in execution order (e.g. `CONV_2D`).
        max_error: Max |TFLite - Keras| over the verification inputs (None
            when `verify=False`).
        tolerance: The bound `max_error` was checked against.
        top1_agreement: For int8, the share of examples whose arg-max agrees.
        max_error_steps: For int8, `max_error` in steps of the output's int8
            quantization.
    """

    path: str
    size_bytes: int
    quantization: str
    ops: list
    max_error: float = None
    tolerance: float = None
    top1_agreement: float = None
    max_error_steps: float = None

    def op_count(self, name):
        """How many ops of this builtin type the file has."""
        return self.ops.count(name)


def export_tflite(
    model,
    path,
    quantization=None,
    representative_dataset=None,
    verify=True,
    verify_data=None,
    tolerance=None,
):
    """Converts `model` to TFLite, writes it to `path` and checks it against Keras.

    Each layer of the model becomes its own op: a factorized layer's two thin
    convs stay two `CONV_2D` ops (two `FULLY_CONNECTED` for Dense), so the
    MACs saved by factorization are saved on the device too. Call
    `lrpet_tf.fold_batchnorm` first to merge BatchNormalization into the
    layers (the converter would otherwise fold it into an extra MUL/ADD).

    Args:
        model: A Keras model (Functional, Sequential or subclassed).
        path: Output file path; parent folders are created.
        quantization: None (float32), `"float16"` (weights in float16),
            `"dynamic"` (int8 weights, float activations) or `"int8"` (full
            integer with float input/output; needs `representative_dataset`).
        representative_dataset: For `"int8"`: a numpy array (or list of
            arrays for several inputs) of typical inputs, a `tf.data.Dataset`
            of input batches, or a generator function yielding lists of input
            arrays (TFLite's convention). A few hundred examples suffice.
        verify: Run the file in the LiteRT interpreter and compare with the
            Keras model (`training=False`).
        verify_data: Inputs for verification (array, list of arrays); by
            default the first 64 representative examples, else random normal
            inputs of the model's input shapes.
        tolerance: Override the allowed max error, relative to
            `max(1, max |Keras output|)`. Defaults: 1e-4 float32, 2e-2 float16,
            1e-1 dynamic; int8 checks arg-max agreement (>= 90%) and a max
            error of at most 32 steps of the output's int8 quantization.

    Returns:
        An `ExportResult`.

    Raises:
        ValueError: Unknown quantization, or int8 without a representative
            dataset (before any conversion work).
        TFLiteVerificationError: If the file disagrees with Keras beyond the
            tolerance (the file is still written, for inspection).

    Example:
        >>> result = lrpet_tf.export_tflite(compact, "saved_models/m.tflite")
        >>> result.op_count("CONV_2D"), result.max_error
    """
    if quantization not in QUANTIZATIONS:
        raise ValueError(
            f"Expected `quantization` to be one of {QUANTIZATIONS}. "
            f"Received: quantization={quantization!r}"
        )
    if (
        quantization == "int8"
        and representative_dataset is None
        and not is_quantization_aware(model)
    ):
        raise ValueError(
            'quantization="int8" calibrates activation ranges and needs '
            "`representative_dataset` (a few hundred typical inputs). Received: "
            "representative_dataset=None. For weights-only int8 without data "
            'use quantization="dynamic"; a model trained with prepare_qat needs none.'
        )
    if not isinstance(model, keras.Model):
        raise TypeError(f"Expected `model` to be a Keras model. Received: model={model!r}")
    calibration = None if representative_dataset is None else _as_generator(representative_dataset)
    content = _convert(model, quantization, calibration)
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "wb") as f:
        f.write(content)
    tflite = TFLiteModel(path)
    result = ExportResult(
        path=path,
        size_bytes=len(content),
        quantization=quantization,
        ops=tflite.op_names(),
    )
    if verify:
        inputs = _verification_inputs(model, verify_data, calibration)
        _verify(model, tflite, inputs, result, tolerance)
    return result


def _convert(model, quantization, calibration):
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if quantization is not None:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantization == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if quantization == "int8" and calibration is not None:
        converter.representative_dataset = calibration
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    # A quantization-aware model (prepare_qat) carries its learned ranges:
    # Optimize.DEFAULT alone converts it to int8.
    with captured_output() as log:
        try:
            content = converter.convert()
            failure = None
        except Exception as e:  # noqa: BLE001 - re-raised below with the log
            failure = e
    if failure is not None:
        raise RuntimeError(
            f"TFLite conversion of model {model.name!r} failed: {failure}\n"
            f"Converter output:\n{log[0][-4000:]}"
        ) from failure
    return content


def _input_names(model):
    # The converter names signature inputs after the symbolic input tensors.
    return [t.name for t in tf.nest.flatten(model.inputs)]


def _as_list(x):
    return list(x) if isinstance(x, (list, tuple)) else [x]


def _as_generator(data):
    """Normalises a representative dataset to TFLite's generator function."""
    if callable(data):
        return data
    if isinstance(data, tf.data.Dataset):

        def from_dataset():
            for batch in data.unbatch().take(512).batch(1):
                if isinstance(batch, tuple) and len(batch) == 2:
                    batch = batch[0]  # (x, y) pairs: keep x
                yield [np.asarray(t, np.float32) for t in _as_list(batch)]

        return from_dataset
    arrays = [np.asarray(a) for a in _as_list(data)]
    count = min(len(a) for a in arrays)

    def from_arrays():
        for i in range(min(count, 512)):
            yield [a[i : i + 1].astype(np.float32) for a in arrays]

    return from_arrays


def _verification_inputs(model, verify_data, calibration):
    if verify_data is not None:
        return [np.asarray(a, np.float32) for a in _as_list(verify_data)]
    if calibration is not None:
        samples = [s for _, s in zip(range(64), calibration())]
        return [np.concatenate(parts, axis=0) for parts in zip(*samples)]
    rng = np.random.default_rng(0)
    inputs = []
    for t in tf.nest.flatten(model.inputs):
        shape = tuple(t.shape)[1:]
        if any(d is None for d in shape):
            raise ValueError(
                f"Cannot make random verification inputs for input "
                f"{t._keras_history[0].name!r} of shape {tuple(t.shape)}; pass "
                "`verify_data`."
            )
        inputs.append(rng.standard_normal((8,) + shape).astype(np.float32))
    return inputs


def _verify(model, tflite, inputs, result, tolerance):
    expected = [
        np.asarray(o)
        for o in tf.nest.flatten(model(inputs if len(inputs) > 1 else inputs[0], training=False))
    ]
    got = tflite(inputs, input_names=_input_names(model), output_names=_output_names(model))
    got = _as_list(got)
    errors = [float(np.max(np.abs(g - e))) for g, e in zip(got, expected)]
    result.max_error = max(errors)
    scale = max(1.0, max(float(np.max(np.abs(e))) for e in expected))
    if result.quantization == "int8" and tolerance is None:
        agreements = [
            float(np.mean(np.argmax(g, -1) == np.argmax(e, -1)))
            for g, e in zip(got, expected)
            if e.ndim >= 2 and e.shape[-1] > 1
        ]
        result.top1_agreement = min(agreements) if agreements else None
        steps = tflite.output_quantization_scales(_output_names(model))
        result.max_error_steps = max(
            float(np.max(np.abs(g - e))) / step for g, e, step in zip(got, expected, steps) if step
        )
        result.tolerance = _INT8_MAX_STEPS * max(step for step in steps if step)
        ok = result.max_error_steps <= _INT8_MAX_STEPS and (
            result.top1_agreement is None or result.top1_agreement >= _INT8_TOP1_AGREEMENT
        )
    else:
        bound = tolerance if tolerance is not None else _FLOAT_TOLERANCE[result.quantization]
        result.tolerance = bound * scale
        ok = result.max_error <= result.tolerance
    if not ok:
        raise TFLiteVerificationError(
            f"{result.path} disagrees with Keras model {model.name!r}: max error "
            f"{result.max_error:.3g} > tolerance {result.tolerance:.3g}"
            + (
                f", arg-max agreement {result.top1_agreement:.3f}"
                if result.top1_agreement is not None
                else ""
            )
            + f" (quantization={result.quantization!r})."
        )


def _output_names(model):
    if _keras.IS_KERAS_3:
        return None
    return list(model.output_names)
