"""Datasets for the examples and benchmarks, loaded without a download when possible.

* `digits`: the 8x8 handwritten digits that ship inside scikit-learn (1,797
  images); split 80/20, stratified, with a fixed seed.
* `fashion_mnist`: the IDX files of Debian's `dataset-fashion-mnist`
  (/usr/share/datasets/fashion-mnist) or of `--data_dir`; otherwise Keras's
  downloader.
* `synthetic`: random images and labels of a given shape, for smoke tests.
"""

import gzip
import os

import numpy as np

__all__ = ["Dataset", "load_dataset"]

FASHION_MNIST_DIRS = ("/usr/share/datasets/fashion-mnist",)


class Dataset:
    """Train and test arrays, images `(N, H, W, C)` float32 in [0, 1], int labels."""

    def __init__(self, name, x_train, y_train, x_test, y_test, num_classes):
        self.name = name
        self.x_train, self.y_train = x_train, y_train
        self.x_test, self.y_test = x_test, y_test
        self.num_classes = num_classes

    @property
    def input_shape(self):
        return self.x_train.shape[1:]

    def __repr__(self):
        return (
            f"Dataset({self.name!r}, train={self.x_train.shape}, "
            f"test={self.x_test.shape}, classes={self.num_classes})"
        )


def load_dataset(name, data_dir=None, seed=0, limit=None):
    """Loads a dataset by name ("digits", "fashion_mnist", "synthetic").

    Args:
        name: Dataset name.
        data_dir: Folder with Fashion-MNIST's IDX files (optional).
        seed: Seed of the digits split and of synthetic data.
        limit: Keep at most this many train and test examples (smoke runs).
    """
    if name == "digits":
        data = _digits(seed)
    elif name == "fashion_mnist":
        data = _fashion_mnist(data_dir)
    elif name == "synthetic":
        data = _synthetic(seed)
    else:
        raise ValueError(
            'Expected `dataset` to be one of "digits", "fashion_mnist", '
            f'"synthetic". Received: dataset={name!r}'
        )
    if limit:
        data.x_train, data.y_train = data.x_train[:limit], data.y_train[:limit]
        data.x_test, data.y_test = data.x_test[:limit], data.y_test[:limit]
    return data


def _digits(seed):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[..., None]
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.2, random_state=seed, stratify=y
    )
    return Dataset("digits", x_train, y_train, x_test, y_test, 10)


def _read_idx(path):
    with gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * dims).reshape(shape)


def _find_idx(folder, stem):
    for suffix in (".gz", ""):
        path = os.path.join(folder, stem + suffix)
        if os.path.exists(path):
            return path
    return None


def _fashion_mnist(data_dir):
    folders = ([data_dir] if data_dir else []) + list(FASHION_MNIST_DIRS)
    for folder in folders:
        paths = [
            _find_idx(folder, stem)
            for stem in (
                "train-images-idx3-ubyte",
                "train-labels-idx1-ubyte",
                "t10k-images-idx3-ubyte",
                "t10k-labels-idx1-ubyte",
            )
        ]
        if all(paths):
            x_train, y_train, x_test, y_test = (_read_idx(p) for p in paths)
            break
    else:
        if data_dir:
            raise FileNotFoundError(
                f"No Fashion-MNIST IDX files in data_dir={data_dir!r} "
                "(train-images-idx3-ubyte[.gz] and the three others)."
            )
        from lrpet_tf._keras import keras

        (x_train, y_train), (x_test, y_test) = keras.datasets.fashion_mnist.load_data()
    return Dataset(
        "fashion_mnist",
        (x_train / 255.0).astype(np.float32)[..., None],
        y_train.astype(np.int64),
        (x_test / 255.0).astype(np.float32)[..., None],
        y_test.astype(np.int64),
        10,
    )


def _synthetic(seed, shape=(8, 8, 1), classes=10, train=256, test=64):
    rng = np.random.default_rng(seed)
    return Dataset(
        "synthetic",
        rng.random((train,) + shape, dtype=np.float32),
        rng.integers(0, classes, train),
        rng.random((test,) + shape, dtype=np.float32),
        rng.integers(0, classes, test),
        classes,
    )
