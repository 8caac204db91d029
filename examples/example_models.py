"""Reference models for the examples: small CNNs with BatchNormalization."""

from lrpet_tf._keras import keras

__all__ = ["small_cnn"]


def _conv_bn(x, filters, kernel_size=3, strides=1, name=None, bn_momentum=0.9):
    x = keras.layers.Conv2D(
        filters, kernel_size, strides=strides, padding="same", use_bias=False, name=name
    )(x)
    return keras.layers.BatchNormalization(
        momentum=bn_momentum, epsilon=1e-5, name=f"{name}_bn" if name else None
    )(x)


def small_cnn(input_shape=(8, 8, 1), num_classes=10, width=32, name="small_cnn"):
    """A small residual CNN: conv stem, two residual blocks, global pool, Dense.

    Conv2D -> BatchNormalization -> ReLU everywhere (BN epsilon 1e-5 and
    momentum 0.9, as PyTorch's defaults in the papers), a residual add in each
    block and a 1x1 projection shortcut where the shape changes: the
    structures LRPET's BN rectification and the graph rewrites must handle.
    """
    inputs = keras.Input(input_shape, name="image")
    x = keras.layers.ReLU()(_conv_bn(inputs, width, name="stem"))
    for i, (filters, strides) in enumerate(((width, 1), (2 * width, 2))):
        shortcut = x
        y = keras.layers.ReLU()(_conv_bn(x, filters, strides=strides, name=f"b{i}_conv1"))
        y = _conv_bn(y, filters, name=f"b{i}_conv2")
        if strides != 1 or shortcut.shape[-1] != filters:
            shortcut = _conv_bn(shortcut, filters, 1, strides, name=f"b{i}_shortcut")
        x = keras.layers.ReLU()(keras.layers.Add()([y, shortcut]))
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(num_classes, name="classifier")(x)
    return keras.Model(inputs, outputs, name=name)
