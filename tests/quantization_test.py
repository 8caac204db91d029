"""Quantization of compact models: QAT with tfmot (tf_keras) and post-training int8.

The suite runs in both Keras modes in CI: the QAT tests need tf_keras
(TF_USE_LEGACY_KERAS=1) and the Keras 3 test checks the error that says so.
"""

import numpy as np
import pytest
import testing_models as tm

import lrpet_tf  # noqa: E402
from lrpet_tf import _keras  # noqa: E402
from lrpet_tf import svd_training  # noqa: E402
from lrpet_tf._keras import keras  # noqa: E402

legacy_only = pytest.mark.skipif(_keras.IS_KERAS_3, reason="QAT needs tf_keras")


def compact_model(width=16, model=None):
    model = tm.randomize_batchnorm(model or tm.residual_cnn(width=width))
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


def _quantize_configs(qat):
    """Layer name (without tfmot's `quant_` prefix) -> its QuantizeConfig."""
    return {
        layer.layer.name: layer.quantize_config
        for layer in qat.layers
        if hasattr(layer, "quantize_config")
    }


@legacy_only
def test_qat_option_a_shortcut_weightless_layers_get_configs_and_export_int8(tmp_path, monkeypatch):
    import tensorflow_model_optimization as tfmot

    # A CIFAR ResNet's option-A shortcut: a 1x1 stride-2 average pooling, its
    # zero channels (Rescaling(0), outside tfmot's registry) and a Concatenate.
    compact = compact_model(model=tm.option_a_resnet())
    with pytest.raises(RuntimeError, match="Rescaling.*is not supported"):
        tfmot.quantization.keras.quantize_model(compact)
    weights = [w.copy() for w in compact.get_weights()]
    qat = lrpet_tf.export.prepare_qat(compact)
    configs = _quantize_configs(qat)
    zeros = configs["stage2_block1_shortcut_zeros"]
    assert type(zeros).__name__ == "OutputQuantizeConfig"
    assert len(zeros.get_output_quantizers(None)) == 1  # its output gets a range
    assert configs["stage2_block1_shortcut_subsample"].get_output_quantizers(None) == []
    assert type(configs["classifier"]).__name__ != "OutputQuantizeConfig"  # tfmot's own
    x, y = tm.classification_data(64)
    qat.compile(
        keras.optimizers.SGD(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    qat.fit(x, y, epochs=1, batch_size=16, verbose=0)
    # The compact model is untouched: not wrapped, same weights.
    assert not lrpet_tf.export.is_quantization_aware(compact)
    assert all(np.array_equal(a, b) for a, b in zip(weights, compact.get_weights()))
    result = lrpet_tf.export_tflite(
        qat, tmp_path / "qat.tflite", quantization="int8", verify_data=x
    )
    assert result.top1_agreement >= 0.9 and result.max_error_steps <= 32
    assert result.ops[0] == "QUANTIZE" and result.ops[-1] == "DEQUANTIZE"
    assert result.op_count("AVERAGE_POOL_2D") == 1 and result.op_count("CONCATENATION") == 1
    # With the pooling's own learned output range (tfmot's default), the
    # converter fails on AVERAGE_POOL_2D's same-scale constraint.
    monkeypatch.setattr(lrpet_tf.export.quantization_aware, "_is_subsampling", lambda layer: False)
    ranged = lrpet_tf.export.prepare_qat(compact)
    ranged.compile(
        keras.optimizers.SGD(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    ranged.fit(x, y, epochs=1, batch_size=16, verbose=0)
    with pytest.raises(RuntimeError, match="same scale constraint"):
        lrpet_tf.export_tflite(ranged, tmp_path / "ranged.tflite", quantization="int8")


@legacy_only
def test_qat_refuses_weighted_layers_outside_tfmots_registry_naming_them():
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(8, name="fc")(inputs)
    outputs = keras.layers.LayerNormalization(name="norm")(hidden)
    model = keras.Model(inputs, outputs)
    with pytest.raises(TypeError, match=r"norm \(LayerNormalization\).*quantize_annotate_layer"):
        lrpet_tf.export.prepare_qat(model)


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
