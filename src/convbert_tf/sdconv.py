"""Span-based dynamic convolution in ``keras.ops``, the convolution half of the mixed attention block.

B batch, L sequence, N' convolution heads, D head size, K kernel size (odd), p = (K - 1) // 2.

    out[b, t, n, :] = sum_j softmax_K(kernel_logits[b, t, n, :])[j] * values[b, t + j - p, n, :]

with zero padding outside [0, L). One entry, two implementations:

- ``"native"`` (what ``"auto"`` picks): shift-and-accumulate. ``values`` is padded once, then each
  of the K taps is a static slice of it scaled by one column of the softmax weights and added to a
  (B, L, N', D) accumulator. No (B, L, A, K) tensor exists, the loop runs over the Python int K
  (never over tensor values), so XLA sees K fused multiply-adds of static shapes.
- ``"reference"``: the unfold (im2col) formulation of the reference implementation: it stacks the
  K shifted copies into a (B, L, N', D, K) tensor and contracts it with the weights. It is the
  oracle of the tests, not a path to run models on.

The softmax, and in half precision the sum over taps, run in float32, as a matmul would accumulate.

``depthwise_conv1d`` is the same shift-and-accumulate with a static kernel per channel: the depthwise
half of ``SeparableConv1D`` when XLA compiles the model (see ``convbert_tf.modeling``).
"""

from __future__ import annotations

import keras
from keras import ops

from convbert_common import shapes

IMPLS = ("auto", "native", "reference")
_HALF = ("float16", "bfloat16")


def span_dynamic_conv(values, kernel_logits, impl: str = "auto"):
    """values (B, L, N', D), kernel_logits (B, L, N', K) before the softmax -> (B, L, N', D)."""
    kernel_size = _check(values, kernel_logits, impl)
    if kernel_size == 1:  # one tap: its softmax weight is 1
        return values
    if impl == "reference":
        return span_dynamic_conv_reference(values, kernel_logits)
    return _shift_and_accumulate(values, kernel_logits, kernel_size)


def _check(values, kernel_logits, impl: str) -> int:
    if impl == "triton":
        raise ValueError(
            "span_dynamic_conv(impl='triton'): the Triton kernel exists only in convbert_pt; "
            "the Keras side compiles the 'native' path with XLA (jit_compile=True)"
        )
    if impl not in IMPLS:
        raise ValueError(f"span_dynamic_conv: impl must be one of {', '.join(IMPLS)}, got {impl!r}")
    v_shape, k_shape = tuple(values.shape), tuple(kernel_logits.shape)
    if len(v_shape) != 4 or len(k_shape) != 4:
        raise ValueError(
            "span_dynamic_conv: expected values (B, L, N', D) and kernel_logits (B, L, N', K), got shapes "
            f"{v_shape} and {k_shape}"
        )
    for axis, what in ((0, "B"), (1, "L"), (2, "N'")):
        a, b = v_shape[axis], k_shape[axis]
        if a is not None and b is not None and a != b:
            raise ValueError(f"span_dynamic_conv: values {v_shape} and kernel_logits {k_shape} disagree on {what}")
    kernel_size = k_shape[-1]
    if kernel_size is None:
        raise ValueError("span_dynamic_conv: the kernel size (last axis of kernel_logits) must be static")
    if kernel_size % 2 == 0:
        raise ValueError(f"span_dynamic_conv: the kernel size must be odd, got K={kernel_size}")
    return kernel_size


def _accumulate_dtype(dtype) -> str:
    name = keras.backend.standardize_dtype(dtype)
    return "float32" if name in _HALF else name


def _softmax_weights(kernel_logits, dtype):
    """softmax over the K taps in float32, then in the accumulation dtype: (B, L, N', K)."""
    return ops.cast(ops.softmax(ops.cast(kernel_logits, "float32"), axis=-1), dtype)


def _padded(values, kernel_size: int, dtype):
    pad = shapes.conv_padding(kernel_size)
    # (B, L + K - 1, N', D): row t + j of the padded tensor is values[t + j - p]
    return ops.pad(ops.cast(values, dtype), ((0, 0), (pad, pad), (0, 0), (0, 0)))


def _shift_and_accumulate(values, kernel_logits, kernel_size: int):
    acc = _accumulate_dtype(values.dtype)
    weights = _softmax_weights(kernel_logits, acc)  # (B, L, N', K)
    taps = _weighted_taps if keras.backend.backend() == "torch" else _weighted_taps_with_gradient
    return ops.cast(taps(ops.cast(values, acc), weights, kernel_size), values.dtype)


def _windows(values, weights, kernel_size: int):
    """The padded values (B, L + K - 1, N', D), the K weight columns (B, L, N', 1) and the K windows."""
    padded = _padded(values, kernel_size, values.dtype)
    length = ops.shape(values)[1]
    # One Split op for the K weight columns instead of K slices: the training graph holds every op
    # and its gradient once per layer, and its size sets the first fit step's tracing and optimisation time.
    columns = ops.split(weights, kernel_size, axis=-1)
    windows = [padded[:, j : j + length] for j in range(kernel_size)]  # values shifted by j - p
    return padded, columns, windows


def _weighted_sum(columns, windows):
    out = None
    for column, window in zip(columns, windows, strict=True):
        term = column * window  # (B, L, N', 1) * (B, L, N', D)
        out = term if out is None else out + term
    return out


def _weighted_taps(values, weights, kernel_size: int):
    """values (B, L, N', D), weights (B, L, N', K) -> sum_j weights[..., j] * values shifted by j - p."""
    _, columns, windows = _windows(values, weights, kernel_size)
    return _weighted_sum(columns, windows)


def _weighted_taps_with_gradient(values, weights, kernel_size: int):
    """``_weighted_taps`` with a hand-written gradient (TensorFlow and JAX; Keras has none on torch).

    Autodiff of the K window slices gives K slice gradients, each a zero tensor of the padded size
    with the window written in: on TensorFlow's CPU kernels (``StridedSliceGrad``) they were the
    largest non-matmul cost of the training step. Here the values' gradient is K pads of
    ``upstream * weights[..., j]`` summed and one slice; the weights' gradient is K products reduced over D.
    """

    @ops.custom_gradient
    def taps(values, weights):
        padded, columns, windows = _windows(values, weights, kernel_size)

        def grad(*args, upstream=None):
            upstream = args[0] if upstream is None else upstream  # (B, L, N', D)
            pad, length = shapes.conv_padding(kernel_size), ops.shape(values)[1]
            d_weights, d_padded = [], None
            for j, (column, window) in enumerate(zip(columns, windows, strict=True)):
                d_weights.append(ops.sum(upstream * window, axis=-1, keepdims=True))
                # window j is padded rows j .. j + L - 1: its gradient lands there
                term = ops.pad(upstream * column, ((0, 0), (j, kernel_size - 1 - j), (0, 0), (0, 0)))
                d_padded = term if d_padded is None else d_padded + term
            return d_padded[:, pad : pad + length], ops.concatenate(d_weights, axis=-1)

        return _weighted_sum(columns, windows), grad

    return taps(values, weights)


def depthwise_conv1d(x, kernel):
    """x (B, L, C), kernel (K, C, 1) -> (B, L, C): out[b, t, c] = sum_j kernel[j, c] * x[b, t + j - p, c].

    'same' zero padding, K odd; ``ops.depthwise_conv`` computes the same, as a grouped convolution.
    """
    kernel_size = kernel.shape[0]
    if kernel_size is None or kernel_size % 2 == 0:
        raise ValueError(f"depthwise_conv1d: the kernel size must be static and odd, got K={kernel_size}")
    acc = _accumulate_dtype(x.dtype)
    taps = _channel_taps if keras.backend.backend() == "torch" else _channel_taps_with_gradient
    return ops.cast(taps(ops.cast(x, acc), ops.cast(kernel[:, :, 0], acc), kernel_size), x.dtype)


def _channel_windows(x, kernel, kernel_size: int):
    """The K per-channel taps (C,) of kernel (K, C) and the K windows (B, L, C) of the padded x."""
    pad = shapes.conv_padding(kernel_size)
    padded = ops.pad(x, ((0, 0), (pad, pad), (0, 0)))  # (B, L + K - 1, C)
    taps = ops.unstack(kernel, kernel_size, axis=0)  # K x (C,), one op (see _windows)
    length = ops.shape(x)[1]
    return taps, [padded[:, j : j + length] for j in range(kernel_size)]  # x shifted by j - p


def _channel_taps(x, kernel, kernel_size: int):
    taps, windows = _channel_windows(x, kernel, kernel_size)
    return _weighted_sum(taps, windows)


def _channel_taps_with_gradient(x, kernel, kernel_size: int):
    """``_channel_taps`` with a hand-written gradient, as ``_weighted_taps_with_gradient``."""

    @ops.custom_gradient
    def taps_of(x, kernel):
        taps, windows = _channel_windows(x, kernel, kernel_size)

        def grad(*args, upstream=None):
            upstream = args[0] if upstream is None else upstream  # (B, L, C)
            pad, length = shapes.conv_padding(kernel_size), ops.shape(x)[1]
            d_taps, d_padded = [], None
            for j, (tap, window) in enumerate(zip(taps, windows, strict=True)):
                d_taps.append(ops.sum(upstream * window, axis=(0, 1)))
                term = ops.pad(upstream * tap, ((0, 0), (j, kernel_size - 1 - j), (0, 0)))
                d_padded = term if d_padded is None else d_padded + term
            return d_padded[:, pad : pad + length], ops.stack(d_taps, axis=0)

        return _weighted_sum(taps, windows), grad

    return taps_of(x, kernel)


def span_dynamic_conv_reference(values, kernel_logits):
    """The unfold formulation: materialise the (B, L, N', D, K) windows, contract them with the kernel."""
    kernel_size = _check(values, kernel_logits, "reference")
    if kernel_size == 1:
        return values
    acc = _accumulate_dtype(values.dtype)
    weights = _softmax_weights(kernel_logits, acc)  # (B, L, N', K)
    padded = _padded(values, kernel_size, acc)  # (B, L + K - 1, N', D)
    length = ops.shape(values)[1]
    columns = ops.stack([padded[:, j : j + length] for j in range(kernel_size)], axis=-1)  # (B, L, N', D, K)
    out = ops.einsum("blndk,blnk->blnd", columns, weights)  # (B, L, N', D)
    return ops.cast(out, values.dtype)
