"""Training stages of the example scripts: resumable `fit`, evaluation, saving.

`fit_stage` trains one stage of a run in its own folder and saves the
result; an interrupted stage resumes where it stopped when run again with
the same folder:

    <stage_dir>/backup/        keras.callbacks.BackupAndRestore (weights,
                               optimizer state and epoch; removed once the
                               stage's model is saved; a backup that cannot
                               be read is dropped and the stage restarts)
    <stage_dir>/history.csv    one row per epoch (appended across restarts)
    <save_path>                the trained model: its existence marks the
                               stage as finished, so the scripts skip it

The learning-rate schedule is a function of the optimizer's step count and
`LRPET` keys its schedule to the epoch and step count, so a resumed stage
continues both exactly.
"""

import csv
import json
import os
import shutil
import time
import zipfile

import example_recipes
import h5py
import numpy as np
import tensorflow as tf
from absl import logging

import lrpet_tf
from lrpet_tf import keras

__all__ = [
    "STRATEGIES",
    "accuracy",
    "epochs_detail",
    "fit_or_load",
    "fit_stage",
    "load_model",
    "make_strategy",
    "read_history",
    "save_model",
    "tflite_accuracy",
]

STRATEGIES = ("default", "mirrored", "multi_worker")


def make_strategy(name=None):
    """A `tf.distribute` strategy by name.

    Args:
        name: None or `"default"` (no distribution), `"mirrored"` (all local
            GPUs, or the CPU), or `"multi_worker"` (MultiWorkerMirrored; the
            cluster comes from the `TF_CONFIG` environment variable).
    """
    if name in (None, "default"):
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"Expected `strategy` in {STRATEGIES}. Received: strategy={name!r}")


class _EpochTimer(keras.callbacks.Callback):
    """Adds `epoch_seconds` to each epoch's logs (and so to history.csv).

    Placed after the caller's callbacks, so an epoch's time includes their
    end-of-epoch work (LRPET's projection).
    """

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["epoch_seconds"] = time.perf_counter() - self._start


def fit_stage(
    model,
    data,
    recipe,
    epochs,
    batch_size,
    stage_dir,
    save_path,
    strategy=None,
    callbacks=(),
    extra_callbacks=(),
    log_dir=None,
    seed=0,
    verbose=2,
    validate=True,
):
    """Compiles `model` with `recipe`, trains it resumably and saves it.

    Args:
        model: A model built (or loaded) in `strategy`'s scope.
        data: An `example_data.Dataset`.
        recipe: An `example_recipes.Recipe`.
        epochs: Epochs of this stage.
        batch_size: Global batch size.
        stage_dir: The stage's folder (backup and history.csv).
        save_path: Where the trained model is saved (`.keras`).
        strategy: The `tf.distribute` strategy (default: none).
        callbacks: Callbacks that must act before the epoch's backup is
            written (`LRPET`).
        extra_callbacks: Callbacks run after the backup and history row are
            written (e.g. one that stops the run).
        log_dir: If given, a `keras.callbacks.TensorBoard` writes here.
        seed: Seed of the data order and augmentation.
        verbose: Keras `fit` verbosity.
        validate: Evaluate on the test set after each epoch (`val_*` logs).

    Returns:
        A dict: `history` (rows of history.csv: every epoch of the stage,
        also those run before an interruption), `epochs_run` (epochs run by
        this call) and `seconds` (wall time of all the stage's epochs).
    """
    strategy = strategy or tf.distribute.get_strategy()
    steps = example_recipes.steps_per_epoch(data.num_train, batch_size)
    with strategy.scope():
        recipe.compile(model, steps, epochs)
    os.makedirs(stage_dir, exist_ok=True)
    backup_dir = os.path.join(stage_dir, "backup")
    _drop_unreadable_backup(backup_dir)
    history_path = os.path.join(stage_dir, "history.csv")
    # The history row before the backup: a process killed between the two
    # runs that epoch again and logs it twice, and `read_history` keeps the
    # later row; the other order would lose the row.
    all_callbacks = [*callbacks, _EpochTimer()]
    all_callbacks.append(keras.callbacks.CSVLogger(history_path, append=True))
    all_callbacks.append(keras.callbacks.BackupAndRestore(backup_dir, delete_checkpoint=False))
    if log_dir:
        all_callbacks.append(keras.callbacks.TensorBoard(log_dir, write_graph=False))
    all_callbacks.extend(extra_callbacks)
    result = model.fit(
        data.train_dataset(batch_size, recipe.augmentation(data.name), seed),
        epochs=epochs,
        validation_data=data.test_dataset(max(batch_size, 256)) if validate else None,
        callbacks=all_callbacks,
        shuffle=False,  # the tf.data pipeline shuffles
        verbose=verbose,
    )
    save_model(model, save_path, strategy)
    shutil.rmtree(backup_dir, ignore_errors=True)
    history = read_history(history_path)
    return {
        "history": history,
        "epochs_run": len(result.epoch),
        "seconds": float(sum(row.get("epoch_seconds", 0.0) for row in history)),
    }


def fit_or_load(model, data, recipe, epochs, batch_size, run_dir, stage, **fit_options):
    """The trained model of stage `stage` of a run: loaded if done, else trained by `fit_stage`.

    For drivers that rerun a whole list of runs and skip the finished stages
    (the benchmarks' studies). The stage lives in `<run_dir>/<stage>/`
    (backup, history.csv) and its trained model in `<run_dir>/<stage>.keras`,
    whose existence marks it done. The other arguments are `fit_stage`'s.
    The model is returned as loaded from that file either way (uncompiled).
    """
    save_path = os.path.join(run_dir, f"{stage}.keras")
    if not os.path.exists(save_path):
        stage_dir = os.path.join(run_dir, stage)
        fit_stage(model, data, recipe, epochs, batch_size, stage_dir, save_path, **fit_options)
    return load_model(save_path, fit_options.get("strategy"))


def _drop_unreadable_backup(backup_dir):
    """Deletes a `BackupAndRestore` folder whose weights file cannot be read.

    Keras 3 writes `latest.weights.h5` in place, so a process killed while
    writing it leaves a file that fails to open, and every resume would crash
    on it. The stage then restarts from its first epoch, with a warning.
    (tf_keras writes TensorFlow checkpoints, which are not checked here.)
    """
    weights = os.path.join(backup_dir, "latest.weights.h5")
    if not os.path.exists(weights):
        return
    try:
        with h5py.File(weights, "r"):
            pass
    except OSError as error:
        logging.warning("Backup %s cannot be read (%s); the stage restarts.", weights, error)
        shutil.rmtree(backup_dir)


def epochs_detail(epochs, stage_dir):
    """`"10 epochs"` for a stage's header, plus `", resuming after epoch 3"` when it resumes.

    A stage resumes when its folder holds a backup (`BackupAndRestore`) of
    an interrupted run; its history.csv has a row per epoch done.
    """
    text = f"{epochs} epoch{'' if epochs == 1 else 's'}"
    if os.path.isdir(os.path.join(stage_dir, "backup")):
        done = len(read_history(os.path.join(stage_dir, "history.csv")))
        if done:
            text += f", resuming after epoch {done}"
    return text


def read_history(path):
    """The rows of a CSVLogger file as dicts of floats, one per epoch, in epoch order.

    An epoch logged more than once (a stage resumed from a backup older than
    its last row, or restarted from its first epoch) keeps its last row.
    Empty if the file is missing; "NA" values are dropped.
    """
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        # Keras 3 writes "NA" in the val_* columns of epochs without validation.
        rows = [
            {k: float(v) for k, v in row.items() if v not in ("", "NA")}
            for row in csv.DictReader(f)
        ]
    by_epoch = {row["epoch"]: row for row in rows}
    return [by_epoch[epoch] for epoch in sorted(by_epoch)]


def save_model(model, path, strategy=None):
    """Saves `model` as a `.keras` file that loads anywhere, without custom objects.

    The training loss holds the model's variables (the coupled L2 term), so
    before saving the model is recompiled with a plain SGD and cross-entropy
    (its weights are unchanged; the optimizer state is not saved).
    """
    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
        model.compile(
            optimizer=keras.optimizers.SGD(),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    partial = path + ".partial.keras"
    model.save(partial)
    os.replace(partial, path)
    return path


def _saved_keras_version(path):
    """The Keras version a `.keras` file was saved by (its metadata.json), or None."""
    try:
        with zipfile.ZipFile(path) as archive:
            return str(json.loads(archive.read("metadata.json"))["keras_version"])
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None


def load_model(path, strategy=None):
    """Loads a `.keras` file (uncompiled) in the strategy's scope.

    Raises:
        ValueError: If the file was saved by the other Keras (Keras 3 vs
            tf_keras, which cannot read each other's `.keras` files).
    """
    saved = _saved_keras_version(path)
    keras_3 = keras.__version__.startswith("3.")
    if saved is not None and (saved.split(".")[0] == "3") != keras_3:
        running = "Keras 3" if keras_3 else "tf_keras (TF_USE_LEGACY_KERAS=1)"
        raise ValueError(
            f"{path} was saved by Keras {saved}, and this process uses {running}: the two "
            "cannot read each other's .keras files. Train (or save) the model in the same "
            "mode, e.g. with TF_USE_LEGACY_KERAS=1 for quantization-aware training."
        )
    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
        return keras.models.load_model(path, compile=False)


def accuracy(model, data, batch_size=256):
    """Top-1 accuracy of a logits model on the test set (inference mode).

    Calls the model on batches (`model(x, training=False)`) rather than
    `model.predict`, which builds and traces a new predict function for
    every model: a script that evaluates five models or more would get
    TensorFlow's "retracing" warning.
    """
    if data.x_test is not None:
        batches = (
            (data.x_test[i : i + batch_size], data.y_test[i : i + batch_size])
            for i in range(0, len(data.x_test), batch_size)
        )
    else:
        batches = data.test_dataset(batch_size)
    correct = total = 0
    for x, y in batches:
        logits = model(x, training=False)
        correct += int(np.sum(np.argmax(logits, -1) == np.asarray(y)))
        total += len(y)
    return correct / max(total, 1)


def tflite_accuracy(path, data, limit=10_000, batch_size=500):
    """Top-1 accuracy of a .tflite file on (at most `limit` of) the test set."""
    tflite = lrpet_tf.TFLiteModel(path)
    x, y = data.test_arrays(limit)
    predictions = [
        np.argmax(tflite(x[i : i + batch_size]), -1) for i in range(0, len(x), batch_size)
    ]
    return float(np.mean(np.concatenate(predictions) == y))
