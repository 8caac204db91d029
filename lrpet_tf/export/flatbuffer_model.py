"""A .tflite file read and edited through the TFLite flatbuffer schema."""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

import numpy as np
from ai_edge_litert import schema_py_generated as schema

__all__ = ["FlatbufferModel"]

_TFLITE_FILE_IDENTIFIER = b"TFL3"
# The schema aligns buffer data (weights) to 16 bytes (`force_align: 16`);
# the generated Python packer does not, so edited files re-align it.
_BUFFER_ALIGNMENT = 16
_OP_NAMES = {
    value: name
    for name, value in vars(schema.BuiltinOperator).items()
    if not name.startswith("_") and isinstance(value, int)
}
_TENSOR_TYPES = {
    schema.TensorType.FLOAT32: np.float32,
    schema.TensorType.FLOAT16: np.float16,
    schema.TensorType.FLOAT64: np.float64,
    schema.TensorType.INT8: np.int8,
    schema.TensorType.UINT8: np.uint8,
    schema.TensorType.INT16: np.int16,
    schema.TensorType.UINT16: np.uint16,
    schema.TensorType.INT32: np.int32,
    schema.TensorType.UINT32: np.uint32,
    schema.TensorType.INT64: np.int64,
    schema.TensorType.UINT64: np.uint64,
    schema.TensorType.BOOL: np.bool_,
    schema.TensorType.COMPLEX64: np.complex64,
    schema.TensorType.COMPLEX128: np.complex128,
}


class FlatbufferModel:
    """The contents of a .tflite file, read through the schema ai-edge-litert ships.

    Reads what the LiteRT interpreter would execute (ops in execution order,
    tensors with shapes, dtypes and quantization, signatures, metadata
    buffers) from the file itself, without the interpreter's private methods,
    and writes edited copies (tensor names, input/output order, metadata).

    Args:
        content: The bytes of a .tflite file (a file with associated files
            zipped after the flatbuffer, as TFLite metadata packs them, works).

    Example:
        >>> fb = FlatbufferModel(open("m.tflite", "rb").read())
        >>> fb.op_names()[:2], fb.signature()["outputs"]
        (['CONV_2D', 'CONV_2D'], {'head': 41})
    """

    def __init__(self, content: bytes | bytearray) -> None:
        self.content = bytes(content)
        if not schema.Model.ModelBufferHasIdentifier(self.content, 0):
            raise ValueError(
                "Expected the bytes of a .tflite file (flatbuffer identifier "
                f"{_TFLITE_FILE_IDENTIFIER!r}). Received {len(self.content)} bytes starting "
                f"with {self.content[:8]!r}."
            )
        self.model = schema.ModelT.InitFromPackedBuf(self.content, 0)

    def _subgraph(self, index):
        return self.model.subgraphs[index]

    def op_names(self, subgraph: int = 0) -> list[str]:
        """Op names of a subgraph in execution order (`CONV_2D`, ...; custom ops by their code)."""
        codes = self.model.operatorCodes
        names = []
        for op in self._subgraph(subgraph).operators or []:
            code = codes[op.opcodeIndex]
            builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
            if builtin == schema.BuiltinOperator.CUSTOM and code.customCode:
                names.append(_text(code.customCode))
            else:
                names.append(_OP_NAMES.get(builtin, f"BUILTIN_{builtin}"))
        return names

    def tensor(self, index: int, subgraph: int = 0) -> dict[str, Any]:
        """One tensor's details, as a dict.

        Keys: `index`, `name`, `shape` (with 1 for a dynamic dimension, as the
        interpreter allocates it), `shape_signature` (-1 for a dynamic
        dimension), `dtype` (a NumPy type, None for types NumPy lacks),
        `scale` and `zero_point` (per-tensor quantization, or 0.0 and 0 when
        there is none or it is per-channel), `scales` and `zero_points` (all
        of them, possibly empty).
        """
        tensor = self._subgraph(subgraph).tensors[index]
        signature = tensor.shapeSignature if tensor.shapeSignature is not None else tensor.shape
        signature = [int(d) for d in (signature if signature is not None else [])]
        scales, zero_points = [], []
        if tensor.quantization is not None:
            if tensor.quantization.scale is not None:
                scales = [float(s) for s in tensor.quantization.scale]
            if tensor.quantization.zeroPoint is not None:
                zero_points = [int(z) for z in tensor.quantization.zeroPoint]
        per_tensor = len(scales) == 1
        return {
            "index": int(index),
            "name": _text(tensor.name),
            "shape": [d if d >= 0 else 1 for d in signature],
            "shape_signature": signature,
            "dtype": _TENSOR_TYPES.get(tensor.type),
            "scale": scales[0] if per_tensor else 0.0,
            "zero_point": (zero_points[0] if zero_points else 0) if per_tensor else 0,
            "scales": scales,
            "zero_points": zero_points,
        }

    def tensors(self, subgraph: int = 0) -> list[dict[str, Any]]:
        """Details (see `tensor`) of every tensor of a subgraph."""
        count = len(self._subgraph(subgraph).tensors or [])
        return [self.tensor(i, subgraph) for i in range(count)]

    def input_indices(self, subgraph: int = 0) -> list[int]:
        """Tensor indices of the subgraph's inputs, in the file's order."""
        return [int(i) for i in self._subgraph(subgraph).inputs]

    def output_indices(self, subgraph: int = 0) -> list[int]:
        """Tensor indices of the subgraph's outputs, in the file's order."""
        return [int(i) for i in self._subgraph(subgraph).outputs]

    def signature(self, key: str | None = None) -> dict[str, Any]:
        """A signature: `{"key", "subgraph", "inputs": {name: index}, "outputs": {...}}`.

        Args:
            key: The signature key (default: the first signature). A file
                without signatures gets one made from the subgraph's inputs
                and outputs, keyed by tensor name.
        """
        defs = self.model.signatureDefs or []
        if not defs:
            return {
                "key": None,
                "subgraph": 0,
                "inputs": {self.tensor(i)["name"]: i for i in self.input_indices()},
                "outputs": {self.tensor(i)["name"]: i for i in self.output_indices()},
            }
        for signature in defs:
            if key is None or _text(signature.signatureKey) == key:
                return {
                    "key": _text(signature.signatureKey),
                    "subgraph": int(signature.subgraphIndex),
                    "inputs": {_text(m.name): int(m.tensorIndex) for m in signature.inputs or []},
                    "outputs": {_text(m.name): int(m.tensorIndex) for m in signature.outputs or []},
                }
        keys = [_text(s.signatureKey) for s in defs]
        raise ValueError(f"Expected `key` in {keys}. Received: key={key!r}")

    def dequantized_from(self, subgraph: int = 0) -> dict[int, int]:
        """Dict: output tensor index of each DEQUANTIZE op -> its (integer) input's index."""
        names = self.op_names(subgraph)
        return {
            int(op.outputs[0]): int(op.inputs[0])
            for op, name in zip(self._subgraph(subgraph).operators or [], names)
            if name == "DEQUANTIZE"
        }

    def metadata_buffer(self, name: str) -> bytes | None:
        """The bytes of the metadata entry `name` (e.g. "TFLITE_METADATA"), or None."""
        for entry in self.model.metadata or []:
            if _text(entry.name) == name:
                data = self.model.buffers[entry.buffer].data
                return None if data is None else np.asarray(data, np.uint8).tobytes()
        return None

    def edited(
        self,
        tensor_names: Mapping[int, str] | None = None,
        input_order: Sequence[int] | None = None,
        output_order: Sequence[int] | None = None,
        metadata: Mapping[str, bytes] | None = None,
    ) -> bytes:
        """A copy of the flatbuffer with some parts changed, as bytes.

        Associated files zipped after the flatbuffer are not carried over.

        Args:
            tensor_names: Dict tensor index (subgraph 0) -> new name.
            input_order, output_order: New order of subgraph 0's input or
                output tensor indices (the same indices, permuted).
            metadata: Dict name -> bytes of metadata entries to add or
                replace (as TFLite metadata stores its flatbuffer).

        Returns:
            The bytes of the edited .tflite flatbuffer.
        """
        model = schema.ModelT.InitFromPackedBuf(bytearray(self.content), 0)
        subgraph = model.subgraphs[0]
        for index, name in (tensor_names or {}).items():
            subgraph.tensors[index].name = name
        for attribute, order in (("inputs", input_order), ("outputs", output_order)):
            if order is None:
                continue
            current = [int(i) for i in getattr(subgraph, attribute)]
            if sorted(current) != sorted(int(i) for i in order):
                raise ValueError(
                    f"Expected a permutation of the {attribute} {current}. Received: {list(order)}"
                )
            setattr(subgraph, attribute, [int(i) for i in order])
        for name, data in (metadata or {}).items():
            _set_metadata(model, name, data)
        if any(buffer.offset for buffer in model.buffers or []):
            raise ValueError(
                "This .tflite file keeps its weights outside the flatbuffer (a model over "
                "2 GB); editing it is not supported."
            )
        model.buffers = [_AlignedBuffer.of(buffer) for buffer in model.buffers or []]
        builder = _new_builder(len(self.content))
        builder.Finish(model.Pack(builder), file_identifier=_TFLITE_FILE_IDENTIFIER)
        return bytes(builder.Output())


def _new_builder(size):
    import flatbuffers

    return flatbuffers.Builder(size + 1024)


def _set_metadata(model, name, data):
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(bytes(data), np.uint8)
    model.metadata = model.metadata or []
    for entry in model.metadata:
        if _text(entry.name) == name:
            model.buffers[entry.buffer] = buffer
            return
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name = name
    entry.buffer = len(model.buffers) - 1
    model.metadata.append(entry)


class _AlignedBuffer(schema.BufferT):
    """A `BufferT` that packs its data 16-byte aligned, as the schema asks."""

    @classmethod
    def of(cls, buffer):
        aligned = cls()
        aligned.__dict__.update(vars(buffer))
        return aligned

    def Pack(self, builder):  # noqa: N802 - the generated code's name
        data = None
        if self.data is not None:
            payload = np.ascontiguousarray(np.asarray(self.data, np.uint8).reshape(-1))
            # Pad so that the vector's bytes start on the boundary; the
            # vector's own preparation then adds nothing.
            builder.Prep(_BUFFER_ALIGNMENT, payload.size)
            data = builder.CreateNumpyVector(payload)
        schema.BufferStart(builder)
        if data is not None:
            schema.BufferAddData(builder, data)
        schema.BufferAddOffset(builder, self.offset)
        schema.BufferAddSize(builder, self.size)
        return schema.BufferEnd(builder)


def _text(value):
    if value is None:
        return None
    return value.decode("utf-8") if isinstance(value, (bytes, bytearray)) else str(value)
