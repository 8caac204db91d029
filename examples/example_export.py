"""The last step of every example script: fold BN, export verified .tflite files.

`export_compact(model, data, run_dir, quantizations)` merges each
BatchNormalization into its conv (`lrpet_tf.fold_batchnorm`), writes
`<run_dir>/<name>_float32.tflite` and one file per extra quantization
(`float16`, `dynamic`, `int8`), each checked against the Keras model in the
LiteRT interpreter on test images (`lrpet_tf.export_tflite`), and measures
each file's top-1 accuracy on the test set.

Quantization-aware training (tf_keras only: `TF_USE_LEGACY_KERAS=1`):
`check_qat_available()` fails at once, with the library's message, where it
cannot run; `quantization_aware_training(model, data, epochs, stage_dir)`
wraps a compact model with `lrpet_tf.export.prepare_qat` and fine-tunes it;
the result exports to int8 without calibration data.
`calibration_images(data)` picks the representative dataset of post-training
int8 from the training images.
"""

import logging
import os
import shutil
import time

import example_console
import example_recipes
import example_training
import numpy as np

import lrpet_tf
from lrpet_tf import keras

__all__ = [
    "QUANTIZATIONS",
    "calibration_images",
    "check_qat_available",
    "export_compact",
    "export_file",
    "quantization_aware_training",
]

QUANTIZATIONS = ("float16", "dynamic", "int8")
_logger = logging.getLogger("lrpet_examples")


def export_compact(
    model, data, run_dir, quantizations=(), name="compact", verify_count=64, eval_limit=10_000
):
    """Folds BN into `model`, exports it to TFLite and measures the files.

    Args:
        model: The compact Keras model (factorized, BN not yet folded).
        data: The `example_data.Dataset` (verification, int8 calibration and
            accuracy).
        run_dir: Output folder.
        quantizations: Extra quantizations besides float32 (`QUANTIZATIONS`).
        name: File name stem.
        verify_count: Test images the verification compares on.
        eval_limit: At most this many test images for the accuracy of each
            file (the whole test set of the small datasets).

    Returns:
        `(folded_model, files, accuracies)`: `files` maps "float32" and each
        quantization to a dict (`path`, `bytes`, `max_error`, `tolerance`,
        `verified`, `conv2d_ops`, `fully_connected_ops`, `op_counts`,
        `top1_agreement`, `error` when verification failed); `accuracies`
        maps `tflite_<quantization>` to top-1 accuracy.
    """
    for q in quantizations:
        if q not in QUANTIZATIONS:
            raise ValueError(
                f"Expected quantizations in {QUANTIZATIONS}. Received: quantization={q!r}"
            )
    folded = lrpet_tf.fold_batchnorm(model)
    verify_data = data.sample(verify_count)
    files, accuracies = {}, {}
    progress = example_console.Progress(1 + len(quantizations))
    test_images = min(data.num_test, eval_limit) if eval_limit else data.num_test
    for quantization in (None, *quantizations):
        label = quantization or "float32"
        path = os.path.join(run_dir, f"{name}_{label}.tflite")
        progress.start(
            f"{os.path.basename(path)}: convert, verify against Keras on {len(verify_data)} "
            f"test images, accuracy on {test_images}"
        )
        start = time.perf_counter()
        info = export_file(folded, path, quantization, data, verify_data=verify_data)
        accuracies[f"tflite_{label}"] = example_training.tflite_accuracy(path, data, eval_limit)
        info["seconds"] = time.perf_counter() - start
        files[label] = info
    return folded, files, accuracies


def export_file(
    model,
    path,
    quantization=None,
    data=None,
    calibration=None,
    verify_data=None,
    seed=0,
    **export_options,
):
    """Writes one verified .tflite file; a failed verification is reported, not raised.

    The file is written even when the LiteRT outputs disagree with Keras
    beyond the quantization's tolerance: the dict says so (`verified` False
    and the `error`), so that one bad quantization does not lose a run.

    Args:
        model: The Keras model (BN folded; a `prepare_qat` model for QAT int8).
        path: The .tflite path.
        quantization: None (float32), `"float16"`, `"dynamic"` or `"int8"`.
        data: An `example_data.Dataset`: its first 64 test images verify the
            file, and 256 training images calibrate post-training int8. None:
            random verification inputs.
        calibration: int8 calibration images instead of the training sample
            (a quantization-aware model needs none and gets none).
        verify_data: Verification inputs instead of the test sample.
        seed: Seed of the calibration sample.
        **export_options: More `lrpet_tf.export_tflite` arguments
            (`batch_size`, `io_type`, `metadata`).

    Returns:
        A dict: `path`, `bytes`, `verified` (and `error`), `max_error`,
        `tolerance`, `top1_agreement`, `max_error_steps` (None when
        unverified), `conv2d_ops`, `fully_connected_ops`, `op_counts`.
    """
    qat = lrpet_tf.export.is_quantization_aware(model)
    if quantization == "int8" and calibration is None and data is not None and not qat:
        calibration = calibration_images(data, seed=seed)
    if verify_data is None and data is not None:
        verify_data = data.sample(64)
    info = {"path": path, "verified": True}
    try:
        result = lrpet_tf.export_tflite(
            model,
            path,
            quantization=quantization,
            representative_dataset=calibration,
            verify_data=verify_data,
            **export_options,
        )
        ops = result.ops
        info.update(
            max_error=result.max_error,
            tolerance=result.tolerance,
            top1_agreement=result.top1_agreement,
            max_error_steps=result.max_error_steps,
        )
    except lrpet_tf.TFLiteVerificationError as e:
        # The file is written anyway; report instead of losing the run.
        _logger.warning("%s", e)
        info.update(
            verified=False,
            error=str(e),
            max_error=None,
            tolerance=None,
            top1_agreement=None,
            max_error_steps=None,
        )
        ops = lrpet_tf.TFLiteModel(path).op_names()
    info.update(
        bytes=os.path.getsize(path),
        conv2d_ops=ops.count("CONV_2D"),
        fully_connected_ops=ops.count("FULLY_CONNECTED"),
        op_counts=dict(sorted(_counts(ops).items())),
    )
    return info


def _counts(ops):
    counts = {}
    for op in ops:
        counts[op] = counts.get(op, 0) + 1
    return counts


def calibration_images(data, count=256, seed=0):
    """A seeded random sample of training images: the representative dataset of int8.

    Calibrating on training images keeps the test set out of every choice the
    int8 file depends on.

    Args:
        data: An `example_data.Dataset`.
        count: How many images (TFLite's converter reads at most 512).
        seed: Seed of the sample.

    Returns:
        A float32 array `(count, H, W, C)` (fewer if the training set is smaller).
    """
    if data.x_train is not None:
        rng = np.random.default_rng(seed)
        index = np.sort(rng.choice(len(data.x_train), min(count, len(data.x_train)), False))
        return np.asarray(data.x_train[index], np.float32)
    images, _ = next(iter(data.train_dataset(count, augment=None, seed=seed)))
    return np.asarray(images, np.float32)


def check_qat_available():
    """Raises the library's error now if quantization-aware training cannot run here.

    `lrpet_tf.export.prepare_qat` needs tf_keras (`TF_USE_LEGACY_KERAS=1`
    before TensorFlow is imported) and tensorflow-model-optimization. Trying
    it on a one-layer model finds out in a second, before any data is loaded
    or any model trained or exported.

    Raises:
        RuntimeError: In Keras 3 mode or without tensorflow-model-optimization,
            with the library's message (how to switch, and the post-training
            int8 alternative).
    """
    probe = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)], name="qat_probe")
    lrpet_tf.export.prepare_qat(probe)


def quantization_aware_training(
    model,
    data,
    epochs,
    stage_dir,
    recipe="finetune",
    learning_rate=1e-3,
    batch_size=64,
    seed=0,
    verbose=2,
    validate=False,
):
    """Wraps a compact model for QAT (`lrpet_tf.export.prepare_qat`) and fine-tunes it.

    tfmot inserts fake quantization of weights (per channel) and activations;
    a few epochs at a small learning rate let the weights and the learned
    activation ranges adapt to int8. Export the result with
    `lrpet_tf.export_tflite(qat_model, path, quantization="int8")`: no
    representative dataset is needed.

    Args:
        model: The compact model (factorized; BN folded, so that the int8 file
            and the float one compute the same graph).
        data: An `example_data.Dataset` (its training images).
        epochs: Fine-tuning epochs (>= 1).
        stage_dir: Folder of the stage (history.csv, `qat.keras`); emptied
            first, so a rerun starts over.
        recipe: An `example_recipes` recipe name or `Recipe`.
        learning_rate: Its peak learning rate (default 1e-3, the end of the
            paper recipe's schedule).
        batch_size, seed, verbose, validate: As `example_training.fit_stage`.

    Returns:
        `(qat_model, stage)`: the fine-tuned tf_keras model and
        `fit_stage`'s dict (`history`, `epochs_run`, `seconds`).

    Raises:
        RuntimeError: In Keras 3 mode (the library's message).
    """
    if epochs < 1:
        raise ValueError(f"Expected `epochs` >= 1. Received: epochs={epochs}")
    qat_model = lrpet_tf.export.prepare_qat(model)
    shutil.rmtree(stage_dir, ignore_errors=True)
    stage = example_training.fit_stage(
        qat_model,
        data,
        example_recipes.get_recipe(recipe, learning_rate=learning_rate),
        epochs,
        batch_size,
        stage_dir,
        os.path.join(stage_dir, "qat.keras"),
        seed=seed,
        verbose=verbose,
        validate=validate,
    )
    return qat_model, stage
