"""Every rewrite keeps the function of randomly generated Functional graphs.

A seeded generator builds graphs with branches, residual adds,
concatenations, shared layers, nested models, two outputs, and BatchNorm in
foldable and unfoldable places (after a ReLU, after a conv whose output
also feeds another branch, after a depthwise conv, after a Dense). After each
rewrite the inference outputs must equal the input model's.
"""

import numpy as np
import pytest
import testing_models as tm

import lrpet_tf
from lrpet_tf import svd_training as st
from lrpet_tf._keras import keras

L = keras.layers


class GraphGenerator:
    """Builds a random Functional model from a seed."""

    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)
        self.count = 0

    def name(self, kind):
        self.count += 1
        return f"{kind}_{self.count}"

    def choice(self, options):
        return options[int(self.rng.integers(len(options)))]

    def conv_block(self, x):
        filters = int(self.rng.integers(3, 13))
        strides = 2 if x.shape[1] >= 4 and self.rng.random() < 0.3 else 1
        kernel = self.choice([1, 3])
        activation = self.choice([None, None, "relu"])
        y = L.Conv2D(
            filters,
            kernel,
            strides=strides,
            padding="same",
            activation=activation,
            use_bias=bool(self.rng.random() < 0.5),
            name=self.name("conv"),
        )(x)
        roll = self.rng.random()
        if roll < 0.5:
            y = L.BatchNormalization(name=self.name("bn"))(y)
            if self.rng.random() < 0.7:
                y = L.ReLU()(y)
        elif roll < 0.6:  # BN after an activation: cannot fold
            y = L.BatchNormalization(name=self.name("bn_after_relu"))(L.ReLU()(y))
        return y

    def depthwise_block(self, x):
        y = L.DepthwiseConv2D(3, padding="same", name=self.name("dw"))(x)
        return L.ReLU()(L.BatchNormalization(name=self.name("bn_dw"))(y))

    def build(self):
        inputs = keras.Input((8, 8, 3), name="image")
        tensors = [self.conv_block(inputs)]
        for _ in range(int(self.rng.integers(4, 9))):
            op = self.choice(["conv", "conv", "add", "concat", "depthwise", "fork", "shared"])
            x = self.choice(tensors)
            if op == "conv":
                tensors.append(self.conv_block(x))
            elif op == "depthwise":
                tensors.append(self.depthwise_block(x))
            elif op == "add":
                same = [t for t in tensors if tuple(t.shape) == tuple(x.shape) and t is not x]
                if same:
                    tensors.append(L.Add()([x, self.choice(same)]))
            elif op == "concat":
                same = [t for t in tensors if t.shape[1] == x.shape[1] and t is not x]
                if same:
                    tensors.append(L.Concatenate()([x, self.choice(same)]))
            elif op == "fork":  # a conv output feeding a BN and another branch
                c = L.Conv2D(int(x.shape[-1]), 1, name=self.name("fork"))(x)
                tensors.append(L.Add()([L.BatchNormalization(name=self.name("bn_fork"))(c), c]))
            else:  # one conv layer called on two tensors of the same shape
                other = self.choice([t for t in tensors if tuple(t.shape) == tuple(x.shape)])
                shared = L.Conv2D(6, 3, padding="same", name=self.name("shared"))
                tensors.append(L.Add()([shared(x), shared(other)]))
        pooled = L.GlobalAveragePooling2D()(tensors[-1])
        hidden = L.BatchNormalization(name=self.name("bn_dense"))(
            L.Dense(8, name=self.name("dense"))(pooled)
        )
        outputs = [L.Dense(5, name="head")(L.ReLU()(hidden))]
        if self.rng.random() < 0.5:
            outputs.append(L.GlobalMaxPooling2D()(tensors[len(tensors) // 2]))
        model = keras.Model(inputs, outputs if len(outputs) > 1 else outputs[0])
        if self.rng.random() < 0.4:  # wrap as a nested model
            outer_in = keras.Input((8, 8, 3), name="outer_image")
            inner = model(outer_in)
            inner = inner if isinstance(inner, (list, tuple)) else [inner]
            extra = L.Dense(3, name="outer_head")(inner[0])
            model = keras.Model(outer_in, [extra] + list(inner[1:]))
        return tm.randomize_batchnorm(model, seed=self.count)


def as_list(y):
    return [np.asarray(t) for t in (y if isinstance(y, (list, tuple)) else [y])]


def assert_same(a, b, x):
    for got, want in zip(as_list(a(x, training=False)), as_list(b(x, training=False))):
        np.testing.assert_allclose(got, want, atol=2e-5, rtol=1e-4)


SEEDS = range(12)


def test_generator_covers_the_cases():
    seen = set()
    for seed in SEEDS:
        model = GraphGenerator(seed).build()
        names = {layer.name.rsplit("_", 1)[0] for layer in model._flatten_layers()}
        seen |= names & {"bn", "bn_after_relu", "bn_fork", "bn_dw", "shared", "dw"}
        seen |= {"add"} & {type(layer).__name__.lower() for layer in model._flatten_layers()}
        if any(isinstance(layer, keras.Model) for layer in model.layers):
            seen.add("nested")
        if len(model.outputs) > 1:
            seen.add("two outputs")
    assert seen >= {"bn", "bn_after_relu", "bn_fork", "bn_dw", "shared", "nested", "two outputs"}


@pytest.mark.parametrize("seed", SEEDS)
def test_rewrites_keep_the_function(seed):
    model = GraphGenerator(seed).build()
    x = np.random.default_rng(seed).normal(size=(3, 8, 8, 3)).astype(np.float32)
    before = tm.all_weights(model)

    assert_same(lrpet_tf.fold_batchnorm(model), model, x)

    svd_model = st.decompose(
        model, scheme=["channel", "spatial"][seed % 2], layer_types=("conv", "dense")
    )
    assert_same(svd_model, model, x)
    assert_same(st.prune(svd_model, energy=0.0), model, x)
    for a, b in zip(before, tm.all_weights(model)):
        np.testing.assert_array_equal(a, b)  # no rewrite touched the input

    cb = lrpet_tf.LRPET(prune_ratio=0.5, layer_types=("conv", "dense"), verbose=0)
    cb.set_model(model)
    cb.prepare(model)
    cb.project()
    compact, report = lrpet_tf.factorize(model, ranks=cb, return_report=True)
    assert_same(compact, model, x)
    folded = lrpet_tf.fold_batchnorm(compact)
    assert_same(folded, model, x)
    saved = sum(c.macs_before - c.macs_after for c in report.changes)
    assert lrpet_tf.model_report(compact).total_macs == (
        lrpet_tf.model_report(model).total_macs - saved
    )
    assert lrpet_tf.model_report(folded).total_params == folded.count_params()
