"""Latency-aware ranks: the staircase finder, the table, and its users (issue 18).

Timings are never asserted: the measured table is checked for structure,
caching and round trip; the planning functions run on hand-made tables whose
numbers are known, against brute force.
"""

import importlib
import itertools

import numpy as np
import pytest
import testing_models as tm

import lrpet_tf
from lrpet_tf.export import LayerLatency
from lrpet_tf.export import find_steps


def table_of(entries, model_ms=10.0):
    """A LatencyTable from name -> (dense_ms, steps, K)."""
    layers = {
        name: LayerLatency(
            signature=name, dense_ms=dense, steps=[list(s) for s in steps], max_rank=k
        )
        for name, (dense, steps, k) in entries.items()
    }
    return lrpet_tf.LatencyTable(layers, model_ms=model_ms)


@pytest.mark.keras_independent
def test_find_steps_returns_a_synthetic_staircase_exactly_with_few_evaluations():
    boundaries = [1, 9, 17, 33, 49]  # steps start here (XNNPACK-like tiles of 8 and 16)
    calls = []

    def cost(r):
        calls.append(r)
        return float(sum(r >= b for b in boundaries))

    steps = find_steps(cost, 1, 60, lambda a, b: a == b)
    assert steps == [(1, 8, 1.0), (9, 16, 2.0), (17, 32, 3.0), (33, 48, 4.0), (49, 60, 5.0)]
    assert len(set(calls)) < 30  # not all 60 ranks
    assert find_steps(lambda r: 3.0, 4, 4, lambda a, b: a == b) == [(4, 4, 3.0)]
    noisy = find_steps(lambda r: 1.0 + 0.01 * (r % 2), 1, 20, lambda a, b: abs(a - b) <= 0.05)
    assert [(a, b) for a, b, _ in noisy] == [(1, 20)]


@pytest.mark.keras_independent
def test_budget_ranks_by_latency_equals_brute_force():
    rng = np.random.default_rng(3)
    costs, spend = {}, {}
    for name in ("a", "b", "c"):
        ranks = range(1, 7)
        loss = np.sort(rng.uniform(0, 1, 6))[::-1]
        costs[name] = dict(zip(ranks, loss))
        spend[name] = {r: float(0.1 * ((r + 1) // 2) + rng.uniform(0, 0.01)) for r in ranks}
    for budget in (0.35, 0.6, 0.9):
        got, total = lrpet_tf.ops.budget_ranks(costs, None, budget, spend=spend)
        best = min(
            (sum(costs[n][r] for n, r in zip(costs, combo)), combo)
            for combo in itertools.product(range(1, 7), repeat=3)
            if sum(spend[n][r] for n, r in zip(costs, combo)) <= budget
        )
        assert total == pytest.approx(best[0])
        assert sum(spend[n][r] for n, r in got.items()) <= budget


def test_measured_table_is_cached_saved_and_loaded(tmp_path, monkeypatch):
    model = tm.residual_cnn()
    calls = []
    original = lrpet_tf.export.latency_table.__globals__["measure_latency"]

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setitem(lrpet_tf.export.latency_table.__globals__, "measure_latency", counting)
    cache = tmp_path / "cache"
    kwargs = dict(include=["conv_b", "shortcut"], cache_dir=str(cache), rounds=1, runs=2)
    table = lrpet_tf.latency_table(model, model_latency=False, **kwargs)
    assert set(table.layers) == {"conv_b", "shortcut"} and calls
    for name, layer in table.layers.items():
        k = layer.max_rank
        assert layer.dense_ms > 0 and k == {"conv_b": 16, "shortcut": 8}[name]
        first = [s[0] for s in layer.steps]
        last = [s[1] for s in layer.steps]
        assert first[0] == 1 and all(a == b + 1 for a, b in zip(first[1:], last))  # contiguous
        assert last[-1] == int(np.ceil(lrpet_tf.ops.break_even_rank((144 if k == 16 else 8, 16))))
        assert all(ms > 0 for _, _, ms in layer.steps)
    calls.clear()
    again = lrpet_tf.latency_table(model, model_latency=False, **kwargs)
    assert calls == []  # every layer came from the cache
    assert again.to_dict()["layers"] == table.to_dict()["layers"]
    path = table.save(tmp_path / "table.json")
    assert lrpet_tf.LatencyTable.load(path).to_dict() == table.to_dict()


def test_table_answers_and_predicts():
    table = table_of({"conv": (1.0, [(1, 4, 0.4), (5, 8, 0.7), (9, 10, 1.2)], 16)}, model_ms=5.0)
    assert table.factorized_ms("conv", 6) == 0.7 and table.factorized_ms("conv", 11) is None
    assert table.step_top("conv", 5) == 8 and table.layer_ms("conv", 10) == 1.0  # not faster
    assert table.predicted_ms({"conv": 3}) == pytest.approx(5.0 - 0.6)
    with pytest.raises(ValueError, match="missing|no measurements"):
        table.predicted_ms({"other": 2})


def test_prune_ratio_rounds_up_to_the_top_of_the_latency_step():
    table = table_of({"conv_b": (1.0, [(1, 4, 0.4), (5, 8, 0.7), (9, 14, 0.9)], 16)})
    policy = lrpet_tf.PruneRatio(0.6, round_to="latency", latency_table=table)
    assert policy.rank("conv_b", (144, 16)) == 8  # int(16 - 9.6) = 6 -> top of its step, 8
    copy = lrpet_tf.PruneRatio.from_config(policy.get_config())
    assert copy.rank("conv_b", (144, 16)) == 8
    with pytest.raises(ValueError, match="conv_a"):
        policy.rank("conv_a", (72, 16))
    cb = lrpet_tf.LRPET(
        prune_ratio=0.6, round_to="latency", latency_table=table, include=["conv_b"]
    )
    cb.prepare(tm.residual_cnn())
    assert cb.ranks == {"conv_b": 8}
    with pytest.raises(ValueError, match="latency_table"):
        lrpet_tf.PruneRatio(0.5, round_to="latency")


def test_factorize_keeps_dense_where_the_pair_is_not_faster(caplog):
    model = tm.residual_cnn()
    table = table_of(
        {
            "conv_a": (1.0, [(1, 13, 0.5)], 16),  # pays
            "conv_b": (1.0, [(1, 6, 1.1), (7, 14, 1.3)], 16),  # measured slower: stays dense
        }
    )
    compact, report = lrpet_tf.factorize(
        model, ranks={"conv_a": 4, "conv_b": 4}, return_report=True, latency_table=table
    )
    names = {layer.name for layer in compact.layers}
    assert {"conv_a_reduce", "conv_a_expand", "conv_b"} <= names and "conv_b_reduce" not in names
    kept = next(c for c in report.changes if c.layer == "conv_b")
    assert kept.action == "kept" and "not faster" in kept.detail and "1.1000 ms" in kept.detail
    x, _ = tm.classification_data(4)
    assert compact(x).shape == model(x).shape
    with pytest.raises(
        ValueError, match=r"`latency_table` has no measurements of layers \['shortcut'\]"
    ):
        lrpet_tf.factorize(model, ranks={"conv_a": 4, "shortcut": 2}, latency_table=table)


def test_allocate_ranks_by_latency_and_macs_spend_the_budget_optimally():
    model = tm.compile_for_test(tm.randomize_batchnorm(tm.residual_cnn()))
    x, y = tm.classification_data(32)
    table = table_of(
        {
            "conv_a": (2.0, [(1, 4, 0.6), (5, 8, 1.0), (9, 14, 1.6)], 16),
            "conv_b": (2.0, [(1, 8, 0.8), (9, 14, 1.5)], 16),
        }
    )
    given = {"conv_a": 6, "conv_b": 6}
    ranks, costs = lrpet_tf.allocate_ranks(
        model, x, y, given, cost="latency", latency_table=table, return_costs=True
    )
    # Only each step's top (below the MAC break-even, conv_a 72x16: 13, conv_b 144x16: 14)
    # is measured: the ranks of a step cost the same time and the top loses least.
    assert sorted(costs["conv_a"]) == [4, 8, 13] and sorted(costs["conv_b"]) == [8, 14]
    budget = table.layer_ms("conv_a", 6) + table.layer_ms("conv_b", 6)
    spent = table.layer_ms("conv_a", ranks["conv_a"]) + table.layer_ms("conv_b", ranks["conv_b"])
    assert spent <= budget + 1e-12
    best = min(
        costs["conv_a"][a] + costs["conv_b"][b]
        for a, b in itertools.product(costs["conv_a"], costs["conv_b"])
        if table.layer_ms("conv_a", a) + table.layer_ms("conv_b", b) <= budget + 1e-12
    )
    assert costs["conv_a"][ranks["conv_a"]] + costs["conv_b"][ranks["conv_b"]] == pytest.approx(
        best
    )
    by_macs = lrpet_tf.allocate_ranks(model, x, y, given, cost="macs")
    macs = lambda r: lrpet_tf.model_report(lrpet_tf.factorize(model, ranks=r)).total_macs  # noqa: E731
    assert macs(by_macs) <= macs(given)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(cost="flops"), "cost"),
        (dict(cost="latency"), "latency_table"),
        (
            dict(cost="latency", latency_table=table_of({"conv_a": (1.0, [(1, 13, 0.5)], 16)})),
            "conv_b",
        ),
        (dict(budget=-1), "budget"),
    ],
)
def test_allocate_ranks_bad_input_before_any_forward_pass(kwargs, match, monkeypatch):
    model = tm.compile_for_test(tm.residual_cnn())
    module = importlib.import_module("lrpet_tf.graph.rank_allocation")

    def no_work(*args, **kwargs):
        raise AssertionError("the work started before the arguments were checked")

    monkeypatch.setattr(module, "fold_batchnorm", no_work)
    x, y = tm.classification_data(8)
    with pytest.raises(ValueError, match=match):
        lrpet_tf.allocate_ranks(model, x, y, {"conv_a": 4, "conv_b": 4}, **kwargs)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(num_threads=0), "num_threads"),
        (dict(tolerance=1.5), "tolerance"),
        (dict(ranks={"nope": 2}), "nope"),
    ],
)
def test_latency_table_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        lrpet_tf.latency_table(tm.residual_cnn(), cache_dir=False, **kwargs)
