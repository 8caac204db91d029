"""examples/export_tflite.py --qat_epochs: low-rank model -> QAT -> int8 .tflite, and its errors.

Under tf_keras (TF_USE_LEGACY_KERAS=1) a tiny LRPET-projected CNN trained for
a few steps on a slice of digits goes through the whole route: factorize,
fold BN, post-training int8 (calibrated on training images) and one epoch of
quantization-aware training, then int8 without calibration data. In Keras 3
mode the flag fails at once with the library's message, through `run` and on
the command line. CI runs the suite in both modes.
"""

import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "examples"))

import example_data  # noqa: E402
import example_export  # noqa: E402
import example_models  # noqa: E402
import example_training  # noqa: E402
import export_tflite  # noqa: E402

import lrpet_tf  # noqa: E402
from lrpet_tf import _keras  # noqa: E402
from lrpet_tf._keras import keras  # noqa: E402

DIGITS = dict(dataset="digits", train_limit=256, test_limit=96)


def _trained_low_rank_model(path):
    """A small_cnn of width 8 trained briefly on digits, its convs LRPET-projected to g=0.5."""
    data = example_data.load_dataset("digits", train_limit=256, test_limit=96, standardize=True)
    model = example_models.build_model("small_cnn", data.input_shape, data.num_classes, width=8)
    model.compile(
        keras.optimizers.Adam(3e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(data.x_train, data.y_train, epochs=4, batch_size=32, verbose=0)
    lrpet = lrpet_tf.LRPET(prune_ratio=0.5, verbose=0)
    lrpet.set_model(model)
    lrpet.prepare(model)
    lrpet.project()
    example_training.save_model(model, str(path))
    return lrpet.ranks


@pytest.mark.skipif(_keras.IS_KERAS_3, reason="QAT needs tf_keras (TF_USE_LEGACY_KERAS=1)")
def test_qat_epochs_writes_ptq_and_qat_int8_and_one_table(tmp_path, capsys):
    ranks = _trained_low_rank_model(tmp_path / "lrpet.keras")
    results = export_tflite.run(
        model_path=str(tmp_path / "lrpet.keras"),
        qat_epochs=1,
        batch_size=32,
        runs=3,
        warmup=1,
        verbose=0,
        **DIGITS,
    )
    assert results["kind"] == "low-rank" and len(results["factorized"]) == len(ranks)
    compact, ptq, qat = results["tflite"], results["ptq_int8"], results["qat_int8"]
    assert compact["path"] == str(tmp_path / "lrpet_float32.tflite")
    assert ptq["path"] == str(tmp_path / "lrpet_int8.tflite")
    assert qat["path"] == str(tmp_path / "lrpet_qat_int8.tflite")
    for info in (compact, ptq, qat):
        assert os.path.exists(info["path"]) and info["verified"]
        assert 0.0 <= info["accuracy"] <= 1.0 and info["latency_ms"]["median_ms"] > 0
        # Factorized pairs stay two CONV_2D ops in every file, int8 included.
        assert info["conv2d_ops"] == 2 * results["reference"]["conv2d_ops"]
        assert info["macs"] == compact["macs"]
    for info in (ptq, qat):
        assert info["top1_agreement"] >= 0.9 and info["max_error_steps"] <= 32
        # Every weight and activation is int8 (int32 biases); only the float
        # input and output around QUANTIZE/DEQUANTIZE stay float32. (The file
        # is not much smaller than the float one here: a width-8 model is
        # mostly fixed overhead.)
        assert info["bytes"] < compact["bytes"]
        dtypes = [d["dtype"] for d in Interpreter(model_path=info["path"]).get_tensor_details()]
        assert dtypes.count(np.float32) <= 2 and dtypes.count(np.int8) > 2 * len(ranks)
    ops = lrpet_tf.TFLiteModel(qat["path"]).op_names()
    assert ops[0] == "QUANTIZE" and ops[-1] == "DEQUANTIZE"
    # The QAT stage: its history, the fine-tuned model and its fake-quantized accuracy.
    stage_dir = tmp_path / "lrpet_qat_int8"
    assert (stage_dir / "history.csv").exists() and (stage_dir / "qat.keras").exists()
    assert results["qat"]["epochs"] == 1 and len(results["qat"]["history"]) == 1
    assert results["qat"]["train_images"] == 256
    assert abs(results["qat"]["keras_accuracy"] - qat["accuracy"]) <= 0.1
    with open(tmp_path / "lrpet_float32.json") as f:
        saved = json.load(f)
    assert set(saved) >= {"tflite", "ptq_int8", "qat_int8", "qat", "reference"}
    table = capsys.readouterr().out
    assert "compact, post-training int8" in table and "compact, QAT int8" in table


def test_calibration_images_come_from_the_training_set():
    data = example_data.load_dataset("digits", train_limit=100, test_limit=50)
    images = example_export.calibration_images(data, count=40, seed=1)
    assert images.shape == (40, *data.input_shape)
    train = {x.tobytes() for x in data.x_train}
    assert all(x.tobytes() in train for x in images)
    again = example_export.calibration_images(data, count=40, seed=1)
    assert (again == images).all()


@pytest.mark.skipif(not _keras.IS_KERAS_3, reason="the Keras 3 error")
def test_qat_epochs_in_keras3_fails_at_once_with_the_library_message(tmp_path):
    missing = str(tmp_path / "not_loaded_yet.keras")
    # The error comes before the model is even read (it does not exist).
    with pytest.raises(RuntimeError, match=r"TF_USE_LEGACY_KERAS=1.*quantization='int8'"):
        export_tflite.run(model_path=missing, qat_epochs=2, **DIGITS)
    assert os.listdir(tmp_path) == []


@pytest.mark.skipif(not _keras.IS_KERAS_3, reason="the Keras 3 error")
def test_qat_epochs_flag_in_keras3_fails_the_command_line_cleanly(tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("TF_USE_LEGACY_KERAS", None)
    proc = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "examples", "export_tflite.py"),
            f"--model_path={tmp_path / 'missing.keras'}",
            "--dataset=digits",
            "--qat_epochs=2",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0
    assert "Flags parsing error" in proc.stderr and "--qat_epochs=2" in proc.stderr
    assert "Set TF_USE_LEGACY_KERAS=1" in proc.stderr and "Traceback" not in proc.stderr
    assert os.listdir(tmp_path) == []


def test_qat_needs_a_dataset_and_non_negative_epochs():
    with pytest.raises(ValueError, match="give `dataset`"):
        export_tflite.ExportConfig(model_path="m.keras", qat_epochs=2)
    with pytest.raises(ValueError, match="qat_epochs"):
        export_tflite.ExportConfig(model_path="m.keras", dataset="digits", qat_epochs=-1)


def test_a_keras_file_of_the_other_keras_gets_a_clear_error(tmp_path):
    other = "2.21.0" if _keras.IS_KERAS_3 else "3.15.1"
    path = tmp_path / "other.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("metadata.json", json.dumps({"keras_version": other}))
        archive.writestr("config.json", "{}")
    with pytest.raises(ValueError, match=rf"saved by Keras {other}.*same\s+mode"):
        example_training.load_model(str(path))
