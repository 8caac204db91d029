"""SVDConv2D: a Conv2D stored and trained in SVD form (channel- or spatial-wise)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from typing import Literal

import numpy as np
import tensorflow as tf

from lrpet_tf import _keras
from lrpet_tf._keras import keras
from lrpet_tf.layers.svd_layer import SVDLayer
from lrpet_tf.ops.arguments import check_int
from lrpet_tf.ops.arguments import is_int
from lrpet_tf.ops.matrix_view import matrix_shape
from lrpet_tf.ops.matrix_view import matrix_to_kernel
from lrpet_tf.ops.matrix_view import spatial_matrix_shape
from lrpet_tf.ops.matrix_view import spatial_matrix_to_kernel

__all__ = ["SCHEMES", "SVDConv2D"]

SCHEMES = ("channel", "spatial")


def _pair(value, argument):
    if is_int(value):
        value = (value, value)
    try:
        value = tuple(value)
    except TypeError:  # None, a float, ...
        value = (value,)
    if len(value) != 2 or not all(is_int(v) and v >= 1 for v in value):
        raise ValueError(
            f"Expected `{argument}` to be an int >= 1 or a pair of them. "
            f"Received: {argument}={value!r}"
        )
    return tuple(int(v) for v in value)


@_keras.register_serializable
class SVDConv2D(SVDLayer):
    """A Conv2D whose kernel is stored as `U diag(s) V^T` and trained directly.

    Yang et al., "Learning Low-rank Deep Neural Networks via Singular Vector
    Orthogonality Regularization and Singular Value Sparsification", CVPR
    Workshops 2020. Kernel `(kh, kw, c, n)`, channels-last:

    * `scheme="channel"`: the matrix view `(kh*kw*c, n)`; as two ops, a
      `kh x kw` conv with `r` filters (this layer's strides, padding and
      dilation) then a 1x1 conv to `n` channels. `r <= min(kh*kw*c, n)`.
    * `scheme="spatial"`: rows `(kh, c)`, columns `(kw, n)`, shape
      `(kh*c, kw*n)`; as two ops, a `kh x 1` conv (stride and dilation only
      in height) then a `1 x kw` conv (only in width). `r <= min(kh*c, kw*n)`.

    Computation: per call shape, the cheaper of those two thin convs and one
    conv with the rebuilt kernel `A @ B^T` (rebuilding costs one small matmul
    per step) is used; `macs()` reports the cheaper count. Both are exact, so
    the choice never changes results beyond float rounding.

    Args:
        filters: Output channels `n`.
        kernel_size: Int or pair.
        strides: Int or pair (strides > 1 and dilation > 1 cannot be mixed,
            as in Conv2D).
        padding: `"valid"` or `"same"`.
        dilation_rate: Int or pair.
        scheme: `"channel"` or `"spatial"`.
        rank: `r`; None for the scheme's full rank.
        **kwargs: See `SVDLayer` (activation, use_bias, orthogonality,
            sparsity, sparsity_weight, initializers) and `keras.layers.Layer`.

    Example:
        >>> conv = SVDConv2D(64, 3, padding="same", scheme="channel",
        ...                  orthogonality=1.0, sparsity="hoyer", sparsity_weight=1e-3)
    """

    def __init__(
        self,
        filters: int,
        kernel_size: int | Sequence[int],
        strides: int | Sequence[int] = (1, 1),
        padding: str = "valid",
        dilation_rate: int | Sequence[int] = (1, 1),
        scheme: Literal["channel", "spatial"] = "channel",
        rank: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(rank=rank, **kwargs)
        check_int(filters, "filters")
        if scheme not in SCHEMES:
            raise ValueError(
                f"Expected `scheme` to be one of {SCHEMES}. Received: scheme={scheme!r}"
            )
        padding = padding.lower() if isinstance(padding, str) else padding
        if padding not in ("valid", "same"):
            raise ValueError(
                f'Expected `padding` to be "valid" or "same". Received: padding={padding!r}'
            )
        self.filters: int = int(filters)
        self.kernel_size: tuple[int, int] = _pair(kernel_size, "kernel_size")
        self.strides: tuple[int, int] = _pair(strides, "strides")
        self.dilation_rate: tuple[int, int] = _pair(dilation_rate, "dilation_rate")
        if max(self.strides) > 1 and max(self.dilation_rate) > 1:
            raise ValueError(
                "`strides` > 1 and `dilation_rate` > 1 cannot be combined. Received: "
                f"strides={self.strides}, dilation_rate={self.dilation_rate}"
            )
        self.padding: str = padding
        self.scheme: Literal["channel", "spatial"] = scheme
        self.input_spec = keras.layers.InputSpec(ndim=4)

    def build(self, input_shape: Sequence[int | None]) -> None:
        self._input_hw = tuple(input_shape[1:3])
        c = int(input_shape[-1])
        kh, kw = self.kernel_size
        self.kernel_shape = (kh, kw, c, self.filters)
        view = matrix_shape if self.scheme == "channel" else spatial_matrix_shape
        self.matrix_shape = view(self.kernel_shape)
        self._build_factors(*self.matrix_shape, self.filters)
        self.built = True

    # -- the two ways to compute ------------------------------------------

    def _thin_kernels(self, dtype=None):
        """Kernels of the two thin convs, from `A` and `B`."""
        a, b = self.factors(dtype)
        kh, kw, c, n = self.kernel_shape
        r = self.current_rank
        if self.scheme == "channel":
            first = tf.reshape(a, (kh, kw, c, r))
            second = tf.reshape(tf.transpose(b), (1, 1, r, n))
        else:
            first = tf.reshape(a, (kh, 1, c, r))
            second = tf.reshape(tf.transpose(tf.reshape(b, (kw, n, r)), (0, 2, 1)), (1, kw, r, n))
        return first, second

    def _thin_conv_params(self):
        """(strides, dilations) of the first and second thin conv."""
        (sh, sw), (dh, dw) = self.strides, self.dilation_rate
        if self.scheme == "channel":
            return ((sh, sw), (dh, dw)), ((1, 1), (1, 1))
        return ((sh, 1), (dh, 1)), ((1, sw), (1, dw))

    def rebuilt_kernel(self, dtype: tf.DType | str | None = None) -> tf.Tensor:
        """The rebuilt dense kernel `(kh, kw, c, n)`."""
        a, b = self.factors(dtype)
        m = tf.matmul(a, b, transpose_b=True)
        if self.scheme == "channel":
            return matrix_to_kernel(m, self.kernel_shape)
        return spatial_matrix_to_kernel(m, self.kernel_shape)

    def _conv(self, x, kernel, strides, dilations, padding=None):
        return tf.nn.conv2d(
            x,
            kernel,
            strides=(1,) + tuple(strides) + (1,),
            padding=(padding or self.padding).upper(),
            dilations=(1,) + tuple(dilations) + (1,),
        )

    def _costs(self, input_hw):
        """Per-example MACs `(two thin convs, one conv)` for an input `(H, W)`."""
        h, w = input_hw
        kh, kw, c, n = self.kernel_shape
        r = self.current_rank
        out_h, out_w = self._output_hw(h, w)
        one = out_h * out_w * kh * kw * c * n
        if self.scheme == "channel":
            two = out_h * out_w * r * (kh * kw * c + n)
        else:
            # The kh x 1 conv keeps the input width w (its kernel is 1 wide).
            two = out_h * w * kh * c * r + out_h * out_w * kw * r * n
        return two, one

    def _output_hw(self, h, w):
        out = []
        for size, k, s, d in zip((h, w), self.kernel_size, self.strides, self.dilation_rate):
            if self.padding == "same":
                out.append(-(-size // s))
            else:
                out.append(-(-(size - d * (k - 1)) // s))
        return tuple(out)

    def _two_ops(self, input_hw):
        if any(d is None for d in input_hw):
            rows, cols = self.matrix_shape
            return self.current_rank * (rows + cols) < rows * cols
        two, one = self._costs(input_hw)
        return two < one

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        if self._two_ops(tuple(inputs.shape[1:3])):
            first, second = self._thin_kernels(inputs.dtype)
            (s1, d1), (s2, d2) = self._thin_conv_params()
            y = self._conv(inputs, first, s1, d1)
            y = self._conv(y, second, s2, d2)
        else:
            y = self._conv(
                inputs, self.rebuilt_kernel(inputs.dtype), self.strides, self.dilation_rate
            )
        return self._finish(y)

    def compute_output_shape(self, input_shape: Sequence[int | None]) -> tuple[int | None, ...]:
        h, w = input_shape[1:3]
        out_h, out_w = self._output_hw(h, w) if h is not None and w is not None else (None, None)
        if h is not None and w is None:
            out_h = self._output_hw(h, 1)[0]
        if w is not None and h is None:
            out_w = self._output_hw(1, w)[1]
        return (input_shape[0], out_h, out_w, self.filters)

    def macs(self, input_shape: Sequence[int | None], output_shape: Sequence[int | None]) -> int:
        """MACs per example of the cheaper computation (see the class docstring)."""
        return min(self._costs(tuple(int(d) for d in input_shape[1:3])))

    # -- export ------------------------------------------------------------

    def standard_layers(self) -> list[tuple[keras.layers.Layer, list[np.ndarray]]]:
        """Standard Keras layers computing the same function, with their weights.

        Returns:
            A list of `(layer, weights)` to apply in sequence: the two thin
            Conv2D layers (`{name}_reduce` without bias, `{name}_expand` with
            the bias and activation) when cheaper for the input size the
            layer was built for, else one Conv2D with the rebuilt kernel.
        """
        bias = [self.bias.numpy()] if self.use_bias else []

        def conv(filters, kernel_size, strides, dilation_rate, name, last=True):
            # The last layer carries the bias and activation.
            return keras.layers.Conv2D(
                filters,
                kernel_size,
                strides=strides,
                padding=self.padding,
                dilation_rate=dilation_rate,
                activation=self.activation if last else None,
                use_bias=self.use_bias and last,
                name=name,
                dtype=self.dtype_policy,
            )

        name = self.name
        if not self._two_ops(self._input_hw):
            whole = conv(self.filters, self.kernel_size, self.strides, self.dilation_rate, name)
            return [(whole, [self.rebuilt_kernel().numpy()] + bias)]
        first, second = (np.asarray(k) for k in self._thin_kernels())
        (s1, d1), (s2, d2) = self._thin_conv_params()
        reduce_ = conv(self.current_rank, first.shape[:2], s1, d1, f"{name}_reduce", last=False)
        expand = conv(self.filters, second.shape[:2], s2, d2, f"{name}_expand")
        return [(reduce_, [first]), (expand, [second] + bias)]

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "strides": self.strides,
            "padding": self.padding,
            "dilation_rate": self.dilation_rate,
            "scheme": self.scheme,
        }
