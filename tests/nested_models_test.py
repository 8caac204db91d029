"""Every entry point sees the layers of nested models (one way to walk a model)."""

import numpy as np
import pytest
import testing_models as tm

import lrpet_tf
from lrpet_tf import svd_training
from lrpet_tf._keras import IS_KERAS_3
from lrpet_tf._keras import keras

L = keras.layers


def nested_model():
    inner = tm.randomize_batchnorm(tm.residual_cnn())  # convs stem, conv_a, conv_b, shortcut
    inputs = keras.Input((8, 8, 3), name="outer_x")
    h = L.Conv2D(3, 1, name="outer_conv")(inputs)
    model = keras.Model(inputs, L.Dense(2, name="outer_head")(inner(h)), name="outer")
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def test_lrpet_projects_inner_convs():
    cb = lrpet_tf.LRPET(prune_ratio=0.5, verbose=0)
    cb.prepare(nested_model())
    assert set(cb.ranks) == {"outer_conv", "stem", "conv_a", "conv_b", "shortcut"}


def test_factorize_by_inner_name_keeps_the_function():
    model = nested_model()
    cb = lrpet_tf.LRPET(ranks={"conv_b": 3}, verbose=0)
    cb.set_model(model)
    cb.project()
    compact = lrpet_tf.factorize(model, ranks={"conv_b": 3})
    x, _ = tm.classification_data(8)
    np.testing.assert_allclose(compact(x), model(x), atol=1e-4)
    names = {layer.name for layer in compact.get_layer("residual_cnn").layers}
    assert {"conv_b_reduce", "conv_b_expand"} <= names


def test_allocate_ranks_takes_inner_layer_names():
    model = nested_model()
    x, y = tm.classification_data(32, classes=2)
    ranks = lrpet_tf.allocate_ranks(model, x, y, {"conv_a": 4, "conv_b": 4})
    assert set(ranks) == {"conv_a", "conv_b"} and all(1 <= r <= 16 for r in ranks.values())


def test_decompose_and_prune_reach_inner_layers():
    model = nested_model()
    svd_model = svd_training.decompose(model, include=["conv_b"])
    inner = svd_model.get_layer("residual_cnn")
    assert isinstance(inner.get_layer("conv_b"), svd_training.SVDConv2D)
    x, _ = tm.classification_data(8)
    np.testing.assert_allclose(svd_model(x), model(x), atol=1e-4)
    pruned = svd_training.prune(svd_model, energy=0.2)
    assert pruned.get_layer("residual_cnn").get_layer("conv_b").current_rank < 16


@pytest.mark.skipif(IS_KERAS_3, reason="QAT needs tf_keras")
def test_prepare_qat_refuses_a_nested_model_clearly():
    with pytest.raises(TypeError, match="nested"):
        lrpet_tf.export.prepare_qat(lrpet_tf.fold_batchnorm(nested_model()))
