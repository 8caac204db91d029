"""Quick start: train a compact CNN on the 8x8 digits with LRPET, export to TFLite.

Trains the same small residual CNN twice with the same recipe and seed: once
dense (the baseline) and once with `lrpet_tf.LRPET(prune_ratio=...)`. The
LRPET model is split into thin layers (`lrpet_tf.factorize`), BatchNorm is
merged (`lrpet_tf.fold_batchnorm`), both models are exported to verified
.tflite files (`lrpet_tf.export_tflite`), and one table compares them.

The files are what an Android app loads as they are (docs/android.md): a
static batch of 1, the output named after the model's last layer, and TFLite
image-classifier metadata with the digits' scaling (pixel values 0..16,
normalized as `pixel / 16`) and the ten labels "0" ... "9", which the TFLite
Task Library and Android Studio's model binding read.

    python examples/quickstart.py                # ~1 minute on 2 CPU cores
    python examples/quickstart.py --prune_ratio=0.7 --epochs=40

The data ship inside scikit-learn: nothing is downloaded.
"""

import json
import os
import sys
import time

from absl import app
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import example_console  # noqa: E402

if __name__ == "__main__":
    # Before TensorFlow is imported: keeps its C++ start-up lines off the console.
    example_console.quiet_tensorflow_startup()

import example_data  # noqa: E402
import example_models  # noqa: E402
import numpy as np  # noqa: E402

import lrpet_tf  # noqa: E402
from lrpet_tf import keras  # noqa: E402
from lrpet_tf.graph import format_table  # noqa: E402

FLAGS = flags.FLAGS


def digits_metadata(name):
    """TFLite image-classifier metadata of a digits model: `pixel / 16`, labels 0-9."""
    return lrpet_tf.export.ImageClassifierMetadata(
        labels=[str(digit) for digit in range(10)],
        mean=0.0,
        std=16.0,
        name=name,
        description=(
            "Handwritten digit (8x8 grayscale, pixel values 0..16 as in scikit-learn's "
            "digits) -> logits of the digits 0-9. LRPET quick start."
        ),
    )


def compile_model(model, steps_per_epoch, epochs, learning_rate):
    """SGD with momentum 0.9 and cosine decay, cross-entropy on logits."""
    schedule = keras.optimizers.schedules.CosineDecay(
        learning_rate, decay_steps=steps_per_epoch * epochs
    )
    model.compile(
        optimizer=keras.optimizers.SGD(schedule, momentum=0.9, nesterov=True),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )


def train(data, epochs, batch_size, learning_rate, width, seed, callbacks=(), verbose=2):
    """Builds the reference CNN with `seed` and trains it; returns the model."""
    keras.utils.set_random_seed(seed)
    model = example_models.small_cnn(data.input_shape, data.num_classes, width)
    steps = int(np.ceil(len(data.x_train) / batch_size))
    compile_model(model, steps, epochs, learning_rate)
    model.fit(
        data.x_train,
        data.y_train,
        batch_size=batch_size,
        epochs=epochs,
        validation_data=(data.x_test, data.y_test),
        callbacks=list(callbacks),
        verbose=verbose,
    )
    return model


def accuracy(model, x, y):
    """Top-1 accuracy of a logits model (inference mode)."""
    logits = model.predict(x, batch_size=256, verbose=0)
    return float(np.mean(np.argmax(logits, -1) == y))


def run(
    prune_ratio=0.6,
    epochs=30,
    batch_size=64,
    learning_rate=0.05,
    width=32,
    seed=0,
    output_dir="saved_models/quickstart",
    dataset="digits",
    verbose=2,
):
    """The whole quick start; returns the results as a dict (also written as JSON)."""
    data = example_data.load_dataset(dataset, seed=seed)
    os.makedirs(output_dir, exist_ok=True)
    start = time.perf_counter()
    stages = example_console.Stages(3)
    with stages.stage("dense training (the baseline)", example_console.plural(epochs, "epoch")):
        dense = train(data, epochs, batch_size, learning_rate, width, seed, verbose=verbose)
    lrpet = lrpet_tf.LRPET(prune_ratio=prune_ratio)
    with stages.stage(
        f"LRPET training (prune_ratio={prune_ratio})", example_console.plural(epochs, "epoch")
    ):
        projected = train(
            data, epochs, batch_size, learning_rate, width, seed, [lrpet], verbose=verbose
        )
    with stages.stage("factorize, fold BN, export and verify", "2 .tflite files"):
        compact, factor_report = lrpet_tf.factorize(projected, ranks=lrpet, return_report=True)
        compact = lrpet_tf.fold_batchnorm(compact)
        dense_folded = lrpet_tf.fold_batchnorm(dense)
        dense.save(os.path.join(output_dir, "dense.keras"))
        compact.save(os.path.join(output_dir, "compact.keras"))

        results = {"prune_ratio": prune_ratio, "ranks": lrpet.ranks, "models": {}}
        progress = example_console.Progress(2)
        for label, model, keras_model in (
            ("dense", dense_folded, dense),
            ("compact", compact, projected),
        ):
            progress.start(f"{label}.tflite: convert, verify against Keras, accuracy")
            exported = lrpet_tf.export_tflite(
                model,
                os.path.join(output_dir, f"{label}.tflite"),
                verify_data=data.x_test,
                metadata=digits_metadata(f"digits_{label}") if dataset == "digits" else None,
            )
            report = lrpet_tf.model_report(model)
            results["models"][label] = {
                "accuracy": accuracy(keras_model, data.x_test, data.y_test),
                "tflite_accuracy": float(
                    np.mean(
                        np.argmax(lrpet_tf.TFLiteModel(exported.path)(data.x_test), -1)
                        == data.y_test
                    )
                ),
                "params": report.total_params,
                "conv_macs": report.conv_macs,
                "macs": report.total_macs,
                "tflite_bytes": exported.size_bytes,
                "tflite_max_error": exported.max_error,
                "conv2d_ops": exported.op_count("CONV_2D"),
                "tflite_metadata": exported.metadata is not None,
            }
    results["seconds"] = time.perf_counter() - start
    with open(os.path.join(output_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    print()
    print(stages.summary())
    print()
    print(factor_report)
    print()
    print(results_table(results, data))
    return results


def results_table(results, data):
    """The quick start's summary table as text."""
    dense, compact = results["models"]["dense"], results["models"]["compact"]
    rows = []
    for label, m in (("dense", dense), ("LRPET compact", compact)):
        rows.append(
            [
                label,
                100 * m["accuracy"],
                m["params"],
                m["conv_macs"],
                m["macs"],
                m["tflite_bytes"],
                m["tflite_max_error"],
            ]
        )
    table = format_table(
        [
            "model",
            "accuracy %",
            "params",
            "conv MACs",
            "MACs",
            ".tflite bytes",
            "max |TFLite-Keras|",
        ],
        rows,
        title=(
            f"{data.name}: {len(data.x_train)} train / {len(data.x_test)} test images, "
            f"prune_ratio={results['prune_ratio']}"
        ),
    )
    ratio = dense["conv_macs"] / compact["conv_macs"]
    return (
        f"{table}\n"
        f"accuracy change {100 * (compact['accuracy'] - dense['accuracy']):+.2f} points, "
        f"{ratio:.2f}x fewer conv MACs, "
        f"{dense['params'] / compact['params']:.2f}x fewer params "
        f"({results['seconds']:.0f} s)"
    )


def define_flags():
    """Defines the script's flags (called only when it runs as a script).

    So the module imports next to the other scripts (tests, benchmarks)
    without absl's duplicate-flag errors.
    """
    example_console.define_flags()
    flags.declare_key_flag("tf_logs")  # listed in this script's --help
    flags.DEFINE_float("prune_ratio", 0.6, "LRPET's global prune ratio g: r = int(K - K*g).")
    flags.DEFINE_integer("epochs", 30, "Training epochs for each model.")
    flags.DEFINE_integer("batch_size", 64, "Batch size.")
    flags.DEFINE_float("learning_rate", 0.05, "Peak SGD learning rate (cosine decay).")
    flags.DEFINE_integer("width", 32, "Filters of the first stage (doubles in the second).")
    flags.DEFINE_integer("seed", 0, "Seed of the weights and the data order.")
    flags.DEFINE_string("output_dir", "saved_models/quickstart", "Where models are written.")
    flags.DEFINE_integer("verbose", 2, "Keras fit verbosity (1 progress bar, 2 line per epoch).")


def main(argv):
    del argv
    run(
        prune_ratio=FLAGS.prune_ratio,
        epochs=FLAGS.epochs,
        batch_size=FLAGS.batch_size,
        learning_rate=FLAGS.learning_rate,
        width=FLAGS.width,
        seed=FLAGS.seed,
        output_dir=FLAGS.output_dir,
        verbose=FLAGS.verbose,
    )


if __name__ == "__main__":
    define_flags()
    app.run(main)
