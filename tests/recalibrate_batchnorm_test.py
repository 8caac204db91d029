"""`recalibrate_batchnorm` against NumPy statistics of each BN's input, computed layer by layer."""

import logging

import numpy as np
import pytest
import tensorflow as tf
import testing_models as tm

import lrpet_tf
from lrpet_tf._keras import keras

L = keras.layers


def chain_cnn():
    inputs = keras.Input((8, 8, 3), name="x")
    h = L.Conv2D(6, 3, padding="same", name="conv1")(inputs)
    h = L.ReLU()(L.BatchNormalization(name="bn1")(h))
    h = L.Conv2D(5, 3, strides=2, name="conv2")(h)
    h = L.BatchNormalization(name="bn2")(h)
    outputs = L.Dense(4, name="head")(L.GlobalAveragePooling2D()(h))
    return keras.Model(inputs, outputs)


def moments(values):
    values = np.asarray(values, np.float64)
    axes = tuple(range(values.ndim - 1))
    return values.mean(axis=axes), values.var(axis=axes)


def assert_statistics(bn, values):
    mean, variance = moments(values)
    np.testing.assert_allclose(bn.moving_mean.numpy(), mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bn.moving_variance.numpy(), variance, rtol=1e-5, atol=1e-6)


def data(n=100, seed=3):
    return np.random.default_rng(seed).normal(size=(n, 8, 8, 3)).astype(np.float32)


def test_chain_statistics_equal_numpy_of_each_bn_input():
    model = tm.randomize_batchnorm(chain_cnn())
    weights = [w for layer in model.layers for w in layer.trainable_weights]
    trainable = [w.numpy() for w in weights]
    x = data()
    changes = lrpet_tf.recalibrate_batchnorm(model, x, batch_size=32)
    assert set(changes) == {"bn1", "bn2"} and all(c["mean"] > 0.01 for c in changes.values())
    g = model.get_layer
    h1 = g("conv1")(x)
    assert_statistics(g("bn1"), h1)
    # bn2's input with bn1 in inference mode and already re-estimated.
    h2 = g("conv2")(tf.nn.relu(g("bn1")(h1, training=False)))
    assert_statistics(g("bn2"), h2)
    for before, w in zip(trainable, weights):
        np.testing.assert_array_equal(before, w.numpy())


def residual_inputs(model, x):
    g = model.get_layer
    stem = g("stem")(x)
    h = tf.nn.relu(g("stem_bn")(stem, training=False))
    conv_a = g("conv_a")(h)
    conv_b = g("conv_b")(tf.nn.relu(g("bn_a")(conv_a, training=False)))
    return {"stem_bn": stem, "bn_a": conv_a, "bn_b": conv_b, "bn_s": g("shortcut")(h)}


def test_residual_graph_and_batch_size_independence():
    model = tm.randomize_batchnorm(tm.residual_cnn())
    other = keras.models.clone_model(model)
    other.set_weights(model.get_weights())
    x = data(90)
    lrpet_tf.recalibrate_batchnorm(model, x, batch_size=64)
    for name, values in residual_inputs(model, x).items():
        assert_statistics(model.get_layer(name), values)
    lrpet_tf.recalibrate_batchnorm(other, x, batch_size=7)  # 13 batches, the last of 6
    for a, b in zip(model.get_weights(), other.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_steps_dataset_and_nested_model():
    inner = tm.randomize_batchnorm(tm.residual_cnn())
    inputs = keras.Input((8, 8, 3), name="outer_x")
    scaled = L.Rescaling(2.0, name="scale")(inputs)
    outer = keras.Model(inputs, L.Dense(3, name="top")(inner(scaled)))
    x = data(96)
    dataset = tf.data.Dataset.from_tensor_slices((x, np.zeros(96))).batch(32)
    lrpet_tf.recalibrate_batchnorm(outer, dataset, steps=2)  # the first 64 examples
    for name, values in residual_inputs(inner, 2.0 * x[:64]).items():
        assert_statistics(inner.get_layer(name), values)


def test_model_without_batchnorm_warns_and_changes_nothing(caplog):
    inputs = keras.Input((4,))
    model = keras.Model(inputs, L.Dense(2)(inputs))
    with caplog.at_level(logging.WARNING, logger="lrpet_tf"):
        assert lrpet_tf.recalibrate_batchnorm(model, np.ones((3, 4), np.float32)) == {}
    assert "no BatchNormalization" in caplog.text


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(data=np.zeros((0, 8, 8, 3), np.float32)), ValueError, "at least one example"),
        (dict(steps=0), ValueError, "steps"),
        (dict(steps=1.5), ValueError, "steps"),
        (dict(batch_size=0), ValueError, "batch_size"),
        (dict(data="images"), TypeError, "data"),
    ],
)
def test_bad_arguments_change_nothing(kwargs, error, match):
    model = tm.randomize_batchnorm(tm.residual_cnn())
    before = tm.all_weights(model)
    kwargs = {"data": data(8), **kwargs}
    with pytest.raises(error, match=match):
        lrpet_tf.recalibrate_batchnorm(model, **kwargs)
    for a, b in zip(before, tm.all_weights(model)):
        np.testing.assert_array_equal(a, b)


def test_subclassed_model_is_refused():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.bn = L.BatchNormalization()

        def call(self, x):
            return self.bn(x)

    model = Net()
    model(np.ones((2, 3), np.float32))
    with pytest.raises(TypeError, match="Functional or Sequential"):
        lrpet_tf.recalibrate_batchnorm(model, np.ones((2, 3), np.float32))
