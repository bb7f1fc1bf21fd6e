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

``span_dynamic_conv`` carries a hand-written gradient (``keras.ops.custom_gradient``, on every
backend). Autodiff of K static slices pads the output gradient back to the input's length once per
tap and adds the K padded copies (K full-size writes, unfused under XLA); the input gradient is
instead the same shift-and-accumulate with the taps reversed, one fused loop, and the weight
gradient K products reduced over D. With g the output gradient and w the softmaxed weights:

    d values[t] = sum_j w[t - j + p, j] * g[t - j + p]
    d w[t, j]   = sum_D g[t] * values[t + j - p]

(the softmax's own gradient stays with autodiff: it is (B, L, N', K), small). ``depthwise_conv1d``
keeps autodiff's gradient: written by hand the same way it timed the same, its cost being the
weight gradient's per-tap reductions over B and L, which either way read K shifted windows.

On TensorFlow the span convolution's forward and its gradient are each one
``tf.function(jit_compile=True)`` call (``_compiled_span_conv``). Outside XLA the graph would run
their slices, products and sums as some 70 separate ops per layer, one pass over memory each.
"""

from __future__ import annotations

import functools

import keras
from keras import ops

from convbert_common import shapes
from convbert_tf.activations import softmax_last

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
    return ops.cast(softmax_last(ops.cast(kernel_logits, "float32")), dtype)


def _shift_and_accumulate(values, kernel_logits, kernel_size: int):
    acc = _accumulate_dtype(values.dtype)
    weights = _softmax_weights(kernel_logits, acc)  # (B, L, N', K)
    return ops.cast(_span_conv(ops.cast(values, acc), weights), values.dtype)


def _shifted_sum(padded, columns, length):
    """sum_j columns[j] * padded[:, j : j + L]: padded (B, L + K - 1, ...), K columns broadcasting to (B, L, ...)."""
    out = None
    for j, column in enumerate(columns):
        term = column * padded[:, j : j + length]
        out = term if out is None else out + term
    return out


def _pad_length(x, kernel_size: int):
    """(B, L, ...) -> (B, L + K - 1, ...): p zeros before and after along L."""
    pad = shapes.conv_padding(kernel_size)
    return ops.pad(x, ((0, 0), (pad, pad)) + ((0, 0),) * (len(x.shape) - 2))


def _span_conv_forward(values, weights, kernel_size: int):
    """values (B, L, N', D), softmaxed weights (B, L, N', K), both in the accumulation dtype -> (B, L, N', D)."""
    length = ops.shape(values)[1]
    padded = _pad_length(values, kernel_size)  # (B, L + K - 1, N', D): row t + j is values[t + j - p]
    # One Split op for the K weight columns instead of K slices: the training graph holds every op
    # and its gradient once per layer, and its size sets the first fit step's tracing and optimisation time.
    columns = ops.split(weights, kernel_size, axis=-1)  # K x (B, L, N', 1)
    return _shifted_sum(padded, columns, length)


def _span_conv_backward(values, weights, g, kernel_size: int):
    """The gradients (B, L, N', D), (B, L, N', K) of the forward's values and weights, g (B, L, N', D) its output's."""
    length = ops.shape(values)[1]
    padded = _pad_length(values, kernel_size)  # (B, L + K - 1, N', D)
    # Row s + K - 1 - j of the padded product w[:, :, :, j] * g is w[s - j + p, j] * g[s - j + p]: tap j,
    # reversed. Multiplying before slicing keeps one slice per tap in the training graph.
    padded_w = ops.split(_pad_length(weights, kernel_size), kernel_size, axis=-1)  # K x (B, L + K - 1, N', 1)
    padded_g = _pad_length(g, kernel_size)  # (B, L + K - 1, N', D)
    d_values = None
    for j, column in enumerate(padded_w):
        start = kernel_size - 1 - j
        term = (column * padded_g)[:, start : start + length]  # (B, L, N', D)
        d_values = term if d_values is None else d_values + term
    products = [ops.sum(g * padded[:, j : j + length], axis=-1) for j in range(kernel_size)]  # K x (B, L, N')
    return d_values, ops.stack(products, axis=-1)  # (B, L, N', D), (B, L, N', K)


@functools.cache
def _compiled_span_conv(kernel_size: int):
    """The forward and the gradient, each one ``tf.function(jit_compile=True)`` (TensorFlow only).

    Outside XLA, TensorFlow's graph runs the K taps' slices, products and sums as some 70 elementwise
    ops a layer, one pass over memory each; XLA fuses each function into one loop. Inside an XLA step
    (``jit_compile=True``) the calls are inlined. One cached pair serves every layer, as the hashed
    dropout's function does; XLA compiles once per input shape. K is bound here, as the traced
    functions see tensors of unknown shape.
    """
    import tensorflow as tf

    return (tf.function(functools.partial(_span_conv_forward, kernel_size=kernel_size), jit_compile=True,
                        reduce_retracing=True),
            tf.function(functools.partial(_span_conv_backward, kernel_size=kernel_size), jit_compile=True,
                        reduce_retracing=True))


def _span_conv_functions(kernel_size: int):
    """(forward, backward) of K taps: compiled on TensorFlow, the plain functions elsewhere."""
    if keras.backend.backend() == "tensorflow":
        return _compiled_span_conv(kernel_size)
    return (functools.partial(_span_conv_forward, kernel_size=kernel_size),
            functools.partial(_span_conv_backward, kernel_size=kernel_size))


@ops.custom_gradient
def _span_conv(values, weights):
    """values (B, L, N', D), softmaxed weights (B, L, N', K), both in the accumulation dtype -> (B, L, N', D)."""
    forward, backward = _span_conv_functions(weights.shape[-1])

    def grad(*args, upstream=None):
        # TensorFlow and JAX pass the output gradient positionally, PyTorch as ``upstream``.
        g = args[0] if upstream is None else upstream  # (B, L, N', D)
        return backward(values, weights, g)

    return forward(values, weights), grad


def depthwise_conv1d(x, kernel):
    """x (B, L, C), kernel (K, C, 1) -> (B, L, C): out[b, t, c] = sum_j kernel[j, c] * x[b, t + j - p, c].

    'same' zero padding, K odd; ``ops.depthwise_conv`` computes the same, as a grouped convolution.
    """
    kernel_size = kernel.shape[0]
    if kernel_size is None or kernel_size % 2 == 0:
        raise ValueError(f"depthwise_conv1d: the kernel size must be static and odd, got K={kernel_size}")
    acc = _accumulate_dtype(x.dtype)
    padded = _pad_length(ops.cast(x, acc), kernel_size)  # (B, L + K - 1, C)
    taps = ops.unstack(ops.cast(kernel[:, :, 0], acc), kernel_size, axis=0)  # K x (C,), one op (see _span_conv)
    return ops.cast(_shifted_sum(padded, taps, ops.shape(x)[1]), x.dtype)


def span_dynamic_conv_reference(values, kernel_logits):
    """The unfold formulation: materialise the (B, L, N', D, K) windows, contract them with the kernel."""
    kernel_size = _check(values, kernel_logits, "reference")
    if kernel_size == 1:
        return values
    acc = _accumulate_dtype(values.dtype)
    weights = _softmax_weights(kernel_logits, acc)  # (B, L, N', K)
    padded = _pad_length(ops.cast(values, acc), kernel_size)  # (B, L + K - 1, N', D)
    length = ops.shape(values)[1]
    columns = ops.stack([padded[:, j : j + length] for j in range(kernel_size)], axis=-1)  # (B, L, N', D, K)
    out = ops.einsum("blndk,blnk->blnd", columns, weights)  # (B, L, N', D)
    return ops.cast(out, values.dtype)
