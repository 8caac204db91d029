"""The layer registry: every fact lrpet_tf knows about a kind of Keras layer, in one table.

For each kind: the Keras classes, whether it has a low-rank form (a
channel-wise matrix view `(prod(kernel_size) * c, n)` whose rank-r
factorization is two standard layers of the same class), whether a following
BatchNormalization merges into it, and how its MACs are counted.

* `"conv"`: Conv1D / Conv2D / Conv3D; low-rank with `groups=1`.
* `"dense"`: Dense; low-rank.
* `"depthwise"`: DepthwiseConv1D/2D; BN merges (two channel axes), no low-rank form.
* `"separable"`, `"transposed"`: counted, nothing else.

MACs convention (the papers' "FLOPs"): multiply-accumulates of convolution and
dense layers per example; normalization, pooling, activations and element-wise
ops count zero. Layers may define `macs(input_shape, output_shape)`
themselves (the SVD training layers do).
"""

import dataclasses

import numpy as np

from lrpet_tf._keras import keras
from lrpet_tf.ops.costs import kernel_macs

__all__ = [
    "LOW_RANK_KINDS",
    "LayerKind",
    "call_macs",
    "can_absorb_batchnorm",
    "is_depthwise",
    "layer_kernel",
    "layer_kind",
    "low_rank_kind",
    "spatial_positions",
    "unsupported_reason",
]

LOW_RANK_KINDS = ("conv", "dense")


def _classes(*names):
    return tuple(getattr(keras.layers, n) for n in names if hasattr(keras.layers, n))


@dataclasses.dataclass(frozen=True)
class LayerKind:
    """One row of the registry.

    Attributes:
        name: The kind's name.
        classes: The Keras layer classes of this kind.
        low_rank: Whether the kind has a channel-wise low-rank form.
        absorbs_batchnorm: Whether a following BatchNormalization merges into it.
        kernels: The kernel attributes whose MACs add up, or None for the
            main kernel (`layer_kernel`: `kernel`, or tf_keras's depthwise
            `depthwise_kernel`).
        positions_from: `"output"` or `"input"` (transposed convs): which
            feature map's spatial positions each kernel entry is applied at.
    """

    name: str
    classes: tuple
    low_rank: bool
    absorbs_batchnorm: bool
    kernels: tuple | None = None
    positions_from: str = "output"


# Subclasses before their bases (tf_keras derives DepthwiseConv2D and
# Conv2DTranspose from Conv2D).
_REGISTRY = (
    LayerKind(
        "transposed",
        _classes("Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose"),
        low_rank=False,
        absorbs_batchnorm=False,
        positions_from="input",
    ),
    LayerKind(
        "depthwise",
        _classes("DepthwiseConv1D", "DepthwiseConv2D"),
        low_rank=False,
        absorbs_batchnorm=True,
    ),
    LayerKind(
        "separable",
        _classes("SeparableConv1D", "SeparableConv2D"),
        low_rank=False,
        absorbs_batchnorm=False,
        kernels=("depthwise_kernel", "pointwise_kernel"),
    ),
    LayerKind(
        "conv",
        (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D),
        low_rank=True,
        absorbs_batchnorm=True,
    ),
    LayerKind("dense", (keras.layers.Dense,), low_rank=True, absorbs_batchnorm=True),
)


def layer_kind(layer):
    """The registry row of `layer`'s class, or None for layers without a kernel it knows."""
    for kind in _REGISTRY:
        if isinstance(layer, kind.classes):
            return kind
    return None


def unsupported_reason(layer):
    """Why `layer` is not a low-rank target, or None if it is one."""
    kind = layer_kind(layer)
    if kind is None:
        return f"{type(layer).__name__} has no kernel to factorize"
    if not kind.low_rank:
        return f"{type(layer).__name__} has no channel-wise low-rank form"
    if getattr(layer, "groups", 1) != 1:
        return f"grouped convolution (groups={layer.groups})"
    return None


def low_rank_kind(layer):
    """`"conv"`, `"dense"` or None (see the module docstring)."""
    return layer_kind(layer).name if unsupported_reason(layer) is None else None


def can_absorb_batchnorm(layer):
    """Whether a following BatchNormalization can be merged into `layer`.

    True for Conv1D/2D/3D (grouped too), DepthwiseConv1D/2D and Dense: their
    kernel's last axis (last two for depthwise) indexes the output channels.
    """
    kind = layer_kind(layer)
    return kind is not None and kind.absorbs_batchnorm


def is_depthwise(layer):
    """Whether `layer` is a DepthwiseConv1D/2D (kernel `(..., c, multiplier)`)."""
    kind = layer_kind(layer)
    return kind is not None and kind.name == "depthwise"


def layer_kernel(layer):
    """The main kernel variable of a conv/dense-like layer, or None."""
    for attr in ("kernel", "depthwise_kernel"):
        kernel = getattr(layer, attr, None)
        if kernel is not None:
            return kernel
    return None


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


def call_macs(layer, input_shape, output_shape):
    """MACs per example of one call of `layer` (0 for layers without kernels)."""
    own = getattr(layer, "macs", None)
    if callable(own):
        return int(own(input_shape, output_shape))
    kind = layer_kind(layer)
    if kind is None:
        return 0
    shape = output_shape if kind.positions_from == "output" else input_shape
    positions = spatial_positions(shape, layer, layer.name)
    kernels = (
        [layer_kernel(layer)] if kind.kernels is None else [getattr(layer, k) for k in kind.kernels]
    )
    return sum(kernel_macs(kernel.shape, positions) for kernel in kernels)
