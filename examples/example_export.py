"""The last step of every example script: fold BN, export verified .tflite files.

`export_compact(model, data, run_dir, quantizations)` merges each
BatchNormalization into its conv (`lrpet_tf.fold_batchnorm`), writes
`<run_dir>/<name>_float32.tflite` and one file per extra quantization
(`float16`, `dynamic`, `int8`), each checked against the Keras model in the
LiteRT interpreter on test images (`lrpet_tf.export_tflite`), and measures
each file's top-1 accuracy on the test set.
"""

import logging
import os
import time

import example_training

import lrpet_tf

__all__ = ["QUANTIZATIONS", "export_compact"]

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
    for quantization in (None, *quantizations):
        label = quantization or "float32"
        path = os.path.join(run_dir, f"{name}_{label}.tflite")
        start = time.perf_counter()
        info = {"path": path}
        try:
            result = lrpet_tf.export_tflite(
                folded,
                path,
                quantization=quantization,
                representative_dataset=data.sample(256) if quantization == "int8" else None,
                verify_data=verify_data,
            )
            info["verified"] = True
        except lrpet_tf.TFLiteVerificationError as e:
            # The file is written anyway; report instead of losing the run.
            _logger.warning("%s", e)
            info.update(verified=False, error=str(e))
            result = None
        if result is not None:
            info.update(
                bytes=result.size_bytes,
                max_error=result.max_error,
                tolerance=result.tolerance,
                top1_agreement=result.top1_agreement,
                conv2d_ops=result.op_count("CONV_2D"),
                fully_connected_ops=result.op_count("FULLY_CONNECTED"),
                op_counts=dict(sorted(_counts(result.ops).items())),
            )
        else:
            info["bytes"] = os.path.getsize(path)
        accuracies[f"tflite_{label}"] = example_training.tflite_accuracy(path, data, eval_limit)
        info["seconds"] = time.perf_counter() - start
        files[label] = info
    return folded, files, accuracies


def _counts(ops):
    counts = {}
    for op in ops:
        counts[op] = counts.get(op, 0) + 1
    return counts
