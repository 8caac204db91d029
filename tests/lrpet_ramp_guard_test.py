"""The rank ramp and the small-rank guard of LRPET, through real `model.fit`."""

import logging
import math

import numpy as np
import pytest
import tensorflow as tf
import testing_models as tm

import lrpet_tf
from lrpet_tf._keras import keras

STEPS = 4  # batches per epoch: 64 examples, batch 16


def numpy_rank(layer):
    k = np.asarray(layer.kernel.numpy(), np.float64)
    s = np.linalg.svd(k.reshape(-1, k.shape[-1]), compute_uv=False)
    return int(np.sum(s > 1e-5 * s[0]))


def expected_rank(r, k, e, ramp_epochs):
    # The formula, written out independently of lrpet_tf.ops.ramp_rank.
    return r + math.floor((k - r) * (1 - min(1.0, e / ramp_epochs)) ** 3)


class RankRecorder(keras.callbacks.Callback):
    """After each batch, every projected kernel's rank from np.linalg.svd."""

    def __init__(self, names):
        super().__init__()
        self.names = names
        self.ranks = []  # (optimizer step, {name: rank})

    def on_train_batch_end(self, batch, logs=None):
        step = int(np.asarray(self.model.optimizer.iterations))
        ranks = {n: numpy_rank(self.model.get_layer(n)) for n in self.names}
        self.ranks.append((step, ranks))


def max_ranks(model, names):
    out = {}
    for n in names:
        shape = model.get_layer(n).kernel.shape
        out[n] = min(int(np.prod(shape[:-1])), int(shape[-1]))
    return out


@pytest.mark.parametrize("frequency", ["epoch", 2])
def test_ramp_ranks_follow_the_formula_layer_by_layer(frequency):
    keras.utils.set_random_seed(1)
    model = tm.compile_for_test(tm.randomize_batchnorm(tm.residual_cnn()), lr=0.05)
    x, y = tm.classification_data(16 * STEPS)
    ramp = 3
    cb = lrpet_tf.LRPET(prune_ratio=0.5, frequency=frequency, ramp_epochs=ramp, verbose=0)
    names = ["stem", "conv_a", "conv_b", "shortcut"]
    recorder = RankRecorder(names)
    model.fit(x, y, batch_size=16, epochs=5, shuffle=False, callbacks=[cb, recorder], verbose=0)
    k = max_ranks(model, names)
    period = STEPS if frequency == "epoch" else frequency
    checked = 0
    for step, ranks in recorder.ranks:
        if step % period:
            continue
        e = step / STEPS  # epochs trained (no warm-up)
        for name in names:
            assert ranks[name] == expected_rank(cb.ranks[name], k[name], e, ramp), (step, name)
        checked += 1
    assert checked == 5 * STEPS // period
    assert cb.current_ranks == cb.ranks  # the ramp ended at the targets
    # Early on the ramp keeps more than the target (the test would pass trivially otherwise).
    assert recorder.ranks[STEPS - 1][1]["conv_b"] > cb.ranks["conv_b"]


def test_ramp_counts_epochs_from_the_end_of_the_warmup():
    model = tm.compile_for_test(tm.residual_cnn())
    x, y = tm.classification_data(16 * STEPS)
    cb = lrpet_tf.LRPET(prune_ratio=0.5, warmup_epochs=1, ramp_epochs=2, verbose=0)
    seen = []
    record = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: seen.append(cb.current_ranks)
    )
    model.fit(x, y, batch_size=16, epochs=3, callbacks=[cb, record], verbose=0)
    k = max_ranks(model, ["conv_b"])["conv_b"]
    r = cb.ranks["conv_b"]
    assert seen[0] is None  # warm-up: no projection
    assert seen[1]["conv_b"] == expected_rank(r, k, 1, 2)
    assert seen[2]["conv_b"] == r


def test_ramp_needs_the_epoch_length_for_step_frequencies():
    model = tm.compile_for_test(tm.residual_cnn())
    x, y = tm.classification_data(32)

    def generate():
        for i in range(0, 32, 16):
            yield x[i : i + 16], y[i : i + 16]

    signature = (
        tf.TensorSpec((None, 8, 8, 3), tf.float32),
        tf.TensorSpec((None,), tf.int64),
    )
    data = tf.data.Dataset.from_generator(generate, output_signature=signature)
    before = tm.all_weights(model)
    cb = lrpet_tf.LRPET(prune_ratio=0.5, frequency=2, ramp_epochs=2, verbose=0)
    with pytest.raises(ValueError, match="steps_per_epoch"):
        model.fit(data, epochs=1, callbacks=[cb], verbose=0)
    for a, b in zip(before, tm.all_weights(model)):
        np.testing.assert_array_equal(a, b)


def test_training_that_ends_mid_ramp_warns_and_keeps_the_ramp_rank(caplog):
    model = tm.compile_for_test(tm.residual_cnn())
    x, y = tm.classification_data(16 * STEPS)
    cb = lrpet_tf.LRPET(prune_ratio=0.5, ramp_epochs=10, verbose=0)
    with caplog.at_level(logging.WARNING, logger="lrpet_tf"):
        model.fit(x, y, batch_size=16, epochs=1, callbacks=[cb], verbose=0)
    assert "before the rank ramp" in caplog.text
    k = max_ranks(model, ["conv_b"])["conv_b"]
    expected = expected_rank(cb.ranks["conv_b"], k, 1, 10)
    assert cb.current_ranks["conv_b"] == expected == numpy_rank(model.get_layer("conv_b"))


def guard_records(caplog):
    return [r for r in caplog.records if "pruned to rank <= 2" in r.getMessage()]


def test_guard_names_exactly_the_layers_at_rank_two_or_less(caplog):
    model = tm.residual_cnn()  # stem 27x8 (K=8), shortcut 8x16 (K=8), convs K=16
    cb = lrpet_tf.LRPET(prune_ratio=0.75, verbose=0)
    with caplog.at_level(logging.WARNING, logger="lrpet_tf"):
        cb.prepare(model)
    (record,) = guard_records(caplog)
    assert cb.ranks == {"stem": 2, "conv_a": 4, "conv_b": 4, "shortcut": 2}
    message = record.getMessage()
    assert "stem (rank 2 of K=8)" in message and "shortcut (rank 2 of K=8)" in message
    assert "conv_a" not in message and "conv_b" not in message
    assert "exclude" in message and "min_rank" in message


def test_min_rank_is_honoured_capped_at_k_and_silences_the_guard(caplog):
    policy = lrpet_tf.PruneRatio(0.75, min_rank=3)
    assert policy.rank("a", (27, 8)) == 3
    assert policy.rank("a", (9, 16)) == 3  # int(9 - 6.75) = 2 -> 3
    assert policy.rank("a", (576, 64)) == 16  # the rule already gives more
    assert lrpet_tf.PruneRatio(0.5, min_rank=100).rank("a", (27, 8)) == 8  # capped at K
    assert lrpet_tf.PruneRatio(0.75).rank("a", (9, 16)) == 2  # default 1: the paper's rule
    with pytest.raises(ValueError, match="min_rank"):
        lrpet_tf.PruneRatio(0.5, min_rank=0)
    cb = lrpet_tf.LRPET(ranks=policy, verbose=0)
    with caplog.at_level(logging.WARNING, logger="lrpet_tf"):
        cb.prepare(tm.residual_cnn())
    assert cb.ranks["stem"] == 3 and cb.ranks["shortcut"] == 3
    assert not guard_records(caplog)


def test_guard_in_factorize_and_allocate_ranks(caplog):
    model = tm.compile_for_test(tm.residual_cnn())
    with caplog.at_level(logging.WARNING, logger="lrpet_tf"):
        lrpet_tf.factorize(model, ranks={"stem": 2, "conv_b": 5})
    (record,) = guard_records(caplog)
    assert "factorize" in record.getMessage() and "stem (rank 2 of K=8)" in record.getMessage()
    assert "conv_b" not in record.getMessage()
    caplog.clear()
    x, y = tm.classification_data(32)
    unit = {"conv_a": 72 + 16, "conv_b": 144 + 16}  # rank 1 everywhere: the smallest budget
    with caplog.at_level(logging.WARNING, logger="lrpet_tf"):
        ranks = lrpet_tf.allocate_ranks(
            model, x, y, {"conv_a": 4, "conv_b": 4}, budget=sum(unit.values())
        )
    assert ranks == {"conv_a": 1, "conv_b": 1}
    (record,) = guard_records(caplog)
    assert "allocate_ranks" in record.getMessage()
    assert "conv_a (rank 1 of K=16)" in record.getMessage()
