"""Export a Keras model to a verified .tflite file: `export_tflite`."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Sequence
from typing import Any
from typing import Literal
from typing import TypeAlias

import numpy as np
import tensorflow as tf
from numpy.typing import ArrayLike

from lrpet_tf import _keras
from lrpet_tf._keras import keras
from lrpet_tf.export import conversion
from lrpet_tf.export.metadata import ImageClassifierMetadata
from lrpet_tf.export.quantization_aware import is_quantization_aware
from lrpet_tf.export.tflite_model import TFLiteModel
from lrpet_tf.graph.layer_graph import fits_input
from lrpet_tf.ops.arguments import check_int
from lrpet_tf.ops.arguments import check_number

__all__ = ["ExportResult", "TFLiteVerificationError", "export_tflite"]

QUANTIZATIONS = (None, "float16", "dynamic", "int8")
IO_TYPES = ("float32", "int8", "uint8")
# Typical inputs: arrays (a list for several inputs), a dataset of batches, or a
# function yielding lists of input arrays (TFLite's convention).
RepresentativeDataset: TypeAlias = (
    ArrayLike | Sequence[ArrayLike] | tf.data.Dataset | Callable[[], Iterable[list[np.ndarray]]]
)

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
        ops: Builtin op names in execution order (e.g. `CONV_2D`), read from
            the flatbuffer.
        batch_size: The file's static batch (None: dynamic).
        io_type: The dtype of its input and output tensors.
        input_names, output_names: Its signature's input and output names
            (the Keras input names and output layer names), in Keras's order.
        metadata: The `ImageClassifierMetadata` written into it, or None.
        max_error: Max |TFLite - Keras| over the verification inputs (None
            when `verify=False`).
        tolerance: The bound `max_error` was checked against.
        top1_agreement: For int8, the share of examples whose arg-max agrees.
        max_error_steps: For int8, `max_error` in steps of the output's int8
            quantization.
    """

    path: str
    size_bytes: int
    quantization: str | None
    ops: list[str]
    batch_size: int | None = 1
    io_type: str = "float32"
    input_names: list[str] | None = None
    output_names: list[str] | None = None
    metadata: ImageClassifierMetadata | None = None
    max_error: float | None = None
    tolerance: float | None = None
    top1_agreement: float | None = None
    max_error_steps: float | None = None

    def op_count(self, name: str) -> int:
        """How many ops of this builtin type the file has."""
        return self.ops.count(name)


def export_tflite(
    model: keras.Model,
    path: str | os.PathLike[str],
    quantization: Literal["float16", "dynamic", "int8"] | None = None,
    representative_dataset: RepresentativeDataset | None = None,
    verify: bool = True,
    verify_data: ArrayLike | Sequence[ArrayLike] | None = None,
    tolerance: float | None = None,
    batch_size: int | None = 1,
    io_type: Literal["float32", "int8", "uint8"] = "float32",
    metadata: ImageClassifierMetadata | dict[str, Any] | None = None,
) -> ExportResult:
    """Converts `model` to TFLite, writes it to `path` and checks it against Keras.

    Each layer of the model becomes its own op: a factorized layer's two thin
    convs stay two `CONV_2D` ops (two `FULLY_CONNECTED` for Dense), so the
    MACs saved by factorization are saved on the device too. Call
    `lrpet_tf.fold_batchnorm` first to merge BatchNormalization into the
    layers (the converter would otherwise fold it into an extra MUL/ADD).

    The file is what an Android app loads as is: a static batch of 1 by
    default (shapes `[1, H, W, C]`, no shape ops), one `serving_default`
    signature whose inputs carry the Keras input names and whose outputs
    carry the names of the model's output layers (the file's input and output
    tensors too, in the Keras model's order), optionally integer input and
    output tensors for integer-only accelerators, and optionally the TFLite
    metadata the Task Library and Android Studio's model binding read.

    Args:
        model: A Keras model (Functional, or Sequential with an input shape).
        path: Output file path; parent folders are created.
        quantization: None (float32), `"float16"` (weights in float16),
            `"dynamic"` (int8 weights, float activations) or `"int8"` (full
            integer; needs `representative_dataset` unless the model was
            trained with `prepare_qat`).
        representative_dataset: For `"int8"`: a numpy array (or list of
            arrays for several inputs) of typical inputs, a `tf.data.Dataset`
            of input batches, or a generator function yielding lists of input
            arrays (TFLite's convention). A few hundred examples suffice.
        verify: Run the file in the LiteRT interpreter and compare with the
            Keras model (`training=False`).
        verify_data: Inputs for verification (array, list of arrays); by
            default the first 64 representative examples, else random normal
            inputs of the model's input shapes. Any number of examples: a
            static-batch file runs them a batch at a time.
        tolerance: Override the allowed max error, relative to
            `max(1, max |Keras output|)`. Defaults: 1e-4 float32, 2e-2 float16,
            1e-1 dynamic; int8 checks arg-max agreement (>= 90%) and a max
            error of at most 32 steps of the output's int8 quantization.
        batch_size: The file's static batch (default 1, the mobile
            convention), or None for a dynamic batch (`[-1, H, W, C]`, which
            wraps FULLY_CONNECTED on rank >= 3 inputs in shape ops and which
            some runtimes refuse to allocate until it is set).
        io_type: For `quantization="int8"`: `"float32"` (float input and
            output around QUANTIZE / DEQUANTIZE ops), `"int8"` or `"uint8"`
            (integer input and output tensors, for integer-only accelerators
            such as the Edge TPU and NPUs behind NNAPI: the app quantizes
            inputs with the input tensor's scale and zero point and
            dequantizes outputs with the output's). Verification feeds such a
            file inputs quantized that way and compares dequantized outputs.
        metadata: An `lrpet_tf.export.ImageClassifierMetadata` (or a dict of
            its fields: `labels`, `mean`, `std`, `name`, `description`, ...)
            to write as TFLite image-classifier metadata, for a model with one
            image input and one `[batch, classes]` output. Written through the
            metadata flatbuffer schema (tflite-support's metadata writers do
            not install next to TensorFlow 2.21); the interpreter ignores it.

    Returns:
        An `ExportResult`.

    Raises:
        ValueError: A directory as `path`, unknown quantization or io_type, an integer io_type
            without int8, a batch_size that is not a positive int or None,
            metadata that does not fit the model (e.g. a label count other
            than the output size), or int8 without a representative dataset
            (all before any conversion work).
        TFLiteVerificationError: If the file disagrees with Keras beyond the
            tolerance (the file is still written, for inspection).

    Example:
        >>> result = lrpet_tf.export_tflite(compact, "saved_models/m.tflite")
        >>> result.op_count("CONV_2D"), result.max_error
        >>> lrpet_tf.export_tflite(
        ...     compact, "m_int8.tflite", quantization="int8", representative_dataset=x,
        ...     io_type="uint8", metadata={"labels": names, "mean": 0.0, "std": 255.0})
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"Expected `model` to be a Keras model. Received: model={model!r}")
    _check_path(path)
    if quantization not in QUANTIZATIONS:
        raise ValueError(
            f"Expected `quantization` to be one of {QUANTIZATIONS}. "
            f"Received: quantization={quantization!r}"
        )
    if io_type not in IO_TYPES:
        raise ValueError(f"Expected `io_type` in {IO_TYPES}. Received: io_type={io_type!r}")
    if io_type != "float32" and quantization != "int8":
        raise ValueError(
            f'An integer `io_type` needs full-integer quantization (quantization="int8"). '
            f"Received: io_type={io_type!r}, quantization={quantization!r}"
        )
    batch_size = check_int(
        batch_size,
        "batch_size",
        also=(None,),
        hint="the file's static batch; None: dynamic",
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
    if not _has_inputs(model):
        raise ValueError(
            f"Model {model.name!r} has no known inputs: export_tflite needs a Functional model "
            "or a Sequential model given an input shape. Wrap a subclassed model: "
            "`keras.Model(inputs, subclassed(inputs))`."
        )
    if metadata is not None:
        metadata = ImageClassifierMetadata.from_value(metadata)
        metadata.check_shapes(
            [tuple(t.shape) for t in tf.nest.flatten(model.inputs)],
            [tuple(t.shape) for t in tf.nest.flatten(model.outputs)],
        )
    check_number(tolerance, "tolerance", low=0, also=(None,))
    if verify and verify_data is not None:
        _check_arrays(model, verify_data, "verify_data")
    if representative_dataset is not None and not (
        callable(representative_dataset) or isinstance(representative_dataset, tf.data.Dataset)
    ):
        _check_arrays(model, representative_dataset, "representative_dataset")
    calibration = None if representative_dataset is None else _as_generator(representative_dataset)
    content = conversion.convert(model, batch_size, quantization, io_type, calibration)
    if metadata is not None:
        content = metadata.populate(content, default_name=model.name)
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
        batch_size=batch_size,
        io_type=io_type,
        input_names=list(tflite.input_names),
        output_names=list(tflite.output_names),
        metadata=None if metadata is None else ImageClassifierMetadata.read(content),
    )
    if verify:
        inputs = _verification_inputs(model, verify_data, calibration)
        _verify(model, tflite, inputs, result, tolerance)
    return result


def _has_inputs(model):
    try:
        return bool(tf.nest.flatten(model.inputs))
    except (AttributeError, ValueError):
        return False


def _check_path(path):
    """A file path whose folders exist or can be created, before any conversion."""
    path = os.fspath(path)
    if os.path.isdir(path) or not os.path.basename(path):
        raise ValueError(
            "Expected `path` to be the .tflite file to write, not a directory. "
            f"Received: path={path!r}"
        )
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent) and os.path.dirname(parent) != parent:
        parent = os.path.dirname(parent)  # up to the nearest existing ancestor
    if not os.path.isdir(parent):
        raise ValueError(
            f"Expected `path` in a folder, but {parent!r} is a file. Received: path={path!r}"
        )


def _check_arrays(model, data, argument):
    """Arrays for `model`'s inputs: one per input, at least one example, the input shapes."""
    arrays = [np.asarray(a) for a in _as_list(data)]
    specs = tf.nest.flatten(model.inputs)
    if len(arrays) != len(specs):
        raise ValueError(
            f"Expected `{argument}` to hold one array per model input ({len(specs)}). "
            f"Received: {len(arrays)} arrays of shapes {[a.shape for a in arrays]}"
        )
    for array, spec in zip(arrays, specs):
        if not fits_input(spec, array.shape) or len(array) == 0:
            raise ValueError(
                f"Expected `{argument}` to be a batch of at least one input of shape "
                f"{tuple(spec.shape)[1:]} (input {_keras.producing_layer(spec).name!r}). Received: "
                f"an array of shape {array.shape}"
            )


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
                f"{_keras.producing_layer(t).name!r} of shape {tuple(t.shape)}; pass "
                "`verify_data`."
            )
        inputs.append(rng.standard_normal((8,) + shape).astype(np.float32))
    return inputs


def _verify(model, tflite, inputs, result, tolerance):
    expected = [
        np.asarray(o)
        for o in tf.nest.flatten(model(inputs if len(inputs) > 1 else inputs[0], training=False))
    ]
    got = _as_list(tflite(inputs))
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
        steps = tflite.output_quantization_scales()
        result.max_error_steps = max(
            float(np.max(np.abs(g - e))) / step for g, e, step in zip(got, expected, steps) if step
        )
        result.tolerance = _INT8_MAX_STEPS * max(step for step in steps if step)
        failures = []
        if result.max_error_steps > _INT8_MAX_STEPS:
            failures.append(
                f"max error {result.max_error:.3g} ({result.max_error_steps:.3g} output "
                f"quantization steps) > {_INT8_MAX_STEPS} steps ({result.tolerance:.3g})"
            )
        if result.top1_agreement is not None and result.top1_agreement < _INT8_TOP1_AGREEMENT:
            failures.append(
                f"arg-max agreement {result.top1_agreement:.3f} < {_INT8_TOP1_AGREEMENT}"
            )
    else:
        bound = tolerance if tolerance is not None else _FLOAT_TOLERANCE[result.quantization]
        result.tolerance = bound * scale
        failures = []
        if not result.max_error <= result.tolerance:  # NaN fails too
            failures.append(f"max error {result.max_error:.3g} > tolerance {result.tolerance:.3g}")
    if failures:  # only the checks that failed, each with its bound
        raise TFLiteVerificationError(
            f"{result.path} disagrees with Keras model {model.name!r}: "
            + " and ".join(failures)
            + f" (quantization={result.quantization!r})."
        )
