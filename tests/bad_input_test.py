"""One test per row of the README's "Bad input" table.

Every entry point checks its arguments before it changes anything, and a
failure leaves the user's model exactly as it was.
"""

import importlib
import logging
import os

import numpy as np
import pytest
import tensorflow as tf
import testing_models as tm

import lrpet_tf
from lrpet_tf import svd_training as st
from lrpet_tf._keras import keras

L = keras.layers


def unchanged(model, before):
    return all(np.array_equal(a, b) for a, b in zip(before, tm.all_weights(model)))


def matrix_rank(layer):
    k = np.asarray(layer.kernel.numpy(), np.float64)
    s = np.linalg.svd(k.reshape(-1, k.shape[-1]), compute_uv=False)
    return int(np.sum(s > 1e-5 * s[0]))


class SubclassedNet(keras.Model):
    def __init__(self):
        super().__init__()
        self.conv = L.Conv2D(8, 3, name="conv")
        self.bn = L.BatchNormalization()
        self.flatten = L.Flatten()
        self.head = L.Dense(4)

    def call(self, x, training=False):
        return self.head(self.flatten(self.bn(self.conv(x), training=training)))


def test_subclassed_model_trains_with_lrpet_and_is_refused_by_rewrites(caplog):
    model = tm.compile_for_test(SubclassedNet())  # not built until its first step
    x, y = tm.classification_data(16)
    cb = lrpet_tf.LRPET(prune_ratio=0.5, verbose=0)
    with caplog.at_level(logging.WARNING, logger="lrpet_tf"):
        model.fit(x, y, epochs=1, batch_size=8, callbacks=[cb], verbose=0)
    assert "without BN rectification" in caplog.text
    assert cb.ranks == {"conv": 4} and matrix_rank(model.conv) <= 4
    with pytest.raises(TypeError, match="Functional API"):
        lrpet_tf.factorize(model)


def test_subclassed_model_bad_names_fail_before_the_first_step():
    model = tm.compile_for_test(SubclassedNet())
    x, y = tm.classification_data(16)
    with pytest.raises(ValueError, match=r"does not have: \['nope'\]"):
        model.fit(x, y, epochs=1, callbacks=[lrpet_tf.LRPET(prune_ratio=0.5, exclude=["nope"])])
    assert not model.built


@pytest.mark.parametrize("mode", ["skip", "raise"])
def test_nan_kernel_is_never_written_and_raise_leaves_everything(mode, caplog):
    model = tm.residual_cnn()
    kernel = model.get_layer("conv_b").kernel
    poisoned = kernel.numpy()
    poisoned[0, 0, 0, 0] = np.nan
    kernel.assign(poisoned)
    before = tm.all_weights(model)
    cb = lrpet_tf.LRPET(prune_ratio=0.5, on_nonfinite=mode, verbose=0)
    cb.set_model(model)
    cb.prepare(model)
    if mode == "raise":
        with pytest.raises(ValueError, match=r"NaN or Inf.*\['conv_b'\].*no kernel was modified"):
            cb.project()
        assert all(
            np.array_equal(a, b, equal_nan=True) for a, b in zip(before, tm.all_weights(model))
        )
        return
    with caplog.at_level(logging.WARNING, logger="lrpet_tf"):
        stats = cb.project()
    assert stats.skipped_nonfinite == ["conv_b"] and "NaN/Inf" in caplog.text
    np.testing.assert_array_equal(kernel.numpy(), poisoned)  # left as it was
    assert matrix_rank(model.get_layer("conv_a")) <= cb.ranks["conv_a"]  # others projected
    assert not np.isnan(model.get_layer("conv_a").kernel.numpy()).any()


def test_nan_in_batchnorm_statistics_is_caught_too():
    model = tm.residual_cnn()
    bn = model.get_layer("bn_b")
    bn.gamma.assign(np.full(bn.gamma.shape, np.inf, np.float32))
    cb = lrpet_tf.LRPET(prune_ratio=0.5, verbose=0)
    cb.set_model(model)
    cb.prepare(model)
    assert cb.project().skipped_nonfinite == ["conv_b"]


def test_mixed_float16_projects_in_float32():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = tm.compile_for_test(tm.residual_cnn())
        x, y = tm.classification_data(32)
        cb = lrpet_tf.LRPET(prune_ratio=0.5, verbose=0)
        model.fit(x, y, epochs=1, batch_size=16, callbacks=[cb], verbose=0)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    layer = model.get_layer("conv_b")
    assert "float32" in str(layer.kernel.dtype)
    assert matrix_rank(layer) <= cb.ranks["conv_b"]


def test_regularized_and_constrained_kernels(caplog):
    inputs = keras.Input((6, 6, 3))
    h = L.Conv2D(8, 3, kernel_regularizer=keras.regularizers.L2(1e-3), name="reg")(inputs)
    h = L.Conv2D(8, 3, kernel_constraint=keras.constraints.MaxNorm(2.0), name="con")(h)
    model = tm.compile_for_test(keras.Model(inputs, L.Dense(4)(L.Flatten()(h))))
    x, y = tm.classification_data(16, (6, 6, 3))
    cb = lrpet_tf.LRPET(prune_ratio=0.5, verbose=0)
    with caplog.at_level(logging.WARNING, logger="lrpet_tf"):
        model.fit(x, y, epochs=1, batch_size=8, callbacks=[cb], verbose=0)
    assert "['con'] have a kernel_constraint" in caplog.text
    assert matrix_rank(model.get_layer("reg")) <= cb.ranks["reg"]
    assert matrix_rank(model.get_layer("con")) <= cb.ranks["con"]


def test_frozen_layers_are_skipped_and_listed():
    model = tm.residual_cnn()
    model.get_layer("stem").trainable = False
    before = model.get_layer("stem").kernel.numpy()
    cb = lrpet_tf.LRPET(prune_ratio=0.5, verbose=0)
    cb.set_model(model)
    cb.prepare(model)
    cb.project()
    assert "stem" not in cb.ranks
    assert cb.skipped_layers == [("stem", "frozen (trainable=False)")]
    np.testing.assert_array_equal(model.get_layer("stem").kernel.numpy(), before)
    svd_model, report = st.decompose(model, return_report=True)
    assert ("stem", "skipped") in [(c.layer, c.action) for c in report.changes]


def test_callback_reused_for_a_second_model():
    cb = lrpet_tf.LRPET(prune_ratio=0.5, verbose=0)
    x, y = tm.classification_data(16)
    first = tm.compile_for_test(tm.residual_cnn(width=8))
    first.fit(x, y, epochs=1, callbacks=[cb], verbose=0)
    assert cb.ranks["conv_b"] == 8
    second = tm.compile_for_test(tm.residual_cnn(width=4))
    second.fit(x, y, epochs=1, callbacks=[cb], verbose=0)
    assert cb.ranks["conv_b"] == 4
    assert matrix_rank(second.get_layer("conv_b")) <= 4


class NoConfig(L.Layer):
    """A custom layer without a usable config (its __init__ takes a function)."""

    def __init__(self, fn, **kwargs):
        super().__init__(**kwargs)
        self.fn = fn

    def call(self, x):
        return self.fn(x)


def test_rewrite_failing_midway_leaves_the_model_as_it_was():
    inputs = keras.Input((6, 6, 3))
    h = L.BatchNormalization()(L.Conv2D(8, 3, name="conv")(inputs))
    model = keras.Model(inputs, NoConfig(lambda t: 2.0 * t, name="custom")(h))
    before = tm.all_weights(model)
    for rewrite in (lrpet_tf.fold_batchnorm, lrpet_tf.factorize, st.decompose):
        with pytest.raises(TypeError, match="Cannot clone layer 'custom'.*get_config"):
            rewrite(model)
        assert unchanged(model, before)


@pytest.mark.parametrize(
    "call, error, match",
    [
        (
            lambda: lrpet_tf.LRPET(prune_ratio=0.5, on_nonfinite="ignore"),
            ValueError,
            "on_nonfinite",
        ),
        (lambda: lrpet_tf.LRPET(ranks=True), TypeError, "ranks=True"),
        (lambda: lrpet_tf.LRPET(prune_ratio=0.5, warmup_epochs=-1), ValueError, "warmup_epochs=-1"),
        (lambda: lrpet_tf.LRPET(prune_ratio=0.5, include=3), TypeError, "include=3"),
        (lambda: lrpet_tf.PruneRatio(0.5, round_to=0), ValueError, "round_to=0"),
        (lambda: st.prune(tm.residual_cnn(), energy=0.1, threshold=1.0), ValueError, "exactly one"),
        (lambda: st.prune(st.decompose(tm.residual_cnn()), threshold=-1), ValueError, "threshold"),
        (lambda: lrpet_tf.measure_latency(b"", num_threads=0), ValueError, "num_threads=0"),
        (
            lambda: lrpet_tf.factorize(tm.residual_cnn(), layer_types="rnn"),
            ValueError,
            "layer_types",
        ),
    ],
)
def test_more_bad_arguments(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_a_ranks_dict_naming_a_missing_layer_blames_ranks():
    cb = lrpet_tf.LRPET(ranks={"nope": 4}, verbose=0)
    with pytest.raises(ValueError, match=r"`ranks` names layers .*'nope'"):
        cb.prepare(tm.residual_cnn())


def test_factorize_with_an_unprepared_callback_says_to_fit_or_prepare_first():
    cb = lrpet_tf.LRPET(prune_ratio=0.5)
    with pytest.raises(ValueError, match=r"`ranks` has no ranks yet.*cb.prepare\(model\)"):
        lrpet_tf.factorize(tm.residual_cnn(), ranks=cb)


def test_export_to_a_directory_fails_before_converting(tmp_path, monkeypatch):
    def no_conversion(*args, **kwargs):
        raise AssertionError("converted")

    monkeypatch.setattr(lrpet_tf.keras.Model, "export", no_conversion, raising=False)
    with pytest.raises(ValueError, match="`path`.*directory"):
        lrpet_tf.export_tflite(tm.residual_cnn(), tmp_path)
    # A path under a file: its folder cannot be created, which was found after converting.
    (tmp_path / "taken").write_text("")
    under_a_file = tmp_path / "taken" / "sub" / "m.tflite"
    with pytest.raises(ValueError, match=r"is a file\. Received: path=.*taken/sub/m\.tflite"):
        lrpet_tf.export_tflite(tm.residual_cnn(), under_a_file)
    for folder_like in ("", str(tmp_path / "new_folder") + os.sep):  # no file name
        with pytest.raises(ValueError, match="`path`.*not a directory"):
            lrpet_tf.export_tflite(tm.residual_cnn(), folder_like)


def test_project_with_a_bad_rank_changes_no_kernel():
    model = tm.residual_cnn()
    cb = lrpet_tf.LRPET(prune_ratio=0.5, verbose=0)
    cb.set_model(model)
    cb.prepare(model)
    before = tm.all_weights(model)
    for ranks, match in (
        ({"conv_a": 0}, r"`ranks\['conv_a'\]` to be an int in \[1, 16\].*=0"),
        ({"conv_a": 17}, r"ranks\['conv_a'\]=17"),
        ({"conv_a": 2.5}, r"ranks\['conv_a'\]=2.5"),
        ({"nope": 2}, r"not projected here: \['nope'\]"),
        (4, "dict of layer name -> rank. Received: ranks=4"),
    ):
        with pytest.raises(ValueError, match=match):
            cb.project(ranks)
        assert unchanged(model, before)
    cb.project({"conv_a": 2})
    assert matrix_rank(model.get_layer("conv_a")) == 2


class ZeroRank(lrpet_tf.RankPolicy):
    """A custom policy with a bug: rank 0 would zero every kernel."""

    def rank(self, name, matrix_shape):
        return 0


def test_a_custom_policy_out_of_range_is_refused_before_any_kernel_changes():
    model = tm.residual_cnn()
    before = tm.all_weights(model)
    match = r"ZeroRank.rank\('stem', \(27, 8\)\)` to be an int in \[1, 8\].*=0"
    with pytest.raises(ValueError, match=match):
        lrpet_tf.LRPET(ranks=ZeroRank(), verbose=0).prepare(model)
    with pytest.raises(ValueError, match=match):
        lrpet_tf.factorize(model, ranks=ZeroRank())
    assert unchanged(model, before)


@pytest.mark.parametrize(
    "ranks, error, match",
    [
        ({"nope": 2}, ValueError, r"does not have: \['nope'\]"),
        ({"conv_a": 0}, ValueError, r"ranks\['conv_a'\]=0"),
        ({"conv_a": 99}, ValueError, r"\[1, 16\].*ranks\['conv_a'\]=99"),
        (
            {"bn_a": 2},
            ValueError,
            "'bn_a', which cannot be factorized: BatchNormalization has no kernel",
        ),
        (5, ValueError, "Received: ranks=5"),
    ],
)
def test_model_report_checks_its_ranks(ranks, error, match):
    with pytest.raises(error, match=match):
        lrpet_tf.model_report(tm.residual_cnn(), ranks=ranks)


def test_model_report_ranks_give_the_rank_and_energy_of_the_truncation():
    model = tm.residual_cnn()
    report = {c.name: c for c in lrpet_tf.model_report(model, ranks={"conv_a": 3}).layers}
    k = model.get_layer("conv_a").kernel.numpy()
    s = np.linalg.svd(k.reshape(-1, k.shape[-1]).astype(np.float64), compute_uv=False)
    assert report["conv_a"].rank == 3 and report["conv_a"].max_rank == 16
    assert report["conv_a"].energy_kept == pytest.approx(np.sum(s[:3] ** 2) / np.sum(s**2))


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"tolerance": -1.0}, ValueError, "tolerance=-1.0"),
        ({"tolerance": "x"}, ValueError, "tolerance='x'"),
        ({"verify_data": np.zeros((2, 5, 5, 3))}, ValueError, r"`verify_data`.*\(8, 8, 3\)"),
        ({"verify_data": np.zeros((0, 8, 8, 3))}, ValueError, "at least one input"),
        (
            {"verify_data": [np.zeros((2, 8, 8, 3))] * 2},
            ValueError,
            "one array per model input",
        ),
        (
            {"quantization": "int8", "representative_dataset": np.zeros((0, 8, 8, 3))},
            ValueError,
            "`representative_dataset` to be a batch of at least one input",
        ),
    ],
)
def test_export_arguments_are_checked_before_converting(
    tmp_path, monkeypatch, kwargs, error, match
):
    module = importlib.import_module("lrpet_tf.export.export_tflite")

    def no_conversion(*args, **kw):
        raise AssertionError("converted")

    monkeypatch.setattr(module.conversion, "convert", no_conversion)
    with pytest.raises(error, match=match):
        lrpet_tf.export_tflite(tm.residual_cnn(), tmp_path / "m.tflite", **kwargs)
    assert not (tmp_path / "m.tflite").exists()


def test_export_of_something_not_a_model_names_model_first(tmp_path):
    with pytest.raises(TypeError, match="Received: model=None"):
        lrpet_tf.export_tflite(None, tmp_path / "m.tflite", quantization="int8")


def test_set_factors_with_a_wrong_shape_leaves_the_layer_as_it_was():
    model = st.decompose(tm.residual_cnn())
    layer = next(x for x in model.layers if isinstance(x, st.SVDConv2D))
    before = [np.array(w) for w in (layer.u, layer.s, layer.v)]
    u, s, v = (np.ones(w.shape, np.float32) for w in before)
    with pytest.raises(ValueError, match=r"Expected `s` of shape .*Received: s of shape \(1,\)"):
        layer.set_factors(u, np.ones(1, np.float32), v)
    assert all(np.array_equal(a, np.array(w)) for a, w in zip(before, (layer.u, layer.s, layer.v)))
    layer.set_factors(u, s, v)
    assert np.array_equal(np.array(layer.s), s)


def test_recalibration_with_nan_data_changes_no_statistic():
    model = tm.randomize_batchnorm(tm.residual_cnn())
    x, _ = tm.classification_data(32)
    x[5, 2, 2, 1] = np.nan
    before = tm.all_weights(model)
    with pytest.raises(ValueError, match="'stem_bn' over `data` are not finite.*was changed"):
        lrpet_tf.recalibrate_batchnorm(model, x)
    assert unchanged(model, before)


def test_recalibration_of_an_endless_dataset_needs_steps():
    model = tm.randomize_batchnorm(tm.residual_cnn())
    x, _ = tm.classification_data(32)
    endless = tf.data.Dataset.from_tensor_slices(x).batch(8).repeat()
    before = tm.all_weights(model)
    with pytest.raises(ValueError, match="Expected `steps` for an infinite dataset"):
        lrpet_tf.recalibrate_batchnorm(model, endless)
    assert unchanged(model, before)
    changes = lrpet_tf.recalibrate_batchnorm(model, endless, steps=4)
    assert set(changes) == {"stem_bn", "bn_a", "bn_b", "bn_s"}


def test_latency_table_checks_every_layer_before_timing(monkeypatch):
    module = importlib.import_module("lrpet_tf.export.latency_table")

    def no_timing(*args, **kwargs):
        raise AssertionError("timed")

    monkeypatch.setattr(module, "_measure_layer", no_timing)
    with pytest.raises(ValueError, match="'bn_a', which cannot be timed: BatchNormalization"):
        lrpet_tf.latency_table(tm.residual_cnn(), ranks={"conv_a": 2, "bn_a": 2}, cache_dir=False)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: lrpet_tf.LRPET(ranks={}), "at least one layer.*ranks={}"),
        (lambda: lrpet_tf.factorize(tm.residual_cnn(), ranks={}), "at least one layer"),
        (lambda: lrpet_tf.factorize(tm.residual_cnn(), layer_types=None), "layer_types=None"),
        (
            lambda: lrpet_tf.factorize(tm.residual_cnn(), latency_table="foo"),
            "Expected `latency_table` to be a lrpet_tf.LatencyTable.*latency_table='foo'",
        ),
        (lambda: st.decompose(tm.residual_cnn(), rank_energy=5), "rank_energy=5"),
        (
            lambda: lrpet_tf.PruneRatio(0.5, round_to="latency", latency_table={"c": [(1,)]}),
            r"rank steps as layer name -> \[\(first_rank, last_rank\)",
        ),
        (lambda: lrpet_tf.LatencyTable.from_dict({"format": _latency_format()}), '"layers" dict'),
        (
            lambda: lrpet_tf.LatencyTable.from_dict(
                {"format": _latency_format(), "layers": {"c": {"dense_ms": 1.0}}}
            ),
            r"layers\['c'\] of the latency table.*KeyError",
        ),
        (
            lambda: lrpet_tf.LatencyTable({}).dense_ms("conv"),
            r"`name` has no measurements of layers \['conv'\]",
        ),
    ],
)
def test_empty_ranks_layer_types_and_latency_tables(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def _latency_format():
    return lrpet_tf.LatencyTable({}).to_dict()["format"]


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: st.kept_indices([3.0, 1.0]), ValueError, "exactly one of `energy`, `threshold`"),
        (lambda: st.kept_indices([3.0, 1.0], energy=5), ValueError, "energy=5"),
        (
            lambda: st.kept_indices([3.0, 1.0], energy=0.1, threshold=1.0),
            ValueError,
            "exactly one",
        ),
        (
            lambda: st.energy_for_macs(st.decompose(tm.residual_cnn()), "10"),
            ValueError,
            "macs='10'",
        ),
        (lambda: lrpet_tf.TFLiteModel(tm.residual_cnn()), TypeError, "a .tflite path or its bytes"),
        (lambda: lrpet_tf.TFLiteModel(b"", num_threads=0), ValueError, "num_threads=0"),
        (lambda: lrpet_tf.LRPET(prune_ratio=0.5).ramp_ranks(1.0), ValueError, "prepare"),
        (
            lambda: lrpet_tf.LRPET(prune_ratio=0.5, project_at_end="no"),
            ValueError,
            "project_at_end='no'",
        ),
        (lambda: st.set_regularization(None, orthogonality=1.0), TypeError, "model=None"),
        (lambda: st.SVDConv2D(4, None), ValueError, "kernel_size"),
    ],
)
def test_svd_helpers_tflite_model_and_callback_arguments(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_measure_latency_takes_numpy_ints(tmp_path):
    path = lrpet_tf.export_tflite(tm.residual_cnn(), tmp_path / "m.tflite").path
    result = lrpet_tf.measure_latency(path, num_threads=np.int64(1), runs=np.int64(2), warmup=1)
    assert len(result.samples_ms) == 2


def test_recalibration_with_wrongly_shaped_data_names_data():
    model = tm.randomize_batchnorm(tm.residual_cnn())
    before = tm.all_weights(model)
    with pytest.raises(ValueError, match=r"`data` to be batches of inputs of shape \(8, 8, 3\)"):
        lrpet_tf.recalibrate_batchnorm(model, np.zeros((4, 6, 6, 3), np.float32))
    with pytest.raises(ValueError, match=r"Received: a batch of shape \(4, 8, 8\)"):
        lrpet_tf.recalibrate_batchnorm(model, np.zeros((4, 8, 8), np.float32))
    assert unchanged(model, before)


def test_allocate_ranks_on_an_unbuilt_sequential_says_to_give_it_an_input():
    model = keras.Sequential([L.Conv2D(4, 3, name="conv"), L.Flatten(), L.Dense(2)])
    x, y = np.zeros((4, 6, 6, 3), np.float32), np.zeros(4, int)
    with pytest.raises(ValueError, match="Sequential model that is not built"):
        lrpet_tf.allocate_ranks(model, x, y, {"conv": 2}, loss=lambda t, p: p)


def test_metadata_normalization_must_be_finite():
    for field, value, argument in (
        ("mean", float("nan"), "mean"),
        ("std", [1.0, float("inf")], r"std\[1\]"),
    ):
        with pytest.raises(ValueError, match=rf"`{argument}` to be a finite number"):
            lrpet_tf.export.ImageClassifierMetadata(labels=["a", "b"], **{field: value})
