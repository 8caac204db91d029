"""Models the benchmarks measure: a CIFAR ResNet, keras.applications nets, single convs.

The CIFAR ResNet follows He et al. (2016), section 4.2: a 3x3 stem with 16
filters, three stages of `n` basic blocks (two 3x3 convs each) with 16, 32
and 64 filters, global average pooling and a Dense classifier; depth
`6n + 2` (n=9 is ResNet-56). Where a block changes shape, the shortcut is a
strided 1x1 conv + BatchNormalization (option B), which TFLite runs as one
CONV_2D; the official LRPET code uses the zero-padding option A shortcut,
which has no weights, so ResNet-56 here has 2 more (small) convs than the
paper's. Conv2D (no bias) -> BatchNormalization (epsilon 1e-5, momentum 0.9,
PyTorch's defaults) -> ReLU throughout.

keras.applications models are always built with `weights=None` (these
machines have no network).
"""

import dataclasses

try:  # as a script's import (benchmarks/ on sys.path) or as benchmarks.bench_models
    import bench_utils
except ImportError:  # pragma: no cover
    from benchmarks import bench_utils

bench_utils.add_examples_to_path()

import example_models  # noqa: E402

from lrpet_tf import keras  # noqa: E402

__all__ = [
    "ConvShape",
    "LAYER_SHAPES",
    "cifar_resnet",
    "conv_layer_model",
    "mobilenet_v2",
    "resnet50",
    "tiny_cnn",
    "whole_model",
]

L = keras.layers


def _conv_bn(x, filters, kernel_size, strides, name):
    x = L.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="same",
        use_bias=False,
        kernel_initializer="he_normal",
        name=name,
    )(x)
    return L.BatchNormalization(momentum=0.9, epsilon=1e-5, name=f"{name}_bn")(x)


def cifar_resnet(
    blocks_per_stage=9,
    input_shape=(32, 32, 3),
    num_classes=10,
    name=None,
    width=16,
    shortcut="projection",
):
    """A CIFAR-style ResNet of depth `6 * blocks_per_stage + 2` (9 -> ResNet-56).

    Args:
        blocks_per_stage: Basic blocks `n` per stage (3 -> ResNet-20, 9 -> ResNet-56).
        input_shape: Image shape, channels last.
        num_classes: Width of the Dense classifier.
        name: Model name; defaults to `resnet{depth}`.
        width: Filters of the first stage (16 in the paper; then 2x and 4x).
        shortcut: Where a block changes shape: `"projection"` (option B, a
            strided 1x1 conv + BN) or `"zeros"` (option A, the official
            LRPET code's weightless shortcut).

    Returns:
        A Functional `keras.Model`.
    """
    if blocks_per_stage < 1:
        raise ValueError(
            f"Expected `blocks_per_stage` >= 1. Received: blocks_per_stage={blocks_per_stage}"
        )
    if shortcut not in ("projection", "zeros"):
        raise ValueError(
            f'Expected `shortcut` in ("projection", "zeros"). Received: shortcut={shortcut!r}'
        )
    depth = 6 * blocks_per_stage + 2
    inputs = keras.Input(input_shape, name="image")
    x = L.ReLU()(_conv_bn(inputs, width, 3, 1, "stem"))
    for stage, filters in enumerate((width, 2 * width, 4 * width)):
        for block in range(blocks_per_stage):
            strides = 2 if stage > 0 and block == 0 else 1
            prefix = f"s{stage}b{block}"
            y = L.ReLU()(_conv_bn(x, filters, 3, strides, f"{prefix}_conv1"))
            y = _conv_bn(y, filters, 3, 1, f"{prefix}_conv2")
            residual = x
            if strides != 1 or x.shape[-1] != filters:
                if shortcut == "zeros":
                    residual = example_models.option_a_shortcut(
                        x, filters, strides, f"{prefix}_shortcut"
                    )
                else:
                    residual = _conv_bn(x, filters, 1, strides, f"{prefix}_shortcut")
            x = L.ReLU()(L.Add()([y, residual]))
    x = L.GlobalAveragePooling2D()(x)
    outputs = L.Dense(num_classes, name="classifier")(x)
    return keras.Model(inputs, outputs, name=name or f"resnet{depth}")


def tiny_cnn(input_shape=(8, 8, 3), num_classes=4, width=8):
    """Two Conv2D -> BatchNormalization -> ReLU blocks and a classifier: smoke runs only."""
    inputs = keras.Input(input_shape, name="image")
    x = L.ReLU()(_conv_bn(inputs, width, 3, 1, "conv1"))
    x = L.ReLU()(_conv_bn(x, width, 3, 2, "conv2"))
    x = L.GlobalAveragePooling2D()(x)
    outputs = L.Dense(num_classes, name="classifier")(x)
    return keras.Model(inputs, outputs, name="tiny_cnn")


def _named_input(input_shape):
    # An explicitly named Input. Before commit e5ffb72, `export_tflite`'s
    # verification looked inputs up by layer name ("input_layer") while the
    # TFLite signature of an unnamed Keras 3 Input is named after its tensor
    # ("keras_tensor"), so keras.applications models built the default way
    # failed to export; naming the input works with either version.
    return keras.Input(input_shape, name="image")


def resnet50(input_shape=(224, 224, 3), num_classes=1000):
    """keras.applications ResNet50 with random weights (`weights=None`)."""
    return keras.applications.ResNet50(
        weights=None, input_tensor=_named_input(input_shape), classes=num_classes
    )


def mobilenet_v2(input_shape=(224, 224, 3), num_classes=1000):
    """keras.applications MobileNetV2 (alpha 1.0) with random weights (`weights=None`)."""
    return keras.applications.MobileNetV2(
        weights=None, input_tensor=_named_input(input_shape), classes=num_classes
    )


def whole_model(name, small=False):
    """Builds one of the whole models the benchmarks use, by name.

    Args:
        name: `"resnet56"`, `"resnet20"`, `"resnet50"`, `"mobilenet_v2"` or
            `"tiny"` (two convs, for smoke runs).
        small: Smaller inputs for smoke runs (32x32 for the ImageNet nets).

    Returns:
        `(model, input_shape)`.
    """
    if name == "resnet56":
        return cifar_resnet(3 if small else 9, name="resnet56"), (32, 32, 3)
    if name == "resnet20":
        return cifar_resnet(3), (32, 32, 3)
    if name == "tiny":
        return tiny_cnn(), (8, 8, 3)
    if name in ("resnet50", "mobilenet_v2"):
        shape = (32, 32, 3) if small else (224, 224, 3)
        build = resnet50 if name == "resnet50" else mobilenet_v2
        return build(shape, num_classes=10 if small else 1000), shape
    raise ValueError(
        'Expected `name` in ("resnet56", "resnet20", "resnet50", "mobilenet_v2", "tiny"). '
        f"Received: name={name!r}"
    )


@dataclasses.dataclass(frozen=True)
class ConvShape:
    """One Conv2D as it occurs in a real network (stride 1, "same" padding).

    Attributes:
        family: Which network it comes from (`"cifar_resnet"`, `"resnet50"`,
            `"mobilenet_v2"`).
        size: Spatial size `H = W` of its input and output.
        in_channels: `c`.
        out_channels: `n`.
        kernel_size: `k` (a `k x k` kernel).
        role: What it does there (e.g. `"3x3"`, `"1x1 expand"`).
    """

    family: str
    size: int
    in_channels: int
    out_channels: int
    kernel_size: int
    role: str

    @property
    def name(self):
        k = self.kernel_size
        return f"{self.size}x{self.size}x{self.in_channels}->{self.out_channels} {k}x{k}"

    @property
    def matrix_shape(self):
        """`(k*k*c, n)`: the kernel's matrix view."""
        return (self.kernel_size**2 * self.in_channels, self.out_channels)

    @property
    def max_rank(self):
        return min(self.matrix_shape)


def _shape(family, size, c, n, k, role):
    return ConvShape(family, size, c, n, k, role)


# Conv layers typical of the three families, at their real spatial sizes
# (224x224 input for the ImageNet nets).
LAYER_SHAPES = (
    _shape("cifar_resnet", 32, 16, 16, 3, "3x3 stage 1"),
    _shape("cifar_resnet", 16, 32, 32, 3, "3x3 stage 2"),
    _shape("cifar_resnet", 8, 64, 64, 3, "3x3 stage 3"),
    _shape("resnet50", 56, 64, 64, 3, "3x3 conv2_x"),
    _shape("resnet50", 28, 128, 128, 3, "3x3 conv3_x"),
    _shape("resnet50", 14, 256, 256, 3, "3x3 conv4_x"),
    _shape("resnet50", 7, 512, 512, 3, "3x3 conv5_x"),
    _shape("resnet50", 56, 64, 256, 1, "1x1 expand conv2_x"),
    _shape("resnet50", 28, 128, 512, 1, "1x1 expand conv3_x"),
    _shape("resnet50", 14, 256, 1024, 1, "1x1 expand conv4_x"),
    _shape("resnet50", 7, 512, 2048, 1, "1x1 expand conv5_x"),
    _shape("mobilenet_v2", 56, 24, 144, 1, "1x1 expand block 2"),
    _shape("mobilenet_v2", 56, 144, 24, 1, "1x1 project block 2"),
    _shape("mobilenet_v2", 28, 32, 192, 1, "1x1 expand block 4"),
    _shape("mobilenet_v2", 28, 192, 32, 1, "1x1 project block 4"),
    _shape("mobilenet_v2", 14, 64, 384, 1, "1x1 expand block 7"),
    _shape("mobilenet_v2", 14, 384, 64, 1, "1x1 project block 7"),
    _shape("mobilenet_v2", 7, 160, 960, 1, "1x1 expand block 14"),
    _shape("mobilenet_v2", 7, 960, 160, 1, "1x1 project block 14"),
    _shape("mobilenet_v2", 7, 320, 1280, 1, "1x1 head conv"),
)


def conv_layer_model(shape, seed=0):
    """A Functional model `Input(H, W, c) -> Conv2D(n, k, "same", bias)` for one shape.

    The conv has a bias, as every conv has once BatchNormalization is folded
    into it for inference.

    Args:
        shape: A `ConvShape`.
        seed: Seed of the He-normal kernel initializer.

    Returns:
        A built `keras.Model` whose conv layer is named `"conv"`.
    """
    inputs = keras.Input((shape.size, shape.size, shape.in_channels), name="x")
    outputs = L.Conv2D(
        shape.out_channels,
        shape.kernel_size,
        padding="same",
        kernel_initializer=keras.initializers.HeNormal(seed=seed),
        bias_initializer=keras.initializers.RandomNormal(stddev=0.1, seed=seed + 1),
        name="conv",
    )(inputs)
    return keras.Model(inputs, outputs, name="conv_layer")
