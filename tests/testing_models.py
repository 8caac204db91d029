"""Small models shared by the tests: real graphs with BN, branches and heads."""

import numpy as np

from lrpet_tf._keras import keras

L = keras.layers


def randomize_batchnorm(model, seed=0):
    """Gives every BatchNormalization non-trivial gamma, beta and statistics."""
    rng = np.random.default_rng(seed)
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if not isinstance(layer, L.BatchNormalization):
            continue
        n = layer.moving_mean.shape[0]
        if layer.scale:
            layer.gamma.assign(rng.uniform(0.5, 1.5, n).astype(np.float32))
        if layer.center:
            layer.beta.assign(rng.normal(0, 0.3, n).astype(np.float32))
        layer.moving_mean.assign(rng.normal(0, 0.3, n).astype(np.float32))
        layer.moving_variance.assign(rng.uniform(0.5, 1.5, n).astype(np.float32))
    return model


def residual_cnn(input_shape=(8, 8, 3), classes=4, width=8, dense_hidden=False):
    """Conv->BN->ReLU blocks with a residual add, a projection shortcut and a Dense head.

    Layers are created out of graph order (the shortcut conv before the
    main path's second conv) so that pairing by layer order would be wrong.
    """
    inputs = keras.Input(input_shape, name="x")
    stem = L.Conv2D(width, 3, padding="same", use_bias=False, name="stem")
    stem_bn = L.BatchNormalization(name="stem_bn")
    shortcut = L.Conv2D(2 * width, 1, strides=2, name="shortcut")
    conv_a = L.Conv2D(2 * width, 3, strides=2, padding="same", name="conv_a")
    conv_b = L.Conv2D(2 * width, 3, padding="same", use_bias=False, name="conv_b")
    bn_b = L.BatchNormalization(name="bn_b")
    bn_a = L.BatchNormalization(name="bn_a")
    bn_s = L.BatchNormalization(name="bn_s")
    h = L.ReLU()(stem_bn(stem(inputs)))
    y = L.ReLU()(bn_a(conv_a(h)))
    y = bn_b(conv_b(y))
    s = bn_s(shortcut(h))
    h = L.ReLU()(L.Add()([y, s]))
    h = L.GlobalAveragePooling2D()(h)
    if dense_hidden:
        h = L.Dense(32, activation="relu", name="hidden")(h)
    outputs = L.Dense(classes, name="head")(h)
    return keras.Model(inputs, outputs, name="residual_cnn")


def classification_data(n=64, input_shape=(8, 8, 3), classes=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n,) + input_shape).astype(np.float32)
    y = rng.integers(0, classes, n)
    return x, y


def compile_for_test(model, lr=0.01):
    model.compile(
        optimizer=keras.optimizers.SGD(lr, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def all_weights(model):
    return [np.array(w) for w in model.get_weights()]


def option_a_resnet(input_shape=(8, 8, 3), classes=4, width=4):
    """A stem and one downsampling block whose shortcut is a CIFAR ResNet's option A.

    The shortcut subsamples with a 1x1 stride-2 average pooling and appends
    zero channels (`Rescaling(0)`, a layer outside tfmot's registry).
    """
    inputs = keras.Input(input_shape, name="x")
    h = L.ReLU()(
        L.BatchNormalization(name="stem_bn")(
            L.Conv2D(width, 3, padding="same", use_bias=False, name="stem")(inputs)
        )
    )
    y = L.Conv2D(2 * width, 3, strides=2, padding="same", use_bias=False, name="conv1")(h)
    y = L.ReLU()(L.BatchNormalization(name="conv1_bn")(y))
    y = L.BatchNormalization(name="conv2_bn")(
        L.Conv2D(2 * width, 3, padding="same", use_bias=False, name="conv2")(y)
    )
    shortcut = L.AveragePooling2D(1, 2, name="stage2_block1_shortcut_subsample")(h)
    zeros = L.Rescaling(0.0, name="stage2_block1_shortcut_zeros")(shortcut)
    shortcut = L.Concatenate(name="stage2_block1_shortcut_pad")([shortcut, zeros])
    h = L.ReLU()(L.Add()([y, shortcut]))
    outputs = L.Dense(classes, name="classifier")(L.GlobalAveragePooling2D()(h))
    return keras.Model(inputs, outputs, name="option_a_resnet")


def digits(seed=0):
    """scikit-learn's 8x8 digits in [0, 1], split 80/20 (stratified, as the examples split them).

    Returns:
        `(x_train, y_train, x_test, y_test)`.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x = (data.images / 16.0).astype(np.float32)[..., None]
    x_train, x_test, y_train, y_test = train_test_split(
        x, data.target, test_size=0.2, random_state=seed, stratify=data.target
    )
    return x_train, y_train, x_test, y_test
