"""Datasets for the examples and benchmarks, loaded without a download when possible.

* `digits`: the 8x8 handwritten digits that ship inside scikit-learn (1,797
  images); split 80/20, stratified, with a fixed seed.
* `fashion_mnist`: the IDX files of Debian's `dataset-fashion-mnist`
  (/usr/share/datasets/fashion-mnist) or of `data_dir`; otherwise Keras's
  downloader.
* `mnist`, `cifar10`: Keras's downloaders (`keras.datasets`), which need the
  internet the first time.
* `imagenet`: files under `data_dir`, either TFRecords in the TF-Slim / TPU
  layout (`train-*`, `validation-*` with `image/encoded` and a 1-based
  `image/class/label`) or an image folder (`train/<class>/*.JPEG`,
  `val/<class>/*.JPEG`); decoded and resized on the fly by `tf.data`.
* `synthetic`: random images and labels of a given shape, for smoke tests.

Every dataset is a `Dataset`: in-memory arrays (images `(N, H, W, C)` float32,
in [0, 1] or standardized per channel) for the small ones, file lists for
ImageNet, and the same `train_dataset` / `test_dataset` (`tf.data`) and
`sample` methods for both.
"""

import glob
import gzip
import os

import numpy as np
import tensorflow as tf

__all__ = ["DATASETS", "Dataset", "load_dataset"]

DATASETS = ("digits", "fashion_mnist", "mnist", "cifar10", "imagenet", "synthetic")
FASHION_MNIST_DIRS = ("/usr/share/datasets/fashion-mnist",)
# The augmentation each dataset gets when a recipe asks for "auto".
DEFAULT_AUGMENTATION = {
    "cifar10": "crop_flip",
    "fashion_mnist": "crop_flip",
    "imagenet": "crop_flip",
}
AUGMENTATIONS = (None, "crop", "crop_flip")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png", ".bmp", ".gif")


class Dataset:
    """Train and test data of one image-classification dataset.

    In-memory datasets hold `x_train`, `y_train`, `x_test`, `y_test` (images
    `(N, H, W, C)` float32, int labels); file-backed ones (ImageNet) hold
    `None` there and read their files through `train_dataset` /
    `test_dataset`.

    Attributes:
        name: Dataset name.
        num_classes: Number of classes.
        input_shape: `(H, W, C)` of the model input.
        num_train, num_test: Number of examples.
    """

    def __init__(self, name, x_train, y_train, x_test, y_test, num_classes, files=None):
        self.name = name
        self.x_train, self.y_train = x_train, y_train
        self.x_test, self.y_test = x_test, y_test
        self.num_classes = num_classes
        self._files = files

    @property
    def input_shape(self):
        if self._files is not None:
            return self._files.input_shape
        return self.x_train.shape[1:]

    @property
    def num_train(self):
        return self._files.num_train if self._files is not None else len(self.x_train)

    @property
    def num_test(self):
        return self._files.num_test if self._files is not None else len(self.x_test)

    def train_dataset(self, batch_size, augment=None, seed=0):
        """Shuffled, augmented training batches `(images, labels)` as a `tf.data.Dataset`.

        Args:
            batch_size: Global batch size.
            augment: None, `"crop"` (zero-pad 4 pixels and crop back, as
                PyTorch's `RandomCrop(size, padding=4)`) or `"crop_flip"`
                (and a random horizontal flip); for ImageNet, `"crop*"` is the
                random-resized crop.
            seed: Shuffle and augmentation seed.
        """
        if augment not in AUGMENTATIONS:
            raise ValueError(
                f"Expected `augment` in {AUGMENTATIONS}. Received: augment={augment!r}"
            )
        if self._files is not None:
            return self._files.train(batch_size, augment, seed)
        ds = tf.data.Dataset.from_tensor_slices((self.x_train, self.y_train))
        ds = ds.shuffle(min(len(self.x_train), 50_000), seed=seed, reshuffle_each_iteration=True)
        if augment:
            flip = augment == "crop_flip"
            ds = ds.map(lambda x, y: (_pad_crop_flip(x, flip), y), tf.data.AUTOTUNE)
        return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)

    def test_dataset(self, batch_size):
        """Test batches `(images, labels)` in a fixed order."""
        if self._files is not None:
            return self._files.test(batch_size)
        ds = tf.data.Dataset.from_tensor_slices((self.x_test, self.y_test))
        return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)

    def test_arrays(self, limit=None):
        """`(images, labels)` of the test set (at most `limit`) as numpy arrays."""
        if self._files is None:
            return self.x_test[:limit], self.y_test[:limit]
        xs, ys = [], []
        count = 0
        for x, y in self.test_dataset(64):
            xs.append(x.numpy())
            ys.append(y.numpy())
            count += len(ys[-1])
            if limit and count >= limit:
                break
        return np.concatenate(xs)[:limit], np.concatenate(ys)[:limit]

    def info(self):
        """Name, sizes, input shape and classes, for a run's results.json."""
        return {
            "name": self.name,
            "train": self.num_train,
            "test": self.num_test,
            "input_shape": list(self.input_shape),
            "classes": self.num_classes,
        }

    def sample(self, count=64):
        """The first `count` test images: TFLite verification and calibration inputs."""
        return self.test_arrays(count)[0]

    def __repr__(self):
        return (
            f"Dataset({self.name!r}, train={self.num_train}, test={self.num_test}, "
            f"input_shape={tuple(self.input_shape)}, classes={self.num_classes})"
        )


def load_dataset(
    name,
    data_dir=None,
    seed=0,
    limit=None,
    train_limit=None,
    test_limit=None,
    standardize=False,
    image_size=224,
    synthetic_shape=(8, 8, 1),
):
    """Loads a dataset by name (one of `DATASETS`).

    Args:
        name: Dataset name.
        data_dir: Folder with Fashion-MNIST's IDX files, or ImageNet's
            TFRecords / image folders (required for ImageNet).
        seed: Seed of the digits split and of synthetic data.
        limit: Keep at most this many train and test examples (smoke runs).
        train_limit, test_limit: The same, separately (they win over `limit`).
        standardize: Subtract the per-channel mean and divide by the standard
            deviation of the training images (ImageNet: the usual constants).
        image_size: ImageNet's input size (square).
        synthetic_shape: Image shape of the synthetic dataset.

    Returns:
        A `Dataset`.
    """
    if name not in DATASETS:
        raise ValueError(f"Expected `dataset` to be one of {DATASETS}. Received: dataset={name!r}")
    train_limit = train_limit or limit
    test_limit = test_limit or limit
    if name == "imagenet":
        return _imagenet(data_dir, image_size, standardize, train_limit, test_limit)
    if name == "digits":
        data = _digits(seed)
    elif name == "fashion_mnist":
        data = _fashion_mnist(data_dir)
    elif name == "synthetic":
        data = _synthetic(seed, tuple(synthetic_shape))
    else:
        data = _keras_dataset(name)
    if train_limit:
        data.x_train, data.y_train = data.x_train[:train_limit], data.y_train[:train_limit]
    if test_limit:
        data.x_test, data.y_test = data.x_test[:test_limit], data.y_test[:test_limit]
    if standardize:
        mean = data.x_train.mean(axis=(0, 1, 2), dtype=np.float64)
        std = data.x_train.std(axis=(0, 1, 2), dtype=np.float64) + 1e-7
        data.x_train = ((data.x_train - mean) / std).astype(np.float32)
        data.x_test = ((data.x_test - mean) / std).astype(np.float32)
    return data


def _pad_crop_flip(image, flip):
    height, width, channels = image.shape
    padded = tf.image.resize_with_crop_or_pad(image, height + 8, width + 8)
    image = tf.image.random_crop(padded, (height, width, channels))
    return tf.image.random_flip_left_right(image) if flip else image


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
        from lrpet_tf import keras

        (x_train, y_train), (x_test, y_test) = keras.datasets.fashion_mnist.load_data()
    return _from_uint8("fashion_mnist", x_train, y_train, x_test, y_test, 10)


def _keras_dataset(name):
    from lrpet_tf import keras

    (x_train, y_train), (x_test, y_test) = getattr(keras.datasets, name).load_data()
    return _from_uint8(name, x_train, y_train, x_test, y_test, 10)


def _from_uint8(name, x_train, y_train, x_test, y_test, classes):
    def images(x):
        x = (np.asarray(x) / 255.0).astype(np.float32)
        return x[..., None] if x.ndim == 3 else x

    return Dataset(
        name,
        images(x_train),
        np.asarray(y_train).reshape(-1).astype(np.int64),
        images(x_test),
        np.asarray(y_test).reshape(-1).astype(np.int64),
        classes,
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


# -- ImageNet from files -------------------------------------------------------


def _imagenet(data_dir, image_size, standardize, train_limit, test_limit):
    if not data_dir or not os.path.isdir(data_dir):
        raise FileNotFoundError(
            "The imagenet dataset reads TFRecords (train-*, validation-*) or image folders "
            f"(train/<class>/, val/<class>/) from `data_dir`. Received: data_dir={data_dir!r}"
        )
    tfrecords = sorted(glob.glob(os.path.join(data_dir, "train-*")))
    if tfrecords:
        files = _ImageNetRecords(data_dir, image_size, standardize)
    else:
        files = _ImageFolders(data_dir, image_size, standardize)
    files.limit(train_limit, test_limit)
    return Dataset("imagenet", None, None, None, None, files.num_classes, files=files)


class _ImageFiles:
    """Decoding, augmentation and batching shared by both ImageNet layouts."""

    def __init__(self, image_size, standardize):
        self.image_size = int(image_size)
        self.input_shape = (self.image_size, self.image_size, 3)
        self.standardize = standardize

    def _finish(self, image):
        image = tf.cast(image, tf.float32) / 255.0
        if self.standardize:
            image = (image - IMAGENET_MEAN) / IMAGENET_STD
        return image

    def _train_image(self, encoded, augment):
        image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
        if augment:
            # Inception-style random-resized crop (area 8%-100%, aspect 3/4-4/3).
            begin, size, _ = tf.image.sample_distorted_bounding_box(
                tf.shape(image),
                bounding_boxes=tf.zeros((1, 0, 4)),
                area_range=(0.08, 1.0),
                aspect_ratio_range=(3 / 4, 4 / 3),
                max_attempts=10,
                use_image_if_no_bounding_boxes=True,
            )
            image = tf.slice(image, begin, size)
        image = tf.image.resize(image, (self.image_size, self.image_size))
        if augment == "crop_flip":
            image = tf.image.random_flip_left_right(image)
        return self._finish(image)

    def _test_image(self, encoded):
        # Resize the shorter side to size / 0.875, then take the central crop.
        image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
        shape = tf.cast(tf.shape(image)[:2], tf.float32)
        scale = (self.image_size / 0.875) / tf.reduce_min(shape)
        resized = tf.cast(tf.round(shape * scale), tf.int32)
        image = tf.image.resize(image, resized)
        image = tf.image.resize_with_crop_or_pad(image, self.image_size, self.image_size)
        return self._finish(image)

    def train(self, batch_size, augment, seed):
        ds = self._pairs(train=True).shuffle(10_000, seed=seed, reshuffle_each_iteration=True)
        ds = ds.map(lambda e, y: (self._train_image(e, augment), y), tf.data.AUTOTUNE)
        return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)

    def test(self, batch_size):
        ds = self._pairs(train=False).map(lambda e, y: (self._test_image(e), y), tf.data.AUTOTUNE)
        return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


class _ImageFolders(_ImageFiles):
    """`train/<class>/<image>` and `val/<class>/<image>` (classes sorted by name)."""

    def __init__(self, data_dir, image_size, standardize):
        super().__init__(image_size, standardize)
        train_dir = os.path.join(data_dir, "train")
        test_dir = next(
            (
                os.path.join(data_dir, d)
                for d in ("val", "validation", "test")
                if os.path.isdir(os.path.join(data_dir, d))
            ),
            None,
        )
        if not os.path.isdir(train_dir) or test_dir is None:
            raise FileNotFoundError(
                f"Expected {data_dir!r} to hold TFRecords (train-*, validation-*) or "
                "the folders train/<class>/ and val/<class>/."
            )
        self.classes = sorted(
            d for d in os.listdir(train_dir) if os.path.isdir(os.path.join(train_dir, d))
        )
        self.num_classes = len(self.classes)
        self.train_files = self._list(train_dir)
        self.test_files = self._list(test_dir)

    def _list(self, folder):
        files, labels = [], []
        for label, name in enumerate(self.classes):
            class_dir = os.path.join(folder, name)
            if not os.path.isdir(class_dir):
                continue
            for file in sorted(os.listdir(class_dir)):
                if file.lower().endswith(_IMAGE_EXTENSIONS):
                    files.append(os.path.join(class_dir, file))
                    labels.append(label)
        return files, np.asarray(labels, np.int64)

    def limit(self, train_limit, test_limit):
        if train_limit:
            # A seeded subset, so every class keeps some images.
            order = np.random.default_rng(0).permutation(len(self.train_files[0]))[:train_limit]
            order.sort()
            self.train_files = (
                [self.train_files[0][i] for i in order],
                self.train_files[1][order],
            )
        if test_limit:
            self.test_files = (self.test_files[0][:test_limit], self.test_files[1][:test_limit])

    @property
    def num_train(self):
        return len(self.train_files[0])

    @property
    def num_test(self):
        return len(self.test_files[0])

    def _pairs(self, train):
        files, labels = self.train_files if train else self.test_files
        ds = tf.data.Dataset.from_tensor_slices((files, labels))
        return ds.map(lambda f, y: (tf.io.read_file(f), y))


class _ImageNetRecords(_ImageFiles):
    """TF-Slim / TPU ImageNet TFRecords: `image/encoded`, 1-based `image/class/label`."""

    LABEL_OFFSET = 1

    def __init__(self, data_dir, image_size, standardize, num_classes=1000):
        super().__init__(image_size, standardize)
        self.train_files = sorted(glob.glob(os.path.join(data_dir, "train-*")))
        self.test_files = sorted(glob.glob(os.path.join(data_dir, "validation-*")))
        if not self.test_files:
            raise FileNotFoundError(f"No validation-* TFRecords in {data_dir!r}.")
        self.num_classes = num_classes
        self._limits = (None, None)
        self.num_train = 1_281_167
        self.num_test = 50_000

    def limit(self, train_limit, test_limit):
        self._limits = (train_limit, test_limit)
        self.num_train = train_limit or self.num_train
        self.num_test = test_limit or self.num_test

    def _parse(self, record):
        features = tf.io.parse_single_example(
            record,
            {
                "image/encoded": tf.io.FixedLenFeature([], tf.string),
                "image/class/label": tf.io.FixedLenFeature([], tf.int64),
            },
        )
        return features["image/encoded"], features["image/class/label"] - self.LABEL_OFFSET

    def _pairs(self, train):
        files = self.train_files if train else self.test_files
        limit = self._limits[0 if train else 1]
        ds = tf.data.TFRecordDataset(files, num_parallel_reads=tf.data.AUTOTUNE if train else None)
        ds = ds.map(self._parse, tf.data.AUTOTUNE)
        return ds.take(limit) if limit else ds
