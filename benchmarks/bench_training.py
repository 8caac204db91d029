"""Training kit of the accuracy study: data, recipes and fits that survive interruption.

* `load_images`: Fashion-MNIST from Debian's `dataset-fashion-mnist` (the
  IDX files under /usr/share/datasets/fashion-mnist), or scikit-learn's 8x8
  digits for smoke runs; standardized with the training images' mean and std.
* `train_batches`: shuffled, augmented training batches (4-pixel zero-pad
  crop and horizontal flip, as PyTorch's CIFAR recipe).
* `Recipe`: optimizer, learning-rate schedule and coupled L2 weight decay
  (PyTorch's `SGD(weight_decay=...)`: `0.5 * wd * ||w||^2` of every trainable
  weight added to the loss), compiled onto a model.
* `fit_stage`: one training stage that resumes from its `BackupAndRestore`
  state and, once finished, leaves a `.keras` file that marks it done.
* `accuracy`: top-1 accuracy of a model on the test images.

Everything here uses Keras and lrpet_tf's public API only.
"""

import dataclasses
import gzip
import json
import math
import os
import shutil
import time

import h5py
import numpy as np
import tensorflow as tf
from absl import logging

from lrpet_tf import keras

__all__ = [
    "FASHION_MNIST_DIR",
    "Images",
    "RECIPES",
    "Recipe",
    "accuracy",
    "fit_stage",
    "load_images",
    "load_model",
    "train_batches",
]

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
_IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


@dataclasses.dataclass
class Images:
    """Standardized images `(N, H, W, 1)` float32 and integer labels."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int = 10

    @property
    def input_shape(self):
        return tuple(self.x_train.shape[1:])


def _read_idx(path):
    with gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * dims).reshape(shape)


def _fashion_mnist(data_dir):
    arrays = []
    for stem in _IDX_FILES:
        for path in (os.path.join(data_dir, stem + ".gz"), os.path.join(data_dir, stem)):
            if os.path.exists(path):
                arrays.append(_read_idx(path))
                break
        else:
            raise FileNotFoundError(
                f"{stem}[.gz] is not in {data_dir!r}: install Debian's dataset-fashion-mnist "
                "(apt-get install dataset-fashion-mnist)."
            )
    return arrays


def _digits():
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = np.round(digits.images * (255 / 16)).astype(np.uint8)
    y = digits.target.astype(np.uint8)
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], y[order]
    return x[:1437], y[:1437], x[1437:], y[1437:]


def load_images(name="fashion_mnist", train_images=None, data_dir=FASHION_MNIST_DIR):
    """Loads a dataset as standardized float32 images.

    Args:
        name: `"fashion_mnist"` (all 10,000 test images) or `"digits"`
            (scikit-learn's 8x8 digits: 1,437 train / 360 test, for smoke runs).
        train_images: Keep only the first N training images (the same N for
            every variant of a study).
        data_dir: Where the Fashion-MNIST IDX files are.

    Returns:
        An `Images`.
    """
    if name == "fashion_mnist":
        x_train, y_train, x_test, y_test = _fashion_mnist(data_dir)
    elif name == "digits":
        x_train, y_train, x_test, y_test = _digits()
    else:
        raise ValueError(f'Expected `name` in ("fashion_mnist", "digits"). Received: {name!r}')
    if train_images is not None:
        x_train, y_train = x_train[:train_images], y_train[:train_images]
    x_train = x_train.astype(np.float32) / 255.0
    x_test = x_test.astype(np.float32) / 255.0
    mean, std = float(x_train.mean()), float(x_train.std())
    return Images(
        name,
        ((x_train - mean) / std)[..., None].astype(np.float32),
        y_train.astype(np.int64),
        ((x_test - mean) / std)[..., None].astype(np.float32),
        y_test.astype(np.int64),
    )


def _augment(image):
    height, width, channels = image.shape
    padded = tf.image.resize_with_crop_or_pad(image, height + 8, width + 8)
    image = tf.image.random_crop(padded, (height, width, channels))
    return tf.image.random_flip_left_right(image)


def train_batches(images, batch_size, seed, augment=True):
    """Shuffled (and augmented) training batches as a `tf.data.Dataset`."""
    ds = tf.data.Dataset.from_tensor_slices((images.x_train, images.y_train))
    ds = ds.shuffle(len(images.x_train), seed=seed, reshuffle_each_iteration=True)
    if augment:
        ds = ds.map(lambda x, y: (_augment(x), y), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


class _CrossEntropyWithL2(keras.losses.Loss):
    """Cross-entropy on logits plus `0.5 * wd * sum ||w||^2` over `weights` (coupled L2)."""

    def __init__(self, weights, weight_decay, name="cross_entropy_l2"):
        super().__init__(name=name)
        self._decayed = list(weights) if weight_decay else []
        self.weight_decay = float(weight_decay)

    def call(self, y_true, y_pred):
        loss = keras.losses.sparse_categorical_crossentropy(y_true, y_pred, from_logits=True)
        if not self._decayed:
            return loss
        squares = tf.add_n([tf.reduce_sum(tf.square(w)) for w in self._decayed])
        return loss + 0.5 * self.weight_decay * squares


@dataclasses.dataclass(frozen=True)
class Recipe:
    """Optimizer, learning-rate schedule and coupled L2 of one training stage.

    Attributes:
        optimizer: `"sgd"` or `"adam"`.
        learning_rate: Initial learning rate.
        momentum: SGD momentum.
        weight_decay: Coupled L2 weight (0 for none).
        schedule: `"cosine"` (to 0 over the stage) or `"step"` (times 0.1 at
            each fraction of `lr_steps` of the stage's steps).
        lr_steps: For `"step"`.
    """

    optimizer: str = "sgd"
    learning_rate: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    schedule: str = "cosine"
    lr_steps: tuple = ()

    def learning_rate_schedule(self, total_steps):
        if self.schedule == "cosine":
            return keras.optimizers.schedules.CosineDecay(self.learning_rate, total_steps)
        boundaries = [int(f * total_steps) for f in self.lr_steps]
        values = [self.learning_rate * 0.1**i for i in range(len(boundaries) + 1)]
        return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)

    def compile(self, model, total_steps):
        """Compiles `model` for `total_steps` optimizer steps (accuracy metric)."""
        rate = self.learning_rate_schedule(max(1, total_steps))
        if self.optimizer == "adam":
            optimizer = keras.optimizers.Adam(rate)
        else:
            optimizer = keras.optimizers.SGD(rate, momentum=self.momentum)
        model.compile(
            optimizer=optimizer,
            loss=_CrossEntropyWithL2(model.trainable_weights, self.weight_decay),
            metrics=["accuracy"],
        )
        return model

    def describe(self):
        name = f"SGD momentum {self.momentum:g}" if self.optimizer == "sgd" else "Adam"
        if self.schedule == "cosine":
            schedule = "cosine decay to 0"
        else:
            schedule = "x0.1 at " + "/".join(f"{f:.0%}" for f in self.lr_steps) + " of the steps"
        return f"{name}, lr {self.learning_rate:g}, {schedule}, coupled L2 {self.weight_decay:g}"


RECIPES = {
    # The LRPET paper's optimizer (SGD 0.1, momentum 0.9, coupled L2 1e-4) with a
    # cosine schedule, which reaches a converged model in far fewer epochs than
    # the paper's steps at 50%/75% of 400.
    "sgd": Recipe(),
    # Fine-tuning a trained model: the same at a tenth of the rate.
    "finetune": Recipe(learning_rate=0.01),
    # The SVD-training code's released recipe (yanghr/SVD_Prune_EDLCV,
    # cifar10_resnet20): Adam 1e-3, no weight decay, x0.1 at epochs 81 and 122 of 164.
    "svd_released": Recipe(
        optimizer="adam",
        learning_rate=1e-3,
        weight_decay=0.0,
        schedule="step",
        lr_steps=(81 / 164, 122 / 164),
    ),
    # ... at a tenth of the rate, for starting from a trained model.
    "svd_finetune": Recipe(
        optimizer="adam",
        learning_rate=1e-4,
        weight_decay=0.0,
        schedule="step",
        lr_steps=(81 / 164, 122 / 164),
    ),
}


class _EpochLog(keras.callbacks.Callback):
    """Appends each epoch's logs and wall time to a JSON-lines file (it survives resumes)."""

    def __init__(self, path, stage):
        super().__init__()
        self.path = path
        self.stage = stage
        self._start = None

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        row = {"stage": self.stage, "epoch": epoch + 1}
        row.update({k: float(v) for k, v in (logs or {}).items()})
        row["epoch_seconds"] = time.perf_counter() - self._start
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")


def fit_stage(model, images, recipe, epochs, run_dir, stage, seed, batch_size=128, callbacks=()):
    """Trains `model` for one stage; resumable; returns the path of the finished model.

    When `<run_dir>/<stage>.keras` exists the stage is done and nothing runs.
    Otherwise the model is compiled with `recipe` for `epochs` epochs and
    trained with `keras.callbacks.BackupAndRestore` under
    `<run_dir>/<stage>_backup`, so a process killed mid-stage continues from
    its last finished epoch when the same call is made again (the model must
    be built the same way). Epoch logs go to `<run_dir>/epochs.jsonl`.

    Returns:
        The path of the saved, trained model.
    """
    path = os.path.join(run_dir, f"{stage}.keras")
    if os.path.exists(path):
        return path
    os.makedirs(run_dir, exist_ok=True)
    steps = math.ceil(len(images.x_train) / batch_size)
    recipe.compile(model, steps * epochs)
    backup_dir = os.path.join(run_dir, f"{stage}_backup")
    _drop_unreadable_backup(backup_dir)
    backup = keras.callbacks.BackupAndRestore(backup_dir)
    log = _EpochLog(os.path.join(run_dir, "epochs.jsonl"), stage)
    model.fit(
        train_batches(images, batch_size, seed),
        epochs=epochs,
        callbacks=[*callbacks, log, backup],
        verbose=0,
    )
    # Written under another name and renamed: a process killed mid-save
    # leaves no half-written `<stage>.keras` that a rerun would take as done.
    partial = os.path.join(run_dir, f"{stage}.partial.keras")
    model.save(partial)
    os.replace(partial, path)
    return path


def _drop_unreadable_backup(backup_dir):
    """Deletes a BackupAndRestore folder whose weights file cannot be read.

    Keras 3 writes `latest.weights.h5` in place, so a process killed while
    writing it leaves a file that fails to open and every resume would crash
    on it. The stage then restarts from its first epoch, with a warning.
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


def accuracy(model, images, batch_size=500):
    """Top-1 accuracy of `model` (logits) on the test images."""
    correct = 0
    for start in range(0, len(images.x_test), batch_size):
        # Keras's own predict function: traced once per model, not once per call.
        logits = model.predict_on_batch(images.x_test[start : start + batch_size])
        correct += int(
            np.sum(np.argmax(logits, axis=-1) == images.y_test[start : start + batch_size])
        )
    return correct / len(images.x_test)


def load_model(path):
    """Loads a `.keras` file written by `fit_stage` (importing lrpet_tf registered its layers)."""
    return keras.models.load_model(path, compile=False)
