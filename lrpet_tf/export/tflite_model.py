"""Running a .tflite file with the LiteRT interpreter (ai_edge_litert)."""

import collections
import os

import numpy as np

__all__ = ["TFLiteModel"]


class TFLiteModel:
    """A .tflite model loaded in `ai_edge_litert.interpreter.Interpreter`.

    On CPU the interpreter applies the XNNPACK delegate, as on Android.

    Args:
        model: Path to a .tflite file, or its bytes.
        num_threads: Interpreter threads (1 is the usual phone benchmark).

    Example:
        >>> tfl = TFLiteModel("saved_models/m.tflite")
        >>> tfl.op_names()
        ['CONV_2D', 'CONV_2D', ...]
        >>> y = tfl(x)   # numpy in, numpy out, any batch size
    """

    def __init__(self, model, num_threads=1):
        if isinstance(model, (str, os.PathLike)):
            self.path = os.fspath(model)
            with open(self.path, "rb") as f:
                self.content = f.read()
        else:
            self.path = None
            self.content = bytes(model)
        self.num_threads = num_threads
        self._interpreter = self.new_interpreter()
        self._runner = self._interpreter.get_signature_runner()
        signature = next(iter(self._interpreter.get_signature_list().values()))
        self.input_names = list(signature["inputs"])
        self.output_names = _ordered_outputs(signature["outputs"])

    def new_interpreter(self):
        """A fresh `ai_edge_litert.interpreter.Interpreter` for this model."""
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter(model_content=self.content, num_threads=self.num_threads)

    def op_names(self):
        """Builtin op names of the model's main graph, in execution order."""
        return [op["op_name"] for op in self._interpreter._get_ops_details()]

    def op_counts(self):
        """`collections.Counter` of op names."""
        return collections.Counter(self.op_names())

    def output_quantization_scales(self, output_names=None):
        """Per output (in the order `__call__` returns them), its int8 step.

        For a float-I/O integer model, the scale of the int8 tensor each
        float output is dequantized from; for an integer output, its own
        scale; None for an output computed in float.
        """
        interpreter = self._interpreter
        tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
        dequantized_from = {
            int(op["outputs"][0]): int(op["inputs"][0])
            for op in interpreter._get_ops_details()
            if op["op_name"] == "DEQUANTIZE"
        }
        by_name = dict(self._runner.get_output_details().items())
        scales = []
        for name in self._output_order(output_names, by_name):
            index = by_name[name]["index"]
            scale = tensors[dequantized_from.get(index, index)]["quantization"][0]
            scales.append(float(scale) if scale else None)
        return scales

    def input_details(self):
        """The interpreter's input tensor details (name, shape, dtype, quantization)."""
        return self._interpreter.get_input_details()

    def __call__(self, inputs, input_names=None, output_names=None):
        """Runs the model on a batch.

        Args:
            inputs: One array, a list of arrays (in the Keras model's input
                order, given by `input_names`), or a dict name -> array.
            input_names: Keras input names for a list of arrays.
            output_names: Keras output names, to order the outputs when the
                file names them by layer (tf_keras); files written from Keras 3
                name them `output_0`, `output_1`, ... in Keras's order.

        Returns:
            One array, or a list of arrays in the model's output order.
        """
        if isinstance(inputs, dict):
            feed = dict(inputs)
        else:
            arrays = inputs if isinstance(inputs, (list, tuple)) else [inputs]
            names = list(input_names) if input_names else self.input_names
            if len(arrays) != len(names):
                raise ValueError(
                    f"The .tflite model has {len(self.input_names)} inputs "
                    f"{self.input_names}; received {len(arrays)} arrays."
                )
            feed = dict(zip(names, arrays))
        feed = {
            name: np.asarray(value, dtype=self._input_dtype(name)) for name, value in feed.items()
        }
        outputs = self._runner(**feed)
        result = [outputs[name] for name in self._output_order(output_names, outputs)]
        return result[0] if len(result) == 1 else result

    def _output_order(self, output_names, available):
        if output_names and set(output_names) == set(available):
            return list(output_names)
        return self.output_names

    def _input_dtype(self, name):
        for detail in self._runner.get_input_details().items():
            if detail[0] == name:
                return detail[1]["dtype"]
        return np.float32


def _ordered_outputs(names):
    def index(name):
        prefix, _, number = name.rpartition("_")
        return (0, int(number)) if prefix == "output" and number.isdigit() else (1, name)

    return sorted(names, key=index)
