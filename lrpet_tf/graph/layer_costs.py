"""MACs of one layer call, read from the call's input and output shapes.

Convention (the papers' "FLOPs"): multiply-accumulates of convolution and
dense layers per example; normalization, pooling, activations and element-wise
ops count zero. Every other module that needs a layer's cost calls
`call_macs`, so there is one definition of it.
"""

import numpy as np

from lrpet_tf._keras import keras
from lrpet_tf.ops.costs import kernel_macs

__all__ = ["call_macs", "layer_kernel", "spatial_positions"]

_DEPTHWISE = tuple(
    getattr(keras.layers, n)
    for n in ("DepthwiseConv1D", "DepthwiseConv2D")
    if hasattr(keras.layers, n)
)
_SEPARABLE = tuple(
    getattr(keras.layers, n)
    for n in ("SeparableConv1D", "SeparableConv2D")
    if hasattr(keras.layers, n)
)
_TRANSPOSE = tuple(
    getattr(keras.layers, n)
    for n in ("Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose")
    if hasattr(keras.layers, n)
)
_CONVS = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)


def spatial_positions(shape, layer, name="layer"):
    """Number of spatial positions of a feature map shape (batch axis first)."""
    if isinstance(layer, keras.layers.Dense):
        dims = shape[1:-1]
    elif getattr(layer, "data_format", "channels_last") == "channels_first":
        dims = shape[2:]
    else:
        dims = shape[1:-1]
    if any(d is None for d in dims):
        raise ValueError(
            f"Cannot count MACs of layer {name!r}: its feature map shape "
            f"{tuple(shape)} has unknown spatial dimensions. Build the model "
            "with a fixed input shape (e.g. `keras.Input((32, 32, 3))`)."
        )
    return int(np.prod(dims, dtype=np.int64))


def layer_kernel(layer):
    """The main kernel variable of a conv/dense-like layer, or None."""
    for attr in ("kernel", "depthwise_kernel"):
        kernel = getattr(layer, attr, None)
        if kernel is not None:
            return kernel
    return None


def call_macs(layer, input_shape, output_shape):
    """MACs per example of one call of `layer` (0 for layers without kernels).

    Layers may define `macs(input_shape, output_shape)` themselves (the SVD
    training layers do); otherwise conv, depthwise, separable, transposed conv
    and dense layers are counted from their kernel shapes.
    """
    own = getattr(layer, "macs", None)
    if callable(own):
        return int(own(input_shape, output_shape))
    if isinstance(layer, _SEPARABLE):
        positions = spatial_positions(output_shape, layer, layer.name)
        return kernel_macs(layer.depthwise_kernel.shape, positions) + kernel_macs(
            layer.pointwise_kernel.shape, positions
        )
    if isinstance(layer, _TRANSPOSE):
        positions = spatial_positions(input_shape, layer, layer.name)
        return kernel_macs(layer.kernel.shape, positions)
    if isinstance(layer, _DEPTHWISE + _CONVS + (keras.layers.Dense,)):
        positions = spatial_positions(output_shape, layer, layer.name)
        return kernel_macs(layer_kernel(layer).shape, positions)
    return 0
