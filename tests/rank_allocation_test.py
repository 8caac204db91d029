"""`lrpet_tf.allocate_ranks` and `lrpet_tf.ops.budget_ranks`: per-layer ranks for a budget.

The costs are checked against a hand computation (BN folded by its formula,
NumPy SVD truncation with "scale" energy transfer, NumPy softmax cross
entropy), the allocation against brute force, and every bad argument is
refused before the first forward pass.
"""

import itertools

import numpy as np
import pytest
import testing_models as tm

import lrpet_tf
from lrpet_tf._keras import keras


def _cross_entropy(y_true, logits):
    logits = np.asarray(logits, np.float64)
    logits = logits - logits.max(-1, keepdims=True)
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    return -log_p[np.arange(len(y_true)), np.asarray(y_true)].mean()


def _model(seed=1):
    """Conv -> BN -> GAP -> Dense with random BN statistics (BN matters to the costs)."""
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((5, 5, 3)),
            keras.layers.Conv2D(8, 3, name="conv"),
            keras.layers.BatchNormalization(epsilon=1e-3, name="bn"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(4, name="fc"),
        ]
    )
    rng = np.random.default_rng(seed)
    bn = model.get_layer("bn")
    bn.set_weights([rng.uniform(0.5, 2.0, 8), rng.normal(size=8), rng.normal(size=8),
                    rng.uniform(0.5, 2.0, 8)])  # fmt: skip
    return model


def _data(seed=2, n=16):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 5, 5, 3)).astype(np.float32), rng.integers(0, 4, n)


def _sparse_ce(y_true, logits):
    return keras.losses.sparse_categorical_crossentropy(y_true, logits, from_logits=True)


def test_costs_equal_hand_computed_cross_entropy_of_the_bn_folded_kernel():
    model = _model()
    x, y = _data()
    before = [w.copy() for w in model.get_weights()]
    kernel, bias = model.get_layer("conv").get_weights()
    gamma, beta, mean, var = model.get_layer("bn").get_weights()
    fc_kernel, fc_bias = model.get_layer("fc").get_weights()
    scale = gamma / np.sqrt(var + 1e-3)
    folded, folded_bias = kernel * scale, (bias - mean) * scale + beta

    def cross_entropy(k):
        patches = np.stack(
            [x[:, i : i + 3, j : j + 3, :].reshape(16, -1) for i in range(3) for j in range(3)], 1
        )
        features = (patches @ k.reshape(27, 8) + folded_bias).mean(1)
        return _cross_entropy(y, features @ fc_kernel + fc_bias)

    u, s, vt = np.linalg.svd(folded.reshape(27, 8).astype(np.float64), full_matrices=False)
    raw = {}
    for r in range(1, 7):  # break-even rank of 27 x 8: 216 / 35 = 6.2
        kept = s[:r] * np.sqrt((s**2).sum() / (s[:r] ** 2).sum())  # "scale" energy transfer
        raw[r] = cross_entropy(((u[:, :r] * kept) @ vt[:r]).reshape(kernel.shape))
    base = cross_entropy(folded)
    ranks, costs = lrpet_tf.allocate_ranks(
        model, x, y, {"conv": 3}, loss=_sparse_ce, batch_size=5, return_costs=True
    )
    assert list(costs["conv"]) == [1, 2, 3, 4, 5, 6]
    for r, cost in costs["conv"].items():  # non-increasing: the best of the ranks <= r
        assert cost == pytest.approx(min(raw[q] for q in range(1, r + 1)) - base, abs=1e-4)
    # One layer, budget 3 * (27 + 8): the cheapest rank <= 3 with the least cost.
    best = min(range(1, 4), key=lambda r: (round(costs["conv"][r], 12), r))
    assert ranks == {"conv": best}
    for after, original in zip(model.get_weights(), before):  # the model is not changed
        np.testing.assert_array_equal(after, original)


def test_the_compiled_loss_is_the_default_and_an_lrpet_callback_gives_the_budget():
    model = _model()
    x, y = _data()
    explicit = lrpet_tf.allocate_ranks(
        model, x, y, {"conv": 2, "fc": 2}, loss=_sparse_ce, return_costs=True
    )
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    callback = lrpet_tf.LRPET(ranks={"conv": 2, "fc": 2}, verbose=0)
    callback.prepare(model)
    compiled = lrpet_tf.allocate_ranks(model, x, y, callback, return_costs=True)
    assert compiled[0] == explicit[0]
    for name in ("conv", "fc"):
        assert compiled[1][name] == pytest.approx(explicit[1][name], abs=1e-6)
    ranks = compiled[0]
    assert 2 * 35 + 2 * 12 >= ranks["conv"] * 35 + ranks["fc"] * 12  # fc: 8 x 4
    with_budget = lrpet_tf.allocate_ranks(model, x, y, callback, budget=35 + 12)
    assert with_budget == {"conv": 1, "fc": 1}


@pytest.mark.keras_independent
def test_budget_ranks_matches_brute_force():
    rng = np.random.default_rng(0)
    costs = {
        name: {rank: float(c) for rank, c in enumerate(rng.random(top), 1)}
        for name, top in (("a", 5), ("b", 7), ("c", 4))
    }
    unit = {"a": 9, "b": 20, "c": 13}
    for budget in (42, 80, 120, 1000):
        ranks, total = lrpet_tf.ops.budget_ranks(costs, unit, budget)
        feasible = [
            combo
            for combo in itertools.product(*(list(c) for c in costs.values()))
            if sum(unit[n] * r for n, r in zip(costs, combo)) <= budget
        ]
        best = min(sum(costs[n][r] for n, r in zip(costs, combo)) for combo in feasible)
        assert total == pytest.approx(best)
        assert sum(unit[n] * r for n, r in ranks.items()) <= budget
        assert total == pytest.approx(sum(costs[n][r] for n, r in ranks.items()))
    with pytest.raises(ValueError, match=r"`budget` >= 42 .* budget=41"):
        lrpet_tf.ops.budget_ranks(costs, unit, 41)


def _counting_loss():
    calls = []

    def loss(y_true, logits):
        calls.append(1)
        return _sparse_ce(y_true, logits)

    return loss, calls


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"ranks": {"nope": 2}}, "nope"),
        ({"ranks": {"conv": 9}}, r"ranks\['conv'\]=9"),
        ({"ranks": {"conv": 0}}, r"ranks\['conv'\]=0"),
        (
            {"ranks": {"bn": 2}},
            "'bn', which cannot be factorized: BatchNormalization has no kernel",
        ),
        ({"ranks": {}}, "ranks={}"),
        ({"ranks": {"conv": True}}, r"ranks\['conv'\]=True"),
        ({"budget": float("nan")}, "budget=nan"),
        ({"batch_size": True}, "batch_size=True"),
        ({"cost": "latency", "latency_table": "foo"}, "latency_table='foo'"),
        (
            {"x": np.zeros((16, 6, 6, 3), np.float32)},
            r"`x` to be inputs of shape .*\(16, 6, 6, 3\)",
        ),
        ({"x": [np.zeros((16, 5, 5, 3), np.float32)]}, "x of type list"),
        ({"y": np.zeros(3, int)}, r"len\(x\)=16, len\(y\)=3"),
        ({"batch_size": 0}, "batch_size=0"),
        ({"budget": 10}, "budget=10"),
        ({"loss": None}, "not compiled with a loss.*loss=None"),
        ({"loss": "mse"}, "loss='mse'"),
    ],
)
def test_bad_arguments_are_refused_before_any_forward_pass(changes, message):
    model = _model()
    x, y = _data()
    loss, calls = _counting_loss()
    arguments = {"x": x, "y": y, "ranks": {"conv": 2}, "loss": loss, **changes}
    with pytest.raises(ValueError, match=message):
        lrpet_tf.allocate_ranks(model, **arguments)
    assert calls == []


def test_prune_ratio_for_macs_is_the_smallest_g_that_fits():
    model = tm.residual_cnn()
    counted = {}  # ranks -> MACs of the factorized model: a grid of g repeats few rank sets

    def compact_macs(g):
        cb = lrpet_tf.LRPET(prune_ratio=g, exclude=["stem"], verbose=0)
        cb.prepare(model)
        ranks = tuple(sorted(cb.ranks.items()))
        if ranks not in counted:
            compact = lrpet_tf.factorize(model, ranks=dict(ranks))
            counted[ranks] = lrpet_tf.model_report(compact).total_macs
        return counted[ranks]

    total = lrpet_tf.model_report(model).total_macs
    for fraction in (0.9, 0.6, 0.45):
        budget = int(fraction * total)
        g = lrpet_tf.prune_ratio_for_macs(model, budget, exclude=["stem"])
        assert compact_macs(g) <= budget
        # Any smaller g on a fine grid does not fit (the factorized model, counted for real).
        for smaller in np.arange(0.0, g, 0.01):
            assert compact_macs(float(smaller)) > budget, (fraction, smaller, g)
    with pytest.raises(ValueError, match="macs"):
        lrpet_tf.prune_ratio_for_macs(model, 10, exclude=["stem"])
    with pytest.raises(ValueError, match="macs"):
        lrpet_tf.prune_ratio_for_macs(model, 0.5)
