"""export_tflite: the file runs in LiteRT, keeps factorized ops and matches Keras."""

import collections
import contextlib
import importlib
import io
import logging
import os
import re
import zipfile

import numpy as np
import pytest
import tensorflow as tf
import testing_models as tm
from ai_edge_litert.interpreter import Interpreter

import lrpet_tf
from lrpet_tf import _keras
from lrpet_tf._keras import keras
from lrpet_tf.export import FlatbufferModel
from lrpet_tf.export import ImageClassifierMetadata
from lrpet_tf.export.third_party import tflite_metadata_schema

# The module, not the function of the same name the package exports.
export_tflite_module = importlib.import_module("lrpet_tf.export.export_tflite")

L = keras.layers
SHAPE_OPS = {"SHAPE", "PACK", "GATHER", "STRIDED_SLICE", "REDUCE_PROD", "CONCATENATION"}


@pytest.fixture(scope="module")
def compact_model():
    keras.utils.set_random_seed(0)
    model = tm.randomize_batchnorm(tm.residual_cnn(width=32, dense_hidden=True))
    cb = lrpet_tf.LRPET(prune_ratio=0.6, layer_types=("conv", "dense"), verbose=0)
    cb.set_model(model)
    cb.prepare(model)
    cb.project()
    compact = lrpet_tf.fold_batchnorm(lrpet_tf.factorize(model, ranks=cb))
    return model, compact


def test_float32_export_keeps_two_ops_per_factorized_layer(compact_model, tmp_path):
    model, compact = compact_model
    x, _ = tm.classification_data(32)
    result = lrpet_tf.export_tflite(compact, tmp_path / "m.tflite", verify_data=x)
    assert os.path.getsize(result.path) == result.size_bytes
    # 4 convs -> 8 CONV_2D; hidden and head Dense -> 4 FULLY_CONNECTED.
    assert result.op_count("CONV_2D") == 8
    assert result.op_count("FULLY_CONNECTED") == 4
    assert "MUL" not in result.ops  # BN was folded, not converted
    assert result.max_error < 1e-4
    got = lrpet_tf.TFLiteModel(result.path)(x)
    np.testing.assert_allclose(got, np.asarray(model(x, training=False)), atol=1e-4)


def test_export_is_quiet(compact_model, tmp_path, capfd):
    _, compact = compact_model
    lrpet_tf.export_tflite(compact, tmp_path / "m.tflite")
    captured = capfd.readouterr()
    assert "Saved artifact" not in captured.out + captured.err


class _Records(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.fixture
def root_handlers():
    """Lets a test set the root logger's handlers (pytest's own are put back after)."""
    root = logging.getLogger()
    saved = root.handlers[:]
    yield root
    root.handlers[:] = saved


def test_logging_keeps_working_after_export_in_a_plain_script(
    compact_model, tmp_path, capsys, root_handlers
):
    # A plain script or notebook: no handler on the root logger. TensorFlow
    # logs through absl during conversion, and absl calls logging.basicConfig()
    # when the root has no handler: inside the stderr redirect, that bound the
    # root handler to the discarded buffer and every later warning vanished.
    _, compact = compact_model
    root_handlers.handlers[:] = []
    lrpet_tf.export_tflite(compact, tmp_path / "m.tflite")
    assert root_handlers.handlers == []
    logging.getLogger("lrpet_tf.test").warning("a warning after export_tflite")
    assert "a warning after export_tflite" in capsys.readouterr().err


def test_logging_handler_installed_before_export_still_gets_warnings(
    compact_model, tmp_path, root_handlers
):
    _, compact = compact_model
    records = _Records()
    root_handlers.handlers[:] = [records]
    lrpet_tf.export_tflite(compact, tmp_path / "m.tflite", quantization="dynamic")
    assert root_handlers.handlers == [records]
    logging.getLogger("lrpet_tf").warning("has no layers to project")
    assert records.messages[-1] == "has no layers to project"


@pytest.mark.parametrize("quantization", ["float16", "dynamic", "int8"])
def test_quantized_exports_verify_and_shrink(compact_model, tmp_path, quantization):
    _, compact = compact_model
    x, _ = tm.classification_data(128)
    float_size = lrpet_tf.export_tflite(compact, tmp_path / "f.tflite", verify=False).size_bytes
    result = lrpet_tf.export_tflite(
        compact,
        tmp_path / f"{quantization}.tflite",
        quantization=quantization,
        representative_dataset=x if quantization == "int8" else None,
    )
    assert result.max_error <= result.tolerance
    assert result.size_bytes < float_size
    if quantization == "int8":
        assert result.top1_agreement >= 0.9
        assert "QUANTIZE" in result.ops and result.op_count("CONV_2D") == 8


def test_representative_dataset_forms(compact_model, tmp_path):
    _, compact = compact_model
    x, y = tm.classification_data(64)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    result = lrpet_tf.export_tflite(
        compact, tmp_path / "ds.tflite", quantization="int8", representative_dataset=ds
    )
    assert result.top1_agreement is not None


def test_verification_failure_is_raised(compact_model, tmp_path):
    _, compact = compact_model
    with pytest.raises(
        lrpet_tf.TFLiteVerificationError, match=r"disagrees.*: max error \S+ > tolerance 1e-09"
    ):
        lrpet_tf.export_tflite(
            compact, tmp_path / "d.tflite", quantization="dynamic", tolerance=1e-9
        )


def test_int8_verification_names_only_the_check_that_failed(compact_model, tmp_path, monkeypatch):
    _, compact = compact_model
    x, _ = tm.classification_data(128)
    # An arg-max agreement no file can reach; the max error in steps still passes.
    monkeypatch.setattr(export_tflite_module, "_INT8_TOP1_AGREEMENT", 1.01)
    with pytest.raises(lrpet_tf.TFLiteVerificationError) as error:
        lrpet_tf.export_tflite(
            compact, tmp_path / "q.tflite", quantization="int8", representative_dataset=x
        )
    message = str(error.value)
    assert re.search(r": arg-max agreement [01]\.\d+ < 1\.01 \(quantization='int8'\)\.$", message)
    assert "max error" not in message


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"quantization": "int4"}, r"quantization='int4'"),
        ({"quantization": "int8"}, r"representative_dataset=None"),
        ({"io_type": "int8"}, r"io_type='int8', quantization=None"),
        ({"io_type": "uint8", "quantization": "dynamic"}, r"io_type='uint8'"),
        ({"io_type": "int16", "quantization": "int8"}, r"Expected `io_type`.*io_type='int16'"),
        ({"batch_size": 0}, r"batch_size=0"),
        ({"batch_size": -2}, r"batch_size=-2"),
        ({"batch_size": 1.5}, r"batch_size=1.5"),
        ({"batch_size": "1"}, r"batch_size='1'"),
        ({"batch_size": True}, r"batch_size=True"),
        ({"metadata": {"labels": ["a", "b", "c"]}}, r"`metadata.labels`.*\(4\).*3 labels"),
        ({"metadata": {"labels": ["a", "b", "c", "d"], "std": 0}}, r"std"),
        ({"metadata": {"labels": ["a", "", "c", "d"]}}, r"labels"),
        ({"metadata": {"labels": ["a", "b", "c", "d"], "mean": [1, 2]}}, r"metadata.mean"),
        ({"metadata": {"classes": 4}}, r"Unknown `metadata` fields \['classes'\]"),
        ({"metadata": ["a", "b", "c", "d"]}, r"Expected `metadata`"),
    ],
)
def test_bad_arguments_fail_before_conversion(compact_model, tmp_path, monkeypatch, kwargs, match):
    _, compact = compact_model

    def no_conversion(*args, **kwargs):
        raise AssertionError("converted before checking the arguments")

    monkeypatch.setattr(lrpet_tf.export.conversion, "convert", no_conversion)
    with pytest.raises(ValueError, match=match):
        lrpet_tf.export_tflite(compact, tmp_path / "x.tflite", **kwargs)
    assert not (tmp_path / "x.tflite").exists()


def test_metadata_needs_one_image_input_and_one_score_output(tmp_path):
    model = _two_heads()
    with pytest.raises(ValueError, match="one output"):
        lrpet_tf.export_tflite(model, tmp_path / "x.tflite", metadata={"labels": ["a"] * 3})
    inputs = keras.Input((6,), name="features")
    flat = keras.Model(inputs, L.Dense(2)(inputs))
    with pytest.raises(ValueError, match="one image input"):
        lrpet_tf.export_tflite(flat, tmp_path / "x.tflite", metadata={"labels": ["a", "b"]})
    assert not (tmp_path / "x.tflite").exists()


def test_measure_latency(compact_model, tmp_path):
    _, compact = compact_model
    path = lrpet_tf.export_tflite(compact, tmp_path / "m.tflite").path
    result = lrpet_tf.measure_latency(path, runs=5, warmup=1, batch_size=2)
    assert result.runs == 5 and 0 < result.min_ms <= result.median_ms <= result.p90_ms
    assert result.invokes_per_run == 2  # a batch-1 file runs two examples as two invokes
    with pytest.raises(ValueError, match="runs=0"):
        lrpet_tf.measure_latency(path, runs=0)
    dynamic = lrpet_tf.export_tflite(compact, tmp_path / "d.tflite", batch_size=None).path
    assert lrpet_tf.measure_latency(dynamic, runs=2, warmup=0, batch_size=3).invokes_per_run == 1
    pairs = lrpet_tf.export_tflite(compact, tmp_path / "b2.tflite", batch_size=2).path
    assert lrpet_tf.measure_latency(pairs, runs=2, warmup=0, batch_size=4).invokes_per_run == 2
    with pytest.raises(ValueError, match=r"static batch \(2\).*batch_size=3"):
        lrpet_tf.measure_latency(pairs, runs=2, batch_size=3)


def test_latency_timer_times_one_interpreter_again_by_either_clock(compact_model, tmp_path):
    _, compact = compact_model
    path = lrpet_tf.export_tflite(compact, tmp_path / "m.tflite").path
    timer = lrpet_tf.export.LatencyTimer(path, batch_size=2)
    first = timer.measure(runs=3, warmup=1)
    assert first.clock == "wall" and first.samples_ms == first.wall_samples_ms
    assert len(first.wall_samples_ms) == len(first.cpu_samples_ms) == 3
    assert first.median_ms == np.median(first.wall_samples_ms)
    assert first.min_ms == min(first.wall_samples_ms) and first.invokes_per_run == 2
    again = timer.measure(runs=4, warmup=0, repeats=3, clock="cpu")
    assert again.clock == "cpu" and again.samples_ms == again.cpu_samples_ms
    assert again.median_ms == np.median(again.cpu_samples_ms) and len(again.samples_ms) == 4
    assert again.repeats == 3 and again.invokes_per_run == 6  # 3 batches of 2 invokes
    one_shot = lrpet_tf.measure_latency(path, runs=2, warmup=0, repeats=2, clock="cpu")
    assert one_shot.clock == "cpu" and one_shot.invokes_per_run == 2
    for kwargs, message in (
        ({"clock": "gpu"}, "clock='gpu'"),
        ({"repeats": 0}, "repeats=0"),
        ({"warmup": -1}, "warmup=-1"),
    ):
        with pytest.raises(ValueError, match=message):
            timer.measure(**kwargs)
        with pytest.raises(ValueError, match=message):
            lrpet_tf.measure_latency(b"", **kwargs)  # refused before the file is read


def _dense_on_images():
    """Dense on a rank-4 tensor, then Flatten -> Dense: shape ops with a dynamic batch."""
    inputs = keras.Input((4, 4, 3), name="image")
    h = L.Dense(5, activation="relu", name="pixelwise")(inputs)
    h = L.Flatten()(h)
    return keras.Model(inputs, L.Dense(3, name="logits")(h), name="dense_on_images")


@pytest.mark.parametrize("batch_size", [1, None, 4])
def test_batch_size_sets_the_input_shape_and_outputs_match_keras(tmp_path, batch_size):
    model = _dense_on_images()
    x = np.random.default_rng(1).standard_normal((10, 4, 4, 3)).astype(np.float32)
    kwargs = {} if batch_size == 1 else {"batch_size": batch_size}  # 1 is the default
    result = lrpet_tf.export_tflite(model, tmp_path / "m.tflite", verify_data=x, **kwargs)
    (detail,) = Interpreter(model_path=result.path).get_input_details()
    expected_batch = -1 if batch_size is None else batch_size
    assert detail["shape_signature"].tolist() == [expected_batch, 4, 4, 3]
    assert result.batch_size == batch_size
    assert result.op_count("FULLY_CONNECTED") == 2
    if batch_size is None:
        assert SHAPE_OPS & set(result.ops)  # what the static batch removes
    else:
        assert not SHAPE_OPS & set(result.ops), result.ops
    # Ten examples: a static file runs them a batch at a time (4, 4, 2 + padding).
    got = lrpet_tf.TFLiteModel(result.path)(x)
    np.testing.assert_allclose(got, np.asarray(model(x, training=False)), atol=1e-5)
    assert result.max_error < 1e-5


def test_static_batch_file_runs_in_the_interpreter_without_resizing(compact_model, tmp_path):
    _, compact = compact_model
    x, _ = tm.classification_data(1)
    path = lrpet_tf.export_tflite(compact, tmp_path / "m.tflite").path
    interpreter = Interpreter(model_path=path)
    interpreter.allocate_tensors()  # no resize_tensor_input first: [1, 8, 8, 3] as written
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    interpreter.set_tensor(inp["index"], x)
    interpreter.invoke()
    expected = np.asarray(compact(x, training=False))
    np.testing.assert_allclose(interpreter.get_tensor(out["index"]), expected, atol=1e-5)


def _two_heads():
    inputs = keras.Input((8, 8, 3), name="pixels")
    h = L.GlobalAveragePooling2D()(L.Conv2D(4, 3, name="conv")(inputs))
    scores = L.Dense(3, name="scores")(h)
    embedding = L.Dense(2, name="embedding")(h)
    # Keras order (scores, embedding) is not the alphabetical one.
    return keras.Model(inputs, [scores, embedding], name="two_heads")


def test_outputs_are_named_after_output_layers_in_keras_order(tmp_path):
    model = _two_heads()
    x, _ = tm.classification_data(5)
    result = lrpet_tf.export_tflite(model, tmp_path / "m.tflite", verify_data=x)
    assert result.input_names == ["pixels"]
    assert result.output_names == ["scores", "embedding"]
    interpreter = Interpreter(model_path=result.path)
    signature = interpreter.get_signature_list()
    assert signature == {
        "serving_default": {"inputs": ["pixels"], "outputs": ["embedding", "scores"]}
    }
    assert [d["name"] for d in interpreter.get_input_details()] == ["pixels"]
    assert [d["name"] for d in interpreter.get_output_details()] == ["scores", "embedding"]
    runner = interpreter.get_signature_runner("serving_default")
    outputs, expected = runner(pixels=x[:1]), model(x[:1], training=False)
    np.testing.assert_allclose(outputs["scores"], np.asarray(expected[0]), atol=1e-5)
    np.testing.assert_allclose(outputs["embedding"], np.asarray(expected[1]), atol=1e-5)
    got = lrpet_tf.TFLiteModel(result.path)(x)
    for g, e in zip(got, model(x, training=False)):
        np.testing.assert_allclose(g, np.asarray(e), atol=1e-5)


@pytest.mark.parametrize("io_type", ["int8", "uint8"])
def test_integer_io_types_verify_on_quantized_inputs(compact_model, tmp_path, io_type):
    _, compact = compact_model
    x, _ = tm.classification_data(128)
    result = lrpet_tf.export_tflite(
        compact,
        tmp_path / f"{io_type}.tflite",
        quantization="int8",
        representative_dataset=x,
        io_type=io_type,
    )
    assert result.io_type == io_type
    assert result.max_error_steps <= 32 and result.top1_agreement >= 0.9
    dtype = np.dtype(io_type)
    interpreter = Interpreter(model_path=result.path)
    interpreter.allocate_tensors()
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    assert inp["dtype"] == dtype and out["dtype"] == dtype
    assert out["name"] == compact.layers[-1].name  # the output layer (factorized head's second)
    if io_type == "int8":  # int8 end to end: no QUANTIZE/DEQUANTIZE around the graph
        assert result.ops[0] == "CONV_2D" and result.ops[-1] == "FULLY_CONNECTED"
    else:  # uint8 <-> int8 requantization at both ends
        assert result.ops[0] == "QUANTIZE" and result.ops[-1] == "QUANTIZE"
    # What an app does: quantize with the input's scale and zero point,
    # dequantize with the output's, through the interpreter's public API.
    (in_scale, in_zero), (out_scale, out_zero) = inp["quantization"], out["quantization"]
    limits = np.iinfo(dtype)
    expected = np.asarray(compact(x, training=False))
    got = []
    for example in x:
        q = np.clip(np.round(example[None] / in_scale + in_zero), limits.min, limits.max)
        interpreter.set_tensor(inp["index"], q.astype(dtype))
        interpreter.invoke()
        raw = interpreter.get_tensor(out["index"]).astype(np.float32)
        got.append((raw - out_zero) * out_scale)
    got = np.concatenate(got)
    assert np.max(np.abs(got - expected)) / out_scale <= 32
    assert np.mean(np.argmax(got, -1) == np.argmax(expected, -1)) >= 0.9
    np.testing.assert_allclose(lrpet_tf.TFLiteModel(result.path)(x), got, atol=1e-6)
    # The same file's error matches the float-I/O int8 file's, within a few steps.
    float_io = lrpet_tf.export_tflite(
        compact, tmp_path / "f.tflite", quantization="int8", representative_dataset=x
    )
    assert abs(result.max_error_steps - float_io.max_error_steps) <= 2


def _analyzer_op_names(content):
    """Op names of subgraph 0 as tf.lite.experimental.Analyzer (C++) prints them."""
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        tf.lite.experimental.Analyzer.analyze(model_content=content)
    section = text.getvalue().split("Subgraph#1")[0]
    return re.findall(r"^\s+Op#\d+ (\w+)\(", section, flags=re.MULTILINE)


@pytest.mark.parametrize("variant", ["float32", "int8", "dynamic_batch", "two_heads"])
def test_ops_and_tensors_from_the_schema_match_the_interpreter(compact_model, tmp_path, variant):
    _, compact = compact_model
    x, _ = tm.classification_data(64)
    model, kwargs = compact, {}
    if variant == "int8":
        kwargs = {"quantization": "int8", "representative_dataset": x}
    elif variant == "dynamic_batch":
        model, kwargs = _dense_on_images(), {"batch_size": None, "verify": False}
    elif variant == "two_heads":
        model = _two_heads()
    result = lrpet_tf.export_tflite(model, tmp_path / "m.tflite", **kwargs)
    content = open(result.path, "rb").read()
    schema_ops = FlatbufferModel(content).op_names()
    assert schema_ops == result.ops == lrpet_tf.TFLiteModel(result.path).op_names()
    assert schema_ops == _analyzer_op_names(content)
    # The interpreter's own list (a private method: the oracle, not the code
    # path), read before allocate_tensors applies XNNPACK (a DELEGATE node).
    interpreter = Interpreter(model_content=content)
    ops = [op["op_name"] for op in interpreter._get_ops_details()]
    assert collections.Counter(schema_ops) == collections.Counter(ops)
    assert schema_ops == ops
    details = {d["index"]: d for d in interpreter.get_tensor_details()}
    for tensor in FlatbufferModel(content).tensors():
        detail = details[tensor["index"]]
        assert tensor["name"] == detail["name"]
        assert tensor["shape_signature"] == detail["shape_signature"].tolist()
        assert np.dtype(tensor["dtype"]) == detail["dtype"]
        assert tensor["scale"] == pytest.approx(detail["quantization"][0])
        assert tensor["zero_point"] == detail["quantization"][1]


def _metadata_entry(content):
    """The TFLITE_METADATA buffer, found with TensorFlow's own copy of the TFLite schema."""
    from tensorflow.lite.python import schema_py_generated as tf_schema

    model = tf_schema.Model.GetRootAs(content, 0)
    for i in range(model.MetadataLength()):
        if model.Metadata(i).Name() == b"TFLITE_METADATA":
            return model.Buffers(model.Metadata(i).Buffer()).DataAsNumpy().tobytes()
    return None


@pytest.mark.parametrize("io_type", ["float32", "uint8"])
def test_metadata_round_trip(compact_model, tmp_path, io_type):
    _, compact = compact_model
    x, _ = tm.classification_data(64)
    metadata = ImageClassifierMetadata(
        labels=["cat", "dog", "bird", "fish"],
        mean=[127.5, 127.0, 126.5],
        std=127.5,
        name="pets",
        description="Four pets at 8x8.",
        version="1",
        author="lrpet_tf tests",
        license="Apache-2.0",
    )
    kwargs = {"quantization": "int8", "representative_dataset": x} if io_type == "uint8" else {}
    plain = lrpet_tf.export_tflite(compact, tmp_path / "plain.tflite", io_type=io_type, **kwargs)
    result = lrpet_tf.export_tflite(
        compact, tmp_path / "m.tflite", io_type=io_type, metadata=metadata, **kwargs
    )
    assert ImageClassifierMetadata.read(plain.path) is None
    assert result.metadata == metadata == ImageClassifierMetadata.read(result.path)
    # Read again without lrpet_tf's reader: TF's schema finds the entry, the
    # generated metadata classes read its fields, zipfile the packed labels.
    content = open(result.path, "rb").read()
    buffer = _metadata_entry(content)
    md = tflite_metadata_schema.ModelMetadata.GetRootAs(buffer, 0)
    assert tflite_metadata_schema.ModelMetadata.ModelMetadataBufferHasIdentifier(buffer, 0)
    assert (md.Name(), md.Description(), md.MinParserVersion()) == (
        b"pets",
        b"Four pets at 8x8.",
        b"1.0.0",
    )
    image = md.SubgraphMetadata(0).InputTensorMetadata(0)
    assert image.Name() == b"x"
    properties = tflite_metadata_schema.ImageProperties()
    properties.Init(
        image.Content().ContentProperties().Bytes, image.Content().ContentProperties().Pos
    )
    assert properties.ColorSpace() == tflite_metadata_schema.ColorSpaceType.RGB
    normalization = tflite_metadata_schema.NormalizationOptions()
    options = image.ProcessUnits(0).Options()
    normalization.Init(options.Bytes, options.Pos)
    assert normalization.MeanAsNumpy().tolist() == [127.5, 127.0, 126.5]
    assert normalization.StdAsNumpy().tolist() == [127.5]
    scores = md.SubgraphMetadata(0).OutputTensorMetadata(0)
    assert scores.Name() == compact.layers[-1].name.encode()
    label_file = scores.AssociatedFiles(0)
    assert label_file.Name() == b"labels.txt"
    assert label_file.Type() == tflite_metadata_schema.AssociatedFileType.TENSOR_AXIS_LABELS
    with zipfile.ZipFile(io.BytesIO(content)) as files:
        assert files.read("labels.txt") == b"cat\ndog\nbird\nfish\n"
        assert files.getinfo("labels.txt").compress_type == zipfile.ZIP_STORED
    # The file still verifies, and runs exactly as the file without metadata.
    assert result.max_error <= result.tolerance
    assert result.ops == plain.ops
    np.testing.assert_array_equal(
        lrpet_tf.TFLiteModel(result.path)(x), lrpet_tf.TFLiteModel(plain.path)(x)
    )


def test_metadata_populate_replaces_existing_metadata(compact_model, tmp_path):
    _, compact = compact_model
    first = ImageClassifierMetadata(labels=["a", "b", "c", "d"], std=255.0)
    path = lrpet_tf.export_tflite(compact, tmp_path / "m.tflite", metadata=first).path
    content = open(path, "rb").read()
    assert ImageClassifierMetadata.read(content).name == "residual_cnn"  # the model's name
    second = ImageClassifierMetadata(labels=["w", "x", "y", "z"], name="renamed")
    updated = second.populate(content)
    assert ImageClassifierMetadata.read(updated) == second
    with zipfile.ZipFile(io.BytesIO(updated)) as files:
        assert files.namelist() == ["labels.txt"]
    with pytest.raises(ValueError, match="one name per output unit"):
        ImageClassifierMetadata(labels=["only", "three", "labels"]).populate(content)


@pytest.mark.skipif(_keras.IS_KERAS_3, reason="QAT needs tf_keras (TF_USE_LEGACY_KERAS=1)")
def test_qat_model_exports_integer_io_named_like_the_float_file(compact_model, tmp_path):
    _, compact = compact_model
    qat = lrpet_tf.export.prepare_qat(compact)
    x, y = tm.classification_data(64)
    qat.compile(
        keras.optimizers.SGD(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    qat.fit(x, y, epochs=1, batch_size=16, verbose=0)
    float_file = lrpet_tf.export_tflite(compact, tmp_path / "f.tflite", verify_data=x)
    result = lrpet_tf.export_tflite(
        qat, tmp_path / "qat.tflite", quantization="int8", io_type="int8", verify_data=x
    )
    assert result.max_error_steps <= 32 and result.top1_agreement >= 0.9
    # tfmot wraps the head as quant_<name>; the file names it as the float file does.
    assert result.output_names == float_file.output_names == [compact.layers[-1].name]
    (out,) = Interpreter(model_path=result.path).get_output_details()
    assert out["dtype"] == np.int8 and out["name"] == compact.layers[-1].name
