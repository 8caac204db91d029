"""factorize, fold_batchnorm and model_report on real graphs, by output equality."""

import numpy as np
import pytest
import testing_models as tm

import lrpet_tf
from lrpet_tf._keras import keras

L = keras.layers


def project(model, **kwargs):
    cb = lrpet_tf.LRPET(verbose=0, **kwargs)
    cb.set_model(model)
    cb.prepare(model)
    cb.project()
    return cb


def outputs(model, x):
    return np.asarray(model(x, training=False))


def weights_unchanged(model, before):
    return all(np.array_equal(a, b) for a, b in zip(before, tm.all_weights(model)))


def test_factorize_projected_model_equals_it_and_macs_follow_formula():
    model = tm.randomize_batchnorm(tm.residual_cnn(dense_hidden=True))
    cb = project(model, prune_ratio=0.6, layer_types=("conv", "dense"))
    x, _ = tm.classification_data(16)
    before = tm.all_weights(model)
    compact, report = lrpet_tf.factorize(model, ranks=cb, return_report=True)
    assert compact is not model and weights_unchanged(model, before)
    np.testing.assert_allclose(outputs(compact, x), outputs(model, x), atol=1e-5)
    changes = {c.layer: c for c in report.changes}
    # stem: 27x8 view, K=8, r=int(8-4.8)=3 < break-even 27*8/35=6.2.
    assert changes["stem"].action == "factorized" and changes["stem"].rank == 3
    conv_a = changes["conv_a"]  # 3x3x8 -> 16, stride 2 on 8x8: 16 positions
    assert conv_a.action == "factorized" and conv_a.rank == 6
    assert conv_a.macs_before == 16 * 72 * 16
    assert conv_a.macs_after == 16 * 6 * (72 + 16)
    reduce_ = compact.get_layer("conv_a_reduce")
    expand = compact.get_layer("conv_a_expand")
    assert reduce_.kernel.shape == (3, 3, 8, 6) and reduce_.strides == (2, 2)
    assert not reduce_.use_bias and expand.use_bias and expand.kernel.shape == (1, 1, 6, 16)
    assert compact.get_layer("hidden_expand").activation is keras.activations.relu
    total_before = lrpet_tf.model_report(model).total_macs
    total_after = lrpet_tf.model_report(compact).total_macs
    saved = sum(c.macs_before - c.macs_after for c in report.changes)
    assert total_after == total_before - saved


def test_factorize_numerical_rank_default_and_truncation_report():
    model = tm.residual_cnn()
    project(model, ranks={"conv_b": 5})
    compact, report = lrpet_tf.factorize(model, return_report=True)
    assert report.by_action("factorized") == ["conv_b"]
    assert compact.get_layer("conv_b_reduce").filters == 5
    x, _ = tm.classification_data(8)
    np.testing.assert_allclose(outputs(compact, x), outputs(model, x), atol=1e-5)
    # An explicit lower rank truncates, and the report gives the energy kept.
    _, report = lrpet_tf.factorize(model, ranks={"conv_b": 2}, return_report=True)
    (change,) = report.changes
    assert change.rank == 2 and 0.0 < change.energy_kept < 1.0
    # At or above break-even (144*16/160 = 14.4) a layer stays dense.
    kept, report = lrpet_tf.factorize(model, ranks={"conv_b": 15}, return_report=True)
    assert report.by_action("kept") == ["conv_b"]
    assert "break-even" in report.changes[0].detail
    assert "conv_b" in [layer.name for layer in kept.layers]


def test_factorize_sequential_returns_sequential():
    model = keras.Sequential(
        [
            keras.Input((10, 10, 3)),
            L.Conv2D(16, 3, activation="relu", name="c1"),
            L.Conv2D(16, 3, dilation_rate=2, name="c2"),
            L.Flatten(),
            L.Dense(20, name="d"),
        ]
    )
    project(model, ranks={"c1": 3, "c2": 4, "d": 2})
    compact = lrpet_tf.factorize(model, ranks={"c1": 3, "c2": 4, "d": 2})
    assert isinstance(compact, keras.Sequential)
    assert compact.get_layer("c2_reduce").dilation_rate == (2, 2)
    assert compact.get_layer("c1_expand").activation is keras.activations.relu
    x = np.random.default_rng(0).normal(size=(4, 10, 10, 3)).astype(np.float32)
    np.testing.assert_allclose(outputs(compact, x), outputs(model, x), atol=1e-4)


def test_factorize_shared_and_nested_layers():
    inner_in = keras.Input((6, 6, 4))
    inner = keras.Model(
        inner_in, L.Conv2D(12, 3, padding="same", name="inner_conv")(inner_in), name="inner"
    )
    a, b = keras.Input((6, 6, 4), name="a"), keras.Input((6, 6, 4), name="b")
    shared = L.Conv2D(4, 3, padding="same", name="shared")
    y = L.Concatenate()([inner(shared(a)), shared(b)])
    model = keras.Model([a, b], [L.GlobalAveragePooling2D()(y), y], name="two_io")
    project(model, ranks={"inner_conv": 2, "shared": 1})
    compact, report = lrpet_tf.factorize(
        model, ranks={"inner_conv": 2, "shared": 1}, return_report=True
    )
    assert set(report.by_action("factorized")) == {"inner_conv", "shared"}
    assert (
        report.changes[[c.layer for c in report.changes].index("shared")].macs_before
        == 2 * 36 * 36 * 4
    )
    xs = [np.random.default_rng(i).normal(size=(2, 6, 6, 4)).astype(np.float32) for i in (0, 1)]
    for got, want in zip(compact(xs), model(xs)):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5)
    # The shared conv stays shared: one pair of thin layers, called twice.
    assert len([layer for layer in compact.layers if layer.name == "shared_reduce"]) == 1


@pytest.mark.parametrize(
    "ranks, error, match",
    [
        ({"conv_b": 0}, ValueError, r"ranks\['conv_b'\]=0"),
        ({"conv_b": 17}, ValueError, r"ranks\['conv_b'\]=17"),
        ({"missing": 2}, ValueError, r"does not have: \['missing'\]"),
        ({"stem_bn": 2}, ValueError, r"cannot be factorized"),
        ("four", TypeError, r"ranks='four'"),
    ],
)
def test_factorize_bad_ranks(ranks, error, match):
    model = tm.residual_cnn()
    before = tm.all_weights(model)
    with pytest.raises(error, match=match):
        lrpet_tf.factorize(model, ranks=ranks)
    assert weights_unchanged(model, before)


class Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.conv = L.Conv2D(4, 3)

    def call(self, x):
        return self.conv(x)


@pytest.mark.parametrize(
    "rewrite", [lrpet_tf.factorize, lrpet_tf.fold_batchnorm, lrpet_tf.model_report]
)
def test_rewrites_refuse_subclassed_and_unbuilt_models(rewrite):
    model = Subclassed()
    model(np.zeros((1, 5, 5, 1), np.float32))
    with pytest.raises(TypeError, match="Functional or Sequential.*Subclassed"):
        rewrite(model)
    with pytest.raises(ValueError, match="not built"):
        rewrite(keras.Sequential([L.Dense(3)]))


def test_fold_batchnorm_equals_inference_outputs():
    model = tm.randomize_batchnorm(tm.residual_cnn())
    x, _ = tm.classification_data(16)
    before = tm.all_weights(model)
    folded, report = lrpet_tf.fold_batchnorm(model, return_report=True)
    assert weights_unchanged(model, before)
    assert not [layer for layer in folded.layers if isinstance(layer, L.BatchNormalization)]
    assert sorted(report.by_action("folded")) == ["bn_a", "bn_b", "bn_s", "stem_bn"]
    np.testing.assert_allclose(outputs(folded, x), outputs(model, x), atol=1e-5)
    assert folded.get_layer("conv_b").use_bias


def test_fold_batchnorm_depthwise_dense_and_what_it_leaves():
    inputs = keras.Input((8, 8, 3))
    h = L.DepthwiseConv2D(3, depth_multiplier=2, name="dw")(inputs)
    h = L.BatchNormalization(name="bn_dw")(h)
    r = L.Conv2D(6, 1, activation="relu", name="relu_conv")(h)
    r = L.BatchNormalization(name="bn_after_relu")(r)
    c = L.Conv2D(6, 1, name="two_consumers")(h)
    branch = L.BatchNormalization(name="bn_branch")(c)
    h = L.Add()([r, branch, c])
    h = L.GlobalAveragePooling2D()(h)
    h = L.BatchNormalization(name="bn_dense", scale=False)(L.Dense(5, name="dense")(h))
    model = tm.randomize_batchnorm(keras.Model(inputs, h))
    folded, report = lrpet_tf.fold_batchnorm(model, return_report=True)
    assert sorted(report.by_action("folded")) == ["bn_dense", "bn_dw"]
    details = {c.layer: c.detail for c in report.changes if c.action == "skipped"}
    assert "non-linear activation (relu)" in details["bn_after_relu"]
    assert "also feeds" in details["bn_branch"]
    x = np.random.default_rng(1).normal(size=(4, 8, 8, 3)).astype(np.float32)
    np.testing.assert_allclose(outputs(folded, x), outputs(model, x), atol=1e-5)


def test_model_report_counts_macs_and_params():
    model = tm.residual_cnn()
    report = lrpet_tf.model_report(model)
    assert report.total_params == model.count_params()
    expected = {
        "stem": 64 * 27 * 8,
        "conv_a": 16 * 72 * 16,
        "conv_b": 16 * 144 * 16,
        "shortcut": 16 * 8 * 16,
        "head": 16 * 4,
    }
    rows = {r.name: r for r in report.layers}
    for name, macs in expected.items():
        assert rows[name].macs == macs
    assert report.total_macs == sum(expected.values())
    assert report.conv_macs == report.total_macs - 64
    assert rows["conv_b"].max_rank == 16 and rows["conv_b"].rank == 16
    assert rows["conv_b"].break_even == pytest.approx(144 * 16 / 160)
    assert "total" in str(report)


def test_format_table_aligns_python_and_numpy_numbers():
    table = lrpet_tf.graph.format_table(
        ["layer", "MACs", "energy"],
        [["conv", np.int64(1234567), np.float32(0.9877)], ["dense", 12, None]],
        title="t",
    )
    assert table.splitlines() == [
        "t",
        "layer       MACs  energy",
        "-----  ---------  ------",
        "conv   1,234,567  0.9877",
        "dense         12       -",
    ]
