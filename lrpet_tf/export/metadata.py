"""TFLite image-classifier metadata (normalization, labels, name) in a .tflite file."""

from __future__ import annotations

import dataclasses
import io
import numbers
import os
import zipfile
from collections.abc import Sequence
from typing import Any

import flatbuffers

from lrpet_tf.export.flatbuffer_model import FlatbufferModel
from lrpet_tf.export.third_party import tflite_metadata_schema as schema
from lrpet_tf.ops.arguments import check_number

__all__ = ["ImageClassifierMetadata"]

METADATA_NAME = "TFLITE_METADATA"  # the model metadata entry TFLite tools look up
_METADATA_IDENTIFIER = b"M001"
# The oldest metadata parser that reads every field written here (metadata
# schema 1.0.0: tensor content, normalization, stats, associated label files).
_MIN_PARSER_VERSION = "1.0.0"
LABELS_FILE = "labels.txt"
_COLOR_SPACES = {1: schema.ColorSpaceType.GRAYSCALE, 3: schema.ColorSpaceType.RGB}


@dataclasses.dataclass(frozen=True)
class ImageClassifierMetadata:
    """Image-classifier metadata for a .tflite file, as the TFLite Task Library reads it.

    What the TFLite metadata writers (tflite-support) write for an image
    classifier, written here through the metadata flatbuffer schema (the
    metadata writers cannot be installed next to TensorFlow 2.21): a
    `TFLITE_METADATA` entry with the model's name and description, the input
    image's normalization (`(pixel - mean) / std`) and color space, and the
    output's label file (`labels.txt`, one name a line, packed in a zip
    archive appended to the flatbuffer). The TFLite Task Library's
    `ImageClassifier` and Android Studio's ML model binding use it; the
    LiteRT interpreter ignores it, so the file runs as before. (The Task
    Library's `ImageClassifier` takes RGB inputs `[1, H, W, 3]` with float32
    or uint8 tensors only; a grayscale model's metadata says GRAYSCALE, for
    the app's own code.)

    Pass one to `export_tflite(..., metadata=...)` (or a dict of its fields),
    or add it to an existing file with `populate`.

    Args:
        labels: Class names, one per output unit (strings without line breaks).
            None: no label file.
        mean: Per-channel (or one shared) mean subtracted from raw pixel values.
        std: Per-channel (or one shared) divisor, after the mean.
        name: Model name (default at export: the Keras model's name).
        description: What the model does.
        version, author, license: Optional model information.

    Raises:
        ValueError: If a field has the wrong type or value (an empty label,
            `std` <= 0, `mean` and `std` of different lengths).

    Example:
        >>> metadata = ImageClassifierMetadata(
        ...     labels=[str(d) for d in range(10)], mean=0.0, std=16.0, name="digits")
        >>> lrpet_tf.export_tflite(model, "digits.tflite", metadata=metadata)
        >>> ImageClassifierMetadata.read("digits.tflite").labels[:3]
        ('0', '1', '2')
    """

    labels: Sequence[str] | None = None
    mean: float | Sequence[float] = (0.0,)
    std: float | Sequence[float] = (1.0,)
    name: str | None = None
    description: str | None = None
    version: str | None = None
    author: str | None = None
    license: str | None = None

    def __post_init__(self) -> None:
        if self.labels is not None:
            labels = [self.labels] if isinstance(self.labels, str) else list(self.labels)
            if not labels or not all(
                isinstance(label, str) and label.strip() and "\n" not in label for label in labels
            ):
                raise ValueError(
                    "Expected `labels` to be a non-empty list of non-empty names without line "
                    f"breaks. Received: labels={self.labels!r}"
                )
            object.__setattr__(self, "labels", tuple(labels))
        for field in ("mean", "std"):
            object.__setattr__(self, field, _floats(field, getattr(self, field)))
        if any(s <= 0 for s in self.std):
            raise ValueError(f"Expected every `std` > 0. Received: std={self.std}")
        if len(self.mean) != len(self.std) and 1 not in (len(self.mean), len(self.std)):
            raise ValueError(
                "Expected `mean` and `std` of the same length (or one of them a single value). "
                f"Received: mean={self.mean}, std={self.std}"
            )
        for field in ("name", "description", "version", "author", "license"):
            value = getattr(self, field)
            if value is not None and not isinstance(value, str):
                raise ValueError(f"Expected `{field}` to be a string. Received: {field}={value!r}")

    @classmethod
    def from_value(cls, value: ImageClassifierMetadata | dict[str, Any]) -> ImageClassifierMetadata:
        """`value` itself, or one made from a dict of fields; the argument named `metadata`."""
        if isinstance(value, cls):
            return value
        if isinstance(value, dict):
            unknown = sorted(set(value) - {f.name for f in dataclasses.fields(cls)})
            if unknown:
                raise ValueError(
                    f"Unknown `metadata` fields {unknown}; expected some of "
                    f"{[f.name for f in dataclasses.fields(cls)]}."
                )
            return cls(**value)
        raise ValueError(
            "Expected `metadata` to be an ImageClassifierMetadata or a dict of its fields. "
            f"Received: metadata={value!r}"
        )

    def check_shapes(
        self,
        input_shapes: Sequence[Sequence[int | None]],
        output_shapes: Sequence[Sequence[int | None]],
    ) -> None:
        """Raises ValueError unless the model is one image in, one score vector out.

        Args:
            input_shapes, output_shapes: Shapes of the model's inputs and
                outputs (`[batch, height, width, channels]` and
                `[batch, classes]`; the batch may be None or -1).
        """
        if len(input_shapes) != 1 or len(input_shapes[0]) != 4:
            raise ValueError(
                "Image-classifier `metadata` needs a model with one image input "
                f"[batch, height, width, channels]. Received input shapes: {input_shapes}"
            )
        if len(output_shapes) != 1 or len(output_shapes[0]) != 2:
            raise ValueError(
                "Image-classifier `metadata` needs a model with one output [batch, classes]. "
                f"Received output shapes: {output_shapes}"
            )
        channels, classes = input_shapes[0][-1], output_shapes[0][-1]
        for field in ("mean", "std"):
            values = getattr(self, field)
            if len(values) not in (1, channels):
                raise ValueError(
                    f"Expected `metadata.{field}` to have 1 or {channels} (channels) values. "
                    f"Received: {field}={values}"
                )
        if self.labels is not None and len(self.labels) != classes:
            raise ValueError(
                f"Expected `metadata.labels` to have one name per output unit ({classes}). "
                f"Received: {len(self.labels)} labels"
            )

    def populate(self, content: bytes, default_name: str | None = None) -> bytes:
        """Returns the .tflite bytes `content` with this metadata (and its label file) in it.

        Existing metadata and associated files of `content` are replaced.

        Args:
            content: The bytes of a .tflite file with one image input and one
                `[batch, classes]` output.
            default_name: The model name to write when `name` is None.

        Returns:
            The new file's bytes.
        """
        model = FlatbufferModel(content)
        signature = model.signature()
        inputs = [model.tensor(i) for i in model.input_indices()]
        outputs = [model.tensor(i) for i in model.output_indices()]
        self.check_shapes(
            [t["shape_signature"] for t in inputs], [t["shape_signature"] for t in outputs]
        )
        buffer = self._flatbuffer(inputs[0], outputs[0], signature, default_name)
        flat = model.edited(metadata={METADATA_NAME: buffer})
        if self.labels is None:
            return flat
        archive = io.BytesIO(flat)
        archive.seek(0, os.SEEK_END)
        with zipfile.ZipFile(archive, "a", compression=zipfile.ZIP_STORED) as files:
            files.writestr(LABELS_FILE, "".join(f"{label}\n" for label in self.labels))
        return archive.getvalue()

    @classmethod
    def read(cls, model: str | os.PathLike[str] | bytes) -> ImageClassifierMetadata | None:
        """The image-classifier metadata of a .tflite file, or None if it has none.

        Args:
            model: A .tflite path or its bytes.

        Returns:
            An `ImageClassifierMetadata` with what the file holds (labels from
            its packed label file).
        """
        if isinstance(model, (str, os.PathLike)):
            with open(model, "rb") as f:
                model = f.read()
        content = bytes(model)
        buffer = FlatbufferModel(content).metadata_buffer(METADATA_NAME)
        if buffer is None:
            return None
        if not schema.ModelMetadata.ModelMetadataBufferHasIdentifier(buffer, 0):
            raise ValueError(f"The {METADATA_NAME} entry is not a TFLite metadata flatbuffer.")
        metadata = schema.ModelMetadataT.InitFromPackedBuf(buffer, 0)
        subgraph = metadata.subgraphMetadata[0]
        image, scores = subgraph.inputTensorMetadata[0], subgraph.outputTensorMetadata[0]
        mean, std = (0.0,), (1.0,)
        for unit in image.processUnits or []:
            if unit.optionsType == schema.ProcessUnitOptions.NormalizationOptions:
                mean, std = tuple(unit.options.mean), tuple(unit.options.std)
        labels = None
        for file in scores.associatedFiles or []:
            if file.type == schema.AssociatedFileType.TENSOR_AXIS_LABELS:
                with zipfile.ZipFile(io.BytesIO(content)) as files:
                    text = files.read(_text(file.name)).decode("utf-8")
                labels = tuple(line for line in text.splitlines() if line)
        return cls(
            labels=labels,
            mean=mean,
            std=std,
            **{
                field: _text(getattr(metadata, field))
                for field in ("name", "description", "version", "author", "license")
            },
        )

    def _flatbuffer(self, image, scores, signature, default_name):
        """The metadata flatbuffer (identifier M001) for input `image`, output `scores`."""
        names = {index: name for name, index in signature["inputs"].items()}
        names.update({index: name for name, index in signature["outputs"].items()})
        model = schema.ModelMetadataT()
        model.name = self.name or default_name or "ImageClassifier"
        model.description = self.description
        model.version, model.author, model.license = self.version, self.author, self.license
        model.minParserVersion = _MIN_PARSER_VERSION

        def tensor_metadata(tensor, description, properties_type, properties):
            metadata = schema.TensorMetadataT()
            metadata.name = names.get(tensor["index"], tensor["name"])
            metadata.description = description
            metadata.content = schema.ContentT()
            metadata.content.contentPropertiesType = properties_type
            metadata.content.contentProperties = properties
            metadata.stats = _uint8_stats(tensor)
            return metadata

        image_properties = schema.ImagePropertiesT()
        image_properties.colorSpace = _COLOR_SPACES.get(
            image["shape_signature"][-1], schema.ColorSpaceType.UNKNOWN
        )
        image_md = tensor_metadata(
            image,
            "Input image to be classified.",
            schema.ContentProperties.ImageProperties,
            image_properties,
        )
        normalization = schema.ProcessUnitT()
        normalization.optionsType = schema.ProcessUnitOptions.NormalizationOptions
        normalization.options = schema.NormalizationOptionsT()
        normalization.options.mean = list(self.mean)
        normalization.options.std = list(self.std)
        image_md.processUnits = [normalization]
        scores_md = tensor_metadata(
            scores,
            "Scores of the labels (the Keras model's output).",
            schema.ContentProperties.FeatureProperties,
            schema.FeaturePropertiesT(),
        )
        if self.labels is not None:
            labels = schema.AssociatedFileT()
            labels.name = LABELS_FILE
            labels.description = "Labels for categories that the model can recognize."
            labels.type = schema.AssociatedFileType.TENSOR_AXIS_LABELS
            scores_md.associatedFiles = [labels]

        subgraph = schema.SubGraphMetadataT()
        subgraph.inputTensorMetadata = [image_md]
        subgraph.outputTensorMetadata = [scores_md]
        model.subgraphMetadata = [subgraph]
        builder = flatbuffers.Builder(1024)
        builder.Finish(model.Pack(builder), _METADATA_IDENTIFIER)
        return bytes(builder.Output())


def _uint8_stats(tensor):
    """Value range [0, 255] of a uint8 tensor (as the metadata writers record it), else None."""
    if tensor["dtype"] is None or tensor["dtype"].__name__ != "uint8":
        return None
    stats = schema.StatsT()
    stats.min, stats.max = [0.0], [255.0]
    return stats


def _floats(field, value):
    values = [value] if isinstance(value, numbers.Real) else list(value)
    if not values or not all(
        isinstance(v, numbers.Real) and not isinstance(v, bool) for v in values
    ):
        raise ValueError(
            f"Expected `{field}` to be a number or a list of numbers (one per channel). "
            f"Received: {field}={value!r}"
        )
    return tuple(
        check_number(v, field if len(values) == 1 else f"{field}[{i}]")
        for i, v in enumerate(values)
    )


def _text(value):
    if value is None:
        return None
    return value.decode("utf-8") if isinstance(value, (bytes, bytearray)) else str(value)
