"""lrpet_tf.ops against NumPy oracles."""

import numpy as np
import pytest
import tensorflow as tf

from lrpet_tf import ops

pytestmark = pytest.mark.keras_independent  # ops import no Keras (conftest.py)


def np_rank(m, rtol=1e-5):
    s = np.linalg.svd(np.asarray(m, np.float64), compute_uv=False)
    return int(np.sum(s > rtol * s[0]))


def np_truncation(m, r):
    u, s, vt = np.linalg.svd(np.asarray(m, np.float64), full_matrices=False)
    return (u[:, :r] * s[:r]) @ vt[:r], s


@pytest.mark.parametrize("shape", [(3, 3, 4, 8), (1, 1, 16, 8), (5, 7), (2, 3, 3, 2, 6)])
def test_matrix_view_round_trip(shape):
    k = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    m = ops.kernel_to_matrix(k)
    assert m.shape == (int(np.prod(shape[:-1])), shape[-1])
    np.testing.assert_array_equal(m.numpy(), k.reshape(-1, shape[-1]))
    np.testing.assert_array_equal(ops.matrix_to_kernel(m, shape).numpy(), k)


def test_spatial_view_indexing_and_round_trip():
    k = np.random.default_rng(1).normal(size=(3, 5, 4, 6)).astype(np.float32)
    m = ops.spatial_kernel_to_matrix(k).numpy()
    assert m.shape == (3 * 4, 5 * 6)
    i, j, c, n = 2, 3, 1, 4
    assert m[i * 4 + c, j * 6 + n] == k[i, j, c, n]
    np.testing.assert_array_equal(ops.spatial_matrix_to_kernel(m, k.shape).numpy(), k)


@pytest.mark.parametrize("mode", ["scale", "additive", None])
def test_transfer_energy_formulas(mode):
    s = np.array([[5.0, 3.0, 2.0, 1.0], [4.0, 4.0, 0.5, 0.1]])
    r = np.array([2, 3])
    got = ops.transfer_energy(s, r, mode).numpy()
    for row, (values, k) in enumerate(zip(s, r)):
        kept = values[:k]
        if mode == "scale":
            expected = kept * np.sqrt(np.sum(values**2) / np.sum(kept**2))
        elif mode == "additive":
            expected = np.sqrt(kept**2 + np.sum(values[k:] ** 2) / k)
        else:
            expected = kept
        np.testing.assert_allclose(got[row, :k], expected, rtol=1e-12)
        np.testing.assert_array_equal(got[row, k:], 0.0)
        if mode is not None:
            np.testing.assert_allclose(np.sum(got[row] ** 2), np.sum(values**2), rtol=1e-12)


def test_transfer_energy_rejects_unknown_mode():
    with pytest.raises(ValueError, match="energy_transfer='sum'"):
        ops.transfer_energy(np.ones((1, 3)), [1], "sum")


@pytest.mark.parametrize("kernel_shape", [(3, 3, 8, 16), (3, 3, 16, 8), (1, 1, 32, 32), (40, 24)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("mode", ["scale", "additive", None])
def test_projection_rank_optimality_and_energy(kernel_shape, dtype, mode):
    rng = np.random.default_rng(2)
    kernels = rng.normal(size=(3,) + kernel_shape).astype(dtype)
    mats = np.stack([k.reshape(-1, kernel_shape[-1]) for k in kernels])
    k_max = min(mats.shape[1:])
    ranks = np.array([1, k_max // 2, k_max - 1])
    out = ops.low_rank_projection(mats, ranks, mode)
    assert out.matrices.dtype == dtype
    tol = 1e-4 if dtype == np.float32 else 1e-10
    for m, p, r, e in zip(mats, out.matrices.numpy(), ranks, out.energy_kept.numpy()):
        assert np_rank(p) <= r
        best, s = np_truncation(m, r)
        np.testing.assert_allclose(e, np.sum(s[:r] ** 2) / np.sum(s**2), rtol=tol)
        s_p = np.linalg.svd(p.astype(np.float64), compute_uv=False)[:r]
        if mode == "scale":
            # The optimal truncation, scaled by one common factor.
            factor = np.sqrt(np.sum(s**2) / np.sum(s[:r] ** 2))
            np.testing.assert_allclose(p, best * factor, atol=tol * np.abs(best).max() * factor)
            np.testing.assert_allclose(np.sum(p.astype(np.float64) ** 2), np.sum(s**2), rtol=tol)
        elif mode == "additive":
            expected = np.sqrt(s[:r] ** 2 + np.sum(s[r:] ** 2) / r)
            np.testing.assert_allclose(s_p, expected, rtol=tol * 10)
            np.testing.assert_allclose(np.sum(p.astype(np.float64) ** 2), np.sum(s**2), rtol=tol)
        else:
            np.testing.assert_allclose(p, best, atol=tol * np.abs(best).max())


def test_projection_with_bn_rectification_projects_the_merged_matrix():
    rng = np.random.default_rng(3)
    m = rng.normal(size=(1, 72, 16))
    a = rng.uniform(0.2, 3.0, size=(1, 16))
    r = 5
    out = ops.low_rank_projection(m, [r], "scale", column_scale=a).matrices.numpy()[0]
    merged = out * a[0]
    best, s = np_truncation(m[0] * a[0], r)
    expected = best * np.sqrt(np.sum(s**2) / np.sum(s[:r] ** 2))
    # Un-merging divides by (a^2 + 1e-5) / a, so re-merging gives a^2/(a^2+1e-5).
    shrink = a[0] ** 2 / (a[0] ** 2 + 1e-5)
    np.testing.assert_allclose(merged, expected * shrink, rtol=1e-9, atol=1e-12)
    assert np_rank(out) <= r


def test_projection_float16_runs_in_float32():
    m = np.random.default_rng(4).normal(size=(2, 18, 6)).astype(np.float16)
    out = ops.low_rank_projection(m, [2, 3])
    assert out.matrices.dtype == tf.float16
    assert np_rank(out.matrices.numpy()[0].astype(np.float64), rtol=1e-2) <= 2


def test_rank_rule_matches_paper_floor():
    assert ops.rank_from_prune_ratio(144, 0.57) == 61  # int(144 - 82.08)
    assert ops.rank_from_prune_ratio(16, 0.5) == 8
    assert ops.rank_from_prune_ratio(64, 0.0) == 64
    assert ops.rank_from_prune_ratio(3, 0.99) == 1  # never 0


def test_break_even_and_costs():
    shape = (3, 3, 16, 32)
    assert ops.break_even_rank((144, 32)) == pytest.approx(144 * 32 / 176)
    assert ops.kernel_macs(shape, 64) == 3 * 3 * 16 * 32 * 64
    assert ops.factorized_macs(shape, 10, 64) == 10 * (144 + 32) * 64
    assert ops.factorized_params(shape, 10, True) == 10 * (144 + 32) + 32


def test_energy_and_numerical_rank():
    s = np.array([3.0, 2.0, 1.0, 0.0])
    assert ops.energy_rank(s, 0.0) == 3
    assert ops.energy_rank(s, 1.0 / 14.0) == 2  # drop exactly the last value's 1/14
    assert ops.energy_rank(s, 0.5) == 1
    assert ops.numerical_rank([1.0, 1e-3, 1e-9], (10, 3)) == 2
    batch = [[1.0, 1e-3, 1e-9], [0.0, 0.0, 0.0], [2.0, 1.0, 0.5]]
    np.testing.assert_array_equal(ops.numerical_rank(batch, (10, 3)), [2, 0, 3])


def test_energy_kept_and_matrix_shapes_against_numpy():
    rng = np.random.default_rng(4)
    s = rng.normal(size=(3, 7))  # unsorted, signed: ranked by |s|
    for row in range(3):
        for r in (1, 3, 7):
            top = np.sort(s[row] ** 2)[::-1]
            assert float(ops.energy_kept(s[row], r)) == pytest.approx(top[:r].sum() / top.sum())
    np.testing.assert_allclose(
        ops.energy_kept(s, [1, 2, 3]),
        [np.sort(s[i] ** 2)[::-1][: i + 1].sum() / np.sum(s[i] ** 2) for i in range(3)],
    )
    assert float(ops.energy_kept([0.0, 0.0], 1)) == 1.0
    kernel = rng.normal(size=(3, 2, 5, 4))
    assert ops.matrix_shape(kernel.shape) == kernel.reshape(-1, 4).shape == (30, 4)
    assert ops.matrix_shape((16, 10)) == (16, 10)
    assert ops.spatial_matrix_shape(kernel.shape) == tuple(
        ops.spatial_kernel_to_matrix(kernel).shape
    )


def test_fold_batchnorm_weights_matches_numpy():
    rng = np.random.default_rng(5)
    kernel = rng.normal(size=(3, 3, 4, 6))
    bias = rng.normal(size=6)
    gamma, beta, mean = rng.normal(size=(3, 6))
    var = rng.uniform(0.1, 2.0, 6)
    k, b = ops.fold_batchnorm_weights(kernel, bias, gamma, beta, mean, var, 1e-3)
    a = gamma / np.sqrt(var + 1e-3)
    np.testing.assert_allclose(k.numpy(), kernel * a)
    np.testing.assert_allclose(b.numpy(), (bias - mean) * a + beta)
    # Depthwise: output channel i*mult + j is kernel[..., i, j].
    dw = rng.normal(size=(3, 3, 2, 3))
    k, b = ops.fold_batchnorm_weights(dw, None, gamma, None, mean, var, 1e-3, channel_axes=2)
    np.testing.assert_allclose(k.numpy().reshape(3, 3, 6), dw.reshape(3, 3, 6) * a)
    np.testing.assert_allclose(b.numpy(), -mean * a)


def test_low_rank_factors_reproduce_truncation():
    m = np.random.default_rng(6).normal(size=(27, 12)).astype(np.float32)
    a, b, kept = ops.low_rank_factors(m, 4)
    best, s = np_truncation(m, 4)
    np.testing.assert_allclose(a.numpy() @ b.numpy(), best, atol=1e-5)
    assert kept == pytest.approx(np.sum(s[:4] ** 2) / np.sum(s**2))


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"prune_ratio": 1.5}, ValueError, r"prune_ratio=1.5"),
        ({"prune_ratio": -0.1}, ValueError, r"prune_ratio=-0.1"),
        (
            {"prune_ratio": 1.0},
            ValueError,
            r"Expected `prune_ratio` to be a finite number in \[0, 1\)",
        ),
        ({"ranks": 0}, ValueError, r"ranks=0"),
        ({"ranks": {"conv": -2}}, ValueError, r"ranks\['conv'\]=-2"),
        ({"ranks": 2.5}, TypeError, r"ranks=2.5"),
        ({}, ValueError, r"exactly one"),
        ({"prune_ratio": 0.5, "ranks": 3}, ValueError, r"exactly one"),
    ],
)
def test_rank_policy_validation(kwargs, error, match):
    with pytest.raises(error, match=match):
        ops.get_rank_policy(**kwargs)


def test_rank_policies():
    p = ops.PruneRatio(0.5, round_to=8)
    assert p.rank("c", (288, 64)) == 32
    assert ops.PruneRatio(0.6, round_to=8).rank("c", (288, 64)) == 32  # 25 -> 32
    assert ops.PruneRatio.from_config(p.get_config()).get_config() == p.get_config()
    f = ops.FixedRank(16)
    assert f.rank("a", (27, 64)) == 16 and f.rank("b", (3, 64)) == 3
    d = ops.FixedRank({"a": 4})
    assert d.covers("a") and not d.covers("b")
    with pytest.raises(ValueError, match=r"ranks\['a'\]=4"):
        d.rank("a", (3, 8))


@pytest.mark.parametrize("shape", [(36, 8), (8, 20), (144, 16)])
def test_kernel_singular_values_with_a_bn_scale_equal_numpy(shape):
    rng = np.random.default_rng(11)
    m = rng.normal(size=(2,) + shape)
    m[1] = m[1][:, :3] @ rng.normal(size=(3, shape[1]))  # rank 3
    scale = np.exp(rng.uniform(-6, 6, size=(2, shape[1])))  # spans ~5 orders of magnitude
    p = ops.low_rank_projection(m, [2, 2], column_scale=scale)
    want = np.linalg.svd(m, compute_uv=False)
    got = np.asarray(p.kernel_singular_values)
    assert got.shape == want.shape
    large = want > 1e-6 * want.max()
    np.testing.assert_allclose(got[large], want[large], rtol=1e-6)
    assert np.all(got[~large] < 1e-6 * want.max())
    for row in range(2):  # the numerical rank of a float32 kernel, as NumPy's rule gives it
        assert int(ops.numerical_rank(got[row], shape)) == int(ops.numerical_rank(want[row], shape))
    assert int(ops.numerical_rank(got[1], shape)) == 3


@pytest.mark.parametrize(
    "ranks, match",
    [
        ([0, 2], r"in \[1, 4\].*Received: ranks=\[0, 2\]"),
        ([2, 5], r"in \[1, 4\].*Received: ranks=\[2, 5\]"),
        ([2, 2, 2], r"2 int\(s\).*Received: ranks=\[2, 2, 2\]"),
        ([1.5, 2], r"Received: ranks=\[1.5, 2.0\]"),
    ],
)
def test_projection_refuses_ranks_outside_one_to_k(ranks, match):
    # Rank 0 would zero the matrix; above K there is nothing to keep.
    with pytest.raises(ValueError, match=match):
        ops.low_rank_projection(tf.random.normal((2, 6, 4)), ranks)


def test_projection_one_rank_for_all_and_ranks_it_cannot_see():
    m = tf.random.normal((2, 6, 4))
    both = ops.low_rank_projection(m, [2, 2]).matrices.numpy()
    np.testing.assert_array_equal(ops.low_rank_projection(m, 2).matrices.numpy(), both)
    with pytest.raises(ValueError, match=r"Received: ranks=\[0, 9\]"):  # eager: read and checked
        ops.low_rank_projection(m, tf.Variable([0, 9]))

    @tf.function(input_signature=[tf.TensorSpec(None), tf.TensorSpec([None], tf.int32)])
    def traced(matrices, ranks):  # nothing known while tracing: the caller checks
        return ops.low_rank_projection(matrices, ranks).matrices

    np.testing.assert_allclose(traced(m, tf.constant([2, 2])).numpy(), both, atol=1e-5)


def test_projection_refuses_unbatched_matrices_and_wrong_column_scale():
    m = tf.random.normal((2, 6, 4))
    with pytest.raises(ValueError, match=r"`matrices` to be a batch.*\(6, 4\)"):
        ops.low_rank_projection(m[0], [2])
    with pytest.raises(ValueError, match=r"`column_scale` of shape.*\(2, 4\).*\(2, 6\)"):
        ops.low_rank_projection(m, [2, 2], column_scale=tf.ones((2, 6)))


def test_argument_checks_one_rule_and_one_wording():
    from lrpet_tf.ops import arguments

    assert arguments.check_int(np.int64(3), "r") == 3 and type(arguments.check_int(3, "r")) is int
    assert arguments.check_int(None, "steps", also=(None,)) is None
    assert arguments.check_int("epoch", "frequency", also=("epoch",)) == "epoch"
    assert arguments.check_int(np.str_("epoch"), "frequency", also=("epoch",)) == "epoch"
    assert arguments.check_int(np.int64(-1), "num_threads", also=(-1,)) == -1
    assert arguments.check_number(np.float32(0.5), "g", 0, 1, high_open=True) == 0.5
    for value in (True, 0, 2.0, "2", None, 9):
        with pytest.raises(
            ValueError, match=rf"`r` to be an int in \[1, 8\]\. Received: r={value!r}$"
        ):
            arguments.check_int(value, "r", 1, 8)
    with pytest.raises(ValueError, match=r'`f` to be "epoch" or an int >= 1 \(steps\)\. .*f=0$'):
        arguments.check_int(0, "f", also=("epoch",), hint="steps")
    for value in (1.0, -0.1, float("nan"), float("inf"), True, "0.5"):
        with pytest.raises(ValueError, match=r"`g` to be a finite number in \[0, 1\)\. Received"):
            arguments.check_number(value, "g", 0, 1, high_open=True)
    with pytest.raises(ValueError, match=r"`w` to be None or a finite number > 0\. .*w=0"):
        arguments.check_number(0, "w", low=0, low_open=True, also=(None,))
