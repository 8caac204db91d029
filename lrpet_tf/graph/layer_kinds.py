"""Which layers lrpet_tf can project, factorize or fold into, and why not.

A *low-rank target* is a layer whose kernel has a channel-wise matrix view
`(prod(kernel_size) * c, n)` and whose rank-r factorization is two standard
layers of the same class:

* `"conv"`: Conv1D / Conv2D / Conv3D with `groups=1` (not transposed,
  depthwise or separable; those have no such factorization).
* `"dense"`: Dense.
"""

from lrpet_tf._keras import keras

__all__ = [
    "LOW_RANK_KINDS",
    "can_absorb_batchnorm",
    "is_depthwise",
    "low_rank_kind",
    "unsupported_reason",
]

LOW_RANK_KINDS = ("conv", "dense")

_PLAIN_CONVS = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)
_NOT_PLAIN_CONVS = tuple(
    getattr(keras.layers, name)
    for name in (
        "Conv1DTranspose",
        "Conv2DTranspose",
        "Conv3DTranspose",
        "DepthwiseConv1D",
        "DepthwiseConv2D",
        "SeparableConv1D",
        "SeparableConv2D",
    )
    if hasattr(keras.layers, name)
)


def unsupported_reason(layer):
    """Why `layer` is not a low-rank target, or None if it is one."""
    if isinstance(layer, _NOT_PLAIN_CONVS):
        return f"{type(layer).__name__} has no channel-wise low-rank form"
    if isinstance(layer, _PLAIN_CONVS):
        if getattr(layer, "groups", 1) != 1:
            return f"grouped convolution (groups={layer.groups})"
        return None
    if isinstance(layer, keras.layers.Dense):
        return None
    return f"{type(layer).__name__} has no kernel to factorize"


def low_rank_kind(layer):
    """`"conv"`, `"dense"` or None (see the module docstring)."""
    if unsupported_reason(layer) is not None:
        return None
    return "dense" if isinstance(layer, keras.layers.Dense) else "conv"


_DEPTHWISE = tuple(
    getattr(keras.layers, name)
    for name in ("DepthwiseConv1D", "DepthwiseConv2D")
    if hasattr(keras.layers, name)
)
_FOLD_HOSTS = _PLAIN_CONVS + (keras.layers.Dense,) + _DEPTHWISE
_NOT_FOLD_HOSTS = tuple(
    getattr(keras.layers, name)
    for name in (
        "Conv1DTranspose",
        "Conv2DTranspose",
        "Conv3DTranspose",
        "SeparableConv1D",
        "SeparableConv2D",
    )
    if hasattr(keras.layers, name)
)


def can_absorb_batchnorm(layer):
    """Whether a following BatchNormalization can be merged into `layer`.

    True for Conv1D/2D/3D (grouped too), DepthwiseConv1D/2D and Dense: their
    kernel's last axis (last two for depthwise) indexes the output channels.
    """
    return isinstance(layer, _FOLD_HOSTS) and not isinstance(layer, _NOT_FOLD_HOSTS)


def is_depthwise(layer):
    """Whether `layer` is a DepthwiseConv1D/2D (kernel `(..., c, multiplier)`)."""
    return isinstance(layer, _DEPTHWISE)
