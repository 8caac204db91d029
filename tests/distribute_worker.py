"""Runs LRPET and SVD training under tf.distribute for tests/distribute_test.py.

    python tests/distribute_worker.py mirrored OUT.json
    TF_CONFIG=... python tests/distribute_worker.py multi_worker OUT.json

`mirrored` splits the CPU into two logical devices (which has to happen before
anything initializes TensorFlow, hence a process of its own) and runs each
case under `tf.distribute.MirroredStrategy`; `multi_worker` is one worker of
the `MultiWorkerMirroredStrategy` cluster that TF_CONFIG describes. The worker
records raw facts (every replica's kernels, the values a projection started
from, devices, losses) as JSON and the test makes the assertions. A case that
raises records its traceback instead, so each test reports its own failure.
Works with Keras 3 and with tf_keras (`TF_USE_LEGACY_KERAS=1`).
"""

import json
import os
import sys
import time
import traceback

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tensorflow as tf  # noqa: E402

if __name__ == "__main__" and sys.argv[1:2] == ["mirrored"]:
    _cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        _cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
    )

import numpy as np  # noqa: E402
import testing_models as tm  # noqa: E402

import lrpet_tf  # noqa: E402
from lrpet_tf import _keras  # noqa: E402
from lrpet_tf import svd_training  # noqa: E402
from lrpet_tf._keras import keras  # noqa: E402

L = keras.layers


def local_copies(variable):
    """The copies of a (distributed) tf.Variable on this worker's replicas."""
    strategy = getattr(variable, "distribute_strategy", None) or tf.distribute.get_strategy()
    return strategy.experimental_local_results(variable)


def replica_values(weight):
    """Every local replica's copy of a Keras weight, as numpy arrays."""
    return [np.asarray(v.numpy()) for v in local_copies(_keras.backing_variable(weight))]


def conv_layers(model):
    return [layer for layer in model.layers if isinstance(layer, L.Conv2D)]


def svd_layers(model):
    return [
        layer for layer in _keras.flatten_layers(model) if isinstance(layer, svd_training.SVDLayer)
    ]


def svd_ops(cb, op_type="Svd"):
    """`(device, dtype)` of every SVD (or other `op_type`) in the traced projection function."""
    graph = cb._projector._function.get_concrete_function().graph
    return [
        (op.device, tf.as_dtype(op.get_attr("T")).name)
        for op in graph.get_operations()
        if op.type == op_type
    ]


def kernel_devices(model):
    """Layer name -> (the kernel variable's device, its first local copy's device)."""
    devices = {}
    for layer in conv_layers(model):
        variable = _keras.backing_variable(layer.kernel)
        devices[layer.name] = (variable.device, local_copies(variable)[0].device)
    return devices


def snapshot(cb):
    """What a projection starts from, read as it reads it: outside replica context.

    The kernels and gamma are the same on every replica. A cross-replica read
    of the moving variance gives the first replica's copy under Keras 3 (each
    replica keeps its own and they differ) and the mean over replicas under
    tf_keras (synchronized on read).
    """
    state = {}
    for target in cb._projector.targets:
        entry = {"kernel": replica_values(target.layer.kernel)[0], "rank": target.rank}
        bn = target.batchnorm
        if bn is not None:
            entry["gamma"] = np.asarray(bn.gamma.numpy()) if bn.scale else None
            entry["moving_variance"] = np.asarray(bn.moving_variance.numpy())
            entry["epsilon"] = float(bn.epsilon)
        state[target.name] = entry
    return state


def replica_kernels(model):
    return {layer.name: replica_values(layer.kernel) for layer in conv_layers(model)}


class ProjectionProbe:
    """Records the weights around LRPET's projections inside `fit`.

    `before` goes ahead of the LRPET callback in the callback list and
    `after` behind it, so at a batch end where LRPET projects, `before` has
    seen the weights the projection started from and `after` sees the result.
    """

    def __init__(self, cb):
        self.cb = cb
        self.pending = None
        self.count = 0
        self.records = []
        probe = self

        class Before(keras.callbacks.Callback):
            def on_train_batch_end(self, batch, logs=None):
                if probe.cb._projector is not None:
                    probe.pending = snapshot(probe.cb)
                probe.count = probe.cb.projection_count

        class After(keras.callbacks.Callback):
            def on_train_batch_end(self, batch, logs=None):
                if probe.cb.projection_count > probe.count:
                    step = int(_keras.backing_variable(self.model.optimizer.iterations).numpy())
                    probe.records.append(
                        {
                            "step": step,
                            "before": probe.pending,
                            "after": replica_kernels(self.model),
                        }
                    )

        self.before, self.after = Before(), After()


def lrpet_case(strategy, frequency, epochs, mixed=False):
    """LRPET through `fit` inside `strategy.scope()`, probed at each projection."""
    if mixed:
        keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        x, y = tm.classification_data()
        with strategy.scope():
            model = tm.compile_for_test(tm.residual_cnn())
        cb = lrpet_tf.LRPET(prune_ratio=0.5, frequency=frequency, verbose=0)
        probe = ProjectionProbe(cb)
        history = model.fit(
            x, y, epochs=epochs, batch_size=16, callbacks=[probe.before, cb, probe.after], verbose=0
        )
        result = {
            "ranks": cb.ranks,
            "projection_count": cb.projection_count,
            "during_fit": probe.records,
            "after_fit": replica_kernels(model),
            "svd_ops": svd_ops(cb),
            "eig_ops": svd_ops(cb, "SelfAdjointEigV2"),
            "kernel_devices": kernel_devices(model),
            "kernel_dtypes": {c.name: tf.as_dtype(c.kernel.dtype).name for c in conv_layers(model)},
            "loss": history.history["loss"],
            "replicas": strategy.num_replicas_in_sync,
        }
        if not mixed:
            # An epoch without LRPET brings the kernels back to full rank;
            # then an explicit projection outside `fit`.
            model.fit(x, y, epochs=1, batch_size=16, verbose=0)
            before = snapshot(cb)
            cb.project()
            result["explicit"] = {"before": before, "after": replica_kernels(model)}
        return result
    finally:
        if mixed:
            keras.mixed_precision.set_global_policy("float32")


def svd_case(strategy):
    """SVD training: decompose in scope, two fits with a changed sparsity weight, prune."""
    x, y = tm.classification_data()
    with strategy.scope():
        dense = tm.residual_cnn()
        model = svd_training.decompose(
            dense, orthogonality=1.0, sparsity="hoyer", sparsity_weight=0.0
        )
        tm.compile_for_test(model, lr=0.005)
    layers = svd_layers(model)
    first = model.fit(x, y, epochs=1, batch_size=32, verbose=0).history
    loss_off = model.evaluate(x, y, batch_size=32, verbose=0, return_dict=True)
    svd_training.set_regularization(model, sparsity_weight=0.5)
    loss_on = model.evaluate(x, y, batch_size=32, verbose=0, return_dict=True)
    s_at_evaluate = {layer.name: replica_values(layer.s)[0] for layer in layers}
    regularizer_weights = {
        layer.name: [float(v.numpy()) for v in local_copies(layer._sparsity_regularizer.weight)]
        for layer in layers
    }
    second = model.fit(x, y, epochs=1, batch_size=32, verbose=0).history
    factors = {
        layer.name: {name: replica_values(getattr(layer, name)) for name in ("u", "s", "v")}
        for layer in layers
    }
    with strategy.scope():
        pruned = svd_training.prune(model, energy=0.3)
    compact = lrpet_tf.factorize(pruned)
    probe_x = x[:8]
    return {
        "losses": {"first": first["loss"], "second": second["loss"]},
        "evaluate_off": loss_off["loss"],
        "evaluate_on": loss_on["loss"],
        "s_at_evaluate": s_at_evaluate,
        "regularizer_weights": regularizer_weights,
        "factors": factors,
        "pruned_ranks": {layer.name: int(layer.s.shape[0]) for layer in svd_layers(pruned)},
        "pruned_output": np.asarray(pruned(probe_x, training=False)),
        "compact_output": np.asarray(compact(probe_x, training=False)),
        "compact_layers": [type(layer).__name__ for layer in compact.layers],
        "replicas": strategy.num_replicas_in_sync,
    }


def multi_worker_strategy():
    options = tf.distribute.experimental.CommunicationOptions(
        implementation=tf.distribute.experimental.CommunicationImplementation.RING
    )
    strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    if _keras.IS_KERAS_3:
        _reduce_leaves(strategy)
    return strategy


def _reduce_leaves(strategy):
    """Lets Keras 3's `fit` run under MultiWorkerMirroredStrategy.

    Keras 3 (3.15) calls `strategy.reduce("MEAN", value, axis=0)` on the
    nested first data batch and on each scalar log, and
    CollectiveAllReduceStrategy takes neither a nest nor `axis=0` on a scalar
    (keras-team/keras#20585; nothing to do with lrpet_tf; tf_keras is fine).
    Reduce leaf by leaf, scalars over replicas only.
    """
    reduce = strategy.reduce

    def reduce_leaf(op, value, axis):
        local = strategy.experimental_local_results(value)[0]
        return reduce(op, value, axis=axis if local.shape.rank else None)

    strategy.reduce = lambda op, value, axis=None: tf.nest.map_structure(
        lambda v: reduce_leaf(op, v, axis), value
    )


def multi_worker_case(strategy):
    """One worker: LRPET through `fit` on its shard of a tf.data dataset."""
    x, y = tm.classification_data()
    with strategy.scope():
        model = tm.compile_for_test(tm.residual_cnn())
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    cb = lrpet_tf.LRPET(prune_ratio=0.5, frequency=3, verbose=0)
    probe = ProjectionProbe(cb)
    history = model.fit(dataset, epochs=2, callbacks=[probe.before, cb, probe.after], verbose=0)
    return {
        "task": json.loads(os.environ["TF_CONFIG"])["task"]["index"],
        "ranks": cb.ranks,
        "projection_count": cb.projection_count,
        "during_fit": probe.records,
        "after_fit": replica_kernels(model),
        "svd_ops": svd_ops(cb),
        "kernel_devices": kernel_devices(model),
        "loss": history.history["loss"],
        "replicas": strategy.num_replicas_in_sync,
    }


def recalibrate_case(strategy):
    """BN re-estimation of a model built under the strategy, and of a single-device copy."""
    x = np.random.default_rng(0).normal(size=(40, 8, 8, 3)).astype(np.float32)
    with strategy.scope():
        model = tm.randomize_batchnorm(tm.residual_cnn())
        lrpet_tf.recalibrate_batchnorm(model, x, batch_size=16)
    single = tm.residual_cnn()
    single.set_weights(model.get_weights())
    tm.randomize_batchnorm(single)  # stale statistics again
    lrpet_tf.recalibrate_batchnorm(single, x, batch_size=16)
    bns = [layer for layer in model.layers if isinstance(layer, L.BatchNormalization)]
    return {
        "replicas": {
            bn.name: {
                "mean": replica_values(bn.moving_mean),
                "variance": replica_values(bn.moving_variance),
            }
            for bn in bns
        },
        "single": {
            bn.name: {
                "mean": single.get_layer(bn.name).moving_mean.numpy(),
                "variance": single.get_layer(bn.name).moving_variance.numpy(),
            }
            for bn in bns
        },
    }


def to_json(value):
    if isinstance(value, np.ndarray):
        return {"array": value.tolist(), "dtype": value.dtype.name}
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def run_case(results, name, fn, *args, **kwargs):
    keras.utils.set_random_seed(0)
    start = time.perf_counter()
    try:
        results[name] = fn(*args, **kwargs)
    except Exception:  # recorded for the test to report
        results[name] = {"error": traceback.format_exc()}
        print(results[name]["error"], file=sys.stderr, flush=True)
    results[name]["seconds"] = time.perf_counter() - start
    keras.backend.clear_session()


def main(mode, output):
    results = {"keras_3": _keras.IS_KERAS_3}
    if mode == "mirrored":
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        run_case(results, "lrpet", lrpet_case, strategy, frequency=3, epochs=2)
        run_case(results, "mixed_float16", lrpet_case, strategy, "epoch", 2, mixed=True)
        run_case(results, "svd_training", svd_case, strategy)
        run_case(results, "recalibrate", recalibrate_case, strategy)
    elif mode == "multi_worker":
        run_case(results, "multi_worker", lambda: multi_worker_case(multi_worker_strategy()))
    else:
        raise SystemExit(f"Unknown mode {mode!r}; expected 'mirrored' or 'multi_worker'.")
    with open(output, "w") as f:
        json.dump(to_json(results), f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
