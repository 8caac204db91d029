"""Quantization of compact models: QAT with tfmot (tf_keras) and post-training int8.

The suite runs in both Keras modes in CI: the QAT tests need tf_keras
(TF_USE_LEGACY_KERAS=1) and the Keras 3 test checks the error that says so.
"""

import numpy as np
import pytest
import testing_models as tm

import lrpet_tf
from lrpet_tf import _keras
from lrpet_tf import svd_training
from lrpet_tf._keras import keras

legacy_only = pytest.mark.skipif(_keras.IS_KERAS_3, reason="QAT needs tf_keras")


def compact_model(width=16):
    model = tm.randomize_batchnorm(tm.residual_cnn(width=width))
    cb = lrpet_tf.LRPET(prune_ratio=0.5, verbose=0)
    cb.set_model(model)
    cb.prepare(model)
    cb.project()
    return lrpet_tf.fold_batchnorm(lrpet_tf.factorize(model, ranks=cb))


@pytest.mark.skipif(not _keras.IS_KERAS_3, reason="the Keras 3 error")
def test_qat_in_keras3_explains_how_to_switch():
    with pytest.raises(RuntimeError, match=r"TF_USE_LEGACY_KERAS=1.*quantization='int8'"):
        lrpet_tf.export.prepare_qat(compact_model())


@legacy_only
def test_qat_compact_model_exports_int8_without_data(tmp_path):
    compact = compact_model()
    qat = lrpet_tf.export.prepare_qat(compact)
    assert lrpet_tf.export.is_quantization_aware(qat)
    assert not lrpet_tf.export.is_quantization_aware(compact)
    x, y = tm.classification_data(64)
    qat.compile(
        keras.optimizers.SGD(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    qat.fit(x, y, epochs=1, batch_size=16, verbose=0)
    result = lrpet_tf.export_tflite(
        qat, tmp_path / "qat.tflite", quantization="int8", verify_data=x
    )
    assert result.top1_agreement >= 0.9 and result.max_error_steps <= 32
    assert result.ops[0] == "QUANTIZE" and result.ops[-1] == "DEQUANTIZE"
    assert result.op_count("CONV_2D") == 8  # four factorized convs, two ops each
    float_size = lrpet_tf.export_tflite(compact, tmp_path / "f.tflite", verify=False).size_bytes
    # int8 weights are 4x smaller; a file this small also has fixed overhead.
    assert result.size_bytes < 0.55 * float_size


@legacy_only
def test_qat_refuses_svd_layers_and_subclassed_models():
    svd_model = svd_training.decompose(tm.residual_cnn())
    with pytest.raises(TypeError, match=r"factorize"):
        lrpet_tf.export.prepare_qat(svd_model)


def test_post_training_int8_error_is_counted_in_output_steps(tmp_path):
    compact = compact_model()
    x, _ = tm.classification_data(128)
    result = lrpet_tf.export_tflite(
        compact, tmp_path / "ptq.tflite", quantization="int8", representative_dataset=x
    )
    scale = lrpet_tf.TFLiteModel(result.path).output_quantization_scales()[0]
    assert scale > 0
    assert result.max_error_steps == pytest.approx(result.max_error / scale)
    assert result.max_error_steps <= 32 and result.top1_agreement >= 0.9
    with pytest.raises(ValueError, match="representative_dataset=None"):
        lrpet_tf.export_tflite(compact, tmp_path / "no_data.tflite", quantization="int8")
    assert np.isfinite(result.max_error)
