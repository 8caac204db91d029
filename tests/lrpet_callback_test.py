"""The LRPET callback through real `model.fit`."""

import numpy as np
import pytest
import tensorflow as tf
import testing_models as tm

import lrpet_tf
from lrpet_tf._keras import keras


def matrix_rank(layer, rtol=1e-5):
    k = np.asarray(layer.kernel.numpy(), np.float64)
    s = np.linalg.svd(k.reshape(-1, k.shape[-1]), compute_uv=False)
    return int(np.sum(s > rtol * s[0]))


def conv_layers(model):
    return [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]


def test_fit_projects_every_conv_to_its_rank():
    model = tm.compile_for_test(tm.residual_cnn())
    x, y = tm.classification_data()
    cb = lrpet_tf.LRPET(prune_ratio=0.5, verbose=0)
    model.fit(x, y, epochs=2, batch_size=16, callbacks=[cb], verbose=0)
    convs = conv_layers(model)
    assert set(cb.ranks) == {layer.name for layer in convs}
    for layer in convs:
        k = layer.kernel.shape
        max_rank = min(int(np.prod(k[:-1])), k[-1])
        assert cb.ranks[layer.name] == int(max_rank - max_rank * 0.5)
        assert matrix_rank(layer) <= cb.ranks[layer.name]
    assert matrix_rank(model.get_layer("head")) == 4  # Dense head untouched
    assert cb.projection_count == 2  # one per epoch, no extra at the end


def test_bn_pairing_follows_graph_edges_not_layer_order():
    model = tm.residual_cnn()
    cb = lrpet_tf.LRPET(prune_ratio=0.5)
    cb.prepare(model)
    assert cb.rectified_layers == {
        "stem": "stem_bn",
        "conv_a": "bn_a",
        "conv_b": "bn_b",
        "shortcut": "bn_s",
    }


def test_rectified_layers_only_projected_ones_and_none_without_rectification():
    model = tm.residual_cnn()
    with pytest.raises(AttributeError, match="known once training starts"):
        _ = lrpet_tf.LRPET(ranks={"conv_b": 3}).rectified_layers
    cb = lrpet_tf.LRPET(ranks={"conv_b": 3})
    cb.prepare(model)
    assert cb.rectified_layers == {"conv_b": "bn_b"}
    cb = lrpet_tf.LRPET(prune_ratio=0.5, bn_rectification=False)
    cb.prepare(model)
    assert cb.rectified_layers == {}


def test_projection_matches_ops_with_bn_rectification():
    model = tm.randomize_batchnorm(tm.residual_cnn())
    conv, bn = model.get_layer("conv_b"), model.get_layer("bn_b")
    kernel = conv.kernel.numpy()
    a = bn.gamma.numpy() / np.sqrt(bn.moving_variance.numpy() + bn.epsilon)
    m = kernel.reshape(-1, kernel.shape[-1])
    expected = lrpet_tf.ops.low_rank_projection(m[None], [4], "scale", a[None])
    cb = lrpet_tf.LRPET(ranks={"conv_b": 4}, verbose=0)
    cb.set_model(model)
    cb.prepare(model)
    before = {w.name: w.numpy() for w in bn.weights}
    cb.project()
    np.testing.assert_allclose(
        conv.kernel.numpy().reshape(m.shape), expected.matrices.numpy()[0], atol=1e-5
    )
    for w in bn.weights:
        np.testing.assert_array_equal(w.numpy(), before[w.name])
    # Only conv_b was named: the others are untouched.
    assert set(cb.ranks) == {"conv_b"}


@pytest.mark.parametrize("mode", ["scale", "additive", None])
def test_energy_transfer_modes_conserve_or_truncate(mode):
    model = tm.residual_cnn()
    layer = model.get_layer("conv_b")
    m = layer.kernel.numpy().reshape(-1, layer.kernel.shape[-1]).astype(np.float64)
    energy = np.sum(m**2)
    cb = lrpet_tf.LRPET(
        ranks={"conv_b": 3}, energy_transfer=mode, bn_rectification=False, verbose=0
    )
    cb.set_model(model)
    cb.prepare(model)
    cb.project()
    p = layer.kernel.numpy().reshape(m.shape).astype(np.float64)
    s = np.linalg.svd(m, compute_uv=False)
    if mode is None:
        np.testing.assert_allclose(np.sum(p**2), np.sum(s[:3] ** 2), rtol=1e-4)
    else:
        np.testing.assert_allclose(np.sum(p**2), energy, rtol=1e-4)


@pytest.mark.parametrize(
    "frequency, epochs, steps, expected", [(3, 2, 4, 3), (4, 2, 4, 2), (5, 1, 4, 1)]
)
def test_step_frequency_projection_count(frequency, epochs, steps, expected):
    # 4 steps/epoch. frequency=3 over 8 steps -> steps 3, 6 and a final one at 8.
    # frequency=4 -> steps 4 and 8 (no extra). frequency=5 over 4 steps -> final only.
    model = tm.compile_for_test(tm.residual_cnn())
    x, y = tm.classification_data(n=16 * steps)
    cb = lrpet_tf.LRPET(prune_ratio=0.5, frequency=frequency, verbose=0)
    model.fit(x, y, epochs=epochs, batch_size=16, callbacks=[cb], verbose=0)
    assert cb.projection_count == expected
    for layer in conv_layers(model):
        assert matrix_rank(layer) <= cb.ranks[layer.name]


def test_tf_data_dense_layers_and_exclude():
    model = tm.compile_for_test(tm.residual_cnn(dense_hidden=True))
    x, y = tm.classification_data()
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    cb = lrpet_tf.LRPET(
        prune_ratio=0.75, layer_types=("conv", "dense"), exclude=["head", "stem"], verbose=0
    )
    model.fit(ds, epochs=1, callbacks=[cb], verbose=0)
    assert set(cb.ranks) == {"shortcut", "conv_a", "conv_b", "hidden"}
    assert matrix_rank(model.get_layer("hidden")) <= cb.ranks["hidden"] == 4
    assert matrix_rank(model.get_layer("stem")) == 8


def test_include_predicate_and_warmup():
    model = tm.compile_for_test(tm.residual_cnn())
    x, y = tm.classification_data()
    cb = lrpet_tf.LRPET(
        prune_ratio=0.5,
        include=lambda layer: layer.kernel.shape[0] == 3,
        warmup_epochs=2,
        verbose=0,
    )
    model.fit(x, y, epochs=3, batch_size=32, callbacks=[cb], verbose=0)
    assert set(cb.ranks) == {"stem", "conv_a", "conv_b"}
    assert cb.projection_count == 1  # epochs 0 and 1 are warm-up


def test_validation_metrics_see_projected_weights():
    model = tm.compile_for_test(tm.residual_cnn())
    x, y = tm.classification_data()
    seen = []

    class Probe(keras.callbacks.Callback):
        def on_test_begin(self, logs=None):
            seen.append(matrix_rank(self.model.get_layer("conv_b")))

    cb = lrpet_tf.LRPET(prune_ratio=0.75, verbose=0)
    model.fit(
        x, y, epochs=1, batch_size=16, validation_data=(x, y), callbacks=[cb, Probe()], verbose=0
    )
    assert seen == [cb.ranks["conv_b"]]
    assert "lrpet_energy_kept" in model.history.history


def test_verbose_line_is_printed_between_epochs(capsys):
    model = tm.compile_for_test(tm.residual_cnn())
    x, y = tm.classification_data()
    model.fit(x, y, epochs=1, batch_size=32, callbacks=[lrpet_tf.LRPET(prune_ratio=0.5)], verbose=0)
    out = capsys.readouterr().out
    assert "LRPET: projected 4 layers in" in out and "energy kept before transfer" in out


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (
            {"prune_ratio": 1.5},
            ValueError,
            r"Expected `prune_ratio` to be a finite number in \[0, 1\). Received: prune_ratio=1.5",
        ),
        ({"ranks": 0}, ValueError, r"ranks=0"),
        ({"prune_ratio": 0.5, "frequency": "batch"}, ValueError, r"frequency='batch'"),
        ({"prune_ratio": 0.5, "frequency": 0}, ValueError, r"frequency=0"),
        (
            {"prune_ratio": 0.5, "energy_transfer": "uniform"},
            ValueError,
            r"energy_transfer='uniform'",
        ),
        ({"prune_ratio": 0.5, "layer_types": ("conv", "lstm")}, ValueError, r"layer_types="),
        ({"prune_ratio": 0.5, "bn_rectification": "yes"}, TypeError, r"bn_rectification='yes'"),
        ({"prune_ratio": 0.5, "verbose": True}, ValueError, r"int in \[0, 2\].*verbose=True"),
        ({"prune_ratio": 0.5, "verbose": 3}, ValueError, r"verbose=3"),
    ],
)
def test_bad_arguments_fail_at_construction(kwargs, error, match):
    with pytest.raises(error, match=match):
        lrpet_tf.LRPET(**kwargs)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"ranks": {"conv_b": 500}}, r"ranks\['conv_b'\]=500"),
        ({"ranks": {"nope": 3}}, r"does not have: \['nope'\]"),
        ({"prune_ratio": 0.5, "exclude": ["missing"]}, r"does not have: \['missing'\]"),
    ],
)
def test_bad_arguments_fail_before_training_and_leave_model_untouched(kwargs, match):
    model = tm.compile_for_test(tm.residual_cnn())
    x, y = tm.classification_data()
    before = tm.all_weights(model)
    with pytest.raises(ValueError, match=match):
        model.fit(x, y, epochs=1, callbacks=[lrpet_tf.LRPET(**kwargs)], verbose=0)
    for a, b in zip(before, tm.all_weights(model)):
        np.testing.assert_array_equal(a, b)


def test_ranks_before_training_explains_itself():
    with pytest.raises(AttributeError, match="known once training starts"):
        _ = lrpet_tf.LRPET(prune_ratio=0.5).ranks


def test_projection_is_idempotent_bit_for_bit():
    model = tm.randomize_batchnorm(tm.residual_cnn())
    cb = lrpet_tf.LRPET(prune_ratio=0.5, verbose=0)
    cb.set_model(model)
    cb.prepare(model)
    first = cb.project()
    assert first.projected == 4 and first.unchanged == []
    once = tm.all_weights(model)
    second = cb.project()
    assert sorted(second.unchanged) == sorted(cb.ranks) and second.projected == 0
    for a, b in zip(once, tm.all_weights(model)):
        np.testing.assert_array_equal(a, b)


def test_epoch_projection_precedes_epoch_end_checkpoints(tmp_path):
    model = tm.compile_for_test(tm.residual_cnn())
    x, y = tm.classification_data()
    path = str(tmp_path / "epoch.weights.h5")
    saver = keras.callbacks.ModelCheckpoint(path, save_weights_only=True)
    cb = lrpet_tf.LRPET(prune_ratio=0.75, verbose=0)
    # The checkpoint callback comes first: it must still save projected weights.
    model.fit(x, y, epochs=1, batch_size=16, callbacks=[saver, cb], verbose=0)
    saved = tm.compile_for_test(tm.residual_cnn())
    saved.load_weights(path)
    assert matrix_rank(saved.get_layer("conv_b")) <= cb.ranks["conv_b"]


def test_tensorboard_summaries(tmp_path):
    model = tm.compile_for_test(tm.residual_cnn())
    x, y = tm.classification_data()
    cb = lrpet_tf.LRPET(prune_ratio=0.5, log_dir=str(tmp_path), verbose=0)
    model.fit(x, y, epochs=2, batch_size=32, callbacks=[cb], verbose=0)
    tags = set()
    for event_file in (tmp_path / "lrpet").iterdir():
        for event in tf.compat.v1.train.summary_iterator(str(event_file)):
            tags.update(v.tag for v in event.summary.value)
    assert {"lrpet/energy_kept/conv_b", "lrpet/rank/stem", "lrpet/singular_values/shortcut"} <= tags
    assert "lrpet/energy_kept_mean" in tags


def test_ill_conditioned_batchnorm_scale_does_not_hide_a_full_rank_kernel():
    # A BN scale of 1e3 on four channels and 1e-6 on the rest makes the merged
    # matrix look numerically rank 4; the kernel itself is full rank (16).
    model = tm.residual_cnn()
    bn = model.get_layer("bn_b")
    bn.gamma.assign(np.array([1e3] * 4 + [1e-6] * 12, np.float32))
    cb = lrpet_tf.LRPET(ranks={"conv_b": 4}, verbose=0)
    cb.set_model(model)
    stats = cb.project()
    assert stats.unchanged == [] and stats.projected == 1
    assert matrix_rank(model.get_layer("conv_b"), rtol=1e-6) <= 4
    assert cb.project().unchanged == ["conv_b"]  # and projecting again changes nothing


def test_many_callbacks_in_one_process_do_not_warn_of_retracing(caplog):
    # A sweep makes one LRPET (one Projector, traced once) per prune ratio;
    # TF counts traces per code object across instances and warns from the
    # sixth on, which would be wrong: each callback traces exactly once.
    model = tm.residual_cnn()
    with caplog.at_level("WARNING"):
        for g in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7):
            cb = lrpet_tf.LRPET(prune_ratio=g, verbose=0)
            cb.set_model(model)
            cb.project()
            assert max(matrix_rank(layer) for layer in conv_layers(model)) <= max(cb.ranks.values())
    assert not [r for r in caplog.records if "retracing" in r.getMessage()]
