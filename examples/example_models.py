"""Reference models for the examples: the papers' CNNs, with BatchNormalization.

`build_model(name, input_shape, num_classes, width=None)` builds one of
`MODELS`:

* `small_cnn`: a small residual CNN (the quick start's).
* `resnet20`, `resnet32`, `resnet56`, `resnet110`: CIFAR-style ResNets
  (He et al. 2016, section 4.2): three stages of 3x3 basic blocks with
  `width`, `2*width`, `4*width` filters and option-A shortcuts as in the
  LRPET code: stride-2 subsampling of the identity and zero channels added.
* `vgg16`: VGG-16 with BatchNormalization for CIFAR (13 3x3 convs, max
  pooling, a 4096-4096 classifier with dropout), the LRPET code's `vgg16_bn`.
* `resnet18`, `resnet34`, `resnet50`: ImageNet ResNets laid out and named as
  `keras.applications.ResNet50` (`conv1_conv`, `conv2_block1_1_conv`, `conv2_block1_1_bn`, ...),
  with torchvision's choices the papers trained with: no conv biases, the
  stride of a bottleneck on its 3x3 conv, 1x1 projection shortcuts. Built
  from scratch (the `weights=None` of keras.applications); any input size.

Every Conv2D has no bias and is followed by a BatchNormalization with
PyTorch's defaults (epsilon 1e-5, momentum 0.9 in Keras terms), the pairing
LRPET's BN rectification and `fold_batchnorm` use. Only standard Keras layers
are used, so saved models load without custom objects.
"""

from lrpet_tf import keras

__all__ = ["MODELS", "build_model", "option_a_shortcut", "small_cnn"]

MODELS = (
    "small_cnn",
    "resnet20",
    "resnet32",
    "resnet56",
    "resnet110",
    "vgg16",
    "resnet18",
    "resnet34",
    "resnet50",
)
BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9
_VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
_IMAGENET_BLOCKS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3)}


def build_model(name, input_shape, num_classes, width=None):
    """Builds a reference model by name, randomly initialised.

    Args:
        name: One of `MODELS`.
        input_shape: `(H, W, C)` of the images.
        num_classes: Outputs of the classifier (logits, no softmax).
        width: Filters of the first stage (default: the paper's: 16 for the
            CIFAR ResNets, 64 for VGG-16 and the ImageNet ResNets, 32 for
            small_cnn); smaller for quick tests.

    Returns:
        A Functional `keras.Model` named `name`.
    """
    if name not in MODELS:
        raise ValueError(f"Expected `model` to be one of {MODELS}. Received: model={name!r}")
    input_shape = tuple(int(d) for d in input_shape)
    if name == "small_cnn":
        return small_cnn(input_shape, num_classes, width or 32)
    if name == "vgg16":
        return vgg16_cifar(input_shape, num_classes, width or 64)
    depth = int(name[len("resnet") :])
    if depth in _IMAGENET_BLOCKS:
        return imagenet_resnet(depth, input_shape, num_classes, width or 64)
    return cifar_resnet(depth, input_shape, num_classes, width or 16)


def _conv_bn(x, filters, kernel_size=3, strides=1, name=None, bn_name=None):
    x = keras.layers.Conv2D(
        filters, kernel_size, strides=strides, padding="same", use_bias=False, name=name
    )(x)
    if bn_name is None and name:
        bn_name = f"{name}_bn"
    return keras.layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=bn_name)(
        x
    )


def _applications_conv_bn(x, filters, kernel_size, strides, name):
    # keras.applications names: conv2_block1_1_conv -> conv2_block1_1_bn.
    return _conv_bn(x, filters, kernel_size, strides, f"{name}_conv", f"{name}_bn")


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


def option_a_shortcut(x, filters, strides, name):
    """Identity subsampled by `strides`, with zero channels added up to `filters`.

    The LRPET code pads `filters // 4` zero channels on each side; here the
    zeros follow the identity channels, the same shortcut up to a fixed
    permutation of channels (which the randomly initialised convs of the
    residual branch do not care about). Built from standard layers only:
    a 1x1 pooling with stride 2 is `x[:, ::2, ::2, :]`, and the zeros are the
    subsampled input scaled by 0. The benchmarks' ResNets use it too.
    """
    if strides != 1:
        x = keras.layers.AveragePooling2D(1, strides, name=f"{name}_subsample")(x)
    missing = filters - x.shape[-1]
    if missing <= 0:
        return x
    if missing != x.shape[-1]:
        raise ValueError(f"Option-A shortcut {name!r} can only double the channels.")
    zeros = keras.layers.Rescaling(0.0, name=f"{name}_zeros")(x)
    return keras.layers.Concatenate(name=f"{name}_pad")([x, zeros])


def cifar_resnet(depth, input_shape=(32, 32, 3), num_classes=10, width=16):
    """A CIFAR ResNet (He et al. 2016) of depth `6n + 2` with option-A shortcuts.

    Args:
        depth: 20, 32, 44, 56, 110, ... (`(depth - 2) % 6 == 0`).
        input_shape: Image shape.
        num_classes: Classes.
        width: Filters of the first stage (16 in the paper).
    """
    if (depth - 2) % 6:
        raise ValueError(f"Expected `depth` = 6n + 2 for a CIFAR ResNet. Received: depth={depth}")
    blocks = (depth - 2) // 6
    inputs = keras.Input(input_shape, name="image")
    x = keras.layers.ReLU(name="conv1_relu")(_conv_bn(inputs, width, name="conv1"))
    for stage, filters in enumerate((width, 2 * width, 4 * width), start=1):
        for block in range(1, blocks + 1):
            prefix = f"stage{stage}_block{block}"
            strides = 2 if stage > 1 and block == 1 else 1
            y = _conv_bn(x, filters, strides=strides, name=f"{prefix}_conv1")
            y = keras.layers.ReLU(name=f"{prefix}_relu1")(y)
            y = _conv_bn(y, filters, name=f"{prefix}_conv2")
            shortcut = option_a_shortcut(x, filters, strides, f"{prefix}_shortcut")
            x = keras.layers.Add(name=f"{prefix}_add")([y, shortcut])
            x = keras.layers.ReLU(name=f"{prefix}_out")(x)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = keras.layers.Dense(num_classes, name="classifier")(x)
    return keras.Model(inputs, outputs, name=f"resnet{depth}")


def vgg16_cifar(input_shape=(32, 32, 3), num_classes=10, width=64):
    """VGG-16 with BatchNormalization for 32x32 images (the LRPET code's `vgg16_bn`).

    The 13 convs have `width/64` times VGG's filters; the classifier is
    Dense(64 * width) -> ReLU -> Dropout(0.5), twice, then Dense(classes)
    (4096 units at the paper's width). A max pooling is skipped where the
    feature map is already 1x1, so small inputs (8x8 digits) work too.
    """
    inputs = keras.Input(input_shape, name="image")
    x = inputs
    conv, pool = 0, 0
    for item in _VGG16:
        if item == "M":
            pool += 1
            if min(x.shape[1], x.shape[2]) >= 2:
                x = keras.layers.MaxPooling2D(2, name=f"pool{pool}")(x)
            continue
        conv += 1
        x = _conv_bn(x, max(1, item * width // 64), name=f"conv{conv}")
        x = keras.layers.ReLU(name=f"conv{conv}_relu")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    for i in (1, 2):
        x = keras.layers.Dense(64 * width, activation="relu", name=f"fc{i}")(x)
        x = keras.layers.Dropout(0.5, name=f"fc{i}_dropout")(x)
    outputs = keras.layers.Dense(num_classes, name="classifier")(x)
    return keras.Model(inputs, outputs, name="vgg16")


def _imagenet_block(x, filters, strides, bottleneck, name):
    out_filters = 4 * filters if bottleneck else filters
    if strides != 1 or x.shape[-1] != out_filters:
        shortcut = _applications_conv_bn(x, out_filters, 1, strides, f"{name}_0")
    else:
        shortcut = x
    if bottleneck:
        y = _applications_conv_bn(x, filters, 1, 1, f"{name}_1")
        y = keras.layers.ReLU(name=f"{name}_1_relu")(y)
        y = _applications_conv_bn(y, filters, 3, strides, f"{name}_2")
        y = keras.layers.ReLU(name=f"{name}_2_relu")(y)
        y = _applications_conv_bn(y, out_filters, 1, 1, f"{name}_3")
    else:
        y = _applications_conv_bn(x, filters, 3, strides, f"{name}_1")
        y = keras.layers.ReLU(name=f"{name}_1_relu")(y)
        y = _applications_conv_bn(y, filters, 3, 1, f"{name}_2")
    x = keras.layers.Add(name=f"{name}_add")([shortcut, y])
    return keras.layers.ReLU(name=f"{name}_out")(x)


def imagenet_resnet(depth, input_shape=(224, 224, 3), num_classes=1000, width=64):
    """ResNet-18/34 (basic blocks) or ResNet-50 (bottlenecks) for ImageNet-size inputs.

    Layer names follow `keras.applications.ResNet50`. Args as `cifar_resnet`;
    `width` is the stem's filters (64 in the paper).
    """
    if depth not in _IMAGENET_BLOCKS:
        raise ValueError(f"Expected `depth` in (18, 34, 50). Received: depth={depth}")
    bottleneck = depth >= 50
    inputs = keras.Input(input_shape, name="image")
    x = keras.layers.ZeroPadding2D(3, name="conv1_pad")(inputs)
    x = keras.layers.Conv2D(width, 7, strides=2, use_bias=False, name="conv1_conv")(x)
    x = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name="conv1_bn")(
        x
    )
    x = keras.layers.ReLU(name="conv1_relu")(x)
    x = keras.layers.ZeroPadding2D(1, name="pool1_pad")(x)
    x = keras.layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)
    for stage, blocks in enumerate(_IMAGENET_BLOCKS[depth]):
        filters = width * 2**stage
        for block in range(blocks):
            strides = 2 if stage > 0 and block == 0 else 1
            x = _imagenet_block(
                x, filters, strides, bottleneck, f"conv{stage + 2}_block{block + 1}"
            )
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = keras.layers.Dense(num_classes, name="predictions")(x)
    return keras.Model(inputs, outputs, name=f"resnet{depth}")
