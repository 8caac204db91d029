"""export_tflite: the file runs in LiteRT, keeps factorized ops and matches Keras."""

import logging
import os

import numpy as np
import pytest
import tensorflow as tf
import testing_models as tm

import lrpet_tf
from lrpet_tf._keras import keras


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
    with pytest.raises(lrpet_tf.TFLiteVerificationError, match="disagrees"):
        lrpet_tf.export_tflite(
            compact, tmp_path / "d.tflite", quantization="dynamic", tolerance=1e-9
        )


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"quantization": "int4"}, r"quantization='int4'"),
        ({"quantization": "int8"}, r"representative_dataset=None"),
    ],
)
def test_bad_arguments_fail_before_conversion(compact_model, tmp_path, kwargs, match):
    _, compact = compact_model
    with pytest.raises(ValueError, match=match):
        lrpet_tf.export_tflite(compact, tmp_path / "x.tflite", **kwargs)
    assert not (tmp_path / "x.tflite").exists()


def test_measure_latency(compact_model, tmp_path):
    _, compact = compact_model
    path = lrpet_tf.export_tflite(compact, tmp_path / "m.tflite").path
    result = lrpet_tf.measure_latency(path, runs=5, warmup=1, batch_size=2)
    assert result.runs == 5 and 0 < result.min_ms <= result.median_ms <= result.p90_ms
    with pytest.raises(ValueError, match="runs=0"):
        lrpet_tf.measure_latency(path, runs=0)
