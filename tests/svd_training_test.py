"""SVD training: penalties, SVD layers, decompose, prune, save/load, export."""

import numpy as np
import pytest
import tensorflow as tf
import testing_models as tm

import lrpet_tf
from lrpet_tf import svd_training as st
from lrpet_tf._keras import keras


def np_orthogonality(a):
    r = a.shape[1]
    return np.sum((a.T @ a - np.eye(r)) ** 2) / r**2


def np_sparsity(s, kind):
    l1, l2 = np.sum(np.abs(s)), np.sqrt(np.sum(s**2))
    return {"l1": l1, "hoyer": l1 / l2, "hoyer_square": (l1 / l2) ** 2}[kind]


@pytest.mark.keras_independent
def test_penalties_equal_numpy():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(20, 6))
    np.testing.assert_allclose(lrpet_tf.ops.orthogonality_penalty(a), np_orthogonality(a))
    q, _ = np.linalg.qr(a)
    assert float(lrpet_tf.ops.orthogonality_penalty(q)) == pytest.approx(0.0, abs=1e-12)
    s = rng.normal(size=9)
    for kind in ("l1", "hoyer", "hoyer_square"):
        np.testing.assert_allclose(lrpet_tf.ops.sparsity_penalty(s, kind), np_sparsity(s, kind))
    assert float(lrpet_tf.ops.sparsity_penalty(np.zeros(3), "hoyer")) == 0.0


def test_layer_losses_are_the_weighted_sum_of_penalties():
    layer = st.SVDDense(7, orthogonality=0.5, sparsity="hoyer_square", sparsity_weight=0.25)
    layer.build((None, 12))
    u, s, v = layer.u.numpy(), layer.s.numpy(), layer.v.numpy()
    expected = 0.5 * (np_orthogonality(u) + np_orthogonality(v)) + 0.25 * np_sparsity(
        s, "hoyer_square"
    )
    np.testing.assert_allclose(float(sum(layer.losses)), expected, rtol=1e-5)
    st.set_regularization(keras.Sequential([keras.Input((12,)), layer]), sparsity_weight=0.0)
    np.testing.assert_allclose(
        float(sum(layer.losses)), 0.5 * (np_orthogonality(u) + np_orthogonality(v)), rtol=1e-5
    )


@pytest.mark.parametrize("scheme", ["channel", "spatial"])
@pytest.mark.parametrize("strides", [1, 2])
@pytest.mark.parametrize("padding", ["same", "valid"])
@pytest.mark.parametrize("rank", [None, 2])  # full rank: one conv; rank 2: two thin convs
def test_svd_conv2d_equals_conv_with_rebuilt_kernel(scheme, strides, padding, rank):
    layer = st.SVDConv2D(6, (3, 2), strides=strides, padding=padding, scheme=scheme, rank=rank)
    x = np.random.default_rng(1).normal(size=(2, 9, 8, 5)).astype(np.float32)
    y = layer(x)
    u, s, v = (w.numpy().astype(np.float64) for w in (layer.u, layer.s, layer.v))
    m = (u * s) @ v.T
    if scheme == "channel":
        kernel = m.reshape(3, 2, 5, 6)
    else:
        kernel = m.reshape(3, 5, 2, 6).transpose(0, 2, 1, 3)
    expected = tf.nn.conv2d(x, kernel.astype(np.float32), strides, padding.upper())
    expected = expected + layer.bias.numpy()
    assert y.shape == expected.shape == (2,) + layer.compute_output_shape((2, 9, 8, 5))[1:]
    np.testing.assert_allclose(y, expected, atol=1e-4)
    assert layer._two_ops((9, 8)) == (rank == 2)


def test_svd_conv2d_dilation_and_dense_paths():
    layer = st.SVDConv2D(4, 3, dilation_rate=2, padding="same", rank=1)
    x = np.random.default_rng(2).normal(size=(1, 10, 10, 3)).astype(np.float32)
    y = layer(x)
    expected = tf.nn.conv2d(x, layer.rebuilt_kernel(), 1, "SAME", dilations=2) + layer.bias
    np.testing.assert_allclose(y, expected, atol=1e-5)
    for rank in (None, 1):
        dense = st.SVDDense(5, rank=rank, activation="relu")
        z = np.random.default_rng(3).normal(size=(4, 3, 8)).astype(np.float32)
        out = dense(z)
        w = dense.matrix().numpy()
        np.testing.assert_allclose(out, np.maximum(z @ w + dense.bias.numpy(), 0), atol=1e-5)


@pytest.mark.parametrize("scheme", ["channel", "spatial"])
def test_decompose_svd_init_computes_the_same_function(scheme):
    model = tm.randomize_batchnorm(tm.residual_cnn(dense_hidden=True))
    x, _ = tm.classification_data(8)
    before = tm.all_weights(model)
    svd_model, report = st.decompose(
        model, scheme=scheme, layer_types=("conv", "dense"), return_report=True
    )
    assert all(np.array_equal(a, b) for a, b in zip(before, tm.all_weights(model)))
    assert len(report.by_action("decomposed")) == 6
    assert isinstance(svd_model.get_layer("conv_b"), st.SVDConv2D)
    np.testing.assert_allclose(svd_model(x, training=False), model(x, training=False), atol=1e-5)


def test_decompose_random_init_and_skips():
    inputs = keras.Input((10, 4))
    h = keras.layers.Conv1D(4, 3, name="conv1d")(inputs)
    out = keras.layers.Dense(3, name="dense")(keras.layers.Flatten()(h))
    model = keras.Model(inputs, out)
    svd_model, report = st.decompose(
        model, init="random", layer_types=("conv", "dense"), return_report=True
    )
    assert report.by_action("skipped") == ["conv1d"]
    layer = svd_model.get_layer("dense")
    assert isinstance(layer, st.SVDDense)
    assert not np.allclose(layer.matrix().numpy(), model.get_layer("dense").kernel.numpy())


def np_energy_rank(s, e):
    s2 = np.sort(s**2)[::-1]
    return int(np.argmax(np.cumsum(s2) >= (1 - e) * s2.sum()) + 1)


def test_prune_keeps_the_energy_rule_ranks_and_zeroes_the_rest():
    model = st.decompose(tm.residual_cnn(dense_hidden=True), layer_types=("conv", "dense"))
    rng = np.random.default_rng(4)
    svd_layers = [layer for layer in model.layers if isinstance(layer, st.SVDLayer)]
    for layer in svd_layers:  # unsorted, signed singular values
        layer.s.assign(rng.normal(size=layer.s.shape).astype(np.float32))
    x, _ = tm.classification_data(8)
    pruned, report = st.prune(model, energy=0.2, return_report=True)
    ranks = {c.layer: c.rank for c in report.changes}
    zeroed = st.decompose(tm.residual_cnn(dense_hidden=True), layer_types=("conv", "dense"))
    zeroed.set_weights(model.get_weights())
    for layer in svd_layers:
        s = layer.s.numpy()
        assert ranks[layer.name] == np_energy_rank(s, 0.2)
        assert pruned.get_layer(layer.name).current_rank == ranks[layer.name]
        keep = np.argsort(-np.abs(s))[: ranks[layer.name]]
        mask = np.zeros_like(s)
        mask[keep] = 1.0
        zeroed.get_layer(layer.name).s.assign(s * mask)
    np.testing.assert_allclose(pruned(x, training=False), zeroed(x, training=False), atol=1e-5)
    by_threshold = st.prune(model, threshold=1.0)
    for layer in svd_layers:
        expected = max(1, int(np.sum(np.abs(layer.s.numpy()) > 1.0)))
        assert by_threshold.get_layer(layer.name).current_rank == expected


def test_keras_round_trip_reproduces_outputs_and_losses(tmp_path):
    model = st.decompose(
        tm.residual_cnn(dense_hidden=True),
        scheme="spatial",
        sparsity="hoyer",
        sparsity_weight=1e-2,
        layer_types=("conv", "dense"),
    )
    pruned = st.prune(model, energy=0.3)
    x, _ = tm.classification_data(8)
    path = str(tmp_path / "svd.keras")
    pruned.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded(x), pruned(x), atol=1e-6)
    np.testing.assert_allclose(float(sum(loaded.losses)), float(sum(pruned.losses)), rtol=1e-6)
    assert loaded.get_layer("conv_b").current_rank == pruned.get_layer("conv_b").current_rank


def test_regularisers_in_logs_and_changeable_between_fits():
    model = st.decompose(
        tm.residual_cnn(), orthogonality=1.0, sparsity="l1", sparsity_weight=0.0, init="random"
    )
    model.compile(
        keras.optimizers.SGD(0.0),  # weights never change: the loss difference is the penalty
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    x, y = tm.classification_data(32)
    first = model.fit(x, y, epochs=1, batch_size=32, verbose=0).history
    st.set_regularization(model, sparsity_weight=0.5)
    second = model.fit(x, y, epochs=1, batch_size=32, verbose=0).history
    l1 = sum(
        np.abs(layer.s.numpy()).sum() for layer in model.layers if isinstance(layer, st.SVDLayer)
    )
    np.testing.assert_allclose(second["loss"][0] - first["loss"][0], 0.5 * l1, rtol=1e-4)
    np.testing.assert_allclose(second["svd_sparsity"][0], l1, rtol=1e-5)
    assert first["svd_orthogonality"][0] > 0 and second["svd_rank"][0] > 0


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda m: st.decompose(m, scheme="diagonal"), ValueError, r"scheme='diagonal'"),
        (lambda m: st.decompose(m, sparsity="l0"), ValueError, r"sparsity='l0'"),
        (lambda m: st.decompose(m, orthogonality=-1.0), ValueError, r"orthogonality=-1.0"),
        (lambda m: st.decompose(m, init="zeros"), ValueError, r"init='zeros'"),
        (lambda m: st.prune(st.decompose(m), energy=1.0), ValueError, r"energy=1.0"),
        (lambda m: st.prune(st.decompose(m), energy=-0.1), ValueError, r"energy=-0.1"),
        (lambda m: st.prune(m, energy=0.1), ValueError, r"no SVD layers"),
        (lambda m: st.SVDConv2D(4, 3, rank=50).build((None, 8, 8, 2)), ValueError, r"rank=50"),
        (lambda m: st.SVDDense(4, sparsity_weight=-2.0), ValueError, r"sparsity_weight=-2.0"),
        (lambda m: st.SVDConv2D(4, 3, scheme="depth"), ValueError, r"scheme='depth'"),
    ],
)
def test_bad_input(call, error, match):
    model = tm.residual_cnn()
    before = tm.all_weights(model)
    with pytest.raises(error, match=match):
        call(model)
    assert all(np.array_equal(a, b) for a, b in zip(before, tm.all_weights(model)))


@pytest.mark.parametrize("scheme", ["channel", "spatial"])
def test_pruned_model_factorizes_and_exports_two_ops_per_layer(scheme, tmp_path):
    model = tm.randomize_batchnorm(tm.residual_cnn(width=16))
    svd_model = st.decompose(model, scheme=scheme)
    for layer in svd_model.layers:
        if isinstance(layer, st.SVDLayer):  # a spectrum that decays fast
            layer.s.assign(np.geomspace(1.0, 1e-4, layer.current_rank).astype(np.float32))
    pruned = st.prune(svd_model, energy=0.05)
    compact, report = lrpet_tf.factorize(pruned, return_report=True)
    compact = lrpet_tf.fold_batchnorm(compact)
    x, _ = tm.classification_data(16)
    np.testing.assert_allclose(compact(x), pruned(x, training=False), atol=1e-5)
    result = lrpet_tf.export_tflite(compact, tmp_path / "svd.tflite", verify_data=x)
    assert result.max_error < 1e-4
    assert result.op_count("CONV_2D") == 4 + len(report.by_action("factorized"))
    assert len(report.by_action("factorized")) == 4


def test_hoyer_training_on_digits_drives_rank_down_and_exports(tmp_path):
    x_train, y_train, x_test, _ = tm.digits()
    dense = tm.residual_cnn(input_shape=(8, 8, 1), classes=10, width=8)
    model = st.decompose(dense, init="random", orthogonality=1.0, sparsity="hoyer")

    def fit(m, epochs, lr):
        m.compile(
            keras.optimizers.SGD(lr, momentum=0.9),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
        return m.fit(x_train, y_train, batch_size=64, epochs=epochs, verbose=0).history

    fit(model, 2, 0.05)  # stage 1: orthogonality only
    st.set_regularization(model, sparsity_weight=0.1)
    ranks = fit(model, 6, 0.05)["svd_rank"]  # stage 2: + Hoyer
    full = sum(min(layer.matrix_shape) for layer in model.layers if isinstance(layer, st.SVDLayer))
    assert ranks[-1] < 0.8 * full and ranks[-1] < ranks[0]
    pruned = st.prune(model, energy=0.01)
    st.set_regularization(pruned, sparsity_weight=0.0)
    assert fit(pruned, 2, 0.005)["accuracy"][-1] > 0.8  # stage 4: fine-tune
    compact = lrpet_tf.fold_batchnorm(lrpet_tf.factorize(pruned))
    assert lrpet_tf.model_report(compact).conv_macs < lrpet_tf.model_report(dense).conv_macs
    result = lrpet_tf.export_tflite(compact, tmp_path / "digits_svd.tflite", verify_data=x_test)
    assert result.max_error < 1e-4


def test_prune_to_a_macs_budget_takes_the_smallest_energy_that_fits():
    keras.utils.set_random_seed(2)
    model = st.decompose(tm.residual_cnn(), init="random")

    def svd_layers(m):
        return [layer for layer in m.layers if isinstance(layer, st.SVDLayer)]

    def macs_at(energy):
        return lrpet_tf.model_report(st.prune(model, energy=energy)).total_macs

    target = int(0.6 * macs_at(0.0))
    pruned = st.prune(model, macs=target)
    assert lrpet_tf.model_report(pruned).total_macs <= target
    # A linear scan over the energies where some layer's rank changes (1 - its
    # top-k energy fraction): the first one that fits gives the same ranks.
    energies = [0.0]
    for layer in svd_layers(model):
        squares = np.sort(np.asarray(layer.s.numpy(), np.float64) ** 2)[::-1]
        energies += list(1.0 - np.cumsum(squares)[:-1] / squares.sum() + 1e-12)
    first = next(e for e in sorted(energies) if macs_at(e) <= target)
    expected = {
        layer.name: layer.current_rank for layer in svd_layers(st.prune(model, energy=first))
    }
    assert {layer.name: layer.current_rank for layer in svd_layers(pruned)} == expected
    assert macs_at(max(0.0, first - 1e-6)) > target  # one step less pruning does not fit
    with pytest.raises(ValueError, match="macs"):
        st.prune(model, macs=1)
    with pytest.raises(ValueError, match="exactly one"):
        st.prune(model, energy=0.1, macs=target)
