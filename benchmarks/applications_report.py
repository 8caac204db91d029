"""Every rewrite on keras.applications models: errors, MACs, TFLite verification.

For each architecture (built with weights=None, so nothing is downloaded):
train two steps with `LRPET(prune_ratio)` through `model.fit`, then
`factorize` (ranks from the callback), `fold_batchnorm`, `export_tflite`
(float32, verified in LiteRT), `svd_training.decompose` + `prune(energy=0)`,
and `model_report`. Errors are max |rewritten - original| divided by
max |original| over random inputs (inference mode, logits).

    python benchmarks/applications_report.py                  # all models
    python benchmarks/applications_report.py --models=MobileNetV2 --input_size=32

Writes benchmarks/results/applications.json (one entry per model) and .md
(the table), after each model: a model whose entry exists, for the same
prune ratio and input size, is not run again, so an interrupted report
resumes, and a run whose models are all there only rewrites the table.
"""

import contextlib
import json
import os
import tempfile
import time

import numpy as np
from absl import app
from absl import flags

import lrpet_tf
from lrpet_tf import keras
from lrpet_tf import svd_training

try:  # as a script (benchmarks/ on sys.path) or as benchmarks.applications_report
    import bench_utils
except ImportError:  # pragma: no cover
    from benchmarks import bench_utils

NAME = "applications"

ARCHITECTURES = {
    "ResNet50": 32,
    "ResNet50V2": 32,
    "MobileNetV2": 32,
    "MobileNetV3Small": 32,
    "EfficientNetB0": 32,
    "DenseNet121": 32,
    "VGG16": 32,
    "InceptionV3": 75,  # its smallest input
}

FLAGS = flags.FLAGS


def relative_error(got, want):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.max(np.abs(got - want)) / max(np.max(np.abs(want)), 1e-30))


@contextlib.contextmanager
def _dtype_policy(name):
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def _build(name, size):
    return getattr(keras.applications, name)(
        weights=None, input_shape=(size, size, 3), classes=10, classifier_activation=None
    )


def check_application(name, input_size=None, prune_ratio=0.5, output_dir=None, seed=0):
    """Runs every rewrite on one keras.applications model; returns its metrics.

    The rewrites are checked in float64, where any error above ~1e-10 is a
    real difference and not float32 noise amplified by a randomly
    initialised deep net. The TFLite files are float32: the compact file's
    max |TFLite - Keras| is reported next to the dense file's, both measured
    on the same calibrated weights.
    """
    size = input_size or ARCHITECTURES[name]
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(4, size, size, 3)).astype(np.float32)
    x_train = rng.normal(size=(16, size, size, 3)).astype(np.float32)
    y_train = rng.integers(0, 10, 16)
    times = {}
    with _dtype_policy("float64"):
        model = _build(name, size)
        model.compile(
            keras.optimizers.SGD(1e-4),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        start = time.perf_counter()
        cb = lrpet_tf.LRPET(prune_ratio=prune_ratio, verbose=0)
        # Two steps of batch 8 (small batches make BN statistics diverge).
        model.fit(x_train, y_train, batch_size=8, epochs=1, callbacks=[cb], verbose=0)
        times["fit_2_steps"] = time.perf_counter() - start
        ranks_ok = all(
            _numerical_rank(model.get_layer(n).kernel.numpy()) <= r for n, r in cb.ranks.items()
        )
        _calibrate_batchnorm(model, x)
        reference = model(x, training=False)

        start = time.perf_counter()
        compact, report = lrpet_tf.factorize(model, ranks=cb, return_report=True)
        times["factorize"] = time.perf_counter() - start
        start = time.perf_counter()
        folded, fold_report = lrpet_tf.fold_batchnorm(compact, return_report=True)
        times["fold_batchnorm"] = time.perf_counter() - start
        before, after = lrpet_tf.model_report(model), lrpet_tf.model_report(folded)
        saved = sum(c.macs_before - c.macs_after for c in report.changes)
        start = time.perf_counter()
        svd_model = svd_training.decompose(model, layer_types=("conv", "dense"))
        pruned = svd_training.prune(svd_model, energy=0.0)
        times["decompose_prune"] = time.perf_counter() - start
        errors = {
            "factorize_error": relative_error(compact(x, training=False), reference),
            "fold_error": relative_error(folded(x, training=False), reference),
            "decompose_error": relative_error(svd_model(x, training=False), reference),
            "prune_error": relative_error(pruned(x, training=False), reference),
        }
        weights = model.get_weights()

    model32 = _build(name, size)
    model32.set_weights([w.astype(np.float32) for w in weights])
    # Auto-named layers (InceptionV3's conv2d_N) get new names in a second
    # build: carry the ranks over by layer position.
    renamed = {
        old.name: new.name
        for old, new in zip(model.layers, model32.layers)  # keras.applications graphs are flat
    }
    ranks32 = {renamed[n]: r for n, r in cb.ranks.items()}
    start = time.perf_counter()
    tflite = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = output_dir or tmp
        for label, keras_model in (
            ("dense", lrpet_tf.fold_batchnorm(model32)),
            ("compact", lrpet_tf.fold_batchnorm(lrpet_tf.factorize(model32, ranks=ranks32))),
        ):
            tflite[label] = lrpet_tf.export_tflite(
                keras_model,
                os.path.join(folder, f"{name}_{label}.tflite"),
                verify_data=x,
                tolerance=1e-2,
            )
    times["export_tflite"] = time.perf_counter() - start
    scale = float(np.max(np.abs(reference)))
    return {
        "model": name,
        "input_size": size,
        "projected_layers": len(cb.ranks),
        "bn_rectified": len(cb.rectified_layers),
        "ranks_ok": ranks_ok,
        "factorized": len(report.by_action("factorized")),
        "kept_dense": len(report.by_action("kept")),
        "bn_folded": len(fold_report.by_action("folded")),
        "bn_left": len(fold_report.by_action("skipped")),
        **errors,
        "output_scale": scale,
        "tflite_error_dense": tflite["dense"].max_error / scale,
        "tflite_error_compact": tflite["compact"].max_error / scale,
        "tflite_conv_ops": (
            tflite["dense"].op_count("CONV_2D"),
            tflite["compact"].op_count("CONV_2D"),
        ),
        "tflite_bytes": (tflite["dense"].size_bytes, tflite["compact"].size_bytes),
        "macs_before": before.total_macs,
        "macs_after": after.total_macs,
        "macs_report_consistent": after.total_macs
        == lrpet_tf.model_report(compact).total_macs
        == before.total_macs - saved,
        "params_before": before.total_params,
        "params_after": after.total_params,
        "params_match_keras": before.total_params == model.count_params()
        and after.total_params == folded.count_params(),
        "seconds": times,
    }


def _calibrate_batchnorm(model, x):
    """Sets BN moving statistics to the batch statistics of `x`, layer by layer.

    Randomly initialised deep nets have inference outputs near 1e-12 (the
    initial statistics do not match the activations), which would make the
    relative errors meaningless; calibrated, the logits are of order one.
    Variances are floored at 1% of the layer's largest.
    """
    bns = [
        layer
        for layer in model.layers  # keras.applications graphs are flat
        if isinstance(layer, keras.layers.BatchNormalization)
    ]
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.momentum = 0.0
    model(x, training=True)
    for bn, momentum in zip(bns, momenta):
        bn.momentum = momentum
        # Channels with near-zero variance would get a huge inference scale
        # and make the net numerically ill-conditioned; floor them.
        variance = bn.moving_variance.numpy()
        bn.moving_variance.assign(np.maximum(variance, 1e-2 * variance.max()))


def _numerical_rank(kernel):
    m = np.asarray(kernel, np.float64).reshape(-1, kernel.shape[-1])
    s = np.linalg.svd(m, compute_uv=False)
    return int(np.sum(s > s[0] * max(m.shape) * np.finfo(np.float32).eps))


def markdown(rows, prune_ratio):
    """The results as a markdown table."""
    lines = [
        "| model | input | projected (BN-rectified) | factorized / kept dense | BN folded / left "
        "| max rel. error (float64) factorize / fold / decompose / prune "
        "| TFLite float32 max rel. error dense / compact | CONV_2D ops dense / compact "
        f"| MACs before | MACs after (g={prune_ratio}) | MAC ratio | params before / after "
        "| .tflite MB dense / compact |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        errors = " / ".join(
            f"{r[k]:.1e}"
            for k in ("factorize_error", "fold_error", "decompose_error", "prune_error")
        )
        lines.append(
            f"| {r['model']} | {r['input_size']}x{r['input_size']} | {r['projected_layers']} "
            f"({r['bn_rectified']}) | {r['factorized']} / {r['kept_dense']} | "
            f"{r['bn_folded']} / {r['bn_left']} | {errors} | "
            f"{r['tflite_error_dense']:.1e} / {r['tflite_error_compact']:.1e} | "
            f"{r['tflite_conv_ops'][0]} / {r['tflite_conv_ops'][1]} | {r['macs_before']:,} | "
            f"{r['macs_after']:,} | {r['macs_before'] / r['macs_after']:.2f}x | "
            f"{r['params_before']:,} / {r['params_after']:,} | "
            f"{r['tflite_bytes'][0] / 1e6:.1f} / {r['tflite_bytes'][1] / 1e6:.1f} |"
        )
    return "\n".join(lines)


def run(models, input_size=None, prune_ratio=0.5, output_dir=None):
    """Runs the models `applications.json` lacks; rewrites it and the table after each.

    Args:
        models: keras.applications model names.
        input_size: Input height and width (None: each model's default).
        prune_ratio: LRPET's g.
        output_dir: Where `applications.json` / `.md` are (default
            benchmarks/results).

    Returns:
        The entries of every model in the file (earlier ones first, new
        models appended, re-run ones in place).
    """
    path = os.path.join(output_dir or os.path.join(bench_utils.BENCHMARKS_DIR, "results"), NAME)
    entries = {}
    if os.path.exists(path + ".json"):
        with open(path + ".json", encoding="utf-8") as f:
            entries = {entry["model"]: entry for entry in json.load(f)}
    for name in models:
        entry = entries.get(name)
        if (
            entry is not None
            and entry.get("prune_ratio") == prune_ratio
            and (input_size is None or entry["input_size"] == input_size)
        ):
            continue
        entry = check_application(name, input_size, prune_ratio)
        entry["prune_ratio"] = prune_ratio
        print(json.dumps(entry), flush=True)
        entries[name] = entry
        rows = list(entries.values())
        bench_utils.write_results(NAME, rows, markdown(rows, prune_ratio), output_dir, compact=True)
    rows = list(entries.values())
    bench_utils.write_results(NAME, rows, markdown(rows, prune_ratio), output_dir, compact=True)
    return rows


def define_flags():
    """Defines the script's flags (called only when it runs as a script).

    So the module imports next to the other scripts (tests, benchmarks)
    without absl's duplicate-flag errors.
    """
    flags.DEFINE_list("models", list(ARCHITECTURES), "keras.applications model names.")
    flags.DEFINE_integer("input_size", None, "Input height/width (default: per model).")
    flags.DEFINE_float("prune_ratio", 0.5, "LRPET prune ratio g.")
    flags.DEFINE_string("output_dir", None, "Where the JSON and table go (benchmarks/results).")


def main(argv):
    del argv
    rows = run(FLAGS.models, FLAGS.input_size, FLAGS.prune_ratio, FLAGS.output_dir)
    print(markdown(rows, FLAGS.prune_ratio))


if __name__ == "__main__":
    define_flags()
    app.run(main)
