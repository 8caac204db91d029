"""Running a .tflite file with the LiteRT interpreter (ai_edge_litert)."""

from __future__ import annotations

import collections
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from lrpet_tf.export.flatbuffer_model import FlatbufferModel
from lrpet_tf.ops.arguments import check_int

if TYPE_CHECKING:  # imported when an interpreter is made, not with this module
    from ai_edge_litert.interpreter import Interpreter

__all__ = ["TFLiteModel"]


class TFLiteModel:
    """A .tflite model loaded in `ai_edge_litert.interpreter.Interpreter`.

    On CPU the interpreter applies the XNNPACK delegate, as on Android. Calls
    take and return real values whatever the file's I/O types: float inputs
    are quantized with an integer input tensor's scale and zero point, and
    integer outputs are dequantized. A file with a static batch runs any
    number of examples a batch at a time. The op list and tensor details come
    from the flatbuffer itself (`FlatbufferModel`, the TFLite schema).

    Args:
        model: Path to a .tflite file, or its bytes.
        num_threads: Interpreter threads (1 is the usual phone benchmark).

    Example:
        >>> tfl = TFLiteModel("saved_models/m.tflite")
        >>> tfl.op_names()
        ['CONV_2D', 'CONV_2D', ...]
        >>> y = tfl(x)   # numpy in, numpy out, any number of examples
    """

    def __init__(self, model: str | os.PathLike[str] | bytes, num_threads: int = 1) -> None:
        if isinstance(model, (str, os.PathLike)):
            self.path: str | None = os.fspath(model)
            with open(self.path, "rb") as f:
                self.content = f.read()
        elif isinstance(model, (bytes, bytearray, memoryview)):
            self.path = None
            self.content = bytes(model)
        else:
            raise TypeError(
                "Expected `model` to be a .tflite path or its bytes (for a Keras model, "
                f"lrpet_tf.export_tflite it first). Received: model={model!r}"
            )
        check_int(num_threads, "num_threads", also=(-1,), hint="-1: the runtime's choice")
        self.num_threads = int(num_threads)
        self.flatbuffer = FlatbufferModel(self.content)
        signature = self.flatbuffer.signature()
        by_index = {index: name for name, index in signature["inputs"].items()}
        self.input_names = [
            by_index[i] for i in self.flatbuffer.input_indices() if i in by_index
        ] or list(signature["inputs"])
        by_index = {index: name for name, index in signature["outputs"].items()}
        self.output_names = [
            by_index[i] for i in self.flatbuffer.output_indices() if i in by_index
        ] or _ordered_outputs(signature["outputs"])
        self._inputs = {n: self.flatbuffer.tensor(i) for n, i in signature["inputs"].items()}
        self._outputs = {n: self.flatbuffer.tensor(i) for n, i in signature["outputs"].items()}
        self._signature_key = signature["key"]
        self._interpreter = self.new_interpreter()
        self._runner = self._interpreter.get_signature_runner(self._signature_key)

    def new_interpreter(self) -> Interpreter:
        """A fresh `ai_edge_litert.interpreter.Interpreter` for this model."""
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter(model_content=self.content, num_threads=self.num_threads)

    @property
    def batch_size(self) -> int | None:
        """The static batch of the inputs, or None when it is dynamic."""
        batches = {t["shape_signature"][0] for t in self._inputs.values() if t["shape_signature"]}
        if len(batches) != 1 or min(batches) < 1:
            return None
        return batches.pop()

    def op_names(self) -> list[str]:
        """Builtin op names of the model's main graph, in execution order."""
        return self.flatbuffer.op_names()

    def op_counts(self) -> collections.Counter[str]:
        """`collections.Counter` of op names."""
        return collections.Counter(self.op_names())

    def input_tensors(self) -> dict[str, dict[str, Any]]:
        """Dict input name -> tensor details (see `FlatbufferModel.tensor`), in order."""
        return {name: self._inputs[name] for name in self.input_names}

    def output_tensors(self) -> dict[str, dict[str, Any]]:
        """Dict output name -> tensor details (see `FlatbufferModel.tensor`), in order."""
        return {name: self._outputs[name] for name in self.output_names}

    def output_quantization_scales(
        self, output_names: Sequence[str] | None = None
    ) -> list[float | None]:
        """Per output (in the order `__call__` returns them), its int8 step.

        For a float-I/O integer model, the scale of the int8 tensor each
        float output is dequantized from; for an integer output, its own
        scale; None for an output computed in float.
        """
        dequantized_from = self.flatbuffer.dequantized_from()
        scales = []
        for name in self._output_order(output_names, self._outputs):
            index = self._outputs[name]["index"]
            scale = self.flatbuffer.tensor(dequantized_from.get(index, index))["scale"]
            scales.append(float(scale) if scale else None)
        return scales

    def input_details(self) -> list[dict[str, Any]]:
        """The interpreter's input tensor details (name, shape, dtype, quantization)."""
        return self._interpreter.get_input_details()

    def __call__(
        self,
        inputs: ArrayLike | Sequence[ArrayLike] | dict[str, ArrayLike],
        input_names: Sequence[str] | None = None,
        output_names: Sequence[str] | None = None,
        dequantize: bool = True,
    ) -> np.ndarray | list[np.ndarray]:
        """Runs the model on a batch of any size.

        Args:
            inputs: One array, a list of arrays (in the model's input order,
                or the order of `input_names`), or a dict name -> array. Float
                arrays for an integer input are quantized with its scale and
                zero point; arrays of the input's own integer dtype are fed
                as they are.
            input_names: Input names for a list of arrays.
            output_names: Output names, to order the outputs (default: the
                file's order, which is the Keras model's for files written by
                `export_tflite`).
            dequantize: Return integer outputs as real values (scale and zero
                point applied); False returns the raw integers.

        Returns:
            One array, or a list of arrays in the model's output order.
        """
        if isinstance(inputs, dict):
            feed: dict[str, Any] = dict(inputs)
        else:
            arrays = inputs if isinstance(inputs, (list, tuple)) else [inputs]
            names = list(input_names) if input_names else self.input_names
            if len(arrays) != len(names):
                raise ValueError(
                    f"The .tflite model has {len(self.input_names)} inputs "
                    f"{self.input_names}; received {len(arrays)} arrays."
                )
            feed = dict(zip(names, arrays))
        feed = {name: self._quantized(name, value) for name, value in feed.items()}
        order = self._output_order(output_names, self._outputs)
        outputs = self._run(feed)
        result = [
            _dequantized(outputs[name], self._outputs[name]) if dequantize else outputs[name]
            for name in order
        ]
        return result[0] if len(result) == 1 else result

    def _run(self, feed):
        """Runs the signature; a static-batch file gets the examples a batch at a time."""
        batch = self.batch_size
        count = len(next(iter(feed.values())))
        if batch is None or count == batch:
            return self._runner(**feed)
        chunks = []
        for start in range(0, count, batch):
            chunk = {}
            for name, value in feed.items():
                part = value[start : start + batch]
                if len(part) < batch:  # pad the last batch with copies of its last example
                    part = np.concatenate([part, np.repeat(part[-1:], batch - len(part), 0)])
                chunk[name] = part
            chunks.append(self._runner(**chunk))
        outputs = {}
        for name in chunks[0]:
            if np.ndim(chunks[0][name]) == 0 or np.shape(chunks[0][name])[0] != batch:
                raise ValueError(
                    f"Output {name!r} of shape {np.shape(chunks[0][name])} has no batch "
                    f"dimension of {batch}; run it one batch of {batch} examples at a time."
                )
            outputs[name] = np.concatenate([c[name] for c in chunks])[:count]
        return outputs

    def _quantized(self, name, value):
        tensor = self._inputs.get(name)
        if tensor is None:
            raise ValueError(f"Unknown input {name!r}; the file's inputs are {self.input_names}.")
        dtype = np.dtype(tensor["dtype"] or np.float32)
        value = np.asarray(value)
        if value.dtype == dtype:
            return value
        if np.issubdtype(dtype, np.integer) and tensor["scale"]:
            limits = np.iinfo(dtype)
            scaled = np.round(value.astype(np.float64) / tensor["scale"] + tensor["zero_point"])
            return np.clip(scaled, limits.min, limits.max).astype(dtype)
        return value.astype(dtype)

    def _output_order(self, output_names, available):
        if output_names and set(output_names) == set(available):
            return list(output_names)
        return self.output_names


def _dequantized(value, tensor):
    if np.issubdtype(np.asarray(value).dtype, np.integer) and tensor["scale"]:
        return ((value.astype(np.float32) - tensor["zero_point"]) * tensor["scale"]).astype(
            np.float32
        )
    return value


def _ordered_outputs(names):
    def index(name):
        prefix, _, number = name.rpartition("_")
        return (0, int(number)) if prefix == "output" and number.isdigit() else (1, name)

    return sorted(names, key=index)
